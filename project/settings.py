"""Relaydeck settings, read from the environment with development defaults.

Development (the default) runs on SQLite in ``var/`` with a secret key generated once
into ``var/secret_key``. Production sets ``DEBUG=0`` and must then give ``SECRET_KEY``
(or ``SECRET_KEY_FILE``); see README.md for every variable.
"""

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RELAYDECK_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    """A setting from NAME, or from the file named by NAME_FILE (for Docker/K8s secrets)."""
    if name in os.environ:
        return os.environ[name]
    if f"{name}_FILE" in os.environ:
        return Path(os.environ[f"{name}_FILE"]).read_text().strip()
    return default


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_int(name: str, default: int) -> int:
    value = env_str(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name, "")
    return [item.strip() for item in value.split(",") if item.strip()] if value else default


def env_networks(name: str) -> list[str]:
    """Comma-separated networks ("10.0.0.0/8, 192.0.2.7"), each checked and written as a CIDR."""
    try:
        return [str(ipaddress.ip_network(network, strict=False)) for network in env_list(name, [])]
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}: {error}") from None


def _development_secret_key() -> str:
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", True)
# Django's technical 404 and 500 pages (URL patterns, tracebacks, settings) instead of the
# styled ones, while DEBUG is on: for a developer who asks (project/error_pages.py).
DEBUG_PAGES = env_bool("DEBUG_PAGES", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off")
    SECRET_KEY = _development_secret_key()
# Old keys, newest first: sessions and encrypted SMTP passwords made with them still open.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.forms",
    "django_htmx",
    "django_q",
    "axes",
    "project",
    "smtp_settings",
    "campaigns",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "project.error_pages.StyledErrorPagesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "project.password_change.PasswordChangeRequiredMiddleware",  # a one-time password changes first
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: it answers for locked-out logins
]

FORM_RENDERER = "django.forms.renderers.TemplatesSetting"
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "project.roles.context",
            ],
        },
    },
]


def _database() -> dict:
    url = env_str("DATABASE_URL")
    if url:
        database = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    else:
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": env_str("SQLITE_PATH") or VAR_DIR / "db.sqlite3"}
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # However SQLite is chosen (a sqlite:/// DATABASE_URL too): WAL lets the dashboard read
        # while workers write; IMMEDIATE transactions take the write lock up front so concurrent
        # writers wait (busy timeout) instead of failing with "database is locked" on lock upgrade.
        # Options given in the URL (?timeout=60) win.
        database["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            **database.get("OPTIONS", {}),
        }
        # A file, not memory, so tests run in WAL mode and worker processes can share it.
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        database["TEST"] = {"NAME": VAR_DIR / "test.sqlite3"}
    return database


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER = {
    "name": "relaydeck",
    "workers": env_int("Q_WORKERS", 2),
    "timeout": env_int("Q_TASK_TIMEOUT_S", 600),
    # A task still running after `retry` seconds is handed to another worker, so it must
    # exceed `timeout`; work is claimed in the database, never trusted to the queue.
    "retry": env_int("Q_TASK_TIMEOUT_S", 600) + 60,
    "max_attempts": 3,
    "catch_up": False,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# "shared": what every process must see alike, such as an unsaved preview's HTML, which its
# frame asks for from whichever process answers: Redis when REDIS_URL is set, else a table of
# the database (made by project's migration 0002). The default cache stays per process.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "relaydeck"}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "relaydeck_shared_cache"}
    ),
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes): after LOGIN_FAILURE_LIMIT failed logins for one username, or
# from one address, that username or address is locked out for LOGIN_COOLOFF_MIN minutes,
# counted from its last attempt.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MIN", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own, not the pair
AXES_LOCKOUT_CALLABLE = "project.lockout.lockout_response"
AXES_CLIENT_IP_CALLABLE = "project.lockout.client_address"
AXES_VERBOSE = False  # its start-up banner on every manage.py command; failures are still logged

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# HTTPS only once DEBUG is off (runserver speaks plain HTTP). Behind a proxy that ends TLS,
# BEHIND_TLS_PROXY=1 trusts its X-Forwarded-Proto and X-Forwarded-Host: set it only when the
# proxy overwrites both headers, or any client could claim HTTPS and another host name.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
# check --deploy warns while SECURE_HSTS_PRELOAD is off. Preloading writes the whole registered
# domain into browsers' built-in HTTPS-only lists, for months and every subdomain, so it is the
# domain owner's choice (SECURE_HSTS_PRELOAD=1), not a default.
SILENCED_SYSTEM_CHECKS = ["security.W021"]

# Content-Security-Policy (django-csp): everything from this origin, nothing inline, no eval.
# The templates hold no inline script, style element or style attribute (tests/test_security.py
# checks every page), and base.html tells htmx neither to inject its indicator <style> nor to
# eval (the indicator rules are in relaydeck.css). Django's debug pages (DEBUG only) are exempt.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "object-src": [NONE],
    }
}

