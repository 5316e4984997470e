"""RotatingEmailBackend through an ESP entry: each message is one call to the ESP's API
(anymail), judged as the backend judges SMTP replies. Asserts on what a real HTTP server on
127.0.0.1, answering as Postmark (or Mailgun, ...) does, received."""

import base64
import itertools
import time
import uuid
from collections import Counter
from urllib.parse import unquote_plus

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection, make_msgid

from smtp_settings.backends import StopBatch
from smtp_settings.esp.client import TEXT_CHARS
from smtp_settings.esp.registry import ESPS_BY_KEY
from smtp_settings.events import Kind
from smtp_settings.limit_stores import store
from smtp_settings.models import EspMessage
from smtp_settings.raw import RawMessage
from tests.esp_server import (
    POSTMARK_TOKEN,
    Reply,
    content_of,
    esp_entry,
    fake_postmark,
    postmark_entry,
    postmark_routes,
    recipients_of,
)

# The shared limits' slots are taken from database connections of their own.
pytestmark = pytest.mark.django_db(transaction=True)

BACKEND = "smtp_settings.backends.RotatingEmailBackend"


@pytest.fixture
def postmark(fake_esp):
    return fake_postmark(fake_esp)


def _backend(server, **options):
    return get_connection(BACKEND, server=server, retry_backoff_s=0.01, fail_silently=True, **options)


def _message(n: int = 0, **fields) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        subject=f"Hello {n}",
        body=f"Plain text {n}.\n",
        from_email="News <news@example.test>",
        to=[f"reader{n}@example.test"],
        headers={"Message-ID": make_msgid(domain="example.test")},
        **fields,
    )
    message.attach_alternative(f"<p>HTML {n}</p>", "text/html")
    return message


def _kinds(events) -> list[str]:
    return [event.kind for event in events]


def test_a_message_goes_out_as_postmark_json_and_comes_back_sent_with_its_id(postmark, make_server):
    server = postmark_entry(make_server, postmark, custom_headers=[["X-Mailer", "Relaydeck"]])
    message = _message(bcc=["audit@example.test"])
    message.bounce_reference = "d42"

    assert _backend(server).send_messages([message]) == 1

    [request] = postmark.requests
    assert (request.method, request.path) == ("POST", "/email")
    assert request.headers["x-postmark-server-token"] == POSTMARK_TOKEN
    assert request.json == {
        "From": "News <news@example.test>",
        "To": "reader0@example.test",
        "Bcc": "audit@example.test",
        "Subject": "Hello 0",
        "TextBody": "Plain text 0.\n",
        "HtmlBody": "<p>HTML 0</p>",
        "Headers": [
            {"Name": "X-Mailer", "Value": "Relaydeck"},
            {"Name": "Message-ID", "Value": message.extra_headers["Message-ID"]},
        ],
    }
    result = message.smtp_result
    assert (result.status, result.code, result.attempts, result.server) == ("sent", 200, 1, server.name)
    assert set(result.recipients) == {"reader0@example.test", "audit@example.test"}
    assert {r.status for r in result.recipients.values()} == {"sent"}
    rows = list(EspMessage.objects.values_list("reference", "server_id", "recipient"))
    assert sorted(rows) == [("d42", server.pk, "audit@example.test"), ("d42", server.pk, "reader0@example.test")]
    [message_id] = set(EspMessage.objects.values_list("message_id", flat=True))
    assert result.text == f"sent by Postmark as {message_id}"
    assert message.extra_headers == {"Message-ID": message.extra_headers["Message-ID"]}  # the caller's own is untouched


def test_several_messages_go_once_each_over_several_api_sessions(postmark, make_server):
    server = postmark_entry(make_server, postmark, max_conns=4)
    messages = [_message(n) for n in range(40)]

    assert _backend(server).send_messages(messages) == 40

    received = sorted(request.json["To"] for request in postmark.posts())
    assert received == sorted(f"reader{n}@example.test" for n in range(40))
    assert EspMessage.objects.count() == 40


