"""Mailing lists: browse and search subscribers, change them by hand, import CSV files."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_q.tasks import async_task

from campaigns.lists.forms import ImportForm, MailingListForm
from campaigns.models import Campaign, MailingList, Subscriber, SubscriberImport
from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_required
from smtp_settings.bounces.record import suppress
from smtp_settings.models import Suppression

SUBSCRIBERS_PER_PAGE = 50
RECENT_IMPORTS = 5
# A row's status change says so to the list page, whose counts reload (_counts.html); a change of
# who is on the list (an import's end, a Remove) reloads the table too, with its "N matches" and pager.
MEMBERS_CHANGED = "members-changed"
SUBSCRIBERS_CHANGED = "subscribers-changed"


def _get_list_or_404(pk: int) -> MailingList:
    return get_object_or_404(MailingList, pk=pk)


def _get_member_or_404(mailing_list: MailingList, subscriber_pk: int) -> Subscriber:
    return get_object_or_404(mailing_list.subscribers, pk=subscriber_pk)


def _lists_with_counts():
    active = Count("subscribers", filter=Q(subscribers__status=Subscriber.Status.ACTIVE))
    return MailingList.objects.annotate(total=Count("subscribers"), active=active)


def _render_index(request: HtmxHttpRequest, form: MailingListForm, status: int = 200) -> HttpResponse:
    if request.htmx:
        return render(request, "campaigns/lists/_list_form.html", {"form": form})
    return render(request, "campaigns/lists/index.html", {"lists": _lists_with_counts(), "form": form}, status=status)


@role_required(Role.VIEWER)
def list_index(request: HtmxHttpRequest) -> HttpResponse:
    return _render_index(request, MailingListForm())


@role_required(Role.SENDER)
@require_POST
def list_create(request: HtmxHttpRequest) -> HttpResponse:
    form = MailingListForm(request.POST)
    if not form.is_valid():
        return _render_index(request, form, status=400)
    mailing_list = form.save()
    messages.success(request, f"List “{mailing_list.name}” created.")
    return redirect_to(request, "lists:detail", mailing_list.pk)


def _subscribers_context(request: HtmxHttpRequest, mailing_list: MailingList) -> dict:
    query = request.GET.get("q", "").strip()
    subscribers = mailing_list.subscribers.all()
    if query:
        subscribers = subscribers.filter(Q(email__icontains=query) | Q(name__icontains=query))
    page = Paginator(subscribers, SUBSCRIBERS_PER_PAGE).get_page(request.GET.get("page"))
    return {"mailing_list": mailing_list, "query": query, "page": page}


def _counts(mailing_list: MailingList):
    return _lists_with_counts().get(pk=mailing_list.pk)


def _render_detail(
    request: HtmxHttpRequest, mailing_list: MailingList, import_form: ImportForm, status: int = 200
) -> HttpResponse:
    context = _subscribers_context(request, mailing_list) | {
        "counts": _counts(mailing_list),
        "import_form": import_form,
        "imports": mailing_list.imports.all()[:RECENT_IMPORTS],
    }
    return render(request, "campaigns/lists/detail.html", context, status=status)


@role_required(Role.VIEWER)
def list_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    mailing_list = _get_list_or_404(pk)
    # The search box and the pager swap the table alone; a history restore wants the page.
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "campaigns/lists/_subscribers.html", _subscribers_context(request, mailing_list))
    return _render_detail(request, mailing_list, ImportForm())


@role_required(Role.VIEWER)
@require_GET
def list_counts(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The page's "N active of M subscribers": it reloads when an import ends or a row changes."""
    mailing_list = _get_list_or_404(pk)
    context = {"mailing_list": mailing_list, "counts": _counts(mailing_list)}
    return render(request, "campaigns/lists/_counts.html", context)


@role_required(Role.SENDER)
@require_http_methods(["GET", "POST"])
def list_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    mailing_list = _get_list_or_404(pk)
    # A list that campaigns are sending to cannot be deleted from under them.
    sending = mailing_list.campaigns.filter(status__in=Campaign.UNDER_WAY)
    if request.method == "GET":
        return render(
            request, "campaigns/lists/confirm_delete.html", {"mailing_list": mailing_list, "sending": sending}
        )
    if sending.exists():
        names = ", ".join(f"“{campaign.name}”" for campaign in sending)
        return HttpResponse(f"The list is in use by {names}: cancel or finish them first.", status=409)
    mailing_list.delete()
    messages.success(request, f"List “{mailing_list.name}” deleted; its subscribers are kept.")
    return redirect_to(request, "lists:index")