# The debug page and error e-mails hide secrets also while DEBUG is on (project/debug.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "project.debug.SecretsExceptionReporterFilter"
DEFAULT_EXCEPTION_REPORTER = "project.error_pages.StyledErrorReporter"  # the styled 400/500 while DEBUG is on

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Development serves static files straight from the apps and static/; production serves
# the hashed, compressed copies that `collectstatic` writes to STATIC_ROOT.
STATIC_ROOT = None if DEBUG else Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
WHITENOISE_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"mail.log": {"level": "WARNING"}},  # aiosmtpd's per-command chatter in the sandbox
}

# Uploaded files (CSV imports) are kept here until imported.
MEDIA_ROOT = VAR_DIR / "media"
MEDIA_URL = "media/"
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 50 * 1024 * 1024)  # a larger CSV file is refused

# The address subscribers reach this dashboard at: unsubscribe links in messages point here.
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

# Every server's limits, kept for the whole cluster (smtp_settings/shared_limits.py): in Redis
# when REDIS_URL is set, else in the database. False keeps them per process (LocalLimits): only
# right for a single process, and there for comparison (bench/campaign.py).
SMTP_SHARED_LIMITS = env_bool("SMTP_SHARED_LIMITS", True)
LIMITS_KEY_PREFIX = env_str("LIMITS_KEY_PREFIX", "relaydeck:limits:")  # Redis keys start with this
SMTP_SLOT_LEASE_S = env_int("SMTP_SLOT_LEASE_S", 30)  # a connection slot of a silent process is free after this
SMTP_QUOTA_HOUR_S = env_int("SMTP_QUOTA_HOUR_S", 3600)  # the quota windows' lengths (shorter in tests)
SMTP_QUOTA_DAY_S = env_int("SMTP_QUOTA_DAY_S", 86400)
SMTP_THROTTLE_RECOVERY_S = env_int("SMTP_THROTTLE_RECOVERY_S", 30)  # quiet time before a throttled rate rises a step
if SMTP_SLOT_LEASE_S < 3:  # renewed every third of it
    raise ImproperlyConfigured("SMTP_SLOT_LEASE_S must be at least 3 (seconds)")

# Campaign sending (campaigns/sending/).
# The SMTP sandbox's inbox (`smtp_sandbox --inbox N`): a Maildir its process writes and /sandbox/ reads.
SANDBOX_INBOX_DIR = Path(env_str("SANDBOX_INBOX_DIR", str(VAR_DIR / "sandbox-inbox")))
SANDBOX_INBOX_MESSAGES = env_int("SANDBOX_INBOX_MESSAGES", 500)  # kept by `make run`'s sandbox
CAMPAIGN_BATCH_SIZE = env_int("CAMPAIGN_BATCH_SIZE", 200)  # deliveries claimed and sent at a time, at most
CAMPAIGN_BATCH_MEMORY_MB = env_int("CAMPAIGN_BATCH_MEMORY_MB", 64)  # fewer when large messages would need more
CAMPAIGN_LEASE_S = env_int("CAMPAIGN_LEASE_S", 60)  # a silent sender loses its campaign after this
if CAMPAIGN_LEASE_S < 2:  # renewed every third of it: shorter leaves no time to send anything
    raise ImproperlyConfigured("CAMPAIGN_LEASE_S must be at least 2 (seconds)")
CAMPAIGN_TASK_BUDGET_S = env_int("CAMPAIGN_TASK_BUDGET_S", 120)  # then a task hands over to a fresh one
# Senders (worker tasks, on any hosts) sending one campaign at once, at most; fewer when its
# servers have few connections or a low rate (campaigns/sending/leases.py).
CAMPAIGN_MAX_SENDERS = env_int("CAMPAIGN_MAX_SENDERS", 4)
if CAMPAIGN_MAX_SENDERS < 1:
    raise ImproperlyConfigured("CAMPAIGN_MAX_SENDERS must be at least 1")
CAMPAIGN_RETRY_DELAY_S = env_int("CAMPAIGN_RETRY_DELAY_S", 60)  # first wait for a deferred delivery, then doubled
# A delivery whose final dot went out before its sender died: "sent" (flag it ambiguous, never
# a duplicate) or "resend" (never a loss).
CAMPAIGN_AMBIGUOUS_POLICY = env_str("CAMPAIGN_AMBIGUOUS_POLICY", "sent")
if CAMPAIGN_AMBIGUOUS_POLICY not in ("sent", "resend"):
    raise ImproperlyConfigured("CAMPAIGN_AMBIGUOUS_POLICY must be 'sent' or 'resend'")
# How large a rendered subject (RFC 5322's line limit) and each rendered body may be.
CAMPAIGN_MAX_SUBJECT_BYTES = env_int("CAMPAIGN_MAX_SUBJECT_BYTES", 998)
CAMPAIGN_MAX_BODY_BYTES = env_int("CAMPAIGN_MAX_BODY_BYTES", 1024 * 1024)

# The event log (campaigns/eventlog/writer.py): events are written in bulk this often, kept this long.
EVENT_LOG_FLUSH_S = env_int("EVENT_LOG_FLUSH_S", 1)
EVENT_RETENTION_DAYS = env_int("EVENT_RETENTION_DAYS", 30)

