"""Recording a bounce or a complaint: what every source calls.

`record()` writes the `Bounce` (with its raw report, cut at BOUNCE_REPORT_MAX_BYTES), applies
the suppression rules, tells the receivers of `bounce_recorded` (campaigns mark the delivery
and the subscriber, and count it against the campaign's guard rails) and puts an event in the
log, with the bounce's id one click from its report:

- a hard bounce or a complaint suppresses the address at once;
- soft bounces are counted: SOFT_BOUNCE_LIMIT of them within SOFT_BOUNCE_DAYS suppress it, the
  soft bounces of one message counting once (a report sent again, an ESP's two events for one
  bounce, a DSN after the deferrals ran out at send time all name the same reference);
- a delay warning is kept, and neither counted nor suppresses (the reporting server still tries);
- a report not understood is kept (kind `unparsed`, with why), never dropped;
- a bounce recorded with `act=False` (a report about addresses its delivery did not go to:
  intake.py) is kept and logged, with why in its `problem`, and does nothing else: no
  suppression, no `bounce_recorded`, and it never counts as a soft bounce.

Receivers of `bounce_recorded(bounce=...)` may return a dict of event context (say
{"campaign_id": 7}); the log's event carries it.
"""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from smtp_settings.events import Kind, PoolEvent, smtp_event
from smtp_settings.models import Bounce, Suppression

bounce_recorded = Signal()  # sent with bounce=Bounce, inside record()'s transaction

_SUPPRESS_AT_ONCE = {
    Bounce.Kind.HARD: Suppression.Reason.HARD_BOUNCE,
    Bounce.Kind.COMPLAINT: Suppression.Reason.COMPLAINT,
}
_EVENT_KIND = {
    Bounce.Kind.HARD: Kind.BOUNCE,
    Bounce.Kind.SOFT: Kind.SOFT_BOUNCE,
    Bounce.Kind.COMPLAINT: Kind.COMPLAINT,
    Bounce.Kind.DELAYED: Kind.DELAY_WARNING,
    Bounce.Kind.UNPARSED: Kind.REPORT_NOT_UNDERSTOOD,
}


def record(
    kind: str,
    source: str,
    email: str = "",
    *,
    report: bytes = b"",
    report_size: int | None = None,
    act: bool = True,
    **fields,
) -> Bounce:
    """Record one bounce or complaint (`fields`: reference, server, mailbox, code, status,
    text, problem, report_of) and act on it unless told not to, in one transaction.
    `report_size`: of the report as received, when `report` is only its start."""
    limit = settings.BOUNCE_REPORT_MAX_BYTES
    bounce = Bounce(
        kind=kind,
        source=source,
        email=Suppression.normalize(email)[:254],
        report=report[:limit],
        report_size=len(report) if report_size is None else report_size,
        acted_on=act,
        **fields,
    )
    bounce.text = bounce.text[:2000]
    with transaction.atomic():
        bounce.save()
        context = {"outbox_message_id": bounce.outbox_message_id} if bounce.outbox_message_id else {}
        if act:
            suppress_for(bounce)
            for _, response in bounce_recorded.send(sender=Bounce, bounce=bounce):
                context |= response or {}
        # Logged once committed, also by a caller's transaction: a bounce rolled back has no event.
        transaction.on_commit(lambda: smtp_event.send(sender=Bounce, event=_event(bounce, context)))
    return bounce


def _event(bounce: Bounce, context: dict) -> PoolEvent:
    return PoolEvent(
        kind=_EVENT_KIND[bounce.kind],
        server_id=bounce.server_id,
        server_name=bounce.server.name if bounce.server else "",
        code=bounce.code,
        text=" ".join(filter(None, [bounce.status, bounce.text or bounce.problem]))[:2000],
        recipient=bounce.email,
        detail={"bounce_id": bounce.pk, "source": bounce.source},
        context=context,
    )


def suppress_for(bounce: Bounce) -> Suppression | None:
    """Suppress the bounce's address if the rules say so (see the module docstring)."""
    if not bounce.email or not bounce.acted_on:
        return None
    reason = _SUPPRESS_AT_ONCE.get(bounce.kind)
    if bounce.kind == Bounce.Kind.SOFT and soft_bounces(bounce.email) >= settings.SOFT_BOUNCE_LIMIT:
        reason = Suppression.Reason.SOFT_BOUNCES
    if reason is None:
        return None
    note = " ".join(filter(None, [bounce.get_source_display() + ":", bounce.status, bounce.text]))[:2000]
    return suppress(bounce.email, reason, note, bounce=bounce)


def soft_bounces(email: str) -> int:
    """The messages to `email` that soft-bounced within SOFT_BOUNCE_DAYS: the bounces acted on,
    those with one reference counting once."""
    since = timezone.now() - timedelta(days=settings.SOFT_BOUNCE_DAYS)
    soft = Bounce.objects.filter(email=email, kind=Bounce.Kind.SOFT, acted_on=True, received_at__gte=since)
    return soft.filter(reference="").count() + soft.exclude(reference="").values("reference").distinct().count()


def suppress(email: str, reason: str, note: str = "", bounce: Bounce | None = None) -> Suppression:
    """Put an address on the suppression list. One already there keeps its first reason, but
    for an unsubscribe, which holds back campaigns only: any other reason (a bounce, a
    complaint, a person's) replaces it, so that transactional mail stops too, and the note
    says what the entry was before."""
    email = Suppression.normalize(email)
    try:
        with transaction.atomic():
            return Suppression.objects.create(email=email, reason=reason, note=note, bounce=bounce)
    except IntegrityError:
        entry = Suppression.objects.get(email=email)
    unsubscribed = Suppression.Reason.UNSUBSCRIBE
    if entry.reason != unsubscribed or reason == unsubscribed:
        return entry
    earlier = " ".join(filter(None, [f"Unsubscribed since {entry.created_at:%Y-%m-%d}:", entry.note]))
    note = " ".join(filter(None, [note, f"({earlier})"]))[:2000]
    stronger = {"reason": reason, "note": note, "bounce": bounce, "created_at": timezone.now()}
    # Conditional: of two reasons arriving at once, one replaces the unsubscribe, and stays.
    Suppression.objects.filter(pk=entry.pk, reason=unsubscribed).update(**stronger)
    entry.refresh_from_db()
    return entry
