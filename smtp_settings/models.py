import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.hashers import check_password, make_password
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from project.numbers import AtMost, whole_number
from project.sqlite_writes import one_writer
from smtp_settings.bounces import verp
from smtp_settings.esp.registry import ESPS_BY_KEY, parse_credentials
from smtp_settings.fields import EncryptedTextField
from smtp_settings.learning import LimitLearner
from smtp_settings.presets import SANDBOX_PORT
from smtp_settings.validators import validate_api_url, validate_custom_headers, validate_host

RATE_MESSAGE = "Enter 0 (unlimited) or a rate from 0.001 to 100,000 messages a second."


def validate_rate(value: float) -> None:
    """0 (no rate), or at least one message in about 17 minutes: a smaller rate is a typo."""
    if value != 0 and not value >= 0.001:
        raise ValidationError(RATE_MESSAGE)


class BoundPassword:
    """A model's stored `password` is only ever sent where it was stored for: the fields named
    in PASSWORD_BINDING (host, port, username, TLS and the like). Whoever changes one of them
    types the password again: else anyone who may edit the entry could have its password sent
    to a server of their own, or in clear text, or to a man in the middle."""

    PASSWORD_BINDING: tuple[str, ...]
    password: str

    @property
    def has_password(self) -> bool:
        return bool(self.password)

    def password_may_go_to(self, **where) -> bool:
        return not self.password or all(where[name] == getattr(self, name) for name in self.PASSWORD_BINDING)


