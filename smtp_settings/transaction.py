"""One SMTP mail transaction on an open session: MAIL, RCPT, DATA and the final dot.

`PooledConnection` wraps a session that `connection.open_session` opened and the pool lends
out. `transact` sends one message (pipelined when the server offers PIPELINING) and returns
the server's replies as a `TxResult` for the caller to judge; it raises `SessionClosed` on a
421 and `ConnectionLost` on a network error or a reply out of bounds (`replies.py`), and
either way the connection is closed and never used again. `prepare_data` turns a message into
the bytes `transact` sends.
"""

import math
import re
import smtplib
import time
from dataclasses import dataclass

from smtp_settings.events import connection_ids
from smtp_settings.replies import BoundedSMTP, ProtocolError

_BARE_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class SessionClosed(Exception):
    """The server answered 421: the session is over. Resend on a new connection."""

    def __init__(self, stage: str, code: int, text: str):
        super().__init__(f"{code} {text} (at {stage})")
        self.stage, self.code, self.text = stage, code, text


class ConnectionLost(Exception):
    """The connection broke (reset, EOF, timeout), or the server's reply broke the protocol
    and it was closed. `after_dot`: the whole message went out and the reply never came, so
    the server may or may not have accepted it (RFC 1047)."""

    def __init__(self, stage: str, error: BaseException, after_dot: bool = False):
        super().__init__(f"{error} (at {stage})")
        self.stage, self.error, self.after_dot = stage, error, after_dot

    @property
    def protocol_error(self) -> bool:
        return isinstance(self.error, ProtocolError)

    @property
    def timed_out(self) -> bool:
        cause = self.error.__context__ if isinstance(self.error, smtplib.SMTPServerDisconnected) else self.error
        return isinstance(cause, TimeoutError)


class BeforeDotFailed(Exception):
    """The caller's `before_dot` hook raised: the message was not sent and the session, left
    mid-DATA, was closed (the server discards a transaction without its final dot)."""


@dataclass
class TxResult:
    """The server's replies to one MAIL/RCPT/DATA transaction."""

    mail: tuple[int, str]
    rcpts: dict[str, tuple[int, str]]
    data: tuple[int, str] | None  # the reply to DATA if not 354, else to the final dot; None if not reached
    stage: str  # where the transaction ended: MAIL, RCPT, DATA or dot


def _mail_command(mail_from: str) -> bytes:
    return f"MAIL FROM:<{mail_from}>\r\n".encode()


def _rcpt_command(rcpt: str) -> bytes:
    return f"RCPT TO:<{rcpt}>\r\n".encode()


def _envelope(mail_from: str, recipients: list[str]) -> bytes:
    """MAIL, RCPTs and DATA as one pipelined group."""
    return b"".join([_mail_command(mail_from), *map(_rcpt_command, recipients), b"DATA\r\n"])


def prepare_data(message_bytes: bytes) -> bytes:
    """CRLF line endings, dot-stuffing and the terminating dot, as RFC 5321 §4.5.2 wants."""
    crlf = message_bytes.count(b"\r\n")
    if message_bytes.count(b"\n") == crlf == message_bytes.count(b"\r"):  # CRLF throughout, as rendered
        data = message_bytes.replace(b"\r\n.", b"\r\n..")
        data = b"." + data if data.startswith(b".") else data
    else:
        data = _LEADING_DOT.sub(b"..", _BARE_EOL.sub(b"\r\n", message_bytes))
    return data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")


