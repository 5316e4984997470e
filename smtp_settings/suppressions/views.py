"""The suppression list's page: search and filter, add by hand, import, export, and take an
address off with a reason. Everyone reads; senders write. The queries are in `filters.py`."""

from django.contrib import messages
from django.http import HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from project.forms import filters_in_use
from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_required
from smtp_settings.bounces.record import suppress
from smtp_settings.models import Suppression
from smtp_settings.suppressions import actions, importing
from smtp_settings.suppressions.filters import SuppressionFilterForm, export, export_name, filtered, page, reason_counts
from smtp_settings.suppressions.forms import AddForm, ImportForm, RemoveForm


def _filters(request: HtmxHttpRequest) -> QueryDict:
    return filters_in_use(request.GET, SuppressionFilterForm.FILTERS)


def _back_to_list(request: HtmxHttpRequest) -> HttpResponse:
    filters = _filters(request)
    return redirect_to(request, reverse("suppressions:list") + (f"?{filters.urlencode()}" if filters else ""))


def _render_list(
    request: HtmxHttpRequest,
    add_form: AddForm | None = None,
    import_form: ImportForm | None = None,
    status: int = 200,
) -> HttpResponse:
    form = SuppressionFilterForm(request.GET)
    context = {
        "form": form,
        "filters": _filters(request),
        "counts": reason_counts(),
        "add_form": add_form or AddForm(),
        "import_form": import_form or ImportForm(),
    }
    if not form.is_valid():
        return render(request, "suppressions/list.html", context, status=400)
    before = form.cleaned_data["before"]
    context |= {"page": page(filtered(form.cleaned_data), before), "paged": before is not None}
    return render(request, "suppressions/list.html", context, status=status)


@role_required(Role.VIEWER)
@require_GET
def suppression_list(request: HtmxHttpRequest) -> HttpResponse:
    return _render_list(request)


@role_required(Role.VIEWER)
@require_GET
def suppression_export(request: HtmxHttpRequest) -> HttpResponse:
    form = SuppressionFilterForm(request.GET)
    if not form.is_valid():
        return _render_list(request)
    response = StreamingHttpResponse(export(filtered(form.cleaned_data)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export_name(form.cleaned_data)}"'
    return response


@role_required(Role.SENDER)
@require_POST
def suppression_add(request: HtmxHttpRequest) -> HttpResponse:
    form = AddForm(request.POST)
    if not form.is_valid():
        return _render_list(request, add_form=form, status=400)
    email = form.cleaned_data["email"]
    note = form.cleaned_data["note"] or f"Added by {request.user.get_username()}."
    suppress(email, Suppression.Reason.MANUAL, note)
    messages.success(request, f"{email} is on the suppression list: nothing will be sent to it.")
    return _back_to_list(request)


@role_required(Role.SENDER)
@require_POST
def suppression_import(request: HtmxHttpRequest) -> HttpResponse:
    """Import a CSV file while the sender waits (it is bounded), and show what became of it."""
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        return _render_list(request, import_form=form, status=400)
    upload = form.cleaned_data["file"]
    note = f"Imported by {request.user.get_username()} from “{upload.name}”."
    result = importing.import_csv(upload, note)
    context = {"result": result, "name": upload.name, "max_rows": importing.MAX_ROWS}
    return render(request, "suppressions/imported.html", context)


@role_required(Role.SENDER)
@require_http_methods(["GET", "POST"])
def suppression_remove(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET asks why; POST, with the reason, takes the address off the list."""
    suppression = get_object_or_404(Suppression, pk=pk)
    form = RemoveForm(request.POST if request.method == "POST" else None)
    context = {"suppression": suppression, "form": form, "filters": _filters(request)}
    if request.method == "GET":
        return render(request, "suppressions/confirm_remove.html", context)
    if not form.is_valid():
        return render(request, "suppressions/confirm_remove.html", context, status=400)
    if actions.remove(suppression, form.cleaned_data["reason"], by=request.user.get_username()):
        messages.success(request, f"{suppression.email} is off the suppression list: mail to it goes again.")
    else:
        messages.info(request, f"{suppression.email} was taken off the list already.")
    return _back_to_list(request)