class SmtpServer(BoundPassword, models.Model):
    """An SMTP server to send through, with the limits the connection pool must keep."""

    class Tls(models.TextChoices):
        NONE = "none", "None (plain text)"
        STARTTLS = "starttls", "STARTTLS"
        SSL = "ssl", "SSL/TLS (implicit)"

    class Auth(models.TextChoices):
        NONE = "none", "None"
        PLAIN = "plain", "PLAIN"
        LOGIN = "login", "LOGIN"
        CRAM_MD5 = "cram-md5", "CRAM-MD5"

    class Unit(models.TextChoices):
        MESSAGES = "messages", "Messages"
        RECIPIENTS = "recipients", "Recipients"

    class Kind(models.TextChoices):
        SMTP = "smtp", "SMTP server"
        ESP = "esp", "ESP API (django-anymail)"

    name = models.CharField(max_length=100, unique=True, help_text="A name to tell this server apart.")
    enabled = models.BooleanField(default=True, help_text="Disabled servers are never used for sending.")
    kind = models.CharField(max_length=4, choices=Kind, default=Kind.SMTP)
    # An ESP entry sends through the ESP's HTTP API with django-anymail (smtp_settings/esp/).
    esp = models.CharField("ESP", max_length=20, blank=True, help_text="Which ESP's API, for an ESP entry.")
    esp_credentials = EncryptedTextField(
        "ESP credentials", blank=True, help_text="Stored encrypted (JSON of anymail's settings for the ESP)."
    )
    api_url = models.URLField(
        "API base URL",
        max_length=500,
        blank=True,
        validators=[validate_api_url],
        help_text="Blank: the ESP's own. Overrides anymail's API_URL.",
    )
    max_batch = models.PositiveIntegerField(
        "Recipients per API call",
        null=True,
        blank=True,
        validators=whole_number(1, 1_000_000),
        help_text="At most, for an ESP entry, 1–1,000,000: a message to more goes as several calls. "
        "Blank: the ESP's limit.",
    )
    bounce_domain = models.CharField(
        max_length=253,
        blank=True,
        validators=[validate_host],
        help_text="VERP: messages go out with the envelope sender bounces+<token>@this domain, whose mail "
        "must reach Relaydeck's listener or a bounce mailbox. Blank: the From address.",
    )

    host = models.CharField(
        max_length=255,
        blank=True,  # an ESP entry has none; an SMTP entry must (clean)
        validators=[validate_host],
        help_text="Host name or IP address of the SMTP server.",
    )
    port = models.PositiveIntegerField(
        default=587,
        validators=whole_number(1, 65535),
        help_text="TCP port, 1–65,535: usually 587 (STARTTLS), 465 (SSL) or 25.",
    )
    tls = models.CharField(
        "TLS",
        max_length=10,
        choices=Tls.choices,
        default=Tls.STARTTLS,
        help_text="STARTTLS upgrades a plain connection (port 587); SSL/TLS encrypts from the first byte (port 465).",
    )
    tls_skip_verify = models.BooleanField(
        "Skip TLS verification",
        default=False,
        help_text="Accept any certificate. Only for servers with self-signed certificates you trust.",
    )
    helo_hostname = models.CharField(
        "HELO hostname",
        max_length=255,
        blank=True,
        validators=[validate_host],  # EHLO is ASCII: a host name (punycode for IDN) or an address
        help_text="Name sent in EHLO. Blank: this machine's fully qualified domain name.",
    )

    auth_protocol = models.CharField(
        "Auth protocol",
        max_length=10,
        choices=Auth.choices,
        default=Auth.LOGIN,
        help_text="How to log in. None: send without authenticating (for relays that trust this host).",
    )
    username = models.CharField(max_length=255, blank=True)
    password = EncryptedTextField(blank=True, help_text="Stored encrypted. Leave blank to keep the current password.")

    max_conns = models.PositiveIntegerField(
        "Max. connections",
        default=10,
        validators=whole_number(1, 1000),
        help_text="Most simultaneous connections to this server, 1–1,000 (Exchange allows about 20 per client).",
    )
    max_msgs_per_conn = models.PositiveIntegerField(
        "Max. messages per connection",
        default=0,
        validators=whole_number(0, 1_000_000),
        help_text="Close and reopen a connection after this many messages, 0–1,000,000. "
        "0: no cap (Amazon SES ends sessions near 350 messages).",
    )
    retries = models.PositiveIntegerField(
        default=2,
        validators=whole_number(0, 100),
        help_text="Extra attempts for a message after a temporary (4xx or network) failure, 0–100. 0: no retry.",
    )
    idle_timeout = models.PositiveIntegerField(
        "Idle timeout (s)",
        default=15,
        validators=whole_number(0, 86_400),
        help_text="Seconds, 0–86,400: close a connection unused this long. 0: never close for idleness "
        "(Amazon SES drops sessions idle for about 10 s).",
    )
    max_conn_age = models.PositiveIntegerField(
        "Max. connection age (s)",
        default=0,
        validators=whole_number(0, 86_400),
        help_text="Seconds, 0–86,400: retire a connection this long after it opened, after its current message. "
        "0: no limit.",
    )
    wait_timeout = models.PositiveIntegerField(
        "Wait timeout (s)",
        default=5,
        validators=whole_number(0, 3_600),
        help_text="Seconds a sender waits for a free connection before giving up, 0–3,600. 0: do not wait.",
    )
    send_timeout = models.PositiveIntegerField(
        "Send timeout (s)",
        default=30,
        validators=whole_number(1, 600),
        help_text="Seconds to wait for the server's reply to one SMTP command, 1–600.",
    )
    rate_limit = models.FloatField(
        "Rate limit (msg/s)",
        default=0,
        validators=[validate_rate, AtMost(100_000, message=RATE_MESSAGE)],
        help_text="Messages per second across all connections to this server, from every process, "
        "0.001–100,000. 0: unlimited.",
    )
    rate_per_minute = models.PositiveIntegerField(
        "Rate limit (per minute)",
        default=0,
        validators=whole_number(0, 10_000_000),
        help_text="Messages per minute across all connections, 0–10,000,000 (Microsoft 365: 30). 0: unlimited.",
    )
    rate_counts = models.CharField(
        "Rates count",
        max_length=10,
        choices=Unit.choices,
        default=Unit.MESSAGES,
        help_text="What the per-second and per-minute rates count (Amazon SES counts recipients).",
    )
    quota_per_hour = models.PositiveIntegerField(
        "Quota per hour",
        default=0,
        validators=whole_number(0, 100_000_000),
        help_text="Most sent in any hour (a rolling window), 0–100,000,000. 0: no quota.",
    )
    quota_per_day = models.PositiveIntegerField(
        "Quota per day",
        default=0,
        validators=whole_number(0, 100_000_000),
        help_text="Most sent in any 24 hours (a rolling window), 0–100,000,000 (Google Workspace: 2,000 messages). "
        "0: no quota.",
    )
    quota_counts = models.CharField(
        "Quotas count",
        max_length=10,
        choices=Unit.choices,
        default=Unit.MESSAGES,
        help_text="What the hourly and daily quotas count (Amazon SES and Microsoft 365 count recipients).",
    )
    custom_headers = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_custom_headers],
        help_text="Headers added to every message sent through this server.",
    )

    learned_msgs_per_conn = models.PositiveIntegerField(
        "Learned messages per connection",
        null=True,
        blank=True,
        editable=False,
        help_text="A cap the pool learned from the server ending sessions with 421.",
    )
    learned_msgs_per_conn_at = models.DateTimeField(null=True, blank=True, editable=False)
    learned_max_conns = models.PositiveIntegerField(
        "Learned max. connections",
        null=True,
        blank=True,
        editable=False,
        help_text="The concurrency the server accepted before refusing connections with 421.",
    )
    learned_max_conns_at = models.DateTimeField(null=True, blank=True, editable=False)
    # What applying learned limits replaced, so forgetting them can put it back:
    # {"max_conns": [before, applied], ...} (see apply_learned_limits).
    before_learning = models.JSONField(default=dict, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "SMTP server"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        if self.kind != self.Kind.ESP:
            if not self.host:
                raise ValidationError({"host": "Enter the SMTP server's host name or IP address."})
            return
        esp = ESPS_BY_KEY.get(self.esp)
        if esp is None:
            raise ValidationError({"esp": "Choose the ESP whose API this entry sends through."})
        if not (self.api_url or esp.default_api_url):
            raise ValidationError({"api_url": f"{esp.label} runs on your own server: enter its API URL."})

    @property
    def rate_unit(self) -> str:
        """What the rates count, as the pluralize filter takes it: "message,messages"."""
        return f"{self.rate_counts[:-1]},{self.rate_counts}"

    @property
    def quota_unit(self) -> str:
        """What the quotas count, as the pluralize filter takes it: "recipient,recipients"."""
        return f"{self.quota_counts[:-1]},{self.quota_counts}"

    @property
    def is_esp(self) -> bool:
        return self.kind == self.Kind.ESP

    @property
    def esp_label(self) -> str:
        esp = ESPS_BY_KEY.get(self.esp)
        return esp.label if esp else self.esp

    @property
    def address(self) -> str:
        if self.is_esp:
            esp = ESPS_BY_KEY.get(self.esp)
            return f"{self.esp_label} API at {esp.api_url(self.api_url) if esp else self.api_url}"
        return f"{self.host}:{self.port}"

    @property
    def recipients_per_call(self) -> int | None:
        """The most recipients one API call of this ESP entry carries (None: not an ESP)."""
        esp = ESPS_BY_KEY.get(self.esp) if self.is_esp else None
        return esp.recipients_per_call(self.max_batch) if esp else None

    @property
    def credentials(self) -> dict:
        """The ESP entry's anymail settings (its API key among them), decrypted."""
        return parse_credentials(self.esp_credentials)

    @property
    def has_api_key(self) -> bool:
        esp = ESPS_BY_KEY.get(self.esp)
        return esp is not None and bool(self.credentials.get(esp.key_setting))

    # Where a stored password goes, and how: changing any of these needs the password typed again.
    PASSWORD_BINDING = ("host", "port", "username", "tls", "tls_skip_verify", "auth_protocol")
    # Where stored ESP credentials go: the same rule, for the ESP and its API URL.
    CREDENTIALS_BINDING = ("esp", "api_url")

    def credentials_may_go_to(self, **where) -> bool:
        """Stored ESP credentials are only ever sent to the ESP and API URL they were stored
        with (as a password is: see BoundPassword)."""
        return not self.esp_credentials or all(where[name] == getattr(self, name) for name in self.CREDENTIALS_BINDING)

    @property
    def is_local_sandbox(self) -> bool:
        """Relaydeck's SMTP sandbox on this machine, on its port: it delivers nothing further."""
        return not self.is_esp and self.host in ("127.0.0.1", "localhost", "::1") and self.port == SANDBOX_PORT

    @property
    def learned_cap_margin_percent(self) -> int:
        """How far below the shortest session the server closed with a 421 the learned
        per-connection cap is kept (LimitLearner.LEARN_MARGIN, as a percentage)."""
        return round((1 - LimitLearner.LEARN_MARGIN) * 100)

    @property
    def has_learned_limits(self) -> bool:
        return bool(self.learned_msgs_per_conn or self.learned_max_conns)

    def record_learned(self, limit: str, value: int) -> None:
        """Store a limit the connection pool learned: "msgs_per_conn" or "max_conns"."""
        values = {f"learned_{limit}": value, f"learned_{limit}_at": timezone.now()}
        SmtpServer.objects.filter(pk=self.pk).update(**values)
        for name, field_value in values.items():
            setattr(self, name, field_value)

    def apply_learned_limits(self) -> None:
        """Make the learned limits the configured ones, and forget them as learned; what they
        replaced is kept, for forget_learned_limits."""
        applied = {"max_msgs_per_conn": self.learned_msgs_per_conn, "max_conns": self.learned_max_conns}
        for name, value in applied.items():
            if value:
                before, earlier = self.before_learning.get(name, (None, None))
                if getattr(self, name) != earlier:  # not applied before, or edited since: this is what it was
                    before = getattr(self, name)
                self.before_learning = {**self.before_learning, name: [before, value]}
                setattr(self, name, value)
        self.learned_msgs_per_conn = self.learned_max_conns = None
        self.learned_msgs_per_conn_at = self.learned_max_conns_at = None
        self.save()

    def forget_learned_limits(self) -> bool:
        """Forget what the pools learned, on this entry, and undo what applying it changed: a
        limit it set goes back to what it was (unless edited since); the rest stays as the admin
        set it. Not while a campaign sending through the server is scheduled, running or paused
        (its pools would be rebuilt mid-run): then nothing changes and it returns False. Saving
        changes `updated_at`, so every process rebuilds its pool, and its learner. (What the
        cluster learned: shared_limits.forget_learned.)"""
        if self.campaigns.filter(status__in=self.campaigns.model.UNDER_WAY).exists():
            return False
        for name, (before, applied) in self.before_learning.items():
            if getattr(self, name) == applied:
                setattr(self, name, before)
        self.before_learning = {}
        self.learned_msgs_per_conn = self.learned_max_conns = None
        self.learned_msgs_per_conn_at = self.learned_max_conns_at = None
        self.save()
        return True


# -- where the database keeps the cluster's shared limits (smtp_settings/limit_stores.py) --
# Used when REDIS_URL is not set. Times are seconds since the epoch (time.time()). Rows name
# their server by id, without a foreign key: the store is written from sending threads, each on
# its own connection, and must never wait on a transaction that holds the server row.


class ConnectionSlot(models.Model):
    """One open connection to a server, held by one process: a lease its owner renews while
    the connection lives. Numbered below the ceiling, so the unique constraint keeps the count."""

    server_id = models.PositiveIntegerField()
    number = models.PositiveIntegerField()
    owner = models.CharField(max_length=200, help_text="host:pid of the process holding it.")
    expires_at = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["server_id", "number"], name="one_holder_per_slot")]

    def __str__(self) -> str:
        return f"slot {self.number} of server {self.server_id}: {self.owner}"


