"""Dovecot, Debian's IMAP and POP3 server, run on 127.0.0.1 for the tests: unpacked from its
packages into var/bench/dovecot on first use (as bench/postfix.py does for Postfix), never
installed. Each server has one user, a maildir in a directory of its own, and four ports:
IMAPS, IMAP with STARTTLS, POP3S and POP3 with STARTTLS; TLS is required everywhere.

    server = Dovecot(certificates).start()
    server.deliver(report_bytes)  # IMAP APPEND, as a delivery agent would leave it
    server.count()  # (messages, unseen)

Dovecot finds two things at paths compiled in. doveconf, which reads the configuration for
the other processes, is /usr/bin/doveconf: the unpacked one is run instead, and execs the
server (`doveconf -e`) with the configuration in its environment. Its TLS module is loaded
from /usr/lib/dovecot/modules: that path is changed, in the unpacked library, to "modules",
which resolves in base_dir (where every Dovecot process runs) to a link to the unpacked ones.
Run as root, it logs users in as `nobody`.
"""

import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOVECOT_DIR = ROOT / "var" / "bench" / "dovecot"
PACKAGES = ("dovecot-core", "dovecot-imapd", "dovecot-pop3d")
LIBRARY = Path("usr/lib/dovecot/libdovecot.so.0.0.0")
MODULES = b"/usr/lib/dovecot/modules\0"
PROTOCOLS = ("imaps", "imap", "pop3s", "pop3")


class DovecotUnavailable(RuntimeError):
    pass


def unpack() -> Path:
    """The unpacked packages' root (made on first use; needs Debian's package archive)."""
    if (DOVECOT_DIR / "usr" / "sbin" / "dovecot").exists():
        return DOVECOT_DIR
    download = DOVECOT_DIR.parent / "download"
    download.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=download, check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        output = getattr(error, "stderr", b"") or b""
        raise DovecotUnavailable(
            f"Dovecot could not be fetched with `apt-get download {' '.join(PACKAGES)}` ({error}); "
            f"the bounce-mailbox tests need it. {output.decode(errors='replace')[-500:]}"
        ) from error
    staging = Path(tempfile.mkdtemp(dir=DOVECOT_DIR.parent, prefix="dovecot-"))
    for package in PACKAGES:
        deb = max(download.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(staging)], check=True)
    library = staging / LIBRARY
    data = library.read_bytes()
    if data.count(MODULES) != 1:
        raise DovecotUnavailable(f"{LIBRARY} does not name {MODULES!r} once: another Dovecot build?")
    library.write_bytes(data.replace(MODULES, b"modules".ljust(len(MODULES), b"\0")))
    try:
        staging.rename(DOVECOT_DIR)
    except OSError:  # unpacked meanwhile by another run
        shutil.rmtree(staging)
    return DOVECOT_DIR


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dovecot:
    user = "bounces@example.test"
    password = "mailbox-secret-7f3a"

    def __init__(self, certificates):
        if os.geteuid() != 0:
            raise DovecotUnavailable("Dovecot runs as root here (it logs users in as nobody): run the tests as root.")
        self.certificates = certificates
        self.root = unpack()
        # Dovecot's processes run as `nobody` and must reach the maildir: not under pytest's
        # tmp_path, which only its owner may enter.
        self.directory = Path(tempfile.mkdtemp(prefix="relaydeck-dovecot-"))
        self.directory.chmod(0o755)
        self.ports = {protocol: _free_port() for protocol in PROTOCOLS}
        self.process: subprocess.Popen | None = None

    def _config(self) -> Path:
        home = self.directory / "mail"
        home.mkdir()
        account = pwd.getpwnam("nobody")
        os.chown(home, account.pw_uid, account.pw_gid)
        (self.directory / "base").mkdir()
        (self.directory / "base" / "modules").symlink_to(self.root / "usr" / "lib" / "dovecot" / "modules")
        (self.directory / "state").mkdir()
        users = self.directory / "users"
        users.write_text(f"{self.user}:{{PLAIN}}{self.password}:{account.pw_uid}:{account.pw_gid}::{home}\n")
        libexec = self.root / "usr" / "lib" / "dovecot"
        # The tests log in with wrong passwords on purpose: no delay after one (auth_failure_delay),
        # nor for the next logins from the same address (anvil's penalty, off without its socket).
        databases = "".join(f"{db} {{\n  driver = passwd-file\n  args = {users}\n}}\n" for db in ("passdb", "userdb"))
        listeners = "".join(
            f"service {protocol}-login {{\n"
            f"  inet_listener {protocol} {{\n    port = {self.ports[protocol]}\n  }}\n"
            f"  inet_listener {protocol}s {{\n    port = {self.ports[protocol + 's']}\n    ssl = yes\n  }}\n}}\n"
            for protocol in ("imap", "pop3")
        )
        config = self.directory / "dovecot.conf"
        config.write_text(f"""
base_dir = {self.directory / "base"}
state_dir = {self.directory / "state"}
log_path = {self.directory / "log"}
libexec_dir = {libexec}
mail_plugin_dir = {libexec / "modules"}
login_plugin_dir = {libexec / "modules" / "login"}
import_environment = LD_LIBRARY_PATH TZ
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
protocols = imap pop3
listen = 127.0.0.1
ssl = required
ssl_cert = <{self.certificates.cert_file}
ssl_key = <{self.certificates.key_file}
auth_mechanisms = plain
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
mail_location = maildir:{home}/Maildir
{databases}{listeners}""")
        return config

    def start(self) -> "Dovecot":
        config = self._config()
        libraries = self.root / "usr" / "lib" / "dovecot"
        env = os.environ | {"LD_LIBRARY_PATH": f"{libraries}:{libraries / 'modules' / 'old-stats'}"}
        doveconf, dovecot = self.root / "usr" / "bin" / "doveconf", self.root / "usr" / "sbin" / "dovecot"
        self.process = subprocess.Popen(
            [str(doveconf), "-c", str(config), "-e", str(dovecot), "-F", "-c", str(config)],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DovecotUnavailable(f"Dovecot did not start: {self.log()[-2000:]}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        """Whether Dovecot logs the test user in (its login processes start on the first connection)."""
        try:
            with self.imap():
                return True
        except (OSError, imaplib.IMAP4.error):
            return False

    def log(self) -> str:
        log = self.directory / "log"
        stderr = self.process.stderr.read().decode(errors="replace") if self.process.poll() is not None else ""
        return (log.read_text(errors="replace") if log.exists() else "") + stderr

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- what the tests do to the mailbox, as its other users would --

    def imap(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=self.certificates.ca_file)
        client = imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=context, timeout=10)
        client.login(self.user, self.password)
        return client

    def deliver(self, *messages: bytes) -> None:
        """Leave messages in the INBOX, unread."""
        with self.imap() as client:
            for message in messages:
                kind, data = client.append("INBOX", None, None, message)
                assert kind == "OK", data

    def count(self) -> tuple[int, int]:
        """(messages, unseen) in the INBOX."""
        with self.imap() as client:
            kind, data = client.status("INBOX", "(MESSAGES UNSEEN)")
            assert kind == "OK", data
            figures = dict(re.findall(rb"(MESSAGES|UNSEEN) (\d+)", data[0]))
            return int(figures[b"MESSAGES"]), int(figures[b"UNSEEN"])
