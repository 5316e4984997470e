"""Launch, pause, resume, cancel and retry a campaign, and its live progress block.

Each action is a conditional state change on the model: a double click, or a click racing a
worker, changes nothing twice. htmx gets the progress block back; a plain POST redirects.
"""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from campaigns.models import Campaign
from campaigns.progress import progress as campaign_progress
from campaigns.views import get_campaign_or_404, polled_campaign
from project.htmx import HtmxHttpRequest
from project.roles import Role, role_required

# Told to the page when the campaign's status is not the one it shows: the parts of the page
# that depend on it (its links, its events) fetch themselves again.
STATUS_CHANGED = "campaign-status"


def _render_progress(request: HtmxHttpRequest, campaign: Campaign, shown: str | None) -> HttpResponse:
    context = {"campaign": campaign, "progress": campaign_progress(campaign)}
    response = render(request, "campaigns/_progress.html", context)
    if shown != campaign.status:
        response["HX-Trigger"] = STATUS_CHANGED
    return response


def _acted(request: HtmxHttpRequest, campaign: Campaign, done: bool, verb: str) -> HttpResponse:
    if not done:
        messages.error(request, f"“{campaign.name}” is {campaign.get_status_display().lower()}: nothing to {verb}.")
    if request.htmx:
        return _render_progress(request, campaign, shown=None)  # a click: whatever it did, the rest follows
    return redirect("campaigns:detail", pk=campaign.pk)


@role_required(Role.SENDER)
@require_POST
def launch(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign_or_404(pk)
    if not campaign.servers.filter(enabled=True).exists():
        messages.error(request, "Choose at least one enabled SMTP server before launching.")
        return _acted(request, campaign, True, "launch")
    return _acted(request, campaign, campaign.launch(), "launch")


@role_required(Role.SENDER)
@require_POST
def pause(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign_or_404(pk)
    return _acted(request, campaign, campaign.pause("Paused by hand."), "pause")


@role_required(Role.SENDER)
@require_POST
def resume(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign_or_404(pk)
    return _acted(request, campaign, campaign.resume(), "resume")


@role_required(Role.SENDER)
@require_http_methods(["GET", "POST"])
def cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET asks first (the button without JavaScript; with it, the browser asks)."""
    campaign = get_campaign_or_404(pk)
    if request.method == "GET":
        if not campaign.can_cancel:
            return _acted(request, campaign, False, "cancel")
        return render(request, "campaigns/confirm_cancel.html", {"campaign": campaign})
    return _acted(request, campaign, campaign.cancel(), "cancel")


def _requeued_message(campaign: Campaign, requeued: int) -> str:
    """Retrying means different things by status: say which."""
    queued = f"{requeued} failed deliver{pluralize(requeued, 'y,ies')} queued again"
    if campaign.can_resume:  # paused: nothing goes out until someone resumes it
        return f"{queued}; {pluralize(requeued, 'it goes,they go')} out when you resume the campaign."
    return f"{queued}; sending {pluralize(requeued, 'it,them')} now."  # running, or finished and restarted


@role_required(Role.SENDER)
@require_POST
def retry_failed(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign_or_404(pk)
    requeued = campaign.retry_failed()
    if requeued:
        messages.success(request, _requeued_message(campaign, requeued))
    return _acted(request, campaign, bool(requeued), "retry")


@role_required(Role.VIEWER)
@require_GET
@polled_campaign
def progress(request: HtmxHttpRequest, campaign: Campaign) -> HttpResponse:
    """The progress block, polled; `shown` is the status the page shows. Before the launch
    the block changes only with the status (its reach is counted when the page shows it):
    until then a poll gets nothing to redraw."""
    shown = request.GET.get("shown")
    if campaign.is_editable and shown == campaign.status:
        return HttpResponse(status=204)
    return _render_progress(request, campaign, shown)


@role_required(Role.VIEWER)
@require_GET
@polled_campaign
def links(request: HtmxHttpRequest, campaign: Campaign) -> HttpResponse:
    """The page's links (Edit and Delete come and go with the status), fetched again when it changes."""
    return render(request, "campaigns/_links.html", {"campaign": campaign})
