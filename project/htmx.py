from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, resolve_url
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    """A request as HtmxMiddleware leaves it, for type hints in views."""

    htmx: HtmxDetails


def redirect_to(request: HtmxHttpRequest, to: str, *args, **kwargs) -> HttpResponse:
    """Go to another page after a POST: htmx is told to load it as a whole (a 3xx would be
    followed by the XMLHttpRequest and its page swapped into the target); a plain POST is
    redirected. `to`, `args` and `kwargs` are read as by `django.shortcuts.redirect`."""
    url = resolve_url(to, *args, **kwargs)
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
