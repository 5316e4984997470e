"""An ESP's HTTP API on a random loopback port: a threaded http.server that records every
request and answers as the ESP would, or as the test scripts it.

    esp = FakeEsp(postmark_routes(), key="token-1").start()
    esp.script(Reply(429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}))  # the next POST
    ... send through an entry whose api_url is esp.url ...
    esp.requests  # [Request(method, path, headers, body, json, status answered)], in order

A route answers (method, path); `key` makes every request without it (in the ESP's header,
or as basic auth's password) a 401. A `Reply` may be slow (`delay_s` before anything is
written) or endless (`endless=True`: its body never ends, as a hostile server's).
"""

import base64
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Request:
    method: str
    path: str
    headers: dict  # lower-case names
    body: bytes
    status: int = 0  # what it was answered

    @property
    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    body: object = b""  # bytes, or anything JSON can write
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    endless: bool = False


Route = Callable[[Request], Reply]

# The fields of a send call that say who gets it: Postmark's (strings of addresses), Brevo's
# (lists of {"email", "name"}).
RECIPIENT_FIELDS = ("To", "Cc", "Bcc", "to", "cc", "bcc")


def recipients_of(request: Request) -> list[str]:
    """The addresses one call to Postmark's or Brevo's send API carried, in lower case."""
    body = request.json
    named = [body[key] for key in RECIPIENT_FIELDS if key in body]
    listed = [r["email"] for value in named if isinstance(value, list) for r in value]
    written = [address for _, address in getaddresses([value for value in named if isinstance(value, str)])]
    return [address.lower() for address in (*written, *listed)]


def content_of(request: Request) -> dict:
    """A send call's JSON less who gets it: the same for every call of one message."""
    return {key: value for key, value in request.json.items() if key not in RECIPIENT_FIELDS}


def postmark_send(request: Request) -> Reply:
    """Postmark's answer to POST /email: the message id it gave, for the To it read (none for
    a message to Cc or Bcc only)."""
    to = {"To": request.json["To"]} if "To" in request.json else {}
    answer = {**to, "SubmittedAt": "2026-01-01T00:00:00Z", "MessageID": str(uuid.uuid4())}
    return Reply(200, {**answer, "ErrorCode": 0, "Message": "OK"})


def postmark_routes() -> dict[tuple[str, str], Route]:
    return {
        ("POST", "/email"): postmark_send,
        ("GET", "/server"): lambda request: Reply(200, {"ID": 1, "Name": "Relaydeck tests", "Color": "blue"}),
    }


class FakeEsp:
    def __init__(self, routes: dict[tuple[str, str], Route], key: str = "", key_header: str = ""):
        self.routes = routes
        self.key, self.key_header = key, key_header.lower()
        self.requests: list[Request] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"

    def start(self) -> "FakeEsp":
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        """Answer the next POSTs with these, in order, before the routes take over again."""
        with self._lock:
            self._script.extend(replies)

    def posts(self) -> list[Request]:
        return [request for request in self.requests if request.method == "POST"]

    def _answer(self, request: Request) -> Reply:
        reply = self._reply(request)
        request.status = reply.status
        return reply

    def _reply(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if request.method == "POST" and self._script:
                return self._script.pop(0)
        if self.key and not self._authorized(request.headers):
            return Reply(401, {"ErrorCode": 10, "Message": "Bad or missing API token."})
        route = self.routes.get((request.method, request.path.split("?")[0]))
        return route(request) if route else Reply(404, {"message": "no such route"})

    def _authorized(self, headers: dict) -> bool:
        if self.key_header:
            value = headers.get(self.key_header, "")
            return value in (self.key, f"Bearer {self.key}")
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        return scheme == "Basic" and base64.b64decode(encoded).decode().partition(":")[2] == self.key

    def _handler(self):
        esp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as ESPs do

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                reply = esp._answer(Request(self.command, self.path, headers, body))
                time.sleep(reply.delay_s)
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(name, value)
                    if reply.endless:
                        self.send_header("Content-Length", str(10**12))
                        self.end_headers()
                        for chunk in itertools.repeat(b"A" * 65536):
                            self.wfile.write(chunk)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client had enough
                    self.close_connection = True

            do_GET = do_POST = _serve

        return Handler


POSTMARK_TOKEN = "pm-token-7f3a9c2e-5b1d"


def fake_postmark(start) -> FakeEsp:
    """A Postmark API that takes POSTMARK_TOKEN (`start`: the fake_esp fixture)."""
    return start(routes=postmark_routes(), key=POSTMARK_TOKEN, key_header="X-Postmark-Server-Token")


def esp_entry(make_server, esp: str, api_url: str = "", credentials: dict | None = None, **overrides):
    """An ESP entry (`make_server`: the fixture) with these anymail settings."""
    stored = json.dumps(credentials) if credentials else ""
    return make_server(kind="esp", esp=esp, host="", api_url=api_url, esp_credentials=stored, **overrides)


def postmark_entry(make_server, api: FakeEsp, **overrides):
    """An ESP entry for Postmark whose API is `api`."""
    return esp_entry(make_server, "postmark", api.url, {"server_token": POSTMARK_TOKEN}, **overrides)
