"""What a recorded bounce or complaint does to the suppression list, and the VERP addresses
that map a bounce back to its delivery."""

from datetime import timedelta

import pytest
from django.utils import timezone

from smtp_settings.bounces import verp
from smtp_settings.bounces.record import bounce_recorded, record, suppress
from smtp_settings.events import smtp_event
from smtp_settings.models import Bounce, Suppression

pytestmark = pytest.mark.django_db

HARD, SOFT, COMPLAINT, UNPARSED = Bounce.Kind.HARD, Bounce.Kind.SOFT, Bounce.Kind.COMPLAINT, Bounce.Kind.UNPARSED


def suppressed() -> dict[str, str]:
    return dict(Suppression.objects.values_list("email", "reason"))


def test_a_hard_bounce_suppresses_the_address_at_once():
    record(HARD, Bounce.Source.LISTENER, " Gone@Example.TEST ", status="5.1.1", text="user unknown")
    assert suppressed() == {"gone@example.test": "hard_bounce"}
    assert Suppression.objects.get().note == "SMTP listener: 5.1.1 user unknown"


def test_a_complaint_suppresses_the_address_at_once():
    record(COMPLAINT, Bounce.Source.WEBHOOK, "angry@example.test")
    assert suppressed() == {"angry@example.test": "complaint"}


def test_soft_bounces_suppress_at_the_limit_within_the_window(settings):
    settings.SOFT_BOUNCE_LIMIT, settings.SOFT_BOUNCE_DAYS = 3, 7
    old = record(SOFT, Bounce.Source.SEND, "full@example.test")
    Bounce.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=8))  # outside the window
    record(SOFT, Bounce.Source.SEND, "full@example.test")
    record(SOFT, Bounce.Source.SEND, "full@example.test")
    assert suppressed() == {}
    record(SOFT, Bounce.Source.SEND, "full@example.test")
    assert suppressed() == {"full@example.test": "soft_bounces"}


def test_the_soft_bounces_of_one_message_count_once(settings):
    """A report sent again after a lost 250, an ESP's two events for one bounce, a DSN after the
    deferrals ran out at send time: one message, one soft bounce."""
    settings.SOFT_BOUNCE_LIMIT = 3
    for source in (Bounce.Source.SEND, Bounce.Source.LISTENER, Bounce.Source.LISTENER, Bounce.Source.WEBHOOK):
        record(SOFT, source, "full@example.test", reference="d1")
    record(SOFT, Bounce.Source.WEBHOOK, "full@example.test", reference="o2")
    assert suppressed() == {}
    record(SOFT, Bounce.Source.MAILBOX, "full@example.test", reference="d3")
    assert suppressed() == {"full@example.test": "soft_bounces"}


def test_a_bounce_not_acted_on_is_kept_and_logged_but_does_nothing_else(settings, django_capture_on_commit_callbacks):
    settings.SOFT_BOUNCE_LIMIT = 1
    told, events = [], []
    bounce_recorded.connect(tell := lambda sender, bounce, **kwargs: told.append(bounce))
    smtp_event.connect(log := lambda sender, event, **kwargs: events.append(event))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            for kind in (HARD, COMPLAINT, SOFT):
                record(kind, Bounce.Source.LISTENER, "victim@example.test", reference="d1", act=False, problem="not")
    finally:
        bounce_recorded.disconnect(tell)
        smtp_event.disconnect(log)
    assert list(Bounce.objects.values_list("kind", "acted_on")) == [(HARD, False), (COMPLAINT, False), (SOFT, False)]
    assert (suppressed(), told) == ({}, [])
    assert [event.kind for event in events] == ["bounce", "complaint", "soft_bounce"]
    record(SOFT, Bounce.Source.SEND, "victim@example.test", reference="d2")  # the first that counts
    assert suppressed() == {"victim@example.test": "soft_bounces"}


def test_an_event_is_logged_only_once_the_bounce_is_committed(django_capture_on_commit_callbacks):
    events = []
    smtp_event.connect(receiver := lambda sender, event, **kwargs: events.append(event))
    try:
        with django_capture_on_commit_callbacks() as committed:
            record(HARD, Bounce.Source.LISTENER, "x@example.test")
            assert events == []  # a caller's transaction that rolls back leaves no event behind
        for callback in committed:
            callback()
    finally:
        smtp_event.disconnect(receiver)
    assert [event.kind for event in events] == ["bounce"]


def test_a_report_not_understood_is_kept_and_suppresses_nothing(settings):
    settings.BOUNCE_REPORT_MAX_BYTES = 10
    bounce = record(UNPARSED, Bounce.Source.MAILBOX, report=b"0123456789abcdef", problem="no recipient found")
    bounce.refresh_from_db()
    assert (bytes(bounce.report), bounce.report_size, bounce.problem) == (b"0123456789", 16, "no recipient found")
    assert suppressed() == {}


def test_an_address_keeps_its_first_reason():
    suppress("a@example.test", Suppression.Reason.MANUAL, "Asked by phone.")
    record(HARD, Bounce.Source.SEND, "a@example.test")
    record(HARD, Bounce.Source.SEND, "b@example.test")
    record(COMPLAINT, Bounce.Source.WEBHOOK, "b@example.test")
    suppress("b@example.test", Suppression.Reason.UNSUBSCRIBE)
    assert suppressed() == {"a@example.test": "manual", "b@example.test": "hard_bounce"}
    assert Suppression.objects.get(email="a@example.test").note == "Asked by phone."


