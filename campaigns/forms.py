from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.models import Campaign, MailingList
from campaigns.rendering import template_error
from project.numbers import form_number_field
from smtp_settings.models import SmtpServer
from smtp_settings.validators import validate_address, validate_header_text

TEMPLATE_FIELDS = ("subject", "html_body", "text_body")


def template_validator(part: str):
    def validate_template(source: str) -> None:
        error = template_error(source, part)
        if error:
            raise ValidationError(error)

    return validate_template


class CampaignForm(forms.ModelForm):
    lists = forms.ModelMultipleChoiceField(
        MailingList.objects.all(), widget=forms.CheckboxSelectMultiple, help_text="Who receives this campaign."
    )
    servers = forms.ModelMultipleChoiceField(
        SmtpServer.objects.filter(enabled=True),
        widget=forms.CheckboxSelectMultiple,
        help_text=Campaign._meta.get_field("servers").help_text + " Only enabled servers are listed.",
    )

    class Meta:
        model = Campaign
        fields = [
            "name",
            "subject",
            "from_email",
            "reply_to",
            "html_body",
            "text_body",
            "lists",
            "servers",
            "scheduled_at",
            "rate_limit",
            "auto_pause_after",
            "max_complaint_rate",
            "max_hard_bounce_rate",
            "guard_min_sample",
        ]
        widgets = {
            "subject": forms.TextInput(attrs={"class": "code"}),
            "html_body": forms.Textarea(attrs={"rows": 16, "class": "code", "spellcheck": "false"}),
            "text_body": forms.Textarea(attrs={"rows": 8, "class": "code"}),
            "scheduled_at": forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        }
        formfield_callback = form_number_field

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scheduled_at"].help_text = f"Blank: when launched. {timezone.get_current_timezone_name()} time."
        self.fields["from_email"].validators.append(validate_address)
        self.fields["reply_to"].validators.append(validate_address)
        self.fields["subject"].validators.append(validate_header_text)
        for name in TEMPLATE_FIELDS:
            self.fields[name].validators.append(template_validator(name))

    def clean_rate_limit(self) -> float | None:
        return self.cleaned_data["rate_limit"] or None  # 0 was "no limit" before blank was

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("html_body") and not cleaned.get("text_body") and "html_body" not in self.errors:
            self.add_error("html_body", "Write an HTML body, a text body, or both.")
        return cleaned


class PreviewAsForm(forms.Form):
    preview_as = forms.EmailField(
        label="Preview as",
        required=False,
        max_length=254,
        help_text="A subscriber's address; blank: the first active subscriber of its lists.",
    )


class TestSendForm(forms.Form):
    to_email = forms.EmailField(label="Send a test to", validators=[validate_header_text])