class LimitState(models.Model):
    """A server's shared pacing and feedback state, one row per server."""

    server_id = models.PositiveIntegerField(primary_key=True)
    next_send_at = models.FloatField(default=0, help_text="When the next unit may go at the configured rates.")
    ceiling = models.PositiveIntegerField(null=True, help_text="A lowered connection ceiling; null: max_conns.")
    probe_at = models.FloatField(default=0, help_text="Last refusal or upward probe of the ceiling.")
    throttled_rate = models.FloatField(null=True, help_text="Units/s after the server's throttle replies.")
    throttled_at = models.FloatField(default=0, help_text="Last throttle reply or step of recovery.")

    def __str__(self) -> str:
        return f"limits of server {self.server_id}"


class WindowCount(models.Model):
    """Units sent to a server in one bucket of a rolling window ("hour", "day", or "sent", the
    per-minute figure shown on the server card)."""

    server_id = models.PositiveIntegerField()
    window = models.CharField(max_length=8)
    bucket = models.BigIntegerField(help_text="Start of the bucket, whole seconds since the epoch.")
    used = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["server_id", "window", "bucket"], name="one_count_per_bucket")]

    def __str__(self) -> str:
        return f"{self.window} {self.bucket} of server {self.server_id}: {self.used}"


class SlotDemand(models.Model):
    """A process using, or waiting to use, a server's connections: the shares are fair among
    the processes with a live demand."""

    server_id = models.PositiveIntegerField()
    owner = models.CharField(max_length=200)
    waiting = models.BooleanField(default=False)
    expires_at = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["server_id", "owner"], name="one_demand_per_process")]

    def __str__(self) -> str:
        return f"{self.owner} for server {self.server_id}"


