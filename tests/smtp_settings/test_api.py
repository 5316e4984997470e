"""The HTTP API: POST /api/v1/messages puts a message in the outbox, GET /api/v1/messages/<id>
says what became of it. A bearer token opens it; bad input is a 400 naming the field."""

import hashlib
import json
from email import message_from_bytes
from email.policy import default

import pytest
from django.test import Client
from django.urls import reverse

from smtp_settings.models import ApiToken, OutboxMessage
from smtp_settings.outbox import queue

pytestmark = pytest.mark.django_db

SEND = reverse("api:messages")
GOOD = {
    "to": ["Bob <bob@example.test>", "carol@example.test"],
    "from": "Shop <shop@example.test>",
    "subject": "Your order",
    "text": "It ships today.",
    "html": "<p>It ships <b>today</b>.</p>",
    "headers": {"Reply-To": "help@example.test", "X-Order": "1042"},
}


@pytest.fixture
def api():
    """A client with no session and CSRF checks on, as an application is."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def token():
    return ApiToken.issue("shop")


def post(api, body, key: str | None = None, **headers):
    if key is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return api.post(SEND, data, content_type="application/json", **headers)


def status_of(api, pk: int, key: str):
    return api.get(reverse("api:message", args=[pk]), HTTP_AUTHORIZATION=f"Bearer {key}")


# -- good requests --


def test_a_message_is_queued_with_its_envelope_and_exact_content(api, token, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as woken:
        response = post(api, GOOD, token[1])

    assert response.status_code == 201
    body = response.json()
    message = OutboxMessage.objects.get()
    assert body == {"id": message.pk, "status": "queued"}
    assert (message.source, message.submitted_by) == ("api", "api:shop")
    assert message.mail_from == "shop@example.test"
    assert message.recipients == ["bob@example.test", "carol@example.test"]
    assert message.route == [] and message.subject == "Your order" and message.size == len(message.data)
    assert woken == [queue.wake]  # the delivery is woken once the message is committed
    parsed = message_from_bytes(bytes(message.data), policy=default)
    assert parsed["To"] == "Bob <bob@example.test>, carol@example.test"
    assert parsed["Reply-To"] == "help@example.test" and parsed["X-Order"] == "1042"
    assert parsed["Message-ID"] == message.message_id
    assert parsed.get_body(("plain",)).get_content().strip() == "It ships today."
    assert parsed.get_body(("html",)).get_content().strip() == GOOD["html"]


def test_to_may_be_one_address_and_the_body_html_alone(api, token):
    response = post(api, {**GOOD, "to": "dave@example.test", "text": None, "headers": {}}, token[1])
    assert response.status_code == 201
    message = OutboxMessage.objects.get()
    assert message.recipients == ["dave@example.test"]
    parsed = message_from_bytes(bytes(message.data), policy=default)
    assert parsed.get_content_type() == "text/html"


def test_non_ascii_is_encoded_as_django_encodes_it(api, token):
    german = {"subject": "Ihre Bestellung: Größe 42", "from": "Jürgen <shop@example.test>"}
    response = post(api, {**GOOD, **german}, token[1])
    assert response.status_code == 201
    data = bytes(OutboxMessage.objects.get().data)
    assert data.isascii() and b"Subject: =?utf-8?" in data
    parsed = message_from_bytes(data, policy=default)
    assert parsed["Subject"] == "Ihre Bestellung: Größe 42" and parsed["From"].addresses[0].display_name == "Jürgen"


def test_the_tokens_servers_are_the_route_unless_the_request_names_one(api, make_server):
    ses, exchange = make_server(name="SES"), make_server(name="Exchange")
    key = ApiToken.issue("shop", [ses, exchange])[1]

    assert post(api, GOOD, key).status_code == 201
    assert post(api, {**GOOD, "server": "Exchange"}, key).status_code == 201
    assert post(api, {**GOOD, "server": ses.pk}, key).status_code == 201

    routes = [sorted(message.route) for message in OutboxMessage.objects.order_by("pk")]
    assert routes == [sorted([ses.pk, exchange.pk]), [exchange.pk], [ses.pk]]


def test_a_token_without_servers_may_name_any_enabled_server(api, token, make_server):
    server = make_server(name="SES")
    assert post(api, {**GOOD, "server": "SES"}, token[1]).status_code == 201
    assert OutboxMessage.objects.get().route == [server.pk]


def test_no_login_and_no_csrf_token_are_needed(api, token):
    response = post(api, GOOD, token[1])
    assert response.status_code == 201  # a session-less client with CSRF checks on


# -- the token --


def test_only_a_hash_of_the_key_is_stored(token):
    row, key = token
    stored = ApiToken.objects.filter(pk=row.pk).values()[0]
    assert key.startswith("rdk_") and len(key) > 40
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {str(value) for value in stored.values()}
    assert stored["prefix"] == key[:10]


def test_a_request_marks_the_token_used(api, token):
    assert ApiToken.objects.get().last_used_at is None
    post(api, GOOD, token[1])
    assert ApiToken.objects.get().last_used_at is not None


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="Relaydeck"'),
        ("Bearer ", 'Bearer realm="Relaydeck"'),
        ("Basic c2hvcDpzZWNyZXQ=", 'Bearer realm="Relaydeck"'),
        ("Bearer rdk_not-a-key", 'Bearer realm="Relaydeck", error="invalid_token"'),
    ],
    ids=["missing", "empty", "basic", "wrong"],
)
def test_a_missing_or_wrong_token_gets_401_and_changes_nothing(api, token, authorization, challenge):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    pk = OutboxMessage.objects.create(source="api", submitted_by="api:shop", recipients=[], data=b"x", size=1).pk
    for response in (post(api, GOOD, **headers), api.get(reverse("api:message", args=[pk]), **headers)):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == challenge
        assert response.json()["field"] == "Authorization"
    assert OutboxMessage.objects.count() == 1 and ApiToken.objects.get().last_used_at is None


def test_a_revoked_token_gets_401(api, token):
    ApiToken.objects.update(enabled=False)
    response = post(api, GOOD, token[1])
    assert response.status_code == 401 and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert not OutboxMessage.objects.exists()


def test_get_is_not_how_to_send(api, token):
    assert api.get(SEND, HTTP_AUTHORIZATION=f"Bearer {token[1]}").status_code == 405
    assert api.post(reverse("api:message", args=[1]), HTTP_AUTHORIZATION=f"Bearer {token[1]}").status_code == 405


# -- bad input: a 400 that names the field, and nothing written --


def _many(n: int) -> list[str]:
    return [f"user{i}@example.test" for i in range(n)]


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"to": None}, "to", "at least one recipient"),
        ({"to": []}, "to", "at least one recipient"),
        ({"to": 42}, "to", "a string or a list of strings"),
        ({"to": ["bob@example.test", 7]}, "to", "a string or a list of strings"),
        ({"to": "not an address"}, "to", "Enter an address"),
        ({"to": "bob@example.test\r\nBcc: all@example.test"}, "to", "line break"),
        ({"to": _many(4)}, "to", "at most 3 recipients"),
        ({"from": None}, "from", "required"),
        ({"from": ["shop@example.test"]}, "from", "must be a string"),
        ({"from": "shop@"}, "from", "Enter an address"),
        ({"subject": None}, "subject", "required"),
        ({"subject": "Hi\nBcc: all@example.test"}, "subject", "line break"),
        ({"subject": "Hi\x00"}, "subject", "U+0000"),
        ({"subject": "x" * 999}, "subject", "at most 998"),
        ({"text": None, "html": None}, "text", "needs a body"),
        ({"text": "", "html": ""}, "text", "needs a body"),
        ({"html": {"p": "hi"}}, "html", "must be a string"),
        ({"headers": ["X-A: 1"]}, "headers", "an object"),
        ({"headers": {"X-Evil": "1\r\nBcc: all@example.test"}}, "headers", "one line of text"),
        ({"headers": {"X-Evil": "1\u2028Bcc: all@example.test"}}, "headers", "U+2028"),
        ({"headers": {"Bad Name": "1"}}, "headers", "not valid"),
        ({"headers": {"Subject": "other"}}, "headers", "set by Relaydeck itself"),
        ({"headers": {"Content-Transfer-Encoding": "base64"}}, "headers", "set by Relaydeck itself"),
        ({"headers": {"MIME-Version": "2.0"}}, "headers", "set by Relaydeck itself"),
        ({"headers": {"X-Count": 3}}, "headers", "must be text"),
        ({"server": "nowhere"}, "server", "'nowhere' is not an SMTP server"),
        ({"server": True}, "server", "name or id"),
        ({"reply_to": "x@example.test"}, "reply_to", "not a field"),
        ({"text": "x" * 5000}, "text", "larger than 4,096 bytes"),
        ({"text": "short", "html": "<p>" + "x" * 5000}, "html", "larger than 4,096 bytes"),
    ],
)
def test_bad_input_names_the_field(api, token, settings, change, field, says):
    settings.RELAY_MAX_RECIPIENTS = 3
    settings.RELAY_MAX_MESSAGE_BYTES = 4096
    response = post(api, {**GOOD, "to": "bob@example.test", **change}, token[1])
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert says in response.json()["error"]
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"x" * 100_000: 1}, "x" * 100 + "…"),
        ({"headers": {"X-" + "x" * 100_000: "1\n"}}, "headers"),
        ({"headers": {"Bad " + "x" * 100_000: "1"}}, "headers"),
        ({"to": "a" * 100_000 + "@example.test"}, "to"),
    ],
    ids=["field", "header-name", "bad-header-name", "address"],
)
def test_an_error_quotes_at_most_100_characters_of_what_was_sent(api, token, change, field):
    response = post(api, {**GOOD, **change}, token[1])
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert len(response.json()["error"]) < 250


def test_a_message_larger_than_djangos_form_limit_is_taken(api, token, settings):
    """The body is read up to its own bound, not Django's DATA_UPLOAD_MAX_MEMORY_SIZE."""
    text = "line of text\n" * 480_000  # 6.2 MB
    assert len(text) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = post(api, {**GOOD, "text": text, "html": None}, token[1])
    assert response.status_code == 201
    assert OutboxMessage.objects.get().size > len(text)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000, b""],
    ids=["malformed", "not-utf8", "array", "nested", "empty"],
)
def test_a_body_that_is_not_a_json_object_is_refused(api, token, body):
    response = post(api, body, token[1])
    assert response.status_code == 400
    assert response.json() == {"error": "the body must be a JSON object", "field": None}


