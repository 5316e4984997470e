"""Starting points for well-known providers: connection settings, and limits at or safely
below what each provider enforces (rates and quotas as documented). Each preset's `source`
says where its numbers come from."""

from dataclasses import dataclass, field

SANDBOX_PORT = 2525  # `manage.py smtp_sandbox`'s, and the demo's


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    host: str
    port: int
    tls: str
    auth_protocol: str
    source: str
    limits: dict = field(default_factory=dict)

    def initial(self) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "auth_protocol": self.auth_protocol,
            **self.limits,
        }


PRESETS = [
    Preset(
        key="ses",
        label="Amazon SES",
        host="email-smtp.us-east-1.amazonaws.com",
        port=587,
        tls="starttls",
        auth_protocol="login",
        limits={
            "max_conns": 10,
            "max_msgs_per_conn": 300,
            "idle_timeout": 5,
            "rate_limit": 14,
            "rate_counts": "recipients",
            "quota_per_day": 50_000,
            "quota_counts": "recipients",
        },
        source="SES ends sessions with '421 … Maximum message count per session reached' "
        "(seen at 350; AWS does not document the number), so rotate at 300. It drops sessions idle "
        "for about 10 s with '451 4.4.2 Timeout waiting for data from client', so close idle ones at 5 s. "
        "Each account has a maximum send rate and a 24-hour sending quota, both counted in recipients "
        "(AWS SES quotas); 14 a second and 50,000 a day are a common starting quota, and the SES sandbox "
        "allows 1 a second and 200 a day. Set your account's own numbers, and your region's host.",
    ),
    Preset(
        key="microsoft365",
        label="Microsoft 365 / Exchange",
        host="smtp.office365.com",
        port=587,
        tls="starttls",
        auth_protocol="login",
        limits={
            "max_conns": 10,
            "max_msgs_per_conn": 0,
            "idle_timeout": 15,
            "rate_limit": 0,
            "rate_per_minute": 30,
            "rate_counts": "messages",
            "quota_per_day": 10_000,
            "quota_counts": "recipients",
        },
        source="Exchange caps connections per client (MaxInboundConnectionPerSource, commonly 20) and answers "
        "'421 4.3.2 The maximum number of concurrent connections has exceeded a limit' beyond it, so 10. "
        "Exchange Online's sending limits allow 30 messages a minute and 10,000 recipients a day per "
        "mailbox. For an on-premises relay use its host, and raise or clear the rate and the quota.",
    ),
    Preset(
        key="google",
        label="Gmail / Google Workspace",
        host="smtp.gmail.com",
        port=587,
        tls="starttls",
        auth_protocol="login",
        limits={
            "max_conns": 3,
            "max_msgs_per_conn": 100,
            "idle_timeout": 15,
            "rate_limit": 1,
            "quota_per_day": 2_000,
            "quota_counts": "messages",
        },
        source="Google Workspace allows about 2,000 messages a day per user (Gmail sending limits); a "
        "consumer Gmail account about 500, so set 500 for one. Google documents no per-session numbers; "
        "it answers '421 4.7.0 Try again later' to bursts, so these are conservative. "
        "Log in with an app password.",
    ),
    Preset(
        key="mailgun",
        label="Mailgun",
        host="smtp.mailgun.org",
        port=587,
        tls="starttls",
        auth_protocol="login",
        limits={"max_conns": 10, "max_msgs_per_conn": 1000, "idle_timeout": 15},
        source="Mailgun documents no per-session cap; 1,000 per connection matches Exim's default "
        "and keeps sessions short. Use smtp.eu.mailgun.org for EU domains.",
    ),
    Preset(
        key="sendgrid",
        label="SendGrid",
        host="smtp.sendgrid.net",
        port=587,
        tls="starttls",
        auth_protocol="login",
        limits={"max_conns": 10, "max_msgs_per_conn": 4500, "idle_timeout": 15},
        source="SendGrid's SMTP docs allow up to 5,000 messages per connection and 10,000 concurrent "
        "connections, so rotate at 4,500. The username is the literal string 'apikey', the password an API key.",
    ),
    Preset(
        key="postmark",
        label="Postmark",
        host="smtp.postmarkapp.com",
        port=587,
        tls="starttls",
        auth_protocol="login",
        limits={"max_conns": 5, "max_msgs_per_conn": 500, "idle_timeout": 15},
        source="Postmark documents no per-session cap; these values keep sessions short. "
        "Username and password are both the server API token.",
    ),
    Preset(
        key="sandbox",
        label="Local sandbox",
        host="127.0.0.1",
        port=SANDBOX_PORT,
        tls="none",
        auth_protocol="none",
        limits={"max_conns": 20, "max_msgs_per_conn": 0, "idle_timeout": 15},
        source="Relaydeck's own test server (python manage.py smtp_sandbox): nothing leaves this machine.",
    ),
]

PRESETS_BY_KEY = {preset.key: preset for preset in PRESETS}
