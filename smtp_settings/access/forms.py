import secrets

from django import forms

from smtp_settings.models import ApiToken, RelayCredential, RelayRoute, SmtpServer

MIN_PASSWORD_LENGTH = 12


class ServerChoiceField(forms.ModelMultipleChoiceField):
    widget = forms.CheckboxSelectMultiple

    def __init__(self, help_text: str):
        super().__init__(queryset=SmtpServer.objects.order_by("name"), required=False, help_text=help_text)

    def label_from_instance(self, obj: SmtpServer) -> str:
        return obj.name if obj.enabled else f"{obj.name} (disabled)"


class CredentialForm(forms.ModelForm):
    """A relay login. The password is only ever written: typed (or, for a new credential left
    blank, made up and shown once), then kept hashed."""

    servers = ServerChoiceField("Its mail goes out through these. None chosen: the relay's default route.")
    password = forms.CharField(
        required=False,
        strip=False,
        min_length=MIN_PASSWORD_LENGTH,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    class Meta:
        model = RelayCredential
        fields = ["name", "username", "password", "servers", "enabled"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["password"].help_text = (
            "Blank: keep the current one."
            if self.instance.pk
            else f"At least {MIN_PASSWORD_LENGTH} characters. Blank: Relaydeck makes one up and shows it once."
        )

    def save(self) -> tuple[RelayCredential, str]:
        """The saved credential, and the password made up for it ("" if none was)."""
        credential = super().save(commit=False)
        made_up = ""
        if typed := self.cleaned_data["password"]:
            credential.set_password(typed)
        elif not credential.password_hash:
            made_up = secrets.token_urlsafe(18)
            credential.set_password(made_up)
        credential.save()
        self.save_m2m()
        return credential, made_up


class TokenForm(forms.ModelForm):
    servers = ServerChoiceField("Its mail goes out through these. None chosen: the relay's default route.")

    class Meta:
        model = ApiToken
        fields = ["name", "servers"]

    def save(self) -> tuple[ApiToken, str]:
        """The new token, and its key: shown once, never stored."""
        return ApiToken.issue(self.cleaned_data["name"], self.cleaned_data["servers"])


class RouteForm(forms.ModelForm):
    servers = ServerChoiceField("Mail from trusted networks, and from logins and tokens that choose no server.")

    class Meta:
        model = RelayRoute
        fields = ["servers"]
