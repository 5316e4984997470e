"""Previews of a campaign's message: of a saved campaign, as any subscriber of its lists, and
of the compose form before it is saved (htmx, or a plain POST that shows the form again).

The HTML part is never put in the page: it is served from an address of its own into a
sandboxed frame, under a policy of its own (MESSAGE_POLICY). A form's unsaved HTML part is
kept for that frame in the shared cache, for a while (PREVIEW_LIFETIME_S), under a name only
the session knows: the latest one only, and never in the session, which every request reads."""

import secrets
from urllib.parse import urlencode

from csp.decorators import csp
from django.core.cache import caches
from django.core.mail import EmailMultiAlternatives, make_msgid
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET, require_POST

from campaigns.forms import CampaignForm, PreviewAsForm
from campaigns.models import Campaign, Subscriber
from campaigns.rendering import CampaignRenderer, RenderError, message_domain, subscriber_to_preview
from campaigns.views import get_campaign_or_404
from project.htmx import HtmxHttpRequest
from project.message_frames import MESSAGE_POLICY
from project.roles import Role, role_required

# The form's fields a message is made of: errors in the others (lists, servers…) do not keep
# it from being previewed.
MESSAGE_FIELDS = ("subject", "from_email", "reply_to", "html_body", "text_body")
SESSION_KEY = "campaigns.draft_preview_token"
PREVIEW_LIFETIME_S = 15 * 60  # a frame reloaded later than that asks to preview again


def _sample_message(campaign: Campaign, subscriber: Subscriber) -> tuple[EmailMultiAlternatives, str | None]:
    """The message `subscriber` would receive, built by the same renderer, and its HTML part.
    Its unsubscribe links are a test message's, which unsubscribe nobody: whoever may see a
    preview must not get a link that unsubscribes the subscriber it is shown as."""
    message = CampaignRenderer(campaign, test=True).message(subscriber, make_msgid(domain=message_domain(campaign)))
    html = next((content for content, mimetype in message.alternatives if mimetype == "text/html"), None)
    return message, html


def _preview(campaign: Campaign, lists, email: str) -> dict:
    """What `_message_preview.html` shows: to whom, the message and its HTML part, or why it
    cannot be rendered."""
    subscriber, missing = subscriber_to_preview(lists, email)
    preview = {"campaign": campaign, "subscriber": subscriber, "chosen": bool(email and not missing)}
    preview["missing"] = missing
    try:
        message, preview["html"] = _sample_message(campaign, subscriber)
    except RenderError as error:
        preview["error"] = str(error)
    else:
        preview.update(message=message, list_unsubscribe=message.extra_headers["List-Unsubscribe"])
    return preview


def _preview_as(query) -> tuple[PreviewAsForm, str]:
    form = PreviewAsForm(query)
    return form, form.cleaned_data["preview_as"] if form.is_valid() else ""


@role_required(Role.VIEWER)
@require_GET
def campaign_preview(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The message as a subscriber of its lists would receive it (`?preview_as=` an address)."""
    campaign = get_campaign_or_404(pk)
    form, email = _preview_as(request.GET)
    preview = _preview(campaign, campaign.lists.all(), email)
    if preview.get("html") is not None:
        chosen = f"?{urlencode({'preview_as': preview['subscriber'].email})}" if preview["chosen"] else ""
        preview["html_url"] = reverse("campaigns:preview_html", args=[pk]) + chosen
    context = {"campaign": campaign, "form": form, "preview": preview}
    return render(request, "campaigns/preview.html", context, status=400 if form.errors else 200)


@role_required(Role.VIEWER)
@require_GET
@xframe_options_sameorigin
@csp(MESSAGE_POLICY)
def campaign_preview_html(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The HTML part alone, for the preview page's frame."""
    campaign = get_campaign_or_404(pk)
    preview = _preview(campaign, campaign.lists.all(), _preview_as(request.GET)[1])
    if preview.get("html") is None:  # the preview page says why
        raise Http404("This campaign has no HTML part to show.")
    return HttpResponse(preview["html"])


def _unsaved_preview(request: HtmxHttpRequest, form: CampaignForm, preview_form: PreviewAsForm) -> dict:
    """The preview of the form's message, or what keeps it from being previewed (the errors
    of its message fields, and a bad "Preview as"). Nothing is saved."""
    form.is_valid()
    preview_form.is_valid()
    problems = [
        (bound.label, error)
        for bound in [*(form[name] for name in MESSAGE_FIELDS), preview_form["preview_as"]]
        for error in bound.errors
    ]
    if problems:
        return {"problems": problems}
    cleaned = form.cleaned_data
    unsaved = Campaign(pk=form.instance.pk, name=cleaned.get("name", ""), **{f: cleaned[f] for f in MESSAGE_FIELDS})
    preview = _preview(unsaved, cleaned.get("lists") or [], preview_form.cleaned_data["preview_as"])
    if preview.get("html") is not None:
        token = _keep_for_frame(request, preview["html"])
        preview["html_url"] = f"{reverse('campaigns:preview_unsaved_html')}?{urlencode({'v': token})}"
    return preview


def _keep_for_frame(request: HtmxHttpRequest, html: str) -> str:
    """Keep `html` for its frame under a new name, which the session keeps instead of the
    previous one's, which goes."""
    shared = caches["shared"]
    if previous := request.session.get(SESSION_KEY):
        shared.delete(f"{SESSION_KEY}:{previous}")
    token = secrets.token_urlsafe(12)
    shared.set(f"{SESSION_KEY}:{token}", html, PREVIEW_LIFETIME_S)
    request.session[SESSION_KEY] = token
    return token


@role_required(Role.SENDER)
@require_POST
def preview_unsaved(request: HtmxHttpRequest, pk: int | None = None) -> HttpResponse:
    """The compose form's Preview button: the message as the form has it, not saved. htmx gets
    the preview; a plain POST gets the form again, as filled in, with the preview below."""
    campaign = get_campaign_or_404(pk) if pk else None
    form = CampaignForm(request.POST, instance=campaign)
    preview_form = PreviewAsForm(request.POST)
    context = {"unsaved_preview": _unsaved_preview(request, form, preview_form)}
    if request.htmx:
        return render(request, "campaigns/_unsaved_preview.html", context)
    context.update(form=form, preview_form=preview_form, campaign=campaign)
    return render(request, "campaigns/form.html", context)


@role_required(Role.SENDER)
@require_GET
@xframe_options_sameorigin
@csp(MESSAGE_POLICY)
def preview_unsaved_html(request: HtmxHttpRequest) -> HttpResponse:
    """The HTML part of the latest unsaved preview, for its frame (`?v=` names that preview)."""
    token = request.session.get(SESSION_KEY)
    latest = token is not None and secrets.compare_digest(token, request.GET.get("v", ""))
    html = caches["shared"].get(f"{SESSION_KEY}:{token}") if latest else None
    if html is None:
        return HttpResponse(
            "This preview was replaced by a later one, or is too old: press Preview again.",
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(html)