# -- transactional mail: the outbox, and who may fill it (smtp_settings/outbox/, relay/, api/) --

LAST_USED_STEP = timedelta(minutes=1)  # a login's or token's last_used_at is written at most this often


class AppAccess(models.Model):
    """What relay logins and API tokens share: an application's name, the servers its mail goes
    out through, and when it was last used."""

    name = models.CharField(max_length=100, unique=True, help_text="Which application uses it.")
    servers = models.ManyToManyField(
        SmtpServer, blank=True, related_name="+", help_text="Blank: the relay's default route."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True
        ordering = ["name"]

    def mark_used(self) -> None:
        """Set `last_used_at` to now, unless it is less than LAST_USED_STEP old: an application
        sending a message a second costs one write a minute, not one a message."""
        now = timezone.now()
        if self.last_used_at is not None and now - self.last_used_at < LAST_USED_STEP:
            return
        stale = models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=now - LAST_USED_STEP)
        with one_writer():
            type(self).objects.filter(stale, pk=self.pk).update(last_used_at=now)
        self.last_used_at = now


class RelayCredential(AppAccess):
    """A login for an application that sends through the SMTP relay. The password is stored
    hashed (Django's password hasher); mail sent with it goes out through `servers`, or the
    relay's default route when none are chosen."""

    username = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9._@+-]+$", "Use letters, digits and . _ @ + - only.")],
        help_text="Letters, digits and . _ @ + -",
    )
    password_hash = models.CharField(max_length=256, editable=False)

    def __str__(self) -> str:
        return self.name

    def set_password(self, raw: str) -> None:
        self.password_hash = make_password(raw)

    def check_password(self, raw: str) -> bool:
        """Whether `raw` is the password. A hash made by an older hasher, or with fewer
        iterations than the current one, is replaced by a current one (as Django does for
        users), unless the password was changed meanwhile."""

        def upgrade(raw: str) -> None:
            old = self.password_hash
            self.set_password(raw)
            with one_writer():
                RelayCredential.objects.filter(pk=self.pk, password_hash=old).update(password_hash=self.password_hash)

        return check_password(raw, self.password_hash, upgrade)