@pytest.mark.parametrize(
    "kind, reason", [(HARD, "hard_bounce"), (COMPLAINT, "complaint"), (SOFT, "soft_bounces")], ids=str
)
def test_a_bounce_or_a_complaint_replaces_an_unsubscribe_so_transactional_mail_stops_too(settings, kind, reason):
    """An unsubscribe holds back campaigns only: the outbox still sends to the address. Once
    it bounces or complains, nothing may go to it."""
    settings.SOFT_BOUNCE_LIMIT = 1
    suppress("a@example.test", Suppression.Reason.UNSUBSCRIBE, "Unsubscribed by the link.")
    Suppression.objects.update(created_at=timezone.now() - timedelta(days=30))
    assert Suppression.held_from_transactional(["a@example.test"]) == set()

    bounce = record(kind, Bounce.Source.LISTENER, "A@example.test", status="5.1.1", text="user unknown")

    entry = Suppression.objects.get()
    assert (entry.reason, entry.bounce) == (reason, bounce)
    assert entry.created_at > timezone.now() - timedelta(minutes=1)  # since the bounce
    since = f"{timezone.now() - timedelta(days=30):%Y-%m-%d}"
    assert entry.note.endswith(f"(Unsubscribed since {since}: Unsubscribed by the link.)")
    assert Suppression.held_from_transactional(["a@example.test"]) == {"a@example.test"}


def test_receivers_add_context_to_the_logged_event(django_capture_on_commit_callbacks):
    events = []

    def campaign_of(sender, bounce, **kwargs):
        return {"campaign_id": 7}

    def log(sender, event, **kwargs):
        events.append(event)

    bounce_recorded.connect(campaign_of)
    smtp_event.connect(log)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            bounce = record(HARD, Bounce.Source.LISTENER, "x@example.test", reference="d12", status="5.1.1")
    finally:
        bounce_recorded.disconnect(campaign_of)
        smtp_event.disconnect(log)
    [event] = events
    assert (event.kind, event.recipient, event.context, event.detail["bounce_id"]) == (
        "bounce",
        "x@example.test",
        {"campaign_id": 7},
        bounce.pk,
    )


def logged_context(capture, kind: str, reference: str) -> dict:
    """The context of the event logged for a bounce with `reference`, once it is committed
    (`capture`: django_capture_on_commit_callbacks)."""
    events = []
    smtp_event.connect(receiver := lambda sender, event, **kwargs: events.append(event))
    try:
        with capture(execute=True):
            record(kind, Bounce.Source.SEND, "x@example.test", reference=reference)
    finally:
        smtp_event.disconnect(receiver)
    [event] = events
    return event.context


def test_an_outbox_bounce_names_its_message_in_the_log(django_capture_on_commit_callbacks):
    assert logged_context(django_capture_on_commit_callbacks, SOFT, "o45") == {"outbox_message_id": 45}


def test_a_verp_address_maps_back_to_its_reference():
    address = verp.address("d123", "bounces.example.test")
    assert address.startswith("bounces+d123-") and address.endswith("@bounces.example.test")
    assert verp.reference_of(address) == "d123"
    assert verp.reference_of(f"<{address.upper()}>") == "d123"  # some servers change the case


def test_a_verp_address_signed_before_the_secret_key_was_rotated_still_maps_back(settings):
    settings.SECRET_KEY = "the-old-key-" + "x" * 40
    before = verp.address("d123", "bounces.example.test")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-new-key-" + "y" * 40, [settings.SECRET_KEY]

    assert verp.reference_of(before) == "d123"
    after = verp.address("d123", "bounces.example.test")
    assert after != before  # signed with the new key
    assert verp.reference_of(after) == "d123"
    settings.SECRET_KEY_FALLBACKS = []  # the old key dropped: its addresses are forged now
    assert verp.reference_of(before) is None


@pytest.mark.parametrize(
    "recipient",
    ["bounces+d124-0000000000000000@b.test", "bounces+d123@b.test", "someone@b.test", "", "bounces+@b.test"],
)
def test_a_forged_or_foreign_address_maps_to_nothing(recipient):
    assert verp.reference_of(recipient) is None


def test_a_reference_must_be_short_letters_and_digits():
    with pytest.raises(ValueError):
        verp.address("d1\r\nRCPT TO:<x@y>", "b.test")


@pytest.mark.parametrize(
    "reference, delivery, outbox_message",
    [
        ("d12", 12, None),
        ("o45", None, 45),
        ("order-7", None, None),
        ("o", None, None),
        ("D12", None, None),
        ("", None, None),
    ],
)
def test_only_a_letter_and_digits_name_a_message(reference, delivery, outbox_message):
    assert verp.is_reference(reference) == (reference in ("d12", "o45"))
    assert verp.number_of(reference, "d") == delivery
    assert Bounce(reference=reference).outbox_message_id == outbox_message


def test_a_bounce_whose_reference_names_no_message_is_logged_without_one(django_capture_on_commit_callbacks):
    assert logged_context(django_capture_on_commit_callbacks, HARD, "order-7") == {}
