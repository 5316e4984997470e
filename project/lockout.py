"""The page django-axes answers with when a username or an address failed to log in too often."""

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    # Every attempt during a lockout starts the cool-off again (django-axes' default), so the
    # lockout ends one cool-off after this one.
    now = timezone.now()
    context = {"now": now, "retry_at": now + get_cool_off(request)}
    return render(request, "registration/locked_out.html", context, status=429)
