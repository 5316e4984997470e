"""The styled 404 and 500 pages (templates/404.html, 500.html), also while DEBUG is on.

With DEBUG off Django shows them itself. With DEBUG on, as in the default `make run`, it would
show its technical pages instead: the URL patterns for an unknown address, a traceback and
settings for an error. This middleware shows the styled pages then too, unless a developer
asks for the technical ones with DEBUG_PAGES=1. An error is still logged, with its traceback,
to the console.
"""

import logging

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.core.signals import got_request_exception
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults

logger = logging.getLogger("django.request")

# Django answers these with a 400 or 403 of its own, DEBUG or not.
ANSWERED_BY_DJANGO = (BadRequest, PermissionDenied, SuspiciousOperation)


def _styled() -> bool:
    return settings.DEBUG and not settings.DEBUG_PAGES


class StyledErrorPagesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if _styled() and response.status_code == 404 and request.resolver_match is None:
            # No URL pattern matched, and Django answered with its technical 404 page.
            return defaults.page_not_found(request, Http404(request.path))
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not _styled() or isinstance(exception, ANSWERED_BY_DJANGO):
            return None
        if isinstance(exception, Http404):
            return defaults.page_not_found(request, exception)
        got_request_exception.send(sender=None, request=request)
        logger.error(
            "Internal Server Error: %s",
            request.path,
            exc_info=exception,
            extra={"status_code": 500, "request": request},
        )
        response = defaults.server_error(request)
        response._has_been_logged = True  # logged above, with the traceback: Django need not again
        return response
