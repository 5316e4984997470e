"""The ESPs an entry may send through: each one's anymail backend, the setting its API key
goes in, the further settings the form offers, its API's base URL, how the key is presented
on a plain HTTP call, which harmless read "test connection" makes, and the most recipients
one call may carry (the ESP's documented limit: a message to more goes as several calls).

Only ESPs whose anymail backend speaks plain HTTP through requests, and which anymail still
supports, are here: not Amazon SES (its backend needs boto3: use its SMTP interface), nor
SendGrid (anymail 15 dropped its support: use its SMTP relay). Anymail is given every
setting as a keyword argument (`backend_kwargs`), never through Django's settings.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote


def parse_credentials(stored: str) -> dict:
    """An entry's stored anymail settings (JSON), or none if they are not a JSON object."""
    try:
        value = json.loads(stored or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _header(name: str, prefix: str = "") -> Callable[[str], dict]:
    return lambda key: {"headers": {name: prefix + key}}


def _basic(user: str) -> Callable[[str], dict]:
    return lambda key: {"auth": (user, key)}


@dataclass(frozen=True)
class Esp:
    key: str
    label: str
    backend: str  # anymail's email backend
    default_api_url: str  # "" for a self-hosted ESP: the entry must give its own
    auth: Callable[[str], dict]  # requests' keyword arguments that present the API key
    # A read the API answers only to a valid key ("server"), relative to the API URL, made
    # from the entry's settings; None when the API has no harmless call.
    check: Callable[[dict], str] | None
    max_recipients: int  # per API call (To, Cc and Bcc together), as the ESP documents it
    key_setting: str = "api_key"  # anymail's name for the API key
    key_label: str = "API key"
    extras: tuple[str, ...] = ()  # further anymail settings the form offers, by form field name
    note: str = field(default="")  # shown with a test's result

    def api_url(self, configured: str) -> str:
        """The base URL calls go to, ending with a slash (as anymail makes it)."""
        url = configured or self.default_api_url
        return url if url.endswith("/") else url + "/"

    def recipients_per_call(self, max_batch: int | None) -> int:
        """The most recipients one call carries: the entry's max_batch, if set, lowers the
        ESP's own limit."""
        return min(max_batch or self.max_recipients, self.max_recipients)

    def backend_kwargs(self, credentials: dict, api_url: str, timeout_s: float) -> dict:
        """Everything anymail's backend needs, so that nothing comes from Django's settings."""
        settings = {self.key_setting: credentials.get(self.key_setting, "")}
        settings.update({name: credentials[name] for name in self.extras if credentials.get(name)})
        # Recipient statuses are judged by the caller, message by message: anymail must not
        # raise when every recipient was refused.
        return {**settings, "api_url": self.api_url(api_url), "timeout": timeout_s, "ignore_recipient_status": True}


def _mailgun_check(credentials: dict) -> str:
    domain = credentials.get("sender_domain")
    return f"domains/{quote(domain, safe='')}" if domain else "domains"


ESPS = [
    Esp(
        key="postmark",
        label="Postmark",
        backend="anymail.backends.postmark.EmailBackend",
        default_api_url="https://api.postmarkapp.com/",
        auth=_header("X-Postmark-Server-Token"),
        check=lambda credentials: "server",
        max_recipients=50,  # To, Cc and Bcc together
        key_setting="server_token",
        key_label="Server API token",
        extras=("message_stream",),
    ),
    Esp(
        key="mailgun",
        label="Mailgun",
        backend="anymail.backends.mailgun.EmailBackend",
        default_api_url="https://api.mailgun.net/v3/",
        auth=_basic("api"),
        check=_mailgun_check,
        max_recipients=1000,
        extras=("sender_domain",),
        note="EU domains use https://api.eu.mailgun.net/v3/ as the API URL.",
    ),
    Esp(
        key="brevo",
        label="Brevo",
        backend="anymail.backends.brevo.EmailBackend",
        default_api_url="https://api.brevo.com/v3/",
        auth=_header("api-key"),
        check=lambda credentials: "account",
        max_recipients=99,
    ),
    Esp(
        key="resend",
        label="Resend",
        backend="anymail.backends.resend.EmailBackend",
        default_api_url="https://api.resend.com/",
        auth=_header("Authorization", "Bearer "),
        check=lambda credentials: "domains",
        max_recipients=50,
        note="A key with sending access only may not list domains (401 restricted_api_key): "
        "send a test message to check it.",
    ),
    Esp(
        key="postal",
        label="Postal",
        backend="anymail.backends.postal.EmailBackend",
        default_api_url="",
        auth=_header("X-Server-API-Key"),
        check=None,
        max_recipients=50,  # To, Cc and Bcc: 50 each
        note="Postal's API has no read-only call: only a test message checks the API key and URL.",
    ),
]
ESPS_BY_KEY = {esp.key: esp for esp in ESPS}
CHOICES = [(esp.key, esp.label) for esp in ESPS]
