"""The sandbox inbox: what the SMTP sandbox received (sandbox_inbox/maildir.py), newest first,
and each message's headers, text, HTML (in a sandboxed frame) and links.

The HTML part is served from an address of its own, as the campaign preview's is, under the
message-frame policy (project/message_frames.py) with two changes: nothing is fetched from
elsewhere (a received message's remote images are its sender's trackers), and its links may
open, in a new tab, outside the frame's sandbox (our pages refuse to be framed)."""

from csp.decorators import csp
from django.conf import settings
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from project.htmx import HtmxHttpRequest
from project.message_frames import MESSAGE_POLICY
from project.roles import Role, role_required
from smtp_settings.sandbox_inbox import maildir

PAGE_SIZE = 50
HTML_POLICY = MESSAGE_POLICY | {"img-src": ["data:"], "sandbox": ["allow-popups", "allow-popups-to-escape-sandbox"]}
NEW_TAB = '<base target="_blank">'  # first: a base element the message has comes after, and counts for nothing


@role_required(Role.VIEWER)
@require_GET
def message_list(request: HtmxHttpRequest) -> HttpResponse:
    before = request.GET.get("before")
    before = before if before and maildir.NAME.fullmatch(before) else None
    page = maildir.page(settings.SANDBOX_INBOX_DIR, before, PAGE_SIZE)
    context = {"page": page, "before": before, "keep": settings.SANDBOX_INBOX_MESSAGES}
    return render(request, "smtp_settings/sandbox_inbox/list.html", context)


# An admin's, as an outbox message's text is: an application pointed at the sandbox may send
# password-reset links and one-time codes.
def _message_or_404(name: str) -> maildir.Message:
    message = maildir.message(settings.SANDBOX_INBOX_DIR, name)
    if message is None:
        raise Http404("No such message in the sandbox inbox (only the newest are kept).")
    return message


@role_required(Role.ADMIN)
@require_GET
def message_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    context = {"message": _message_or_404(name), "keep": settings.SANDBOX_INBOX_MESSAGES}
    return render(request, "smtp_settings/sandbox_inbox/detail.html", context)


@role_required(Role.ADMIN)
@require_GET
@xframe_options_sameorigin
@csp(HTML_POLICY)
def message_html(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """The HTML part alone, as sent, for the message page's frame; its links open in a new tab."""
    html = _message_or_404(name).reading.html
    if html is None:  # the message page says so
        raise Http404("This message has no HTML part.")
    return HttpResponse(NEW_TAB + html)
