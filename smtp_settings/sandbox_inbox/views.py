"""The sandbox inbox: what the SMTP sandbox received (sandbox_inbox/maildir.py), newest first,
and each message's headers, text, HTML (in a sandboxed frame) and links."""

from django.conf import settings
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from project.htmx import HtmxHttpRequest
from project.roles import Role, role_required
from smtp_settings.sandbox_inbox import maildir

PAGE_SIZE = 50


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
@role_required(Role.ADMIN)
@require_GET
def message_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    message = maildir.message(settings.SANDBOX_INBOX_DIR, name)
    if message is None:
        raise Http404("No such message in the sandbox inbox (only the newest are kept).")
    context = {"message": message, "keep": settings.SANDBOX_INBOX_MESSAGES}
    return render(request, "smtp_settings/sandbox_inbox/detail.html", context)