def test_a_reference_that_is_none_is_not_kept_and_its_message_still_goes(postmark, make_server):
    """Only a sender's own names ("d42") are kept for the webhooks: "order-7" would name nothing."""
    message = _message()
    message.bounce_reference = "order-7"

    assert _backend(postmark_entry(make_server, postmark)).send_messages([message]) == 1

    assert list(EspMessage.objects.values_list("reference", "recipient")) == [("", "reader0@example.test")]


def test_429_is_the_esps_421_it_lowers_the_rate_for_the_cluster_and_is_retried(postmark, make_server, pool_events):
    server = postmark_entry(make_server, postmark, retries=2, rate_limit=50)
    postmark.script(Reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}))
    message = _message()

    _backend(server).send_messages([message])

    assert (message.smtp_result.status, message.smtp_result.attempts) == ("sent", 2)
    assert len(postmark.posts()) == 2
    assert _kinds(pool_events) == [Kind.THROTTLED, Kind.RETRY]
    throttled, retry = pool_events
    assert (throttled.code, throttled.server_name, throttled.stage) == (429, server.name, "")
    assert "Rate limit exceeded." in throttled.text and throttled.detail["rate"] == 25
    assert (retry.code, retry.stage) == (429, "API")
    assert store().state(server.pk).throttled_rate == 25  # halved, for every process


def test_429_without_retries_left_is_deferred_with_the_esps_words(postmark, make_server, pool_events):
    server = postmark_entry(make_server, postmark)
    postmark.script(Reply(429, {"ErrorCode": 429, "Message": "Slow down."}))
    message = _message()

    assert _backend(server, retries=0).send_messages([message]) == 0

    result = message.smtp_result
    assert (result.status, result.code, result.stopped) == ("deferred", 429, False)
    assert result.text == "Postmark API 429 Too Many Requests: Slow down."
    assert _kinds(pool_events) == [Kind.THROTTLED, Kind.DEFERRED]


def test_a_500_is_deferred(postmark, make_server, pool_events):
    server = postmark_entry(make_server, postmark)
    postmark.script(Reply(500, {"ErrorCode": 500, "Message": "Internal error"}))
    message = _message()

    _backend(server, retries=0).send_messages([message])

    assert (message.smtp_result.status, message.smtp_result.code) == ("deferred", 500)
    assert _kinds(pool_events) == [Kind.DEFERRED]
    assert EspMessage.objects.count() == 0


def test_a_400_fails_at_once_with_the_esps_error_text(postmark, make_server, pool_events):
    server = postmark_entry(make_server, postmark, retries=3)
    postmark.script(Reply(400, {"ErrorCode": 300, "Message": "Invalid 'From' address: 'x'."}))
    message = _message()

    _backend(server).send_messages([message])

    result = message.smtp_result
    assert (result.status, result.code, result.attempts) == ("failed", 400, 1)
    assert result.text == "Postmark API 400 Bad Request: Invalid 'From' address: 'x'."
    assert len(postmark.posts()) == 1
    [failure] = pool_events
    assert (failure.kind, failure.code, failure.recipient) == (Kind.FAILURE, 400, "reader0@example.test")


def test_recipients_the_esp_rejects_fail_and_the_others_are_sent(postmark, make_server):
    server = postmark_entry(make_server, postmark)
    inactive = "Message OK, but will not deliver to these inactive addresses: gone@example.test. Inactive recipients"
    postmark.script(Reply(200, {"To": "ok@example.test", "MessageID": "m-1", "ErrorCode": 0, "Message": inactive}))
    message = _message(cc=["gone@example.test"])
    message.to = ["ok@example.test"]

    _backend(server).send_messages([message])

    outcome = {address: r.status for address, r in message.smtp_result.recipients.items()}
    assert outcome == {"ok@example.test": "sent", "gone@example.test": "failed"}
    assert message.smtp_result.status == "sent"
    assert list(EspMessage.objects.values_list("message_id", "recipient")) == [("m-1", "ok@example.test")]


def test_a_server_slower_than_send_timeout_leaves_the_message_ambiguous_not_hanging(postmark, make_server, pool_events):
    """The request went out and no reply came: the ESP may have it, as after an SMTP final dot."""
    server = postmark_entry(make_server, postmark, send_timeout=1)
    postmark.script(Reply(200, {"MessageID": "late"}, delay_s=5))
    message = _message()

    started = time.monotonic()
    _backend(server).send_messages([message])

    assert time.monotonic() - started < 3
    assert (message.smtp_result.status, message.smtp_result.ambiguous) == ("sent", True)
    assert "ReadTimeout" in message.smtp_result.text
    assert _kinds(pool_events) == [Kind.AMBIGUOUS]


