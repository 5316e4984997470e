"""anymail's tracking webhooks, behind Relaydeck's rules.

anymail's view for each ESP checks the ESP's signature where it has one, reads the ESP's
payload and sends anymail's `tracking` signal (received in `tracking.py`). Around it:

- Without ANYMAIL_WEBHOOK_SECRET there are no webhooks: every request gets 403 and the log says
  why. (anymail alone would only warn, and take posts from anyone.)
- HTTP basic auth with that secret, always, also from ESPs that sign their posts: 401 without.
- A signing key the ESP's view needs but does not have, or a wrong signature: 403.
- A payload anymail cannot read, or an event to act on that names neither its recipient nor
  its message: 400, before any event of the post is acted on. (anymail answers most of them
  with a 500, which ESPs retry for days.)
- An error while acting on an event is a 500: the ESP posts the events again later, and those
  already acted on change nothing the second time (`tracking.py`).

These are public URLs: no login (the secret and the signatures are the authentication) and no
CSRF token (the ESP has none).
"""

import logging
from collections.abc import Callable

from anymail.exceptions import AnymailError, AnymailWebhookValidationFailure
from anymail.utils import get_request_basic_auth
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import BadRequest, ImproperlyConfigured, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt

from smtp_settings.webhooks.tracking import ACTED_ON, address_of, message_id_of

logger = logging.getLogger(__name__)

REASON_LIMIT = 300  # characters of anymail's explanation in an answer (some quote the payload)
# What anymail's parsers raise on a payload of the wrong shape (a list for a dict, a missing
# field, bad JSON) or kind (an inbound post to a tracking URL).
_UNREADABLE = (ValueError, LookupError, TypeError, AttributeError, AnymailError, ImproperlyConfigured)


class MalformedPayload(BadRequest):
    """The post cannot be read, or names nothing an event could be acted on for."""


def _strict(view_class: type) -> type:
    """anymail's view class, turning whatever a malformed payload makes it raise into
    MalformedPayload, and checking every event before any is sent."""

    class Strict(view_class):
        def run_validators(self, request):
            try:
                super().run_validators(request)
            except AnymailWebhookValidationFailure as error:
                if isinstance(error.__cause__, ValueError):  # Mailgun's: no JSON to find the signature in
                    raise MalformedPayload(str(error)) from error
                raise
            except _UNREADABLE as error:
                raise MalformedPayload(_reason(error)) from error

        def parse_events(self, request):
            try:
                events = super().parse_events(request)
            except _UNREADABLE as error:
                raise MalformedPayload(_reason(error)) from error
            for event in events:
                if event.event_type in ACTED_ON and not (address_of(event) or message_id_of(event)):
                    raise MalformedPayload(f"a {event.event_type} event names neither its recipient nor its message")
            return events

    Strict.__name__ = Strict.__qualname__ = view_class.__name__
    return Strict


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"


def _answer(status: int, reason: str) -> HttpResponse:
    return HttpResponse(reason[:REASON_LIMIT], status=status, content_type="text/plain; charset=utf-8")


def _secrets() -> list[str]:
    secrets = settings.ANYMAIL.get("WEBHOOK_SECRET") or []
    return [secrets] if isinstance(secrets, str) else secrets


def tracking_webhook(anymail_view: Callable) -> Callable:
    """The view for one of anymail's tracking URLs, as the module docstring describes."""
    view = _strict(anymail_view.view_class).as_view(**anymail_view.view_initkwargs)

    @login_not_required
    @csrf_exempt
    def webhook(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        secrets = _secrets()
        if not secrets:
            logger.warning("Refused a request to %s: ANYMAIL_WEBHOOK_SECRET is not set", request.path)
            return _answer(403, "ESP webhooks are off: ANYMAIL_WEBHOOK_SECRET is not set.")
        given = get_request_basic_auth(request) or ""
        if not any(constant_time_compare(given, secret) for secret in secrets):
            response = _answer(401, "Wrong or missing credentials: HTTP basic auth with ANYMAIL_WEBHOOK_SECRET.")
            response["WWW-Authenticate"] = 'Basic realm="Relaydeck webhooks"'
            return response
        try:
            return view(request, *args, **kwargs)
        except ImproperlyConfigured as error:  # raised as the view is made: a signing key is missing
            logger.error("Refused a request to %s: %s", request.path, error)
            return _answer(403, "This ESP's webhook is not configured; the server's log says what is missing.")
        except MalformedPayload as error:
            return _answer(400, f"Malformed payload: {error}")
        except AnymailWebhookValidationFailure as error:
            logger.warning("Refused a request to %s: %s", request.path, error)
            return _answer(403, str(error))
        except SuspiciousOperation as error:  # a body over DATA_UPLOAD_MAX_MEMORY_SIZE, say
            return _answer(400, f"Refused: {error}")

    return webhook
