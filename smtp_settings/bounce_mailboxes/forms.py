from project.numbers import form_number_field
from smtp_settings.forms import StoredPasswordForm
from smtp_settings.models import BounceMailbox


class BounceMailboxForm(StoredPasswordForm):
    """A bounce mailbox. It cannot be read without its password, so there is always one."""

    clear_password = None

    class Meta:
        model = BounceMailbox
        fields = [
            *("name", "enabled", "protocol", "host", "port", "tls", "tls_skip_verify"),
            *("username", "password", "folder"),
        ]
        help_texts = {"port": "1–65,535: IMAPS 993, POP3S 995; with STARTTLS, IMAP 143 or POP3 110."}
        formfield_callback = form_number_field

    ENDPOINT_CHANGED = "Type the password again: the protocol, host, port, username or TLS changed."

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("password") and "password" not in self.errors:
            self.add_error("password", "Enter the mailbox's password.")
        return cleaned
