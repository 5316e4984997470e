from django import forms
from django.utils import formats

from project.csv_files import ImportFailed, check_header, not_csv
from smtp_settings.models import Suppression
from smtp_settings.suppressions import importing
from smtp_settings.validators import address_problem


class AddForm(forms.Form):
    """An address a sender puts on the list by hand (reason `manual`). One there already is
    refused, but for an unsubscribe, which holds back campaigns only: it becomes manual, so
    that transactional mail stops too."""

    email = forms.CharField(label="Email address", max_length=254)
    note = forms.CharField(
        max_length=importing.NOTE_MAX_CHARS,
        required=False,
        help_text="Why, for whoever reads the list later.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def clean_email(self) -> str:
        address = self.cleaned_data["email"]
        if problem := address_problem(address):
            raise forms.ValidationError(problem[0].upper() + problem[1:] + ".")
        email = Suppression.normalize(address)
        there = Suppression.objects.filter(email=email).exclude(reason=Suppression.Reason.UNSUBSCRIBE).first()
        if there:
            since = formats.date_format(there.created_at, "Y-m-d")
            raise forms.ValidationError(
                f"{email} is on the list already, since {since} ({there.get_reason_display().lower()})."
            )
        return email


class RemoveForm(forms.Form):
    reason = forms.CharField(
        label="Why",
        max_length=500,
        help_text="Kept in the event log with the address: the person asked again, the mailbox works again…",
        widget=forms.Textarea(attrs={"rows": 2}),
    )


class ImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="A header row with an “email” column; a “note” column is kept, other columns are ignored.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,text/csv,text/plain"}),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if problem := not_csv(upload):
            raise forms.ValidationError(problem)
        if upload.size > importing.MAX_BYTES:
            raise forms.ValidationError(
                f"“{upload.name}” is too large: it has {upload.size:,} bytes, and an import may have at most "
                f"{importing.MAX_BYTES:,}. Split it into smaller files."
            )
        try:
            check_header(upload, "email")
        except ImportFailed as exc:
            raise forms.ValidationError(f"Nothing can be imported: {exc}.") from None
        return upload
