"""ESPs' tracking webhooks: anymail's own payload formats (copied from anymail's test suite),
posted to the real views at /webhooks/<esp>/tracking/, change bounces, the suppression list,
deliveries and subscribers; wrong credentials and malformed payloads change nothing."""

import base64
import hashlib
import hmac
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection
from django.test import Client
from django.urls import reverse

from campaigns import eventlog
from campaigns.models import Delivery, Subscriber
from smtp_settings.models import Bounce, EspMessage, Suppression
from tests.campaigns.test_sending import make_campaign

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:django-anymail has dropped official support for SendGrid"),
]

SECRET = "relaydeck:webhook-secret"
MAILGUN_KEY = "mailgun-signing-key"
READER = "reader0@example.test"  # make_campaign's first subscriber


@pytest.fixture(autouse=True)
def _webhooks_on(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": [SECRET], "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}


def basic_auth(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def post(esp: str, payload, credentials: str | None = SECRET, client: Client | None = None, **headers):
    """POST a payload to the ESP's webhook as the ESP would: JSON, basic auth in the URL."""
    if credentials is not None:
        headers["HTTP_AUTHORIZATION"] = basic_auth(credentials)
    body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
    return (client or Client()).post(reverse(f"webhooks:{esp}"), body, content_type="application/json", **headers)


def everything() -> tuple:
    """What a webhook could change, to show that a refused one changed nothing."""
    return (
        list(Bounce.objects.values_list("pk", "kind", "email")),
        list(Suppression.objects.values_list("email", "reason")),
        list(Delivery.objects.values_list("pk", "outcome")),
        list(Subscriber.objects.values_list("pk", "status")),
    )


@pytest.fixture
def sent(make_server):
    """A campaign delivery to reader0@example.test, sent through an ESP as message "esp-1"."""
    server = make_server(name="Postmark", kind="esp", esp="postmark")
    campaign = make_campaign([server], 1)
    delivery = Delivery.objects.create(
        campaign=campaign, subscriber=Subscriber.objects.get(), status="sent", server=server
    )
    EspMessage.objects.create(
        message_id="esp-1", reference=f"d{delivery.pk}", server=server, recipient="reader0@example.test"
    )
    return delivery


def postmark_bounce(**fields) -> dict:
    return {
        "RecordType": "Bounce",
        "ID": 901542550,
        "Type": "HardBounce",
        "TypeCode": 1,
        "ServerID": 23,
        "Name": "Hard bounce",
        "MessageID": "esp-1",
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "reader0@example.test",
        "From": "sender@example.com",
        "BouncedAt": "2016-04-27T16:28:50.3963933-04:00",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Postmark event test",
        "Content": "...",
    } | fields


def postmark_delivery(**fields) -> dict:
    return {
        "RecordType": "Delivery",
        "ServerId": 23,
        "MessageID": "esp-1",
        "Recipient": "reader0@example.test",
        "Tag": "welcome-email",
        "Metadata": {"cohort": "2014-08-A"},
        "DeliveredAt": "2014-08-01T13:28:10.2735393-04:00",
        "Details": "Test delivery webhook details",
    } | fields


# Postmark: basic auth only.


def test_a_hard_bounce_suppresses_the_address_and_names_its_delivery(sent):
    payload = postmark_bounce()
    assert post("postmark", payload).status_code == 200
    bounce = Bounce.objects.get()
    assert (bounce.kind, bounce.source, bounce.email, bounce.reference, bounce.server) == (
        "hard",
        "webhook",
        "reader0@example.test",
        f"d{sent.pk}",
        sent.server,
    )
    assert (bounce.code, bounce.status) == (550, "5.1.1")
    assert bounce.text == f"{payload['Description']} {payload['Details']}"
    assert json.loads(bytes(bounce.report)) == payload  # the raw event, one click from the log
    assert Suppression.objects.get().reason == "hard_bounce"


def test_a_soft_bounce_is_counted_and_suppresses_nothing_yet(sent):
    payload = postmark_bounce(Type="SoftBounce", Details="smtp;452 4.2.2 Mailbox full")
    assert post("postmark", payload).status_code == 200
    bounce = Bounce.objects.get()
    assert (bounce.kind, bounce.code, bounce.status) == ("soft", 452, "4.2.2")
    assert not Suppression.objects.exists()


def test_a_spam_complaint_suppresses_the_address(sent):
    payload = postmark_bounce(RecordType="SpamComplaint", Type="SpamComplaint", TypeCode=512, Details="")
    assert post("postmark", payload).status_code == 200
    assert Bounce.objects.get().kind == "complaint"
    assert list(Suppression.objects.values_list("email", "reason")) == [("reader0@example.test", "complaint")]


def test_a_spam_filters_refusal_is_a_soft_bounce_not_a_complaint(sent):
    """Postmark's SpamNotification, which anymail reports as complained: a receiving spam
    filter refused the message. Nobody complained: counted as a soft bounce."""
    payload = postmark_bounce(
        Type="SpamNotification",
        TypeCode=512,
        Name="Spam notification",
        Description="The message was delivered, but was either blocked by the user, or classified as spam.",
        Details="smtp;550 5.7.1 Message rejected as spam by Content Filtering.",
    )
    assert post("postmark", payload).status_code == 200
    bounce = Bounce.objects.get()
    assert (bounce.kind, bounce.code, bounce.status, bounce.reference) == ("soft", 550, "5.7.1", f"d{sent.pk}")
    assert not Suppression.objects.exists()
    sent.refresh_from_db()
    assert sent.outcome == "soft"
    assert Subscriber.objects.get().status == "active"


@pytest.mark.parametrize("reference", ["order-7", "o", "d12 ", "d1234567890123456789"])
def test_an_event_about_a_message_kept_with_a_reference_that_is_none_acts_on_its_address(sent, reference):
    """A reference kept before they were checked names nothing: the event is taken (200, else
    the ESP posts it forever) and acts on its address alone."""
    EspMessage.objects.update(reference=reference)

    assert post("postmark", postmark_bounce()).status_code == 200
    assert post("postmark", postmark_delivery()).status_code == 200

    bounce = Bounce.objects.get()
    assert (bounce.kind, bounce.email, bounce.reference) == ("hard", READER, "")
    assert list(Suppression.objects.values_list("email", "reason")) == [(READER, "hard_bounce")]
    assert Subscriber.objects.get().status == "bounced"
    sent.refresh_from_db()
    assert sent.outcome == ""


def test_delivered_marks_the_delivery(sent):
    assert post("postmark", postmark_delivery()).status_code == 200
    sent.refresh_from_db()
    assert sent.outcome == "delivered"
    assert sent.outcome_at == datetime(2014, 8, 1, 17, 28, 10, 273539, tzinfo=UTC)
    assert not Bounce.objects.exists() and not Suppression.objects.exists()


def test_delivered_never_overwrites_a_bounce_or_a_complaint(sent):
    Delivery.objects.filter(pk=sent.pk).update(outcome="complained")
    assert post("postmark", postmark_delivery()).status_code == 200
    sent.refresh_from_db()
    assert (sent.outcome, sent.outcome_at) == ("complained", None)


def test_an_unsubscribe_suppresses_the_address_and_unsubscribes_the_subscriber(sent):
    payload = {
        "RecordType": "SubscriptionChange",
        "MessageID": "esp-1",
        "ServerID": 23,
        "MessageStream": "outbound",
        "ChangedAt": "2022-06-05T17:17:32Z",
        "Recipient": "reader0@example.test",
        "Origin": "Recipient",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
        "Tag": "welcome-email",
    }
    assert post("postmark", payload).status_code == 200
    suppression = Suppression.objects.get()
    assert (suppression.email, suppression.reason, suppression.note) == (
        "reader0@example.test",
        "unsubscribe",
        "Unsubscribed at Postmark.",
    )
    assert Subscriber.objects.get().status == "unsubscribed"
    assert not Bounce.objects.exists()


def test_an_event_about_an_unknown_message_still_acts_on_its_address(sent):
    assert post("postmark", postmark_bounce(MessageID="sent-elsewhere", Email="Other@Example.TEST")).status_code == 200
    bounce = Bounce.objects.get()
    assert (bounce.email, bounce.reference, bounce.server) == ("other@example.test", "", None)
    assert Suppression.objects.get().email == "other@example.test"
    # A delivery report for it has nothing to mark, and the ESP still gets its 200 (no retries).
    assert post("postmark", postmark_delivery(MessageID="sent-elsewhere")).status_code == 200
    assert Delivery.objects.get().outcome == ""


def test_an_event_without_its_recipient_takes_the_address_the_message_went_to(sent):
    payload = postmark_bounce()
    del payload["Email"]
    assert post("postmark", payload).status_code == 200
    assert Bounce.objects.get().email == "reader0@example.test"


def test_the_same_event_posted_again_counts_once(sent):
    for _ in range(3):
        assert post("postmark", postmark_bounce(Type="SoftBounce")).status_code == 200
    assert Bounce.objects.count() == 1
    assert post("postmark", postmark_bounce(Type="SoftBounce", ID=901542551)).status_code == 200  # another bounce
    assert Bounce.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_same_event_posted_several_times_at_once_counts_once():
    start = threading.Barrier(4)

    def post_when_all_are_ready(_) -> int:
        start.wait()
        try:
            return post("postmark", postmark_bounce()).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as posters:
        assert list(posters.map(post_when_all_are_ready, range(4))) == [200] * 4
    assert Bounce.objects.count() == 1 and Suppression.objects.count() == 1


def test_an_event_without_an_id_is_told_apart_by_its_contents(sent):
    # Brevo gives no event id: the same post twice is one bounce, another post another.
    payload = {"event": "soft_bounce", "email": "reader0@example.test", "message-id": "esp-1", "ts_epoch": 1}
    assert post("brevo", payload).status_code == 200
    assert post("brevo", payload).status_code == 200
    assert post("brevo", payload | {"ts_epoch": 2}).status_code == 200
    assert Bounce.objects.filter(kind="soft").count() == 2


@pytest.mark.parametrize(
    ("esp", "soft", "hard"),
    [
        ("postmark", postmark_bounce(Type="SoftBounce", ID=1), postmark_bounce(ID=2)),
        (
            "brevo",
            {"event": "soft_bounce", "email": "reader0@example.test", "reason": "undefined Unable to find MX"},
            {"event": "hard_bounce", "email": "reader0@example.test", "reason": " RecipientError: 550 5.5.0"},
        ),
        (
            "mailjet",
            [{"event": "bounce", "time": 1498093527, "email": "reader0@example.test", "hard_bounce": False}],
            [{"event": "bounce", "time": 1498093527, "email": "reader0@example.test", "hard_bounce": True}],
        ),
        (
            "sendgrid",
            [{"event": "bounce", "email": "reader0@example.test", "type": "blocked", "reason": "421 4.7.0 try later"}],
            [{"event": "bounce", "email": "reader0@example.test", "type": "bounce", "reason": "550 5.1.1 unknown"}],
        ),
        (
            "sparkpost",
            [{"msys": {"message_event": {"type": "bounce", "bounce_class": "22", "raw_rcpt_to": READER}}}],
            [{"msys": {"message_event": {"type": "bounce", "bounce_class": "10", "raw_rcpt_to": READER}}}],
        ),
        (
            "resend",
            {"type": "email.bounced", "data": {"to": ["reader0@example.test"], "bounce": {"type": "Transient"}}},
            {"type": "email.bounced", "data": {"to": ["reader0@example.test"], "bounce": {"type": "Permanent"}}},
        ),
    ],
)
def test_a_bounce_is_soft_where_the_esp_says_so(esp, soft, hard):
    assert post(esp, soft).status_code == 200
    assert list(Bounce.objects.values_list("kind", "email")) == [("soft", "reader0@example.test")]
    assert post(esp, hard).status_code == 200
    assert Bounce.objects.latest("pk").kind == "hard"
    assert Suppression.objects.get().reason == "hard_bounce"


# Mailgun: basic auth and its HMAC signature.


def mailgun_signed(event_data: dict, key: str = MAILGUN_KEY) -> dict:
    timestamp, token = "1534108637", hashlib.sha256(json.dumps(event_data).encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event_data}


MAILGUN_FAILED = {
    "event": "failed",
    "severity": "permanent",
    "reason": "bounce",
    "recipient": "reader0@example.test",
    "timestamp": 1534110422.389832,
    "log-level": "error",
    "message": {"headers": {"to": "reader0@example.test", "message-id": "esp-1", "from": "Test Sender"}},
    "delivery-status": {
        "attempt-no": 1,
        "description": "",
        "code": 550,
        "message": "5.1.1 The email account that you tried to reach does not exist. Please try\n"
        "5.1.1 double-checking the recipient's email address for typos",
    },
}


@pytest.fixture
def sent_by_mailgun(sent):
    EspMessage.objects.filter(pk=EspMessage.objects.get().pk).update(message_id="<esp-1>")  # Mailgun's ids
    return sent


def test_a_signed_mailgun_bounce_and_complaint_are_recorded(sent_by_mailgun):
    assert post("mailgun", mailgun_signed(MAILGUN_FAILED)).status_code == 200
    bounce = Bounce.objects.get()
    assert (bounce.kind, bounce.reference, bounce.status) == ("hard", f"d{sent_by_mailgun.pk}", "5.1.1")
    assert "\n" not in bounce.text and bounce.text.startswith("5.1.1 The email account")
    complaint = {"event": "complained", "id": "ncV2", "timestamp": 1377214260.0, "recipient": "reader0@example.test"}
    assert post("mailgun", mailgun_signed(complaint)).status_code == 200
    assert Bounce.objects.latest("pk").kind == "complaint"


def test_a_mailgun_delivery_marks_the_delivery(sent_by_mailgun):
    delivered = {
        "event": "delivered",
        "timestamp": 1534108637.153125,
        "recipient": "reader0@example.test",
        "message": {"headers": {"message-id": "esp-1"}},
        "delivery-status": {"code": 250, "message": "OK"},
    }
    assert post("mailgun", mailgun_signed(delivered)).status_code == 200
    assert Delivery.objects.get().outcome == "delivered"


@pytest.mark.parametrize(
    "payload",
    [
        mailgun_signed(MAILGUN_FAILED, key="someone else's key"),
        {"event-data": MAILGUN_FAILED},  # no signature at all
    ],
    ids=["wrong key", "unsigned"],
)
def test_a_mailgun_post_without_a_good_signature_is_refused(sent_by_mailgun, payload):
    before = everything()
    response = post("mailgun", payload)
    assert response.status_code == 403
    assert everything() == before


def test_mailgun_posts_are_refused_until_its_signing_key_is_set(settings, sent_by_mailgun, caplog):
    settings.ANYMAIL = {"WEBHOOK_SECRET": [SECRET]}
    before = everything()
    with caplog.at_level(logging.ERROR, logger="smtp_settings.webhooks"):
        response = post("mailgun", mailgun_signed(MAILGUN_FAILED))
    assert response.status_code == 403
    assert "MAILGUN_WEBHOOK_SIGNING_KEY" in caplog.text
    assert everything() == before


# SendGrid: batches of events; signed webhooks when a verification key is set.

SENDGRID_BOUNCE = {
    "ip": "167.89.17.173",
    "status": "5.1.1",
    "sg_event_id": "lC0Rc-FuQmKbnxCWxX1jRQ",
    "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
    "sg_message_id": "Lli-03HcQ5-JLybO9fXsJg.filter0077p1las1.21536.5717FC482.0",
    "tls": 1,
    "event": "bounce",
    "email": "reader0@example.test",
    "timestamp": 1461095250,
    "anymail_id": "esp-1",
    "type": "bounce",
}


def test_a_sendgrid_batch_acts_on_each_event(sent):
    Subscriber.objects.create(email="someone@example.test")
    batch = [
        {"event": "delivered", "email": "reader0@example.test", "anymail_id": "esp-1", "sg_event_id": "a1"},
        {"event": "open", "email": "reader0@example.test", "anymail_id": "esp-1", "sg_event_id": "a2"},
        SENDGRID_BOUNCE,
        {"event": "spamreport", "email": "angry@example.test", "sg_event_id": "a3", "timestamp": 1461095250},
        {"event": "unsubscribe", "email": "someone@example.test", "sg_event_id": "a4", "timestamp": 1461095250},
    ]
    assert post("sendgrid", batch).status_code == 200
    assert dict(Suppression.objects.values_list("email", "reason")) == {
        "reader0@example.test": "hard_bounce",
        "angry@example.test": "complaint",
        "someone@example.test": "unsubscribe",
    }
    assert list(Bounce.objects.order_by("pk").values_list("kind", "code", "status")) == [
        ("hard", 550, "5.1.1"),
        ("complaint", None, ""),
    ]
    assert Delivery.objects.get().outcome == "bounced"  # its bounce came after "delivered", and wins
    assert Subscriber.objects.get(email="someone@example.test").status == "unsubscribed"
    # SendGrid posts the batch again: nothing more happens.
    assert post("sendgrid", batch).status_code == 200
    assert Bounce.objects.count() == 2


def test_a_signed_sendgrid_post_is_checked_against_the_verification_key(settings, sent):
    private_key = ec.generate_private_key(ec.SECP256R1())
    public_key = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings.ANYMAIL |= {"SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": b"".join(public_key.splitlines()[1:-1]).decode()}
    body = json.dumps([SENDGRID_BOUNCE])

    def signed(timestamp: str, payload: str) -> dict:
        signature = private_key.sign((timestamp + payload).encode(), ec.ECDSA(hashes.SHA256()))
        return {
            "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP": timestamp,
            "HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE": base64.b64encode(signature).decode(),
        }

    tampered = body.replace("reader0@", "victim@")
    assert post("sendgrid", tampered, **signed("1461095250", body)).status_code == 403
    assert post("sendgrid", body).status_code == 403  # unsigned
    assert not Bounce.objects.exists()
    assert post("sendgrid", body, **signed("1461095250", body)).status_code == 200
    assert Bounce.objects.get().email == "reader0@example.test"


# Credentials: every ESP's URL wants the secret.


@pytest.mark.parametrize(
    "credentials", [None, "relaydeck:wrong", "relaydeck:", SECRET + "x", "", "relaydeck:webhook-secret\x00"]
)
def test_wrong_or_missing_credentials_get_401_and_change_nothing(sent, credentials):
    before = everything()
    response = post("postmark", postmark_bounce(), credentials=credentials)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="Relaydeck webhooks"'
    assert everything() == before


def test_a_secret_being_changed_is_taken_in_either_form(settings, sent):
    settings.ANYMAIL = {"WEBHOOK_SECRET": ["relaydeck:new-secret", SECRET]}
    assert post("postmark", postmark_bounce(), credentials="relaydeck:new-secret").status_code == 200
    assert post("postmark", postmark_bounce(ID=2), credentials=SECRET).status_code == 200
    assert Bounce.objects.count() == 2


@pytest.mark.parametrize("name", ["postmark", "mailgun", "sendgrid", "brevo", "resend", "amazon_ses", "mandrill"])
def test_without_a_secret_every_webhook_is_closed_and_the_log_says_why(settings, sent, caplog, name):
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    before = everything()
    with caplog.at_level(logging.WARNING, logger="smtp_settings.webhooks"):
        for credentials in (None, SECRET):
            response = post(name, postmark_bounce(), credentials=credentials)
            assert response.status_code == 403
            assert "ANYMAIL_WEBHOOK_SECRET is not set" in response.content.decode()
    assert "ANYMAIL_WEBHOOK_SECRET is not set" in caplog.text
    assert everything() == before


def test_the_webhooks_need_no_session_and_no_csrf_token(sent):
    browser = Client(enforce_csrf_checks=True)
    assert post("postmark", postmark_delivery(), client=browser).status_code == 200
    assert Delivery.objects.get().outcome == "delivered"


def test_a_get_is_refused_and_a_head_answered_as_esps_check_their_urls(sent):
    auth = {"HTTP_AUTHORIZATION": basic_auth(SECRET)}
    assert Client().get(reverse("webhooks:postmark"), **auth).status_code == 405
    assert Client().head(reverse("webhooks:postmark"), **auth).status_code == 200


# Malformed payloads: 400, before any event of the post is acted on.


@pytest.mark.parametrize(
    ("esp", "body"),
    [
        ("postmark", b"{not json"),
        ("postmark", b"\xff\xfe"),
        ("postmark", b"[1, 2]"),
        ("postmark", b""),
        ("postmark", json.dumps({"FromFull": {"Email": "x@example.test"}})),  # an inbound post
        ("postmark", json.dumps(postmark_bounce(Email=None, MessageID=None))),  # names no one
        ("sendgrid", b'{"event": "bounce"}'),  # a dict, not a list
        ("sendgrid", json.dumps([SENDGRID_BOUNCE, {"event": "bounce", "email": "<b>x</b>"}])),
        ("sendgrid", json.dumps([SENDGRID_BOUNCE, "x"])),
        ("mailgun", b"{not json"),
        ("mailgun", json.dumps([1])),
    ],
)
def test_a_malformed_payload_gets_400_and_changes_nothing(sent, esp, body):
    before = everything()
    response = post(esp, body)
    assert response.status_code == 400
    assert response.content.decode().startswith("Malformed payload: ")
    assert everything() == before


def test_a_body_over_the_upload_limit_gets_400(settings, sent):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    before = everything()
    assert post("postmark", postmark_bounce(Description="x" * 2000)).status_code == 400
    assert everything() == before


# Hostile contents: kept bounded, shown escaped.


def test_hostile_contents_are_stored_bounded_and_shown_escaped(
    sent, viewer_client, settings, django_capture_on_commit_callbacks
):
    settings.BOUNCE_REPORT_MAX_BYTES = 50_000
    description = "<script>alert(1)</script>\x00\x1b[31m\r\nX-Injected: yes\u2028" + "é" * 100_000
    payload = postmark_bounce(Description=description, Details="smtp;550 5.1.1 <b>gone</b>", MessageID="x\x00y")
    with django_capture_on_commit_callbacks(execute=True):
        assert post("postmark", payload).status_code == 200
    bounce = Bounce.objects.get()
    assert len(bounce.text) <= 2000 and bounce.report_size > 100_000 and len(bytes(bounce.report)) == 50_000
    assert not any(character in bounce.text for character in "\x00\x1b\r\n\u2028")
    assert bounce.text.startswith("<script>alert(1)</script> [31m X-Injected: yes é")
    assert bounce.reference == ""  # a message id with a NUL in it names nothing we sent
    eventlog.flush()
    page = viewer_client.get(reverse("logs:list")).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page


def test_a_hostile_recipient_is_no_address(sent):
    payload = postmark_bounce(Email="<img src=x>@example.test\r\n", MessageID="esp-1")
    assert post("postmark", payload).status_code == 200
    assert Bounce.objects.get().email == "reader0@example.test"  # the address the message went to
    assert list(Suppression.objects.values_list("email", flat=True)) == ["reader0@example.test"]