def test_an_oversized_body_is_refused_before_it_is_read(api, token, settings):
    settings.RELAY_MAX_MESSAGE_BYTES = 1000
    response = post(api, {**GOOD, "text": "x" * 3000}, token[1])
    assert response.status_code == 400
    assert response.json() == {"error": "the request body is larger than 2,000 bytes", "field": None}
    assert not OutboxMessage.objects.exists()


def test_a_token_may_only_name_its_own_servers_and_enabled_ones(api, make_server):
    mine, other, off = make_server(name="Mine"), make_server(name="Other"), make_server(name="Off", enabled=False)
    key = ApiToken.issue("shop", [mine, off])[1]

    other_response = post(api, {**GOOD, "server": other.pk}, key)
    off_response = post(api, {**GOOD, "server": "Off"}, key)

    assert other_response.status_code == 400 and other_response.json()["field"] == "server"
    assert "is not one of this token's servers" in other_response.json()["error"]
    assert off_response.status_code == 400
    assert off_response.json() == {"error": "server: Off is disabled", "field": "server"}
    assert not OutboxMessage.objects.exists()


# -- reading a message's status --


def test_a_token_reads_what_became_of_its_message(api, token, make_server):
    pk = post(api, GOOD, token[1]).json()["id"]
    server = make_server(name="SES")
    OutboxMessage.objects.filter(pk=pk).update(
        status="deferred", attempts=2, last_code=451, last_reply="4.7.1 <b>try later</b>", server=server
    )

    response = status_of(api, pk, token[1])

    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("id", "status", "attempts", "last_code", "last_reply", "server", "sent_at")} == {
        "id": pk,
        "status": "deferred",
        "attempts": 2,
        "last_code": 451,
        "last_reply": "4.7.1 <b>try later</b>",
        "server": "SES",
        "sent_at": None,
    }
    assert body["created_at"] and body["message_id"] == OutboxMessage.objects.get().message_id


def test_a_token_cannot_read_another_tokens_messages_nor_the_relays(api, token):
    pk = post(api, GOOD, token[1]).json()["id"]
    other_key = ApiToken.issue("crm")[1]
    relayed = OutboxMessage.objects.create(
        source="relay", submitted_by="api:crm", recipients=["a@example.test"], data=b"x", size=1
    )

    for key, wanted in ((other_key, pk), (other_key, relayed.pk), (token[1], 10_000)):
        response = status_of(api, wanted, key)
        assert response.status_code == 404
        assert response.json()["field"] == "id"
