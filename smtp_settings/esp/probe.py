"""The settings page's "test connection" for an ESP entry: a real, harmless call to its API
(a read that needs a valid key: the registry's `check`), and, given an address, one test
message sent through it as the backend would. Never raises for anything the ESP or the
network does; every reply is bounded, cut free of the key, and escaped where shown."""

import time
from urllib.parse import urljoin

import requests

from smtp_settings.connection import Step
from smtp_settings.esp.client import ACCEPTED, BoundedSession, EspConnection, clean_text, credential_secrets, reply_text
from smtp_settings.esp.registry import ESPS_BY_KEY, Esp
from smtp_settings.pool import ServerConfig
from smtp_settings.probe import ProbeResult, default_from_email, test_message


def check_api(server, to_email: str = "", from_email: str = "") -> ProbeResult:
    """Call the API of the ESP entry `server` (saved or not) as it is configured."""
    result = ProbeResult()
    esp = ESPS_BY_KEY.get(server.esp)
    if esp is None:
        result.error = "Choose the ESP first."
        return result
    result.note = esp.note
    if esp.check is not None:
        _read(server, esp, result)
    if to_email and result.ok:
        _send(server, esp, test_message(server, from_email or default_from_email(server), to_email), result)
    return result


def _read(server, esp: Esp, result: ProbeResult) -> None:
    credentials = server.credentials
    secrets = credential_secrets(esp, credentials)
    path = esp.check(credentials)
    request = esp.auth(credentials.get(esp.key_setting, ""))
    request.setdefault("headers", {})["Accept"] = "application/json"
    started = time.monotonic()
    session = BoundedSession(server.send_timeout)
    try:
        response = session.get(urljoin(esp.api_url(server.api_url), path), **request)
    except requests.RequestException as error:
        text = clean_text(f"{type(error).__name__}: {error}", secrets)
        result.steps.append(Step(f"GET /{path}", False, None, text, time.monotonic() - started))
        result.error = f"{esp.label}'s API at {esp.api_url(server.api_url)} could not be reached."
        result.raw_reply = text
        return
    finally:
        session.close()
    ok = 200 <= response.status_code < 300
    text = reply_text(response, secrets)
    result.steps.append(Step(f"GET /{path}", ok, response.status_code, text, time.monotonic() - started))
    if not ok:
        result.error = _explain(esp, response.status_code)
        result.raw_reply = text


def _explain(esp: Esp, code: int) -> str:
    if code in (401, 403):
        return f"{esp.label} refused the {esp.key_label} ({code})."
    if code == 404:
        return f"{esp.label}'s API has no such resource (404): check the API URL and the settings."
    return f"{esp.label}'s API answered {code}."


def _send(server, esp: Esp, message, result: ProbeResult) -> None:
    started = time.monotonic()
    connection = EspConnection(ServerConfig.of(server))
    try:
        reply = connection.send(message)
    finally:
        connection.close()
    statuses = {status for status, _ in reply.statuses.values()}
    ok = reply.outcome == ACCEPTED and not statuses & {"rejected", "invalid", "failed"}
    ids = sorted({message_id for _, message_id in reply.statuses.values() if message_id})
    text = f"{', '.join(sorted(statuses))}{' as ' + ', '.join(ids) if ids else ''}: {reply.text}" if ok else reply.text
    result.steps.append(Step("API send", ok, reply.code, text, time.monotonic() - started))
    if not ok:
        result.error = f"{esp.label} did not take the test message."
        result.raw_reply = reply.text
