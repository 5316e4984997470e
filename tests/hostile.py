"""A scriptable SMTP server that misbehaves on cue: a thread on a random loopback port whose
banner, replies and timing the test decides, down to a reply that never ends.

    server = HostileServer(banner=endless("220-AAAA"), replies={"MAIL": "999 what"}).start()

A reply is a string (CRLF added, "\\r\\n" between lines of a multi-line reply), a list (a
dialogue: the first item answers the command, the next ones the lines the client sends
after it, as AUTH LOGIN's), or a callable returning an iterable of byte chunks, produced
lazily and written until the client hangs up (`endless`). Replies are keyed by the command's
verb ("EHLO", "MAIL", "RCPT", "DATA", "AUTH", ...), and "dot" answers a message's final dot.
`byte_delay_s` sends the replies named in `slow` (all, and the banner, by default; "banner"
names it) one byte at a time. `unknown` answers any other command (IMAP's commands start with
a tag, which it takes for the verb); `tls` speaks TLS from the first byte (POP3S, IMAPS).
"""

import itertools
import socket
import ssl
import threading
from collections.abc import Callable, Collection, Iterable

Reply = str | list[str] | Callable[[], Iterable[bytes]]

DEFAULT_REPLIES: dict[str, Reply] = {
    "EHLO": "250-hostile.test\r\n250 AUTH PLAIN LOGIN",
    "HELO": "250 hostile.test",
    "AUTH": "235 2.7.0 Authentication successful",
    "MAIL": "250 2.1.0 Ok",
    "RCPT": "250 2.1.5 Ok",
    "DATA": "354 End data with <CR><LF>.<CR><LF>",
    "dot": "250 2.0.0 Ok: queued",
    "RSET": "250 2.0.0 Ok",
    "NOOP": "250 2.0.0 Ok",
    "QUIT": "221 2.0.0 Bye",
}
UNKNOWN = "502 5.5.2 Error: command not recognized"
PIPELINING_EHLO = "250-hostile.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN"


def endless(line: str) -> Callable[[], Iterable[bytes]]:
    """A reply that never ends: `line` (a continuation line, "220-AAAA…") again and again."""
    chunk = (line.encode() + b"\r\n") * max(1, 4096 // (len(line) + 2))
    return lambda: itertools.repeat(chunk)


class HostileServer:
    def __init__(
        self,
        banner: Reply = "220 hostile.test ESMTP",
        replies: dict[str, Reply] | None = None,
        byte_delay_s: float = 0.0,
        slow: Collection[str] | None = None,
        unknown: Reply = UNKNOWN,
        tls: ssl.SSLContext | None = None,
    ):
        self.replies = {"banner": banner, **DEFAULT_REPLIES, **(replies or {})}
        self.unknown = unknown
        self.tls = tls
        self.byte_delay_s = byte_delay_s
        self.slow = slow
        self.commands: list[str] = []  # every command line received, in order
        self.messages = 0  # final dots received
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "HostileServer":
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        if self.tls:
            conn.settimeout(5)
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
        conn.settimeout(0.1)
        with conn:
            if not self._send(conn, "banner"):
                return
            dialogue, in_data = iter(()), False
            for line in self._lines(conn):
                if in_data:
                    if line == b".":
                        in_data = False
                        self.messages += 1
                        if not self._send(conn, "dot"):
                            return
                    continue
                follow = next(dialogue, None)
                if follow is not None:
                    if not self._send(conn, "dialogue", follow):
                        return
                    continue
                command = line.decode("utf-8", "replace")
                self.commands.append(command)
                verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
                reply = self.replies.get(verb, self.unknown)
                if isinstance(reply, list):
                    reply, dialogue = reply[0], iter(reply[1:])
                if not self._send(conn, verb, reply) or verb == "QUIT":
                    return
                in_data = verb == "DATA" and isinstance(reply, str) and reply.startswith("354")

    def _lines(self, conn: socket.socket):
        buffer = b""
        while not self._stopping.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                yield line.rstrip(b"\r")

    def _send(self, conn: socket.socket, name: str, reply: Reply | None = None) -> bool:
        """Write a reply; False once the client has gone (or the server is stopping)."""
        reply = self.replies[name] if reply is None else reply
        chunks = reply() if callable(reply) else [reply.encode() + b"\r\n"]
        slow = self.byte_delay_s and (self.slow is None or name in self.slow)
        try:
            for chunk in chunks:
                if not slow:
                    self._write(conn, chunk)
                    continue
                for byte in chunk:
                    self._write(conn, bytes([byte]))
                    if self._stopping.wait(self.byte_delay_s):
                        return False
        except OSError:
            return False
        return True

    def _write(self, conn: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._stopping.is_set():
                raise ConnectionAbortedError("the server is stopping")
            try:
                view = view[conn.send(view) :]
            except TimeoutError:
                continue
