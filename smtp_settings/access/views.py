"""The relay page: relay credentials, API tokens, the default route, and how to reach the relay.

A password or key is shown once, in the answer to the POST that made it (never stored, never
put in a session or a redirect), on a page that is not cached.
"""

from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from project.htmx import HtmxHttpRequest, redirect_to
from project.roles import Role, role_required
from smtp_settings.access.forms import CredentialForm, RouteForm, TokenForm
from smtp_settings.models import ApiToken, RelayCredential, RelayRoute, SmtpServer
from smtp_settings.relay import listen_address


def _relay() -> dict:
    """Where the relay listens and how it lets clients in, as configured."""
    try:
        host, port = listen_address(settings.RELAY_LISTEN)
    except ValueError:  # the relay cannot start with it either; the page shows what it is
        host, port = settings.RELAY_LISTEN, ""
    return {
        "host": host,
        "port": port,
        "trusted_networks": settings.RELAY_TRUSTED_NETWORKS,
        "starttls": bool(settings.RELAY_TLS_CERT and settings.RELAY_TLS_KEY),
        "max_message_bytes": settings.RELAY_MAX_MESSAGE_BYTES,
        "max_recipients": settings.RELAY_MAX_RECIPIENTS,
    }


def _route_context(form: RouteForm | None = None) -> dict:
    route = RelayRoute.objects.filter(pk=1).prefetch_related("servers").first()
    return {
        "route": route,
        "route_form": form or RouteForm(instance=route),
        "first_enabled": SmtpServer.objects.filter(enabled=True).first(),
    }


def _render_index(request: HtmxHttpRequest, route_form: RouteForm | None = None, status: int = 200) -> HttpResponse:
    context = {
        "relay": _relay(),
        "credentials": RelayCredential.objects.prefetch_related("servers"),
        "tokens": ApiToken.objects.prefetch_related("servers").order_by("-enabled", "name"),
        **_route_context(route_form),
    }
    return render(request, "smtp_settings/access/index.html", context, status=status)


@role_required(Role.VIEWER)
@require_GET
def index(request: HtmxHttpRequest) -> HttpResponse:
    return _render_index(request)


def _shown_once(request: HtmxHttpRequest, what: str, secret: str, context: dict) -> HttpResponse:
    context = {"what": what, "secret": secret, "relay": _relay(), **context}
    return render(request, "smtp_settings/access/secret.html", context, status=201)


@role_required(Role.ADMIN)
@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def credential_create(request: HtmxHttpRequest) -> HttpResponse:
    form = CredentialForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        credential, made_up = form.save()
        if made_up:
            return _shown_once(request, "password", made_up, {"credential": credential})
        messages.success(request, f"Relay login “{credential.name}” added.")
        return redirect_to(request, "access:index")
    return render(request, "smtp_settings/access/form.html", {"form": form, "kind": "credential"})


@role_required(Role.ADMIN)
@sensitive_post_parameters("password")
@require_http_methods(["GET", "POST"])
def credential_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    credential = get_object_or_404(RelayCredential, pk=pk)
    form = CredentialForm(request.POST or None, instance=credential)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Relay login “{credential.name}” saved.")
        return redirect_to(request, "access:index")
    return render(request, "smtp_settings/access/form.html", {"form": form, "kind": "credential", "object": credential})


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def credential_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    credential = get_object_or_404(RelayCredential, pk=pk)
    if request.method == "GET":
        return render(request, "smtp_settings/access/confirm.html", {"object": credential, "kind": "credential"})
    credential.delete()
    if request.htmx:
        return HttpResponse("")  # the row swaps itself out
    messages.success(request, f"Relay login “{credential.name}” deleted.")
    return redirect("access:index")


@role_required(Role.ADMIN)
@never_cache
@require_http_methods(["GET", "POST"])
def token_create(request: HtmxHttpRequest) -> HttpResponse:
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        token, key = form.save()
        return _shown_once(request, "key", key, {"token": token})
    return render(request, "smtp_settings/access/form.html", {"form": form, "kind": "token"})


@role_required(Role.ADMIN)
@require_http_methods(["GET", "POST"])
def token_revoke(request: HtmxHttpRequest, token_pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=token_pk)
    if request.method == "GET":
        return render(request, "smtp_settings/access/confirm.html", {"object": token, "kind": "token"})
    token.revoke()
    if request.htmx:
        return render(request, "smtp_settings/access/_token_row.html", {"token": token})
    messages.success(request, f"API token “{token.name}” revoked.")
    return redirect("access:index")


@role_required(Role.ADMIN)
@require_POST
def route(request: HtmxHttpRequest) -> HttpResponse:
    form = RouteForm(request.POST, instance=RelayRoute.get())
    if not form.is_valid():
        if request.htmx:
            return render(request, "smtp_settings/access/_route.html", _route_context(form), status=400)
        return _render_index(request, form, status=400)
    form.save()
    if request.htmx:
        return render(request, "smtp_settings/access/_route.html", {**_route_context(), "saved": True})
    messages.success(request, "Default route saved.")
    return redirect("access:index")