# Transactional mail (smtp_settings/outbox/, relay/, api/).
# Networks whose clients may send through the SMTP relay without AUTH (comma-separated CIDRs).
RELAY_TRUSTED_NETWORKS = env_networks("RELAY_TRUSTED_NETWORKS")
RELAY_MAX_MESSAGE_BYTES = env_int("RELAY_MAX_MESSAGE_BYTES", 10 * 1024 * 1024)  # larger: 552 (API: 400)
RELAY_MAX_RECIPIENTS = env_int("RELAY_MAX_RECIPIENTS", 100)  # per message; more: 452 (API: 400)
RELAY_TLS_CERT = env_str("RELAY_TLS_CERT")  # PEM files: with both set, the relay offers STARTTLS
RELAY_TLS_KEY = env_str("RELAY_TLS_KEY")
if bool(RELAY_TLS_CERT) != bool(RELAY_TLS_KEY):
    raise ImproperlyConfigured("RELAY_TLS_CERT and RELAY_TLS_KEY are set together, or neither")
RELAY_MAX_SESSIONS = env_int("RELAY_MAX_SESSIONS", 500)  # client connections at once; more: 421
RELAY_TIMEOUT_S = env_int("RELAY_TIMEOUT_S", 300)  # a client silent this long, or this slow over DATA, is cut off
RELAY_LOGIN_TIMEOUT_S = env_int("RELAY_LOGIN_TIMEOUT_S", 30)  # a client not logged in by then (nor trusted) is cut off
RELAY_LISTEN = env_str("RELAY_LISTEN", "127.0.0.1:2587")  # where `make run` starts the relay
OUTBOX_RETRIES = env_int("OUTBOX_RETRIES", 5)  # deferred this many times, then failed
OUTBOX_RETRY_DELAY_S = env_int("OUTBOX_RETRY_DELAY_S", 60)  # first wait for a deferred message, then doubled
OUTBOX_LEASE_S = env_int("OUTBOX_LEASE_S", 60)  # a silent outbox sender loses its claims after this
if OUTBOX_LEASE_S < 2:
    raise ImproperlyConfigured("OUTBOX_LEASE_S must be at least 2 (seconds)")

# Bounces and complaints (smtp_settings/bounces/): a hard bounce or a complaint suppresses an
# address at once; SOFT_BOUNCE_LIMIT soft bounces within SOFT_BOUNCE_DAYS do too.
SOFT_BOUNCE_LIMIT = env_int("SOFT_BOUNCE_LIMIT", 3)
SOFT_BOUNCE_DAYS = env_int("SOFT_BOUNCE_DAYS", 7)
BOUNCE_REPORT_MAX_BYTES = env_int("BOUNCE_REPORT_MAX_BYTES", 1024 * 1024)  # of a report kept; the rest is cut

# ESP webhooks (smtp_settings/webhooks/): anymail's tracking webhooks, /webhooks/<esp>/tracking/.
# ANYMAIL_WEBHOOK_SECRET is the HTTP basic auth every post needs ("user:password", given to the
# ESP in the URL: https://user:password@host/webhooks/postmark/tracking/; several, comma-separated,
# while changing it). Unset, every post is refused (403). ESPs that sign their posts are checked
# with their key too: Mailgun, MailerSend, Mandrill, Postal and Unisender Go refuse posts until it
# is set; SendGrid and Mailtrap check it once set, and Resend would, given the svix package.
ANYMAIL_WEBHOOK_KEYS = [
    "MAILGUN_WEBHOOK_SIGNING_KEY",
    "MAILERSEND_SIGNING_SECRET",
    "MAILTRAP_TRACKING_SECRET",
    "MANDRILL_WEBHOOK_KEY",
    "MANDRILL_WEBHOOK_URL",  # the URL Mandrill posts to, where a proxy changes it: Mandrill signs it
    "POSTAL_WEBHOOK_KEY",
    "RESEND_SIGNING_SECRET",
    "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY",
    "UNISENDER_GO_API_KEY",
]
ANYMAIL = {"WEBHOOK_SECRET": env_list("ANYMAIL_WEBHOOK_SECRET", [])} | {
    name: value for name in ANYMAIL_WEBHOOK_KEYS if (value := env_str(f"ANYMAIL_{name}"))
}
# Bounce mailboxes (smtp_settings/bounces/mailboxes.py), checked every few minutes: each answer
# must come within BOUNCE_MAILBOX_TIMEOUT_S and a whole check within BOUNCE_MAILBOX_CHECK_S; a
# check reads at most BOUNCE_MAILBOX_MAX_MESSAGES reports (the rest wait for the next one), and
# at most BOUNCE_REPORT_MAX_BYTES of each (a larger one is kept cut, as not understood).
BOUNCE_MAILBOX_TIMEOUT_S = env_int("BOUNCE_MAILBOX_TIMEOUT_S", 30)
BOUNCE_MAILBOX_CHECK_S = env_int("BOUNCE_MAILBOX_CHECK_S", 300)
BOUNCE_MAILBOX_MAX_MESSAGES = env_int("BOUNCE_MAILBOX_MAX_MESSAGES", 500)
