"""The HTTP API's two views. They need no login and no CSRF token, but a bearer token: the
key is looked up by its SHA-256, so no comparison of secrets can leak timing. Errors are JSON,
`{"error": …, "field": …}`: 400 for bad input, 401 (with WWW-Authenticate) for a missing,
wrong or revoked token, 404 for a message the token did not submit."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from smtp_settings.api.submission import max_body_bytes, submit, submitter
from smtp_settings.models import ApiToken, OutboxMessage
from smtp_settings.outbox.queue import Refused


def _error(text: str, field: str | None, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": text, "field": field or None}, status=status)


def _unauthorized(presented: bool) -> JsonResponse:
    response = _error(
        "this API token is wrong or revoked" if presented else "send an API token: Authorization: Bearer <key>",
        "Authorization",
        status=401,
    )
    response["WWW-Authenticate"] = 'Bearer realm="Relaydeck"' + (', error="invalid_token"' if presented else "")
    return response


def token_required(view: Callable) -> Callable:
    """Call `view(request, token, ...)` with the enabled token whose key the request bears;
    answer 401 without one. A token is marked used, to the minute."""

    @wraps(view)
    def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        token = ApiToken.objects.filter(key_hash=ApiToken.hash(key), enabled=True).first() if key else None
        if token is None:
            return _unauthorized(presented=bool(key))
        token.mark_used()
        return view(request, token, *args, **kwargs)

    return checked


@login_not_required
@csrf_exempt
@require_POST
@token_required
def submit_message(request: HttpRequest, token: ApiToken) -> HttpResponse:
    limit = max_body_bytes()
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return _error("Content-Length must be a number", None)
    body = b"" if declared > limit else request.read(limit + 1)
    if declared > limit or len(body) > limit:
        return _error(f"the request body is larger than {limit:,} bytes", None)
    try:
        message = submit(body, token)
    except Refused as refused:
        return _error(str(refused), refused.field)
    return JsonResponse({"id": message.pk, "status": message.status}, status=201)


@login_not_required
@csrf_exempt
@require_GET
@token_required
def message_status(request: HttpRequest, token: ApiToken, pk: int) -> HttpResponse:
    mine = OutboxMessage.objects.filter(source=OutboxMessage.Source.API, submitted_by=submitter(token))
    message = mine.select_related("server").defer("data").filter(pk=pk).first()
    if message is None:
        return _error(f"no message {pk} sent with this token", "id", status=404)
    return JsonResponse(
        {
            "id": message.pk,
            "status": message.status,
            "attempts": message.attempts,
            "last_code": message.last_code,
            "last_reply": message.last_reply,
            "server": message.server.name if message.server else None,
            "message_id": message.message_id,
            "created_at": message.created_at,
            "sent_at": message.sent_at,
            "next_attempt_at": message.next_attempt_at,
        }
    )
