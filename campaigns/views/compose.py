"""Writing campaigns: the list, the form, the detail page and a test message (sent by
`campaigns/test_message.py`).

Launching and the live progress block are in `control.py`, previews in `preview.py`.
"""

from django.contrib import messages
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_http_methods, require_POST

from campaigns.eventlog.views import campaign_events_context
from campaigns.forms import CampaignForm, PreviewAsForm, TestSendForm
from campaigns.models import Campaign
from campaigns.progress import Progress, counts_by_campaign, reach_by_campaign
from campaigns.progress import progress as campaign_progress
from campaigns.test_message import send_test_message
from campaigns.views import get_campaign_or_404
from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_required

SAVED_FIELDS = [name for name in CampaignForm.Meta.fields if name not in ("lists", "servers")]


def _render_form(request: HtmxHttpRequest, form: CampaignForm, campaign: Campaign | None) -> HttpResponse:
    template = "campaigns/_form.html" if request.htmx else "campaigns/form.html"
    # "Preview as" is kept as typed, but only the Preview button checks it.
    preview_form = PreviewAsForm(initial={"preview_as": request.POST.get("preview_as", "")})
    return render(request, template, {"form": form, "campaign": campaign, "preview_form": preview_form})


def _to_detail(request: HtmxHttpRequest, campaign: Campaign) -> HttpResponse:
    return redirect_to(request, "campaigns:detail", pk=campaign.pk)


def _not_editable(request: HtmxHttpRequest, campaign: Campaign) -> HttpResponse:
    messages.error(
        request, f"“{campaign.name}” is {campaign.get_status_display().lower()}: it can no longer be edited."
    )
    return _to_detail(request, campaign)


def _save_if_editable(form: CampaignForm) -> bool:
    """Save the form, fields and lists together, unless the campaign left draft/scheduled
    meanwhile (launched in another tab, say). Only the form's fields are written, so a
    counter or status a sender just changed is never overwritten."""
    with transaction.atomic():
        if not Campaign.objects.select_for_update().filter(pk=form.instance.pk, status__in=Campaign.EDITABLE).exists():
            return False
        campaign = form.save(commit=False)
        campaign.save(update_fields=[*SAVED_FIELDS, "updated_at"])
        form.save_m2m()
        if campaign.scheduled_at is None:
            campaign.unschedule()  # a scheduled campaign without a time goes back to draft
    return True


@role_required(Role.VIEWER)
def campaign_list(request: HtmxHttpRequest) -> HttpResponse:
    campaigns = list(Campaign.objects.all())
    counts = counts_by_campaign([campaign.pk for campaign in campaigns])
    reach = reach_by_campaign([campaign.pk for campaign in campaigns if campaign.is_editable])
    rows = [Progress(campaign, counts[campaign.pk], reach=reach.get(campaign.pk)) for campaign in campaigns]
    return render(request, "campaigns/list.html", {"rows": rows})


@role_required(Role.SENDER)
@require_http_methods(["GET", "POST"])
def campaign_create(request: HtmxHttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _render_form(request, CampaignForm(), None)
    form = CampaignForm(request.POST)
    if not form.is_valid():
        return _render_form(request, form, None)
    with transaction.atomic():
        campaign = form.save()
    messages.success(request, f"Campaign “{campaign.name}” created.")
    return _to_detail(request, campaign)


@role_required(Role.SENDER)
@require_http_methods(["GET", "POST"])
def campaign_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign_or_404(pk)
    if not campaign.is_editable:
        return _not_editable(request, campaign)
    if request.method == "GET":
        return _render_form(request, CampaignForm(instance=campaign), campaign)
    form = CampaignForm(request.POST, instance=campaign)
    if not form.is_valid():
        return _render_form(request, form, campaign)
    if not _save_if_editable(form):
        return _not_editable(request, get_campaign_or_404(pk))
    messages.success(request, f"Campaign “{campaign.name}” saved.")
    return _to_detail(request, campaign)


@role_required(Role.VIEWER)
def campaign_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_object_or_404(Campaign.objects.prefetch_related("lists", "servers"), pk=pk)
    context = {
        "campaign": campaign,
        "progress": campaign_progress(campaign),
        "test_form": TestSendForm(),
        **campaign_events_context(campaign),
    }
    return render(request, "campaigns/detail.html", context)


@role_required(Role.SENDER)
@require_POST
def campaign_test_send(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign_or_404(pk)
    form = TestSendForm(request.POST)
    test = send_test_message(campaign, form.cleaned_data["to_email"]) if form.is_valid() else None
    context = {"campaign": campaign, "test_form": form, "test": test}
    if request.htmx:
        return render(request, "campaigns/_test_send_result.html", context)
    status = 400 if test is None else 200
    return render(request, "campaigns/test_send.html", context, status=status)


@role_required(Role.SENDER)
@require_http_methods(["GET", "POST"])
def campaign_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    campaign = get_campaign_or_404(pk)
    if not campaign.is_deletable:
        return _not_deletable(request, campaign)
    if request.method == "GET":
        return render(request, "campaigns/confirm_delete.html", {"campaign": campaign})
    # Conditional, so that a campaign launched meanwhile is not deleted.
    deleted, _ = Campaign.objects.filter(pk=pk, status__in=Campaign.DELETABLE).delete()
    if not deleted:
        return _not_deletable(request, get_campaign_or_404(pk))
    messages.success(request, f"Campaign “{campaign.name}” deleted.")
    return redirect_to(request, "campaigns:list")


def _not_deletable(request: HtmxHttpRequest, campaign: Campaign) -> HttpResponse:
    messages.error(request, f"“{campaign.name}” is {campaign.get_status_display().lower()}: cancel it to delete it.")
    return _to_detail(request, campaign)