class ApiToken(AppAccess):
    """A bearer token for the HTTP API. Only its SHA-256 is kept (a token is 32 random bytes,
    so a fast hash is enough and lets a request find its token by index); `prefix` is shown
    to tell tokens apart."""

    prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()

    @classmethod
    def issue(cls, name: str, servers=()) -> tuple["ApiToken", str]:
        """A new token and its key, which is shown once and never stored."""
        key = "rdk_" + secrets.token_urlsafe(32)
        token = cls.objects.create(name=name, prefix=key[:10], key_hash=cls.hash(key))
        token.servers.set(servers)
        return token, key

    def revoke(self) -> None:
        """Disable the token for good. It stays, so that its name keeps telling whose messages
        are whose."""
        ApiToken.objects.filter(pk=self.pk).update(enabled=False)
        self.enabled = False


class RelayRoute(models.Model):
    """The relay's default route (one row): where mail from trusted networks, and from
    credentials and tokens that name no server, goes out. None chosen: the first enabled server."""

    servers = models.ManyToManyField(SmtpServer, blank=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return "default route"

    @classmethod
    def get(cls) -> "RelayRoute":
        return cls.objects.get_or_create(pk=1)[0]


class OutboxMessage(models.Model):
    """One transactional message, kept as the exact bytes the application handed over, until
    it is sent or has failed for good. Claimed and fenced like a campaign's deliveries: only
    the holder of `claim_token`, while its lease stands, may send its final dot."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        DEFERRED = "deferred", "Deferred"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"  # every recipient is on the suppression list: not sent

    class Source(models.TextChoices):
        RELAY = "relay", "SMTP relay"
        API = "api", "HTTP API"
        BACKEND = "backend", "Django backend"

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=10, choices=Source)
    submitted_by = models.CharField(
        max_length=200, blank=True, help_text="The credential, token or client address that handed it over."
    )
    mail_from = models.CharField(max_length=998, blank=True, help_text="The envelope sender; blank: a null sender.")
    recipients = models.JSONField(help_text="The envelope recipients.")
    size = models.PositiveIntegerField()
    message_id = models.CharField(max_length=998, blank=True)
    subject = models.CharField(max_length=255, blank=True, help_text="For the outbox page.")
    priority = models.SmallIntegerField(default=0, help_text="Higher goes first.")
    route = models.JSONField(default=list, blank=True, help_text="Ids of the servers it may go through; []: default.")
    server = models.ForeignKey(
        SmtpServer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", help_text="Where it went."
    )
    status = models.CharField(max_length=10, choices=Status, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_reply = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.PositiveBigIntegerField(null=True, blank=True)
    final_dot_at = models.DateTimeField(null=True, blank=True)
    ambiguous = models.BooleanField(default=False, help_text="The link broke after the final dot: maybe delivered.")
    sent_at = models.DateTimeField(null=True, blank=True)
    # Last, after every column that is filtered or claimed by: SQLite reads a row's columns in
    # order, and up to 10 MB here would be overflow pages walked to reach the status.
    data = models.BinaryField(help_text="The message, headers and body, as it goes on the wire.")

    class Meta:
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="outbox_ready"),
            models.Index(fields=["created_at"], name="outbox_created"),
            models.Index(fields=["sent_at"], name="outbox_sent"),
        ]

    def __str__(self) -> str:
        return f"outbox message {self.pk} ({self.status})"


class OutboxRecipientDone(models.Model):
    """A recipient of an outbox message that an earlier attempt settled: the server accepted
    the message for it, or refused it for good. A message deferred for its other recipients
    goes again to those only (RFC 5321), never twice to one that has it. Kept apart from
    OutboxMessage, whose `data` stays its last column."""

    message = models.ForeignKey(OutboxMessage, on_delete=models.CASCADE, related_name="+")
    address = models.CharField(max_length=998)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "address"], name="one_done_per_recipient")]

    def __str__(self) -> str:
        return f"{self.address} (outbox message {self.message_id})"


class OutboxSender(models.Model):
    """A process delivering the outbox. Its id is the claim token of the messages it holds; it
    may send a message's final dot only while `lease_until` stands (see outbox/delivery.py)."""

    owner = models.CharField(max_length=200, help_text='The process, "host:pid".')
    lease_until = models.DateTimeField(null=True, blank=True, help_text="None once it stopped or was fenced off.")
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    sent = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"outbox sender {self.pk} ({self.owner})"


# -- bounces, complaints and the suppression list (smtp_settings/bounces/) --


# IMAP and POP3 commands carry these as typed: printable ASCII, so that none can end a command
# or be read differently by the server (IMAP's LOGIN takes no other characters).
_command_text = RegexValidator(r"^[\x20-\x7e]*\Z", "Use printable ASCII characters only (no line breaks).")


class BounceMailbox(BoundPassword, models.Model):
    """A mailbox that receives bounces and complaint reports, read over IMAP or POP3 with TLS
    (bounces/mailboxes.py)."""

    class Protocol(models.TextChoices):
        IMAP = "imap", "IMAP"
        POP3 = "pop3", "POP3"

    class Tls(models.TextChoices):
        SSL = "ssl", "TLS from the start (IMAPS 993, POP3S 995)"
        STARTTLS = "starttls", "STARTTLS (143, 110)"

    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True, help_text="Enabled mailboxes are checked every few minutes.")
    protocol = models.CharField(max_length=4, choices=Protocol, default=Protocol.IMAP)
    host = models.CharField(max_length=255, validators=[validate_host], help_text="Host name or IP address.")
    port = models.PositiveIntegerField(validators=whole_number(1, 65535))
    tls = models.CharField("TLS", max_length=8, choices=Tls, default=Tls.SSL)
    tls_skip_verify = models.BooleanField(
        "Skip TLS verification",
        default=False,
        help_text="Accept any certificate. Only for a test server: anyone on the way could read.",
    )
    username = models.CharField(max_length=255, validators=[_command_text])
    password = EncryptedTextField(
        blank=True, validators=[_command_text], help_text="Stored encrypted. Leave blank to keep the current password."
    )
    folder = models.CharField(max_length=255, default="INBOX", validators=[_command_text], help_text="IMAP only.")
    last_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    last_count = models.PositiveIntegerField(default=0, editable=False, help_text="Reports read at the last check.")
    created_at = models.DateTimeField(auto_now_add=True)

    # Where the stored password goes: changing any of these needs it typed again.
    PASSWORD_BINDING = ("protocol", "host", "port", "username", "tls", "tls_skip_verify")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def record_check(self, count: int, error: str) -> None:
        """Keep what the last check did: `count` reports read, and its error ("" if none)."""
        values = {"last_checked_at": timezone.now(), "last_count": count, "last_error": error}
        with one_writer():
            BounceMailbox.objects.filter(pk=self.pk).update(**values)
        for name, value in values.items():
            setattr(self, name, value)