class PooledConnection:
    """An open session that the pool lends to one thread at a time, with what the server
    offered (PIPELINING, RFC 9422 LIMITS) and how many messages it has carried."""

    def __init__(self, smtp: BoundedSMTP, slot: object = None):
        self.id = connection_ids.next()
        self.context: dict = {}  # the event context of the caller that used it last
        self.ended = False  # an event that ends it was reported
        self.smtp = smtp
        self.slot = slot  # what the pool's Limits gave for it, given back when it closes
        self.opened_at = self.last_used = time.monotonic()
        self.sent = 0  # messages the server accepted on this session
        self.usable = True
        self.in_flight: tuple[str, list[str]] | None = None  # an envelope pipelined for the next message
        smtp.ends_at = math.inf  # the open's deadline is over; each reply keeps its own
        self.pipelining = smtp.has_extn("pipelining")
        limits = dict(re.findall(r"(\w+)=(\d+)", smtp.esmtp_features.get("limits", "")))
        self.mailmax = int(limits.get("MAILMAX", 0))
        self.rcptmax = int(limits.get("RCPTMAX", 0))

    def transact(self, mail_from: str, recipients: list[str], data: bytes, then=None, before_dot=None) -> TxResult:
        """One transaction; `data` comes from `prepare_data`. On a 421 or a broken link the
        connection is closed and marked unusable, and SessionClosed/ConnectionLost raised.

        `then`, the next message's (mail_from, recipients), is pipelined behind this message's
        content (RFC 2920 lets the content open a command group, as Postfix does), saving a
        round trip per message; the next transact with that envelope reads its replies
        instead of sending it. Until then the server is in DATA for it, so a connection with
        an envelope in flight must be closed, never reused for anything else.

        `before_dot()`, if given, is called just before the content and its final dot are
        written: until then the server cannot have accepted the message.

        Each reply must come whole within send_timeout, within bounds, and be one a server
        may give at that stage; otherwise the connection is closed and ConnectionLost raised
        (see `replies.py`). A bad reply to the final dot is no acceptance: the message is
        not ambiguous but not sent, as with any temporary failure."""
        smtp, stage, dot_sent = self.smtp, "MAIL", False
        try:
            if self.pipelining:  # RFC 2920: one write, then the replies in order
                if self.in_flight is None:
                    smtp.send(_envelope(mail_from, recipients))
                elif self.in_flight != (mail_from, recipients):
                    raise ConnectionError("a different envelope is in flight on this connection")
                self.in_flight = None
                mail = self._read(stage)
                stage = "RCPT"
                rcpts = {rcpt: self._read(stage) for rcpt in recipients}
                stage = "DATA"
                data_cmd = self._read(stage, go_ahead=True)
            else:
                smtp.send(_mail_command(mail_from))
                mail = self._read(stage)
                if mail[0] >= 300:
                    return self._abandon(TxResult(mail, {}, None, stage))
                stage, rcpts = "RCPT", {}
                for rcpt in recipients:
                    smtp.send(_rcpt_command(rcpt))
                    rcpts[rcpt] = self._read(stage)
                if not any(code < 300 for code, _ in rcpts.values()):
                    return self._abandon(TxResult(mail, rcpts, None, stage))
                stage = "DATA"
                smtp.send(b"DATA\r\n")
                data_cmd = self._read(stage, go_ahead=True)
            if data_cmd[0] != 354:
                return self._abandon(TxResult(mail, rcpts, data_cmd, stage))
            if mail[0] >= 300 or not any(code < 300 for code, _ in rcpts.values()):
                # Pipelined DATA was accepted with nobody to deliver to: end it empty (RFC 2920 §3.1).
                smtp.send(b".\r\n")
                return self._abandon(TxResult(mail, rcpts, self._read(stage), stage))
            stage = "dot"
            if before_dot is not None:
                try:
                    before_dot()
                except Exception as error:
                    self.close()
                    raise BeforeDotFailed(str(error)) from error
            follow = then is not None and self.pipelining
            smtp.send(data + _envelope(*then) if follow else data)
            dot_sent = True
            if follow:
                self.in_flight = then
            final = self._read(stage)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self.close()
            # After the dot, even a reply that breaks the protocol may come from a server that took the message.
            raise ConnectionLost(stage, error, after_dot=dot_sent) from error
        # The final reply ends the transaction whatever it says: no RSET (and none may be
        # sent while another envelope is in flight: it would become message content).
        if final[0] < 300:
            self.sent += 1
        self.last_used = time.monotonic()
        return TxResult(mail, rcpts, final, stage)

    def _read(self, stage: str, go_ahead: bool = False) -> tuple[int, str]:
        """The next reply. 421 ends the session; a 3xx is a protocol error unless it is the
        354 that `go_ahead` (DATA) waits for, and only a 354 or a refusal answers DATA."""
        code, text = self.smtp.getreply()
        if code == 421:
            self.close()
            raise SessionClosed(stage, code, text.decode("utf-8", "replace"))
        if (code == 354 or code >= 400) if go_ahead else not 300 <= code < 400:
            return code, text.decode("utf-8", "replace")
        raise ProtocolError(f"the server answered {stage} with {code}, which is no reply to it")

    def _abandon(self, result: TxResult) -> TxResult:
        """A failed transaction: reset the session so the next one starts clean."""
        try:
            self.smtp.send(b"RSET\r\n")
            if self.smtp.getreply()[0] != 250:
                self.close()
        except (smtplib.SMTPServerDisconnected, OSError):
            self.close()
        self.last_used = time.monotonic()
        return result

    def quit(self) -> None:
        if self.usable:
            try:
                self.smtp.reply_timeout_s = min(self.smtp.reply_timeout_s, 5)
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
        self.close()

    def close(self) -> None:
        self.usable = False
        self.smtp.close()
