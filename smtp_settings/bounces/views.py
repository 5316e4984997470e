"""The bounces page: every bounce, complaint, delay warning and report not understood, with
filters, and one bounce's page with its raw report.

A report holds third parties' addresses and headers (the returned message's, often its
text): only admins see it, shown as text, or download it. What it says is the reporting
server's, or anyone's who sent it: it is escaped, control characters are shown as escapes,
and only its first SHOWN_BYTES are shown.
"""

import re

from django.http import HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from project.forms import filters_in_use
from project.htmx import HtmxHttpRequest
from project.roles import Role, role_of, role_required
from smtp_settings.bounces.filters import BounceFilterForm, filtered_bounces, page
from smtp_settings.models import Bounce

SHOWN_BYTES = 256 * 1024
# Control characters (but tab and line feed), and those that reorder or break lines on a page.
_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _filters(request: HtmxHttpRequest) -> QueryDict:
    return filters_in_use(request.GET, BounceFilterForm.FILTERS)


def report_text(report: bytes) -> str:
    """A raw report as a page shows it: its first SHOWN_BYTES, read as UTF-8 (what is not is
    replaced), one line feed a line, control characters written as escapes."""
    text = report[:SHOWN_BYTES].decode("utf-8", "replace").replace("\r\n", "\n")
    return _UNSHOWN.sub(lambda found: f"\\u{ord(found[0]):04x}", text)


@role_required(Role.VIEWER)
@require_GET
def bounce_list(request: HtmxHttpRequest) -> HttpResponse:
    form = BounceFilterForm(request.GET)
    context = {"form": form, "filters": _filters(request)}
    if not form.is_valid():
        return render(request, "bounces/list.html", context, status=400)
    before = form.cleaned_data["before"]
    context |= {"page": page(filtered_bounces(form.cleaned_data), before), "paged": before is not None}
    return render(request, "bounces/list.html", context)


@role_required(Role.VIEWER)
@require_GET
def bounce_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Everyone sees what a bounce says; only admins its raw report."""
    admin = role_of(request.user) == Role.ADMIN
    shown = Bounce.objects.select_related("server", "mailbox")
    bounce = get_object_or_404(shown if admin else shown.defer("report"), pk=pk)
    context = {
        "bounce": bounce,
        "report": report_text(bytes(bounce.report)) if admin else None,
        "report_kept": len(bounce.report) if admin else 0,
        "report_cut": admin and len(bounce.report) > SHOWN_BYTES,
        "shown_bytes": SHOWN_BYTES,
        "filters": _filters(request),
    }
    return render(request, "bounces/detail.html", context)


@role_required(Role.ADMIN)
@require_GET
def report_download(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The raw report as it was kept, to open in a mail program."""
    report = get_object_or_404(Bounce.objects.only("report"), pk=pk).report
    response = HttpResponse(bytes(report), content_type="message/rfc822")
    response["Content-Disposition"] = f'attachment; filename="bounce-{pk}.eml"'
    return response