class MailboxReport(models.Model):
    """A report taken from a bounce mailbox, known by the SHA-256 of its bytes. A message read
    again (its \\Seen flag or DELE lost to a crash, or read by two checks at once) is found here
    and not recorded twice: the row and the report's bounces commit together."""

    mailbox = models.ForeignKey(BounceMailbox, on_delete=models.CASCADE, related_name="+")
    digest = models.CharField(max_length=64)
    taken_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["mailbox", "digest"], name="one_take_per_report")]

    def __str__(self) -> str:
        return f"report {self.digest[:12]} of mailbox {self.mailbox_id}"


class Bounce(models.Model):
    """A bounce or a complaint about one address: seen at send time, or reported later by a
    DSN or ARF report (to the listener or a mailbox) or an ESP's webhook. `reference` says which
    message it was about, as its sender named it ("d<id>" a campaign delivery, "o<id>" an
    outbox message): this app does not know campaigns, they look their references up."""

    class Kind(models.TextChoices):
        HARD = "hard", "Hard bounce"
        SOFT = "soft", "Soft bounce"
        COMPLAINT = "complaint", "Complaint"
        DELAYED = "delayed", "Delay warning"  # the reporting server still tries: kept, not counted
        UNPARSED = "unparsed", "Not understood"

    class Source(models.TextChoices):
        SEND = "send", "At send time"
        LISTENER = "listener", "SMTP listener"
        MAILBOX = "mailbox", "Mailbox"
        WEBHOOK = "webhook", "ESP webhook"

    kind = models.CharField(max_length=10, choices=Kind)
    source = models.CharField(max_length=10, choices=Source)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    email = models.CharField(max_length=254, blank=True, db_index=True, help_text="Lower-cased; blank if unknown.")
    reference = models.CharField(max_length=40, blank=True, db_index=True)
    server = models.ForeignKey(SmtpServer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    mailbox = models.ForeignKey(BounceMailbox, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    code = models.PositiveSmallIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, blank=True, help_text='The enhanced status code, "5.1.1".')
    text = models.TextField(blank=True, help_text="The diagnostic, as the reporting server wrote it.")
    problem = models.TextField(blank=True, help_text="Why a report was not understood, or not acted on.")
    acted_on = models.BooleanField(
        default=True,
        help_text="Whether it counted (suppression, the delivery's outcome); a report about addresses its "
        "delivery did not go to is kept, and acts on nothing.",
    )
    report_size = models.PositiveIntegerField(default=0, help_text="Bytes of the report as received.")
    report_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The bounce that keeps the report, when one report named several addresses.",
    )
    event_key = models.CharField(
        max_length=64,
        blank=True,
        editable=False,
        help_text="Which ESP webhook event it came from (a digest): an event posted again is recorded once.",
    )
    # Last: up to BOUNCE_REPORT_MAX_BYTES of the raw report (see OutboxMessage.data).
    report = models.BinaryField(blank=True, default=b"", help_text="The report as received (cut at the limit).")

    class Meta:
        indexes = [models.Index(fields=["email", "kind", "received_at"], name="bounce_by_address")]
        constraints = [
            models.UniqueConstraint(fields=["event_key"], condition=~models.Q(event_key=""), name="bounce_event_once"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.email or 'an unknown address'}"

    @property
    def outbox_message_id(self) -> int | None:
        """The outbox message it was about, if its reference names one ("o45")."""
        return verp.number_of(self.reference, "o")


class EspMessage(models.Model):
    """A message sent through an ESP's API, by the id the ESP gave it, which its webhooks name;
    `reference` is the sender's name for it, as on a Bounce."""

    message_id = models.CharField(max_length=255, db_index=True)
    reference = models.CharField(max_length=40)
    server = models.ForeignKey(SmtpServer, null=True, on_delete=models.SET_NULL, related_name="+")
    recipient = models.CharField(max_length=254, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.message_id} ({self.reference})"


class Suppression(models.Model):
    """An address nothing is sent to any more, why, and since when."""

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        COMPLAINT = "complaint", "Complaint"
        SOFT_BOUNCES = "soft_bounces", "Repeated soft bounces"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribe"
        MANUAL = "manual", "Manual"
        IMPORT = "import", "Import"

    email = models.CharField(max_length=254, unique=True, help_text="Stored lower-cased and trimmed.")
    reason = models.CharField(max_length=12, choices=Reason)
    note = models.TextField(blank=True, help_text="Who added it and why, or what the report said.")
    bounce = models.ForeignKey(Bounce, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} ({self.get_reason_display()})"

    @staticmethod
    def normalize(email: str) -> str:
        return email.strip().lower()

    @classmethod
    def held_from_transactional(cls, emails) -> set[str]:
        """Which of these addresses transactional mail (the outbox) must not go to (normalized):
        an unsubscribe does not count, since leaving a newsletter does not stop password resets
        and receipts; bounces, complaints and manual entries do. (Campaign senders look the
        whole list up with their claim: campaigns/sending/leases.py.)"""
        entries = cls.objects.exclude(reason=cls.Reason.UNSUBSCRIBE)
        batch = sorted({cls.normalize(email) for email in emails})
        found: set[str] = set()
        for start in range(0, len(batch), 500):  # SQLite's bound parameters
            found.update(entries.filter(email__in=batch[start : start + 500]).values_list("email", flat=True))
        return found