def test_a_caller_that_prefers_a_duplicate_gets_a_timeout_deferred(postmark, make_server, pool_events):
    server = postmark_entry(make_server, postmark, send_timeout=1)
    postmark.script(Reply(200, {"MessageID": "late"}, delay_s=5))
    message = _message()

    _backend(server, retries=0, resend_ambiguous=True).send_messages([message])

    assert (message.smtp_result.status, message.smtp_result.code, message.smtp_result.ambiguous) == (
        "deferred",
        None,
        False,
    )
    assert _kinds(pool_events) == [Kind.TIMEOUT, Kind.DEFERRED]


def test_an_api_nobody_answers_at_is_deferred_untried_by_it(make_server, closed_port, pool_events):
    server = esp_entry(make_server, "postmark", f"http://127.0.0.1:{closed_port}/", {"server_token": "t0ken"})
    message = _message()

    _backend(server, retries=0).send_messages([message])

    assert (message.smtp_result.status, message.smtp_result.code) == ("deferred", None)
    assert "ConnectionError" in message.smtp_result.text
    assert _kinds(pool_events) == [Kind.NETWORK_ERROR, Kind.DEFERRED]


@pytest.mark.parametrize("status", [200, 500])
def test_an_endless_reply_is_read_only_so_far(postmark, make_server, status):
    server = postmark_entry(make_server, postmark)
    postmark.script(Reply(status, endless=True))
    message = _message()

    started = time.monotonic()
    _backend(server, retries=0).send_messages([message])

    assert time.monotonic() - started < 5
    result = message.smtp_result
    assert len(result.text) <= TEXT_CHARS + 100
    # A 2xx the ESP's format does not explain: taken, probably; an error: deferred, with its start.
    assert (result.status, result.ambiguous) == (("sent", True) if status == 200 else ("deferred", False))
    assert "AAAA" in result.text


def test_a_reply_echoing_the_api_key_never_shows_it(postmark, make_server, pool_events):
    server = postmark_entry(make_server, postmark)
    basic = base64.b64encode(f"api:{POSTMARK_TOKEN}".encode()).decode()
    postmark.script(Reply(422, {"ErrorCode": 10, "Message": f"Bad token {POSTMARK_TOKEN} ({basic})"}))
    message = _message()

    _backend(server).send_messages([message])

    texts = [message.smtp_result.text, *(event.text for event in pool_events)]
    assert message.smtp_result.status == "failed" and "[redacted]" in message.smtp_result.text
    assert not any(POSTMARK_TOKEN in text or basic in text for text in texts)


def test_the_final_dot_fence_runs_before_the_post_and_a_refusal_holds_the_rest_back(postmark, make_server):
    server = postmark_entry(make_server, postmark, max_conns=1)
    messages = [_message(n) for n in range(5)]
    seen = []

    def on_final_dot(message):
        seen.append((message.subject, len(postmark.posts())))  # nothing of it posted yet
        if message.subject == "Hello 2":
            raise StopBatch("the caller lost its claim")

    _backend(server, on_final_dot=on_final_dot).send_messages(messages)

    assert seen == [("Hello 0", 0), ("Hello 1", 1), ("Hello 2", 2)]
    assert [request.json["Subject"] for request in postmark.posts()] == ["Hello 0", "Hello 1"]
    assert [(m.smtp_result.status, m.smtp_result.stopped) for m in messages] == [
        ("sent", False),
        ("sent", False),
        *[("deferred", True)] * 3,
    ]
    assert messages[2].smtp_result.text == "not sent: the batch was stopped: the caller lost its claim"


