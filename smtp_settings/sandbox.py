"""A local SMTP server that behaves like real providers, for demos and tests.

It runs aiosmtpd on its own event loop in a background thread, binds a random loopback port
unless told otherwise, and records every message it accepts so tests can assert on what a
real server received.
"""

import asyncio
import ssl
import threading
from dataclasses import dataclass
from email.parser import BytesHeaderParser

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class ReceivedMessage:
    session_id: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    message_id: str


class _Handler:
    def __init__(self, sandbox: "SandboxServer"):
        self.sandbox = sandbox

    async def handle_DATA(self, server, session, envelope):
        headers = BytesHeaderParser().parsebytes(envelope.original_content or envelope.content)
        self.sandbox._record(
            ReceivedMessage(
                session_id=id(session),
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=envelope.original_content or envelope.content,
                message_id=str(headers.get("Message-ID", "")),
            )
        )
        return "250 2.0.0 Message accepted for delivery"


class _SandboxSMTP(SMTP):
    def __init__(self, sandbox: "SandboxServer", **kwargs):
        super().__init__(_Handler(sandbox), **kwargs)
        self.sandbox = sandbox

    async def _handle_client(self):
        if self.sandbox.refuse_with:
            await self.push(self.sandbox.refuse_with)
            self.transport.close()
            return
        await super()._handle_client()


class SandboxServer:
    """An aiosmtpd server on 127.0.0.1 with provider-like behaviour.

    auth: "user:password" to offer and require AUTH PLAIN/LOGIN.
    tls_context: a server-side SSLContext; offered as STARTTLS, or from the first byte
        with implicit_tls=True.
    refuse_with: answer every connection with this reply (e.g. a 421 or 554) and hang up.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        refuse_with: str | None = None,
    ):
        self.host, self.port = host, port
        self.credentials = tuple(auth.split(":", 1)) if auth else None
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.refuse_with = refuse_with
        self.received: list[ReceivedMessage] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self.received.append(message)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and (
                auth_data.login.decode(),
                auth_data.password.decode(),
            )
            == self.credentials
        )
        return AuthResult(success=ok, handled=False)

    def _protocol(self) -> SMTP:
        options = {"hostname": "sandbox.relaydeck.test", "ident": "Relaydeck sandbox", "loop": self._loop}
        if self.credentials:
            options |= {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        if self.tls_context and not self.implicit_tls:
            options["tls_context"] = self.tls_context
        return _SandboxSMTP(self, **options)

    def start(self) -> "SandboxServer":
        self._loop = asyncio.new_event_loop()
        ssl_context = self.tls_context if self.implicit_tls else None
        self._server = self._loop.run_until_complete(
            self._loop.create_server(self._protocol, self.host, self.port, ssl=ssl_context)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"smtp-sandbox-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown():
            self._server.close()
            await self._server.wait_closed()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "SandboxServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
