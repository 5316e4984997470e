"""Login throttling with django-axes: whose address a login comes from, and the page it
answers with when a username or an address failed to log in too often."""

from axes.helpers import get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    # Every attempt during a lockout starts the cool-off again (django-axes' default), so the
    # lockout ends one cool-off after this one.
    now = timezone.now()
    context = {"now": now, "retry_at": now + get_cool_off(request)}
    return render(request, "registration/locked_out.html", context, status=429)


def client_address(request: HttpRequest) -> str:
    """The address a login came from. Behind a TLS proxy (BEHIND_TLS_PROXY) every request
    comes from the proxy, so the address is the last one the proxy appended to
    X-Forwarded-For; earlier entries are whatever the client claimed."""
    if settings.BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").rpartition(",")[2].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR", "")
