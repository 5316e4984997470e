"""Launch, pause, resume, cancel and retry a campaign, and its live progress block.

Each action is a conditional state change on the model: a double click, or a click racing a
worker, changes nothing twice. htmx gets the progress block back; a plain POST redirects.
"""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.http import require_GET, require_POST

from campaigns.models import Campaign
from campaigns.progress import progress as campaign_progress
from campaigns.views import get_campaign_or_404
from project.htmx import HtmxHttpRequest
from project.roles import Role, role_required


def _render_progress(request: HtmxHttpRequest, campaign: Campaign) -> HttpResponse:
    context = {"campaign": campaign, "progress": campaign_progress(campaign)}
    return render(request, "campaigns/_progress.html", context)


def _acted(request: HtmxHttpRequest, campaign: Campaign, done: bool, verb: str) -> HttpResponse:
    if not done:
        messages.error(request, f"“{campaign.name}” is {campaign.get_status_display().lower()}: nothing to {verb}.")
    if request.htmx:
        return _render_progress(request, campaign)
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
@require_POST
def cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign_or_404(pk)
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
def progress(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _render_progress(request, get_campaign_or_404(pk))