def test_an_outbox_message_goes_as_its_envelope_says(postmark, make_server):
    server = postmark_entry(make_server, postmark, custom_headers=[["X-Mailer", "Relaydeck"]])
    data = (
        b"From: Alerts <alerts@example.test>\r\nTo: Ann <ann@example.test>, left-out@example.test\r\n"
        b"Cc: cc@example.test\r\nSubject: =?utf-8?q?Caf=C3=A9?=\r\nMessage-ID: <a1@example.test>\r\n"
        b"X-Mailer: App 2\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n"
        b"--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=r.csv\r\n\r\na,b\r\n--b--\r\n"
    )
    raw = RawMessage("bounce@example.test", ["ann@example.test", "cc@example.test", "hidden@example.test"], data)

    _backend(server).send_messages([raw])

    sent = postmark.posts()[0].json
    assert (sent["From"], sent["To"], sent["Cc"], sent["Bcc"]) == (
        "Alerts <alerts@example.test>",
        "Ann <ann@example.test>",
        "cc@example.test",
        "hidden@example.test",
    )
    assert (sent["Subject"], sent["TextBody"]) == ("Café", "Hello")
    assert {h["Name"]: h["Value"] for h in sent["Headers"]} == {"Message-ID": "<a1@example.test>", "X-Mailer": "App 2"}
    [attachment] = sent["Attachments"]
    assert (attachment["Name"], base64.b64decode(attachment["Content"])) == ("r.csv", b"a,b")
    assert raw.smtp_result.status == "sent"
    assert set(raw.smtp_result.recipients) == {"ann@example.test", "cc@example.test", "hidden@example.test"}


def test_an_outbox_message_an_esp_cannot_take_fails_without_a_call(postmark, make_server):
    server = postmark_entry(make_server, postmark)
    raw = RawMessage("", ["ann@example.test"], b"Subject: no sender\r\n\r\nHi\r\n")

    _backend(server).send_messages([raw])

    assert raw.smtp_result.status == "failed" and "neither a From header" in raw.smtp_result.text
    assert postmark.requests == []


# Each ESP of the registry, sending through its anymail backend: where it posts, how it shows
# the key, and the success reply it gets (as the ESP's documentation gives it).
_SUCCESS = {
    "postmark": (
        "/email",
        Reply(200, {"To": "reader0@example.test", "MessageID": "pm-1", "ErrorCode": 0, "Message": "OK"}),
    ),
    "mailgun": (
        "/v3/mg.example.test/messages",
        Reply(200, {"id": "<mg-1@example.test>", "message": "Queued. Thank you."}),
    ),
    "brevo": ("/v3/smtp/email", Reply(201, {"messageId": "<br-1@example.test>"})),
    "resend": ("/emails", Reply(200, {"id": "rs-1"})),
    "postal": (
        "/api/v1/send/message",
        Reply(200, {"status": "success", "data": {"messages": {"reader0@example.test": {"id": 7, "token": "x"}}}}),
    ),
}


@pytest.mark.parametrize("key", sorted(ESPS_BY_KEY))
def test_every_esp_on_offer_sends_through_its_anymail_backend(key, fake_esp, make_server):
    esp = ESPS_BY_KEY[key]
    path, reply = _SUCCESS[key]
    api = fake_esp(routes={("POST", path): lambda request: reply})
    base = api.url + path.split("/")[1] + "/" if path.startswith("/v3/") else api.url
    credentials = {esp.key_setting: "k3y-" + key, "sender_domain": "mg.example.test"}
    server = esp_entry(make_server, key, base, credentials)
    message = _message()

    _backend(server).send_messages([message])

    [request] = api.requests
    assert request.path == path
    presented = esp.auth("k3y-" + key)
    if "auth" in presented:
        assert request.headers["authorization"] == "Basic " + base64.b64encode(b"api:k3y-" + key.encode()).decode()
    else:
        assert all(request.headers[name.lower()] == value for name, value in presented["headers"].items())
    assert message.smtp_result.status == "sent", message.smtp_result.text
    assert "Hello 0" in unquote_plus(request.body.decode())  # JSON, or Mailgun's form fields


def test_a_message_with_a_control_character_in_an_address_fails_untried(postmark, make_server):
    server = postmark_entry(make_server, postmark)
    message = EmailMessage("Hi", "Body", "news@example.test", ["a@example.test\x00b"])

    _backend(server).send_messages([message])

    assert message.smtp_result.status == "failed" and message.smtp_result.attempts == 0
    assert postmark.requests == []


# -- recipients per call --

