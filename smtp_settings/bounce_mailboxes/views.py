"""The bounce mailboxes page: mailboxes Relaydeck reads bounces and complaints from (viewers
read it; admins add, edit, check and test). A mailbox's password is never sent back."""

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_required
from smtp_settings.bounce_mailboxes.forms import BounceMailboxForm
from smtp_settings.bounces.mailboxes import CheckResult, check, probe
from smtp_settings.models import BounceMailbox


def _get_mailbox_or_404(pk: int) -> BounceMailbox:
    return get_object_or_404(BounceMailbox, pk=pk)


def _render_card(request: HtmxHttpRequest, mailbox: BounceMailbox, result: CheckResult | None = None):
    return render(request, "smtp_settings/bounce_mailboxes/_mailbox_card.html", {"mailbox": mailbox, "result": result})


def _render_form(request: HtmxHttpRequest, form: BounceMailboxForm, mailbox: BounceMailbox | None) -> HttpResponse:
    context = {"form": form, "mailbox": mailbox}
    return render(request, "smtp_settings/bounce_mailboxes/form.html", context, status=400 if form.errors else 200)


@role_required(Role.VIEWER)
@require_GET
def mailbox_list(request: HtmxHttpRequest) -> HttpResponse:
    return render(request, "smtp_settings/bounce_mailboxes/list.html", {"mailboxes": BounceMailbox.objects.all()})


@role_required(Role.ADMIN)
@sensitive_post_parameters("password")
@require_http_methods(["GET", "POST"])
def mailbox_create(request: HtmxHttpRequest) -> HttpResponse:
    form = BounceMailboxForm(request.POST or None, initial={"port": 993})
    if request.method == "POST" and form.is_valid():
        mailbox = form.save()
        messages.success(request, f"Bounce mailbox “{mailbox.name}” added.")
        return redirect_to(request, "bounce_mailboxes:list")
    return _render_form(request, form, None)


@role_required(Role.ADMIN)
@sensitive_post_parameters("password")
@require_http_methods(["GET", "POST"])
def mailbox_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    mailbox = _get_mailbox_or_404(pk)
    form = BounceMailboxForm(request.POST or None, instance=mailbox)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Bounce mailbox “{mailbox.name}” saved.")
        return redirect_to(request, "bounce_mailboxes:list")
    return _render_form(request, form, mailbox)


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def mailbox_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    mailbox = _get_mailbox_or_404(pk)
    if request.method == "GET":
        return render(request, "smtp_settings/bounce_mailboxes/confirm_delete.html", {"mailbox": mailbox})
    mailbox.delete()
    if request.htmx:
        return HttpResponse("")  # the card swaps itself out
    messages.success(request, f"Bounce mailbox “{mailbox.name}” deleted.")
    return redirect("bounce_mailboxes:list")


@role_required(Role.ADMIN)
@require_POST
def mailbox_toggle(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    mailbox = _get_mailbox_or_404(pk)
    mailbox.enabled = not mailbox.enabled
    mailbox.save(update_fields=["enabled"])
    if request.htmx:
        return _render_card(request, mailbox)
    return redirect("bounce_mailboxes:list")


@role_required(Role.ADMIN)
@require_POST
def mailbox_check(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Read the mailbox's new reports now, as the scheduled check does."""
    mailbox = _get_mailbox_or_404(pk)
    result = check(mailbox)
    if request.htmx:
        return _render_card(request, mailbox, result)
    if result.error:
        messages.error(request, f"“{mailbox.name}”: {result.error}")
    else:
        messages.success(request, f"“{mailbox.name}”: {result.taken} new report{pluralize(result.taken)} read.")
    return redirect("bounce_mailboxes:list")


@role_required(Role.ADMIN)
@require_POST
def mailbox_test(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Log in and count the messages, changing nothing."""
    mailbox = _get_mailbox_or_404(pk)
    context = {"mailbox": mailbox, "result": probe(mailbox)}
    template = "_test_result.html" if request.htmx else "test_result.html"
    return render(request, f"smtp_settings/bounce_mailboxes/{template}", context)
