"""The page an unsubscribe link leads to: no login, no CSRF token; the signed token is the
authentication. GET only asks (mail scanners follow links); POST unsubscribes, which is
also what a mailbox provider's RFC 8058 one-click unsubscribe sends, without cookies, and
puts the address on the suppression list. A test message's link leads to a page that says so
and changes nothing."""

from django.contrib.auth.decorators import login_not_required
from django.core.signing import BadSignature
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from campaigns.models import Campaign, Subscriber
from campaigns.rendering import read_test_unsubscribe_token, read_unsubscribe_token
from smtp_settings.bounces.record import suppress
from smtp_settings.models import Suppression


def _not_found(request: HttpRequest, reason: str) -> HttpResponse:
    return render(request, "campaigns/unsubscribe.html", {"reason": reason}, status=404)


def _unsubscribe(subscriber: Subscriber, campaign_id: int | None) -> None:
    """Active → unsubscribed, once (an unsubscribed or blocklisted subscriber stays as is),
    and the address on the suppression list, where it keeps its first reason."""
    campaign = Campaign.objects.filter(pk=campaign_id).values_list("name", flat=True).first() if campaign_id else None
    note = f"With the link in “{campaign}”." if campaign else "With an unsubscribe link."
    with transaction.atomic():
        Subscriber.objects.filter(pk=subscriber.pk, status=Subscriber.Status.ACTIVE).update(
            status=Subscriber.Status.UNSUBSCRIBED, unsubscribed_at=timezone.now()
        )
        suppress(subscriber.email, Suppression.Reason.UNSUBSCRIBE, note)


@login_not_required
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        subscriber_id, campaign_id = read_unsubscribe_token(token)
    except BadSignature:
        try:
            tested = read_test_unsubscribe_token(token)
        except BadSignature:
            return _not_found(request, "This unsubscribe link is not valid. Please copy the whole link from the email.")
        campaign = Campaign.objects.filter(pk=tested).values_list("name", flat=True).first()
        return render(request, "campaigns/unsubscribe.html", {"test": True, "test_campaign": campaign})
    subscriber = Subscriber.objects.filter(pk=subscriber_id).first()
    if subscriber is None:
        return _not_found(request, "This address is no longer on our lists: there is nothing to unsubscribe.")
    if request.method == "POST":
        _unsubscribe(subscriber, campaign_id)
    return render(request, "campaigns/unsubscribe.html", {"subscriber": subscriber, "done": request.method == "POST"})
