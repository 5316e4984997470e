"""One call to an ESP's API through django-anymail, bounded and judged.

`EspConnection` is what the connection pool lends out for an ESP entry: anymail's backend for
the ESP, built from the entry's own settings, on a `BoundedSession` kept alive between
messages. Its `send` hands one message to anymail and says what came of it (`ApiReply`):

- ACCEPTED: a 2xx the ESP's format explains, with each recipient's status and message id;
- REFUSED: any other HTTP status (the caller defers 429 and 5xx, and fails the rest);
- UNSENT: the request never left (refused, DNS, TLS, connect timeout): safe to try again;
- LOST: the request went out and no reply came (a read timeout, a reset): the ESP may have
  accepted it, as after an SMTP final dot;
- UNREADABLE: a 2xx whose body the ESP's format does not explain (cut at MAX_REPLY_BYTES,
  or hostile): accepted, probably, with no message id;
- INVALID: anymail could not make an API request of the message: nothing went out.

Every call has the entry's send_timeout for connecting and for each read, and at most that
long again for the body; no redirect is followed (a key in a header would follow it to any
host). A reply is read up to MAX_REPLY_BYTES, decompressed; texts kept of it are cut at
TEXT_CHARS and cut free of the entry's secrets, whatever the ESP echoed.

`before_send`, the caller's hook (the final-dot fence), runs just before the request is made:
if it raises, nothing went out, and BeforeDotFailed carries its exception, as over SMTP.
"""

import json
import re
import time
from dataclasses import dataclass, field

import requests
from anymail.exceptions import AnymailError
from django.utils.module_loading import import_string
from urllib3.exceptions import NewConnectionError

from smtp_settings.esp.registry import ESPS_BY_KEY, Esp, parse_credentials
from smtp_settings.events import connection_ids
from smtp_settings.redaction import redact, secret_pattern
from smtp_settings.transaction import BeforeDotFailed

MAX_REPLY_BYTES = 64 * 1024
TEXT_CHARS = 500
ACCEPTED, REFUSED, UNSENT, LOST, UNREADABLE, INVALID = "accepted", "refused", "unsent", "lost", "unreadable", "invalid"
_CHUNK = 8192
_MESSAGE_KEYS = ("Message", "message", "error", "errors", "detail")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]+")


@dataclass
class ApiReply:
    outcome: str
    code: int | None  # the HTTP status, if a reply came
    text: str  # what the ESP (or the network) said, bounded and without secrets
    statuses: dict[str, tuple[str, str]] = field(default_factory=dict)  # lower-case address: (status, message id)
    timed_out: bool = False


