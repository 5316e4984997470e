from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_required
from smtp_settings.deletion import ServerInUse, delete_server, users_of
from smtp_settings.esp.probe import check_api
from smtp_settings.forms import ConnectionTestForm, SmtpServerForm, TestMessageForm
from smtp_settings.live import live_figures
from smtp_settings.models import SmtpServer
from smtp_settings.presets import PRESETS, PRESETS_BY_KEY
from smtp_settings.probe import probe


def _get_server_or_404(pk: int) -> SmtpServer:
    return get_object_or_404(SmtpServer, pk=pk)


def _render_card(request: HtmxHttpRequest, server: SmtpServer) -> HttpResponse:
    context = {"server": server, "live": live_figures(server)}
    return render(request, "smtp_settings/_server_card.html", context)


def _render_form(
    request: HtmxHttpRequest, form: SmtpServerForm, server: SmtpServer | None, preset=None, *, tested=None, status=200
):
    """The add/edit form; `tested`: a connection test's context, shown under it."""
    context = {"form": form, "server": server, "presets": PRESETS, "preset": preset, **(tested or {})}
    template = "smtp_settings/_server_form.html" if request.htmx else "smtp_settings/form.html"
    return render(request, template, context, status=status)


def _test(server: SmtpServer, **test):
    """Test connection: an SMTP exchange, or a call to an ESP's API."""
    return check_api(server, **test) if server.is_esp else probe(server, **test)


def _saved(request: HtmxHttpRequest, server: SmtpServer, verb: str) -> HttpResponse:
    messages.success(request, f"SMTP server “{server.name}” {verb}.")
    return redirect_to(request, "smtp_settings:list")


@role_required(Role.VIEWER)
def server_list(request: HtmxHttpRequest) -> HttpResponse:
    cards = [(server, live_figures(server)) for server in SmtpServer.objects.all()]
    return render(request, "smtp_settings/list.html", {"cards": cards})


@role_required(Role.VIEWER)
@require_GET
def server_live(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The card's live, cluster-wide figures: the partial polls this."""
    server = _get_server_or_404(pk)
    return render(request, "smtp_settings/_server_live.html", {"server": server, "live": live_figures(server)})


@role_required(Role.ADMIN)
@sensitive_post_parameters("password", "api_key")
@require_http_methods(["GET", "POST"])
def server_create(request: HtmxHttpRequest) -> HttpResponse:
    preset = PRESETS_BY_KEY.get(request.GET.get("preset", ""))
    if request.method == "POST":
        form = SmtpServerForm(request.POST)
        if form.is_valid():
            return _saved(request, form.save(), "added")
    else:
        initial = {**preset.initial(), "name": preset.label} if preset else {}
        form = SmtpServerForm(initial=initial)
    return _render_form(request, form, None, preset)


@role_required(Role.ADMIN)
@sensitive_post_parameters("password", "api_key")
@require_http_methods(["GET", "POST"])
def server_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    server = _get_server_or_404(pk)
    form = SmtpServerForm(request.POST or None, instance=server)
    if request.method == "POST" and form.is_valid():
        return _saved(request, form.save(), "saved")
    return _render_form(request, form, server)


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def server_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Delete after a confirmation page that lists what uses the server; refused while a
    campaign using it is under way (smtp_settings/deletion.py)."""
    server = _get_server_or_404(pk)
    if request.method == "GET":
        users = users_of(server)
        context = {"server": server, "users": users, "busy": any(user.busy for user in users)}
        return render(request, "smtp_settings/confirm_delete.html", context)
    try:
        delete_server(server)
    except ServerInUse as refused:
        messages.error(request, str(refused))
        return redirect_to(request, "smtp_settings:delete", pk)
    messages.success(request, f"SMTP server “{server.name}” deleted.")
    return redirect_to(request, "smtp_settings:list")


@role_required(Role.ADMIN)
@require_POST
def server_toggle(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    server = _get_server_or_404(pk)
    server.enabled = not server.enabled
    server.save(update_fields=["enabled", "updated_at"])
    if request.htmx:
        return _render_card(request, server)
    return redirect("smtp_settings:list")


@role_required(Role.ADMIN)
@require_POST
def server_apply_learned(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Make the limits the pool learned from the server the configured ones."""
    server = _get_server_or_404(pk)
    server.apply_learned_limits()
    if request.htmx:
        return _render_card(request, server)
    messages.success(request, f"Learned limits applied to “{server.name}”.")
    return redirect("smtp_settings:list")


def _render_test_result(request: HtmxHttpRequest, server, form, result, target: str) -> HttpResponse:
    """The result panel (htmx) or a page around it; bad test input is a 400 naming the field."""
    status = 200 if result or request.htmx else 400
    context = {"server": server, "form": form, "result": result, "target": target}
    template = "smtp_settings/_test_result.html" if request.htmx else "smtp_settings/test_result.html"
    return render(request, template, context, status=status)


@role_required(Role.ADMIN)
@require_POST
def server_test(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Test a saved server, optionally sending one message."""
    server = _get_server_or_404(pk)
    form = TestMessageForm(request.POST)
    result = _test(server, **form.cleaned_data) if form.is_valid() else None
    return _render_test_result(request, server, form, result, f"test-result-{pk}")


@role_required(Role.ADMIN)
@sensitive_post_parameters("password", "api_key")
@require_POST
def form_test(request: HtmxHttpRequest) -> HttpResponse:
    """Test the values of an add/edit form as they stand, saved or not."""
    stored = SmtpServer.objects.filter(pk=request.POST.get("server_id") or None).first()
    form = ConnectionTestForm(request.POST, instance=stored or SmtpServer())
    result = None
    if form.is_valid():
        test = {key: form.cleaned_data[key] for key in ("to_email", "from_email")}
        result = _test(form.instance, **test)
    if request.htmx:
        return _render_test_result(request, form.instance, form, result, "test-result-form")
    # Without JavaScript: the whole form again, as it was typed (passwords aside), with the result in it.
    tested = {"test_form": form, "result": result, "target": "test-result-form"}
    typed = SmtpServerForm(request.POST, instance=stored)
    return _render_form(request, typed, stored, tested=tested, status=200 if result else 400)
