"""The outbox page: the messages with their last reply, filters, live counts and the chart,
one message's page, and requeue and delete, one at a time or by the filter in use.

The actions' rules are in `actions.py`. A plain POST is redirected back to the list with the
filters it came from (the form's URL carries them); htmx gets the updated row, or nothing
when the row is gone.
"""

from django.contrib import messages
from django.http import HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from project.forms import filters_in_use
from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_of, role_required
from smtp_settings.models import OutboxMessage, SmtpServer
from smtp_settings.outbox import actions
from smtp_settings.outbox.charts import outbox_chart
from smtp_settings.outbox.filters import LISTED, OutboxFilterForm, filtered_messages, page, status_counts
from smtp_settings.outbox.reading import read


def _filters(request: HtmxHttpRequest) -> QueryDict:
    return filters_in_use(request.GET, OutboxFilterForm.FILTERS)


def _back_to_list(request: HtmxHttpRequest) -> HttpResponse:
    filters = _filters(request)
    return redirect_to(request, reverse("outbox:list") + (f"?{filters.urlencode()}" if filters else ""))


def _render_row(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    message = OutboxMessage.objects.select_related("server").only(*LISTED).filter(pk=pk).first()
    if message is None:
        return HttpResponse("")
    return render(request, "smtp_settings/outbox/_row.html", {"message": message, "filters": _filters(request)})


@role_required(Role.VIEWER)
@require_GET
def message_list(request: HtmxHttpRequest) -> HttpResponse:
    form = OutboxFilterForm(request.GET)
    context = {"form": form, "filters": _filters(request), "counts": status_counts()}
    if not form.is_valid():
        return render(request, "smtp_settings/outbox/list.html", context, status=400)
    before = form.cleaned_data["before"]
    context |= {"page": page(filtered_messages(form.cleaned_data), before), "paged": before is not None}
    return render(request, "smtp_settings/outbox/list.html", {**context, "chart": outbox_chart()})


@role_required(Role.VIEWER)
@require_GET
def live_counts(request: HtmxHttpRequest) -> HttpResponse:
    """The counts per status: the page polls this every 2 seconds."""
    return render(request, "smtp_settings/outbox/_counts.html", {"counts": status_counts()})


@role_required(Role.VIEWER)
@require_GET
def live_chart(request: HtmxHttpRequest) -> HttpResponse:
    """The chart: the page polls this every 10 seconds."""
    return render(request, "smtp_settings/outbox/_chart.html", {"chart": outbox_chart()})


@role_required(Role.VIEWER)
@require_GET
def message_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Everyone sees a message's envelope, status and last reply; only admins its headers and
    text, which may hold password-reset links and one-time codes."""
    admin = role_of(request.user) == Role.ADMIN
    shown = OutboxMessage.objects.select_related("server")
    message = get_object_or_404(shown if admin else shown.defer("data"), pk=pk)
    context = {
        "message": message,
        "route": SmtpServer.objects.filter(pk__in=message.route).order_by("name"),
        "reading": read(bytes(message.data)) if admin else None,
        "filters": _filters(request),
    }
    return render(request, "smtp_settings/outbox/detail.html", context)


def _act_on_one(request: HtmxHttpRequest, pk: int, act, verb: str, refusal: str) -> HttpResponse:
    """`act` on message `pk`; htmx gets its row back as it now is (or nothing, once gone)."""
    get_object_or_404(OutboxMessage.objects.only("pk"), pk=pk)
    done = act(OutboxMessage.objects.filter(pk=pk))
    if request.htmx:
        return _render_row(request, pk)
    if done:
        messages.success(request, f"Message {pk} {verb}.")
    else:
        messages.error(request, f"Message {pk} {refusal}.")
    return _back_to_list(request)


@role_required(Role.SENDER)
@require_POST
def requeue(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _act_on_one(
        request, pk, actions.requeue, "queued again", "is not deferred, failed or skipped: nothing to requeue"
    )


@role_required(Role.SENDER)
@require_POST
def delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return _act_on_one(request, pk, actions.delete, "deleted", "is being sent: it cannot be deleted now")


def _by_filter(request: HtmxHttpRequest, act, which, label: str, what: str, verb: str) -> HttpResponse:
    """`act` on every message the filter (in the form's URL) selects, once confirmed: a POST
    without `confirm` says how many of them (`which`) it would change, and asks."""
    form = OutboxFilterForm(request.GET)
    context = {"form": form, "filters": _filters(request), "label": label, "what": what, "verb": verb}
    if not form.is_valid():
        return render(request, "smtp_settings/outbox/confirm.html", context, status=400)
    selected = filtered_messages(form.cleaned_data)
    if request.POST.get("confirm") != "yes":
        return render(request, "smtp_settings/outbox/confirm.html", {**context, "count": which(selected).count()})
    done = act(selected)
    messages.success(request, f"{done} message{pluralize(done)} {verb}.")
    return _back_to_list(request)


@role_required(Role.SENDER)
@require_POST
def requeue_filtered(request: HtmxHttpRequest) -> HttpResponse:
    return _by_filter(
        request, actions.requeue, actions.requeuable, "Requeue", "deferred, failed or skipped message", "queued again"
    )


@role_required(Role.SENDER)
@require_POST
def delete_filtered(request: HtmxHttpRequest) -> HttpResponse:
    return _by_filter(request, actions.delete, actions.deletable, "Delete", "message", "deleted")
