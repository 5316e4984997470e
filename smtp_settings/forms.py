import json

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from project.numbers import form_number_field
from smtp_settings.esp.registry import CHOICES as ESP_CHOICES
from smtp_settings.esp.registry import ESPS_BY_KEY
from smtp_settings.models import SmtpServer
from smtp_settings.validators import (
    validate_custom_header,
    validate_custom_headers,
    validate_header_text,
    validate_host,
)

ESP = SmtpServer.Kind.ESP
CONNECTION_FIELDS = [
    "kind",
    "esp",
    "api_url",
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
# What an ESP entry has no use for: not required of one, and left as they were.
SMTP_ONLY_FIELDS = [
    *("host", "port", "tls", "tls_skip_verify", "helo_hostname", "auth_protocol", "username", "password"),
    *("max_msgs_per_conn", "max_conn_age", "bounce_domain"),
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
        rows = [(*pair, *_wrong_inputs(pair)) for pair in value or []]
        context["widget"]["rows"] = [*rows, *([("", "", False, False)] * self.blank_rows)]
        return context


def _wrong_inputs(pair) -> tuple[bool, bool]:
    """Whether to mark a row's name input, and its value input: only the wrong one is marked
    (blank rows never are)."""
    try:
        validate_custom_header(pair)
    except ValidationError as error:
        return error.code != "header_value", error.code != "header_name"
    return False, False


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

    def keeps_a_password(self) -> bool:
        """Whether this entry has a password at all."""
        return True

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("clear_password") or not self.keeps_a_password():
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
    kind = forms.ChoiceField(
        label="Sends through", choices=SmtpServer.Kind.choices, required=False, widget=forms.RadioSelect
    )
    esp = forms.ChoiceField(label="ESP", choices=[("", "Choose…"), *ESP_CHOICES], required=False)
    api_url = forms.URLField(
        label=SmtpServer._meta.get_field("api_url").verbose_name,
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text="Blank: the ESP's own (a self-hosted Postal needs yours). https:// only, but to this machine.",
    )
    api_key = forms.CharField(
        label="API key or token",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown (Postmark: the server API token). "
        "Leave blank to keep the stored key.",
    )
    # An ESP's further settings: every name in an ESP's `extras` (esp/registry.py) is one of these.
    sender_domain = forms.CharField(
        label="Sender domain (Mailgun)",
        required=False,
        validators=[validate_host],
        help_text="Mailgun only: the domain you send from. Blank: the From address's domain.",
    )
    message_stream = forms.CharField(
        label="Message stream (Postmark)",
        required=False,
        max_length=100,
        validators=[RegexValidator(r"^[A-Za-z0-9_-]+$", "Letters, digits, _ and - only.")],
        help_text="Postmark only: the stream's ID. Blank: outbound (transactional); campaigns belong on a "
        "broadcast stream.",
    )
    custom_headers = HeaderPairsField(
        required=False, help_text="Name and value per row, added to every message, e.g. X-Mailer: Relaydeck."
    )

    class Meta:
        model = SmtpServer
        fields = [
            *("name", "enabled", *CONNECTION_FIELDS, "max_batch", "bounce_domain"),
            *(*LIMIT_FIELDS, *RATE_FIELDS, *QUOTA_FIELDS),
        ]
        formfield_callback = form_number_field

    # As the page shows them (_server_form.html), so that the error summary lists them in that order.
    field_order = [
        *("name", "enabled", "kind"),
        *("esp", "api_key", "api_url", "sender_domain", "message_stream", "max_batch"),
        *("host", "port", "tls", "tls_skip_verify", "helo_hostname", "bounce_domain"),
        *("auth_protocol", "username", "password", "clear_password"),
        *(*LIMIT_FIELDS, "send_timeout", *RATE_FIELDS, *QUOTA_FIELDS, "custom_headers"),
    ]

    ENDPOINT_CHANGED = (
        "Type the password again: the host, port, username, TLS or auth protocol changed "
        "(or tick “Remove the stored password”)."
    )
    API_CHANGED = "Type the API key again: the ESP or the API URL changed."

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A new entry, blank or from a preset, sends through SMTP until told otherwise: with no
        # choice ticked, the page would show the ESP fields beside the SMTP ones.
        self.initial.setdefault("kind", self.instance.kind)
        if self.instance.is_esp:
            for name in self.extra_names():
                self.initial.setdefault(name, self.instance.credentials.get(name, ""))
        if self._kind() == ESP:
            for name in SMTP_ONLY_FIELDS:
                if name in self.fields:
                    self.fields[name].required = False
        if "max_batch" in self.fields:
            self.fields["max_batch"].help_text = self._max_batch_help()

    def _max_batch_help(self) -> str:
        """The ESP's own limit, which a blank max_batch stands for: the chosen ESP's, or each one's."""
        chosen = ESPS_BY_KEY.get((self.data.get("esp") if self.is_bound else None) or self.instance.esp)
        if chosen is not None:
            limit = f"{chosen.label}'s limit, {chosen.max_recipients:,}"
        else:
            limits = ", ".join(f"{esp.label} {esp.max_recipients:,}" for esp in ESPS_BY_KEY.values())
            limit = f"the ESP's limit ({limits})"
        return (
            f"At most this many in one call, 1–1,000,000; blank: {limit}. A message to more goes out as several calls."
        )

    @staticmethod
    def extra_names() -> set[str]:
        return {name for esp in ESPS_BY_KEY.values() for name in esp.extras}

    def _kind(self) -> str:
        return (self.data.get("kind") if self.is_bound else None) or self.instance.kind

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or self.instance.kind

    def keeps_a_password(self) -> bool:
        return self._kind() != ESP  # an ESP entry has an API key instead

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("kind") == ESP:
            for name in SMTP_ONLY_FIELDS:  # hidden for an ESP: what they held stays
                if name in self.fields and name != "password" and cleaned.get(name) in (None, ""):
                    cleaned[name] = getattr(self.instance, name)
            self.instance.esp_credentials = self.esp_credentials(cleaned)
            self.check_max_batch(cleaned)
        else:
            self.instance.esp_credentials = ""  # nor an SMTP entry an API key
            cleaned["esp"] = cleaned["api_url"] = ""
            cleaned["max_batch"] = None
        return cleaned

    def check_max_batch(self, cleaned: dict) -> None:
        """Recipients per call: no more than the ESP takes (its own limit when blank)."""
        esp, max_batch = ESPS_BY_KEY.get(cleaned.get("esp")), cleaned.get("max_batch")
        if esp is not None and max_batch and max_batch > esp.max_recipients:
            self.add_error("max_batch", f"At most {esp.max_recipients:,}: {esp.label} takes no more in one call.")

    def esp_credentials(self, cleaned: dict) -> str:
        """The ESP entry's anymail settings as stored: the key typed, or the stored one where
        it may still go (see SmtpServer.credentials_may_go_to), and the ESP's extras."""
        esp = ESPS_BY_KEY.get(cleaned.get("esp"))
        if esp is None or "api_url" not in cleaned:
            return ""  # those fields have their own errors
        instance = self.instance
        stored = instance.credentials if instance.credentials_may_go_to(esp=esp.key, api_url=cleaned["api_url"]) else {}
        key = cleaned.get("api_key") or stored.get(esp.key_setting, "")
        if not key:
            changed = instance.esp_credentials and not stored
            self.add_error("api_key", self.API_CHANGED if changed else f"Enter the {esp.key_label} of {esp.label}.")
            return ""
        return json.dumps({esp.key_setting: key, **{name: cleaned[name] for name in esp.extras if cleaned.get(name)}})


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
