from django import forms

from smtp_settings.models import SmtpServer
from smtp_settings.validators import validate_custom_headers, validate_header_text

CONNECTION_FIELDS = [
    "host",
    "port",
    "tls",
    "tls_skip_verify",
    "helo_hostname",
    "auth_protocol",
    "username",
    "password",
    "send_timeout",
    "custom_headers",
]
LIMIT_FIELDS = [
    "max_conns",
    "max_msgs_per_conn",
    "retries",
    "idle_timeout",
    "max_conn_age",
    "wait_timeout",
]
RATE_FIELDS = ["rate_limit", "rate_per_minute", "rate_counts"]
QUOTA_FIELDS = ["quota_per_hour", "quota_per_day", "quota_counts"]


class HeaderPairsWidget(forms.Widget):
    """Rows of name/value inputs, posted as NAME_name and NAME_value lists; two blank rows to add more."""

    template_name = "smtp_settings/widgets/header_pairs.html"
    blank_rows = 2

    def value_from_datadict(self, data, files, name):
        names, values = data.getlist(f"{name}_name"), data.getlist(f"{name}_value")
        return [[n.strip(), v.strip()] for n, v in zip(names, values, strict=False) if n.strip() or v.strip()]

    def value_omitted_from_data(self, data, files, name):
        return f"{name}_name" not in data

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["widget"]["rows"] = [*(value or []), *([["", ""]] * self.blank_rows)]
        return context


class HeaderPairsField(forms.Field):
    widget = HeaderPairsWidget
    default_validators = [validate_custom_headers]

    def to_python(self, value):
        return value or []

    def prepare_value(self, value):
        return value or []


class StoredPasswordForm(forms.ModelForm):
    """A form for a model with a BoundPassword. The password is never sent to the browser, so a
    blank field keeps the stored one, where it may still go (see the model); a form that points
    it elsewhere gets ENDPOINT_CHANGED on the password field."""

    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave blank to keep the current password.",
    )
    clear_password = forms.BooleanField(required=False, label="Remove the stored password")

    ENDPOINT_CHANGED = ""

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("clear_password"):
            cleaned["password"] = ""
        elif not cleaned.get("password"):
            cleaned["password"] = self.stored_password(cleaned)
        return cleaned

    def stored_password(self, cleaned: dict) -> str:
        """The stored password, if it may go where the form now points (see the model)."""
        endpoint = {name: cleaned.get(name) for name in self.instance.PASSWORD_BINDING}
        if self.instance.password_may_go_to(**endpoint):
            return self.instance.password
        if None not in endpoint.values():  # else the field that is missing has its own error
            self.add_error("password", self.ENDPOINT_CHANGED)
        return ""


class SmtpServerForm(StoredPasswordForm):
    custom_headers = HeaderPairsField(
        required=False, help_text="Name and value per row, added to every message, e.g. X-Mailer: Relaydeck."
    )

    class Meta:
        model = SmtpServer
        fields = ["name", "enabled", *CONNECTION_FIELDS, *LIMIT_FIELDS, *RATE_FIELDS, *QUOTA_FIELDS]

    ENDPOINT_CHANGED = (
        "Type the password again: the host, port, username, TLS or auth protocol changed "
        "(or tick “Remove the stored password”)."
    )


class ConnectionTestForm(SmtpServerForm):
    """What "test connection" needs of a form that may not be saved (or complete) yet."""

    to_email = forms.EmailField(
        required=False,
        label="Send a test message to",
        help_text="Leave blank to test the connection only.",
        validators=[validate_header_text],
    )
    from_email = forms.EmailField(
        required=False,
        label="From",
        help_text="Blank: the username if it is an address, else relaydeck@this host.",
        validators=[validate_header_text],
    )

    class Meta(SmtpServerForm.Meta):
        fields = CONNECTION_FIELDS

    def stored_password(self, cleaned: dict) -> str:
        if cleaned.get("auth_protocol") == "none":
            return ""  # not needed for this test, so not sent anywhere
        return super().stored_password(cleaned)


class TestMessageForm(forms.Form):
    to_email = ConnectionTestForm.base_fields["to_email"]
    from_email = ConnectionTestForm.base_fields["from_email"]