BULLETIN = (
    b"From: Ops <ops@example.test>\r\nTo: Team <team0@example.test>\r\nCc: team1@example.test\r\n"
    b"Subject: Maintenance tonight\r\nMessage-ID: <maint@example.test>\r\n\r\nDown from 22:00.\r\n"
)


def _bulletin(count: int) -> RawMessage:
    """An outbox message to `count` recipients: the first two named in To and Cc, the rest Bcc."""
    return RawMessage("ops@example.test", [f"team{n}@example.test" for n in range(count)], BULLETIN)


def _nth_call_answered(api, n: int, reply: Reply) -> None:
    """The API answers its n-th POST (from 1) with `reply`, the others as its routes do."""
    route = api.routes["POST", "/email"]
    counter = itertools.count(1)
    api.routes["POST", "/email"] = lambda request: reply if next(counter) == n else route(request)


def _taken(api) -> Counter:
    """How many times each recipient was in a call the API took."""
    taken = [request for request in api.posts() if 200 <= request.status < 300]
    return Counter(address for request in taken for address in recipients_of(request))


def _brevo_send(request):
    return Reply(201, {"messageId": f"<{uuid.uuid4()}@example.test>"})


@pytest.mark.parametrize(
    "esp, max_batch, calls",
    [("postmark", None, [50, 50, 20]), ("postmark", 30, [30, 30, 30, 30]), ("brevo", None, [99, 21])],
)
def test_a_message_to_more_recipients_than_a_call_takes_goes_as_several_calls_of_the_same_content(
    fake_esp, make_server, esp, max_batch, calls
):
    if esp == "postmark":
        api = fake_esp(routes=postmark_routes())
        base = api.url
    else:
        api = fake_esp(routes={("POST", "/v3/smtp/email"): _brevo_send})
        base = api.url + "v3/"
    server = esp_entry(make_server, esp, base, {ESPS_BY_KEY[esp].key_setting: "k3y"}, max_batch=max_batch)
    raw = _bulletin(120)

    assert _backend(server).send_messages([raw]) == 1

    posts = api.posts()
    assert [len(recipients_of(request)) for request in posts] == calls
    assert all(content_of(request) == content_of(posts[0]) for request in posts)
    assert _taken(api) == Counter(raw.recipients)  # every recipient once
    named = [{key.lower() for key in ("To", "Cc", "to", "cc") if key in request.json} for request in posts]
    assert named == [{"to", "cc"}] + [set()] * (len(calls) - 1)  # the two the headers name go first
    result = raw.smtp_result
    assert (result.status, result.attempts) == ("sent", len(calls))
    assert {r.status for r in result.recipients.values()} == {"sent"} and len(result.recipients) == 120
    per_call = Counter(EspMessage.objects.values_list("message_id", flat=True))
    assert sorted(per_call.values()) == sorted(calls)  # a row per recipient, with its call's id


def test_a_django_message_is_split_by_its_envelope_and_each_call_names_only_its_own(postmark, make_server):
    server = postmark_entry(make_server, postmark, max_batch=2)
    message = _message(cc=["Cc Person <cc@example.test>"], bcc=["b1@example.test", "b2@example.test"])
    message.to = ["Ann <ann@example.test>", "bob@example.test"]

    _backend(server).send_messages([message])

    calls = [{key: request.json.get(key) for key in ("To", "Cc", "Bcc")} for request in postmark.posts()]
    assert calls == [
        {"To": "Ann <ann@example.test>, bob@example.test", "Cc": None, "Bcc": None},
        {"To": None, "Cc": "Cc Person <cc@example.test>", "Bcc": "b1@example.test"},
        {"To": None, "Cc": None, "Bcc": "b2@example.test"},
    ]
    assert message.smtp_result.status == "sent" and message.to == ["Ann <ann@example.test>", "bob@example.test"]


def test_one_address_in_two_cases_goes_once_in_one_call(postmark, make_server):
    server = postmark_entry(make_server, postmark, max_batch=1)
    raw = RawMessage("ops@example.test", ["Ann@example.test", "bob@example.test", "ann@example.test"], BULLETIN)

    _backend(server).send_messages([raw])

    assert [recipients_of(request) for request in postmark.posts()] == [["ann@example.test"], ["bob@example.test"]]
    assert {address: r.status for address, r in raw.smtp_result.recipients.items()} == dict.fromkeys(
        raw.recipients, "sent"
    )


