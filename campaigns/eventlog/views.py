"""The event log: the filtered table with its counts per kind and live tail, the CSV export,
and a campaign's own events for its page. The queries are in `filters.py`."""

from django.db.models import QuerySet
from django.http import HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from campaigns.eventlog.charts import campaign_chart
from campaigns.eventlog.connections import ConnectionsForm, lane_page, picture
from campaigns.eventlog.filters import (
    LogFilterForm,
    csv_chunks,
    export_name,
    filtered_events,
    newer_than,
    page,
    summary,
    time_window,
)
from campaigns.eventlog.panel import campaign_panel
from campaigns.models import Campaign
from campaigns.views import polled_campaign
from project.forms import filters_in_use
from project.htmx import HtmxHttpRequest
from project.roles import Role, role_required


def _filters(request: HtmxHttpRequest) -> QueryDict:
    return filters_in_use(request.GET, LogFilterForm.FILTERS)


def _bad_filters(request: HtmxHttpRequest, form: LogFilterForm) -> HttpResponse:
    return render(request, "logs/list.html", {"form": form, "filters": _filters(request)}, status=400)


def _counts(request: HtmxHttpRequest, cleaned: dict, events: QuerySet) -> dict:
    """What `logs/_counts.html` shows: the counts per kind of the filter's events in its time
    window, and that window when it is not the filter's own range."""
    window = time_window(cleaned)
    return {
        "filters": _filters(request),
        # A text search is in the window already.
        "counts": summary(events if cleaned["q"] else filtered_events(cleaned, windowed=True)),
        "window": window if window != (cleaned["since"], cleaned["until"]) else None,
    }


def campaign_events_context(campaign: Campaign) -> dict:
    """What `campaigns/_events.html` shows on the campaign's page."""
    counts, chart = campaign_panel(campaign)
    return {"event_counts": counts, "event_filters": QueryDict(f"campaign={campaign.pk}"), "chart": chart}


@role_required(Role.VIEWER)
@require_GET
def event_list(request: HtmxHttpRequest) -> HttpResponse:
    form = LogFilterForm(request.GET)
    if not form.is_valid():
        return _bad_filters(request, form)
    cleaned = form.cleaned_data
    events = filtered_events(cleaned)
    if request.htmx and request.htmx.target == "log-counts":  # the live tail's counts, on their slower poll
        return render(request, "logs/_counts.html", _counts(request, cleaned, events))
    if request.htmx and cleaned["after"] is not None:  # the live tail: what is new
        return render(request, "logs/_rows.html", {"events": newer_than(events, cleaned["after"]), "live": True})
    campaign = cleaned["campaign"]
    context = {
        "form": form,
        "page": page(events, before=cleaned["before"], after=cleaned["after"]),
        "paged": cleaned["before"] is not None or cleaned["after"] is not None,
        "campaign": campaign,
        "chart": campaign_chart(campaign) if campaign else None,
        **_counts(request, cleaned, events),
    }
    return render(request, "logs/list.html", context)


@role_required(Role.VIEWER)
@require_GET
def event_export(request: HtmxHttpRequest) -> HttpResponse:
    form = LogFilterForm(request.GET)
    if not form.is_valid():
        return _bad_filters(request, form)
    response = StreamingHttpResponse(
        csv_chunks(filtered_events(form.cleaned_data)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{export_name(form.cleaned_data)}"'
    return response


@role_required(Role.VIEWER)
@require_GET
def connection_timeline(request: HtmxHttpRequest) -> HttpResponse:
    """One lane per SMTP connection of a campaign or a time range, a page at a time."""
    form = ConnectionsForm(request.GET)
    filters = filters_in_use(request.GET, ConnectionsForm.FILTERS)
    if not form.is_valid():
        return render(request, "logs/connections.html", {"form": form, "filters": filters}, status=400)
    lanes = lane_page(form.cleaned_data, after=form.cleaned_data["after"])
    context = {"form": form, "filters": filters, "page": lanes, "picture": picture(lanes)}
    return render(request, "logs/connections.html", context)


@role_required(Role.VIEWER)
@require_GET
@polled_campaign
def campaign_events(request: HtmxHttpRequest, campaign: Campaign) -> HttpResponse:
    """The campaign page's events block, polled while the campaign runs."""
    return render(request, "campaigns/_events.html", {"campaign": campaign, **campaign_events_context(campaign)})