class BoundedSession(requests.Session):
    """A requests session whose calls are bounded in time and size and follow no redirect;
    `before_send` runs before each request goes out."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s
        self.before_send = None
        self.response: requests.Response | None = None

    def request(self, method, url, **kwargs):
        if self.before_send is not None:
            try:
                self.before_send()
            except Exception as error:
                raise BeforeDotFailed(str(error)) from error
        kwargs.update(timeout=self.timeout_s, allow_redirects=False, stream=True)
        response = super().request(method, url, **kwargs)
        try:
            response._content = self._bounded_body(response)
        finally:
            response.close()
        self.response = response
        return response

    def _bounded_body(self, response: requests.Response) -> bytes:
        """At most MAX_REPLY_BYTES of the body (decompressed), read within timeout_s; what
        could not be read in time or at all is left out."""
        deadline = time.monotonic() + self.timeout_s
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                if len(body) >= MAX_REPLY_BYTES or time.monotonic() > deadline:
                    break
        except requests.RequestException:  # reset or timed out mid-body: judged by what came
            pass
        return bytes(body[:MAX_REPLY_BYTES])


def credential_secrets(esp: Esp, credentials: dict) -> re.Pattern[bytes] | None:
    """What to cut out of anything an ESP says: the API key, as typed and in base64 (basic auth)."""
    return secret_pattern("", credentials.get(esp.key_setting, ""))


def clean_text(text: str, secrets: re.Pattern[bytes] | None) -> str:
    """`text` on one line, without secrets, cut at TEXT_CHARS."""
    text = redact(text.encode("utf-8", "replace"), secrets).decode("utf-8", "replace")
    text = _CONTROL_OR_SPACE.sub(" ", text).strip()
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"


def reply_text(response: requests.Response, secrets: re.Pattern[bytes] | None) -> str:
    """The gist of an API reply: the ESP's message field if the body is JSON with one, else
    the body; after the status and its reason."""
    body = (response.content or b"").decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        found = next((data[key] for key in _MESSAGE_KEYS if data.get(key)), None)
        if found is not None:
            body = found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
    reason = response.reason if isinstance(response.reason, str) else ""
    status = f"{response.status_code} {reason}".strip()
    return clean_text(f"{status}: {body}" if body.strip() else status, secrets)


def _never_sent(error: requests.RequestException) -> bool:
    """The request never left this host: no connection could be made (refused, DNS, TLS,
    proxy, a connect timeout)."""
    cause = error.__cause__ if isinstance(error.__cause__, requests.RequestException) else error
    if isinstance(cause, requests.ConnectTimeout | requests.exceptions.SSLError | requests.exceptions.ProxyError):
        return True
    reason = getattr(cause.args[0], "reason", cause.args[0]) if cause.args else None
    return isinstance(reason, NewConnectionError)


class EspConnection:
    """An ESP's API as the pool lends it out: anymail's backend on one kept-alive session.
    It has what the pool asks of a connection (a slot, counts, times); it never pipelines.
    `rcptmax`, as SMTP's RFC 9422 RCPTMAX, is the most recipients one call may carry: the
    ESP's limit, or the entry's max_batch below it."""

    pipelining = False
    in_flight = None
    mailmax = 0
    # An API session is not reported as a connection: no connect and no close, though its
    # errors (network error, timeout, ambiguous) carry its id; the connection timeline leaves them out.
    ended = False

    def __init__(self, config, slot: object = None):
        self.id = connection_ids.next()
        self.context: dict = {}
        self.slot = slot
        self.opened_at = self.last_used = time.monotonic()
        self.sent = 0
        self.usable = True
        self.esp = ESPS_BY_KEY.get(config.esp)
        credentials = parse_credentials(config.esp_credentials)
        self.secrets = credential_secrets(self.esp, credentials) if self.esp else None
        self.session = BoundedSession(config.send_timeout)
        self.label = self.esp.label if self.esp else config.esp
        self.rcptmax = self.esp.recipients_per_call(config.max_batch) if self.esp else 0
        self.backend, self.broken = None, ""
        if self.esp is None:
            self.broken = f"not sent: “{config.esp}” is not an ESP Relaydeck knows"
            return
        try:
            kwargs = self.esp.backend_kwargs(credentials, config.api_url, config.send_timeout)
            self.backend = import_string(self.esp.backend)(**kwargs)
        except Exception as error:  # anymail refused its settings
            self.broken = clean_text(f"not sent: {self.label}'s backend cannot start: {error}", self.secrets)
            return
        self.backend.session = self.session

    def send(self, email, before_send=None) -> ApiReply:
        """Hand `email` (a Django message, see messages.py) to anymail, once."""
        if self.backend is None:
            return ApiReply(INVALID, None, self.broken)
        session = self.session
        session.before_send, session.response = before_send, None
        try:
            self.backend.send_messages([email])
        except BeforeDotFailed:
            raise
        except requests.RequestException as error:  # anymail's API errors are requests' too
            response = error.response if error.response is not None else session.response
            if response is None:
                return self._network_error(error)
            return self._refused_or_unreadable(response)
        except Exception as error:  # AnymailError, or a parser that tripped on the reply
            if session.response is not None:
                return self._refused_or_unreadable(session.response)
            text = str(error) if isinstance(error, AnymailError) else f"{type(error).__name__}: {error}"
            return ApiReply(INVALID, None, clean_text(f"not sent: {self.label} cannot take it: {text}", self.secrets))
        finally:
            session.before_send = None
            self.last_used = time.monotonic()
        if session.response is None:  # anymail found no recipient: it called nothing
            return ApiReply(INVALID, None, "not sent: no recipient")
        self.sent += 1
        statuses = {
            address.lower(): (status.status or "unknown", str(status.message_id or ""))
            for address, status in email.anymail_status.recipients.items()
        }
        return ApiReply(ACCEPTED, session.response.status_code, reply_text(session.response, self.secrets), statuses)

    def _refused_or_unreadable(self, response: requests.Response) -> ApiReply:
        text = reply_text(response, self.secrets)
        if 200 <= response.status_code < 300:
            return ApiReply(UNREADABLE, response.status_code, f"{self.label} accepted the call; its reply: {text}")
        return ApiReply(REFUSED, response.status_code, f"{self.label} API {text}")

    def _network_error(self, error: requests.RequestException) -> ApiReply:
        self.usable = False  # a new session for the next message
        cause = error.__cause__ if isinstance(error.__cause__, Exception) else error
        timed_out = isinstance(error, requests.Timeout)
        outcome = UNSENT if _never_sent(error) else LOST
        text = clean_text(f"{self.label} API: {type(cause).__name__}: {cause}", self.secrets)
        return ApiReply(outcome, None, text, timed_out=timed_out)

    def close(self) -> None:
        self.usable = False
        self.session.close()

    quit = close  # what the pool calls on a connection it retires