def test_a_throttled_call_is_made_again_for_its_own_recipients_only(postmark, make_server, pool_events):
    """With retries left, the backend goes again for the pending recipients: the calls that
    went are never made again, so nobody gets the message twice across the retry."""
    server = postmark_entry(make_server, postmark, max_batch=50, retries=2)
    _nth_call_answered(postmark, 2, Reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded."}))
    raw = _bulletin(120)

    assert _backend(server).send_messages([raw]) == 1

    posts = postmark.posts()
    assert [(len(recipients_of(request)), request.status) for request in posts] == [
        (50, 200),
        (50, 429),
        (50, 200),
        (20, 200),
    ]
    assert recipients_of(posts[1]) == recipients_of(posts[2])  # the same fifty, once taken
    assert _taken(postmark) == Counter(raw.recipients)
    assert (raw.smtp_result.status, raw.smtp_result.attempts) == ("sent", 4)
    assert _kinds(pool_events) == [Kind.THROTTLED, Kind.RETRY]
    assert EspMessage.objects.count() == 120


def test_a_throttled_call_without_retries_left_defers_its_recipients_and_the_rest_the_first_stay_sent(
    postmark, make_server, pool_events
):
    server = postmark_entry(make_server, postmark, max_batch=50)
    _nth_call_answered(postmark, 2, Reply(429, {"ErrorCode": 429, "Message": "Slow down."}))
    raw = _bulletin(120)

    _backend(server, retries=0).send_messages([raw])

    posts = postmark.posts()
    assert [request.status for request in posts] == [200, 429]  # no third call after a 429
    first = set(recipients_of(posts[0]))
    result = raw.smtp_result
    assert (result.status, result.code, result.stopped) == ("deferred", 429, False)
    assert {a for a, r in result.recipients.items() if r.status == "sent"} == first
    deferred = {a: (r.status, r.code) for a, r in result.recipients.items() if a not in first}
    assert len(deferred) == 70 and set(deferred.values()) == {("deferred", 429)}
    assert set(EspMessage.objects.values_list("recipient", flat=True)) == first
    assert _kinds(pool_events) == [Kind.THROTTLED, Kind.DEFERRED]


def test_a_call_refused_with_400_fails_its_recipients_and_the_other_calls_go(postmark, make_server, pool_events):
    server = postmark_entry(make_server, postmark, max_batch=50, retries=2)
    _nth_call_answered(postmark, 2, Reply(400, {"ErrorCode": 300, "Message": "Invalid 'Bcc' address."}))
    raw = _bulletin(120)

    _backend(server).send_messages([raw])

    posts = postmark.posts()
    assert [request.status for request in posts] == [200, 400, 200]
    refused = set(recipients_of(posts[1]))
    statuses = {a: r.status for a, r in raw.smtp_result.recipients.items()}
    assert {a for a, status in statuses.items() if status == "failed"} == refused and len(refused) == 50
    assert raw.smtp_result.status == "sent"  # as over SMTP: some recipients refused, the others took it
    assert Counter(_kinds(pool_events)) == {Kind.FAILURE: 50}
    assert EspMessage.objects.count() == 70


def test_the_fence_runs_before_each_call_and_a_refusal_stops_the_rest_of_the_message(postmark, make_server):
    server = postmark_entry(make_server, postmark, max_batch=50)
    raw = _bulletin(120)
    seen = []

    def on_final_dot(message):
        seen.append(len(postmark.posts()))
        if len(seen) == 2:
            raise StopBatch("the caller lost its claim")

    _backend(server, on_final_dot=on_final_dot).send_messages([raw])

    assert seen == [0, 1]
    [went] = postmark.posts()
    result = raw.smtp_result
    assert (result.status, result.stopped) == ("deferred", False)  # tried: fifty have it
    assert result.text == "not sent: the batch was stopped: the caller lost its claim"
    assert {a for a, r in result.recipients.items() if r.status == "sent"} == set(recipients_of(went))
    assert Counter(r.status for r in result.recipients.values()) == {"sent": 50, "deferred": 70}