def _render_row(request: HtmxHttpRequest, mailing_list: MailingList, subscriber: Subscriber) -> HttpResponse:
    if request.htmx:
        context = {"mailing_list": mailing_list, "subscriber": subscriber}
        response = render(request, "campaigns/lists/_subscriber_row.html", context)
        response["HX-Trigger"] = MEMBERS_CHANGED
        return response
    return redirect("lists:detail", mailing_list.pk)


@role_required(Role.SENDER)
@require_GET
def confirm_member_action(request: HtmxHttpRequest, pk: int, subscriber_pk: int, action: str) -> HttpResponse:
    """The confirmation a row's Blocklist or Remove asks for without JavaScript (with it, the
    browser's own dialog asks the same question before the POST)."""
    mailing_list = _get_list_or_404(pk)
    subscriber = _get_member_or_404(mailing_list, subscriber_pk)
    context = {"mailing_list": mailing_list, "subscriber": subscriber, "action": action}
    return render(request, "campaigns/lists/confirm_member.html", context)


@role_required(Role.SENDER)
@require_POST
def set_status(request: HtmxHttpRequest, pk: int, subscriber_pk: int, status: str) -> HttpResponse:
    """Unsubscribe, blocklist or reactivate a subscriber of this list (their status holds for
    every list). Blocklisting also puts the address on the suppression list, which reactivating
    leaves as it is (taking it off is for its own page, with a reason)."""
    mailing_list = _get_list_or_404(pk)
    subscriber = _get_member_or_404(mailing_list, subscriber_pk)
    if subscriber.status != status:
        with transaction.atomic():
            subscriber.set_status(status)
            if status == Subscriber.Status.BLOCKLISTED:
                note = f"Blocklisted by {request.user.get_username()} on the list “{mailing_list.name}”."
                suppress(subscriber.email, Suppression.Reason.MANUAL, note)
    if not request.htmx:
        messages.success(request, f"{subscriber.email} is now {subscriber.get_status_display().lower()}.")
    return _render_row(request, mailing_list, subscriber)


@role_required(Role.SENDER)
@require_POST
def remove_subscriber(request: HtmxHttpRequest, pk: int, subscriber_pk: int) -> HttpResponse:
    mailing_list = _get_list_or_404(pk)
    subscriber = _get_member_or_404(mailing_list, subscriber_pk)
    mailing_list.subscribers.remove(subscriber)
    if request.htmx:
        return HttpResponse("", headers={"HX-Trigger": SUBSCRIBERS_CHANGED})  # the row swaps itself out
    messages.success(request, f"{subscriber.email} removed from “{mailing_list.name}”.")
    return redirect("lists:detail", mailing_list.pk)


@role_required(Role.SENDER)
@require_POST
def import_upload(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Keep the uploaded CSV file and queue its import; the status panel follows its progress."""
    mailing_list = _get_list_or_404(pk)
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        if request.htmx:
            return render(request, "campaigns/lists/_import_form.html", {"mailing_list": mailing_list, "form": form})
        return _render_detail(request, mailing_list, form, status=400)
    upload = form.cleaned_data["file"]
    job = SubscriberImport.objects.create(
        mailing_list=mailing_list, file=upload, original_name=upload.name[:255], size_bytes=upload.size
    )
    transaction.on_commit(lambda: async_task("campaigns.tasks.import_csv", job.pk, group=f"import-{job.pk}"))
    if request.htmx:
        context = {"mailing_list": mailing_list, "form": ImportForm(), "job": job}
        return render(request, "campaigns/lists/_import_started.html", context)
    messages.success(request, f"Importing “{job.original_name}”.")
    return redirect("lists:import_status", job.pk)


@role_required(Role.VIEWER)
def import_status(request: HtmxHttpRequest, import_pk: int) -> HttpResponse:
    job = get_object_or_404(SubscriberImport.objects.select_related("mailing_list"), pk=import_pk)
    if not request.htmx:
        return render(request, "campaigns/lists/import.html", {"job": job})
    response = render(request, "campaigns/lists/_import_status.html", {"job": job})
    if job.is_finished and request.GET.get("polling"):
        response["HX-Trigger"] = SUBSCRIBERS_CHANGED  # the list page refreshes its table once
    return response
