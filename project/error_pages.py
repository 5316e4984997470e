"""The styled error pages (templates/400.html, 404.html, 500.html), also while DEBUG is on.

With DEBUG off Django shows them itself. With DEBUG on, as in the default `make run`, it
would show its technical pages instead: the URL patterns for an unknown address, and a
traceback with settings for an error or a bad request (a forged Host header, a request too
large), wherever it is raised, in a view or in a middleware. Unless a developer asks for the
technical pages with DEBUG_PAGES=1:
- `StyledErrorReporter`, the DEBUG page's reporter, renders the styled 400 or 500 page in
  place of the traceback (Django still logs the error, with its traceback, to the console);
- `StyledErrorPagesMiddleware` answers an unknown address, or a view's Http404, with the
  styled 404.
"""

from django.conf import settings
from django.core.exceptions import BadRequest, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views import defaults
from django.views.debug import ExceptionReporter


def _styled() -> bool:
    return settings.DEBUG and not settings.DEBUG_PAGES


class StyledErrorReporter(ExceptionReporter):
    """Django's DEBUG page for an error (`technical_500_response`) asks this for its body;
    error e-mails (DEBUG off only) and DEBUG_PAGES=1 get the technical report as before."""

    def _bad_request(self) -> bool:
        return isinstance(self.exc_value, (BadRequest, SuspiciousOperation))

    def get_traceback_html(self) -> str:
        if not _styled():
            return super().get_traceback_html()
        return render_to_string("400.html" if self._bad_request() else "500.html")

    def get_traceback_text(self) -> str:
        if not _styled():
            return super().get_traceback_text()
        return "Bad Request (400)\n" if self._bad_request() else "Server Error (500)\n"


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
        if _styled() and isinstance(exception, Http404):  # a view's: Django would show its technical 404
            return defaults.page_not_found(request, exception)
        return None
