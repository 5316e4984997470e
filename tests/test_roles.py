"""Roles: every URL of the project, for every role, for an account without a role and for
nobody logged in. The URLs are read from the resolver, so a new URL without a rule fails here."""

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from campaigns.models import Campaign, MailingList, Subscriber, SubscriberImport
from campaigns.rendering import unsubscribe_url
from project.roles import Role, role_of
from smtp_settings.models import (
    ApiToken,
    Bounce,
    BounceMailbox,
    OutboxMessage,
    RelayCredential,
    RelayRoute,
    SmtpServer,
    Suppression,
)
from tests.campaigns.test_sending import make_campaign

pytestmark = pytest.mark.django_db

# Open without a role: logging in and out (out: to any logged-in account), the unsubscribe
# page, which its signed token opens, the HTTP API, which its bearer tokens open
# (tests/smtp_settings/test_api.py), and the ESPs' webhooks, which their secret and signatures
# open (tests/smtp_settings/bounces/test_webhooks.py). The Django admin keeps its own staff check.
WEBHOOKS = {"webhooks:postmark", "webhooks:mailgun", "webhooks:sendgrid", "webhooks:brevo", "webhooks:amazon_ses"}
PUBLIC = {"login", "logout", "unsubscribe", "api:messages", "api:message"}
PRINCIPALS = [*Role, None, "anonymous"]


def _routes(patterns=None, namespace="", params=()) -> list[tuple[str, tuple[str, ...], object]]:
    """(URL name, its parameters, view) for every URL pattern but the Django admin's."""
    routes = []
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        here = (*params, *entry.pattern.converters)
        if isinstance(entry, URLResolver):
            if entry.namespace != "admin":
                routes += _routes(entry.url_patterns, f"{namespace}{entry.namespace}:", here)
        elif isinstance(entry, URLPattern):
            routes.append((f"{namespace}{entry.name}", here, entry.callback))
    return routes


ROUTES = _routes()
PUBLIC |= {name for name, *_ in ROUTES if name.startswith("webhooks:")}
RULED = [(name, params, getattr(view, "required_role", None)) for name, params, view in ROUTES if name not in PUBLIC]


def test_every_url_has_a_role_rule_or_is_public():
    assert {name for name, *_ in ROUTES} >= PUBLIC >= WEBHOOKS
    assert [name for name, _, role in RULED if role is None] == []


@pytest.fixture
def objects(make_server, make_mailbox, closed_port):
    """One of everything a URL can name; the server and the mailbox point where nothing answers."""
    campaign = make_campaign([make_server(port=closed_port)], 2)
    mailing_list = campaign.lists.get()
    credential = RelayCredential(name="app", username="app")
    credential.set_password("a-long-password")
    credential.save()
    message = OutboxMessage.objects.create(
        source="api", recipients=["to@example.test"], data=b"Subject: hi\r\n\r\nhi\r\n", size=18, status="failed"
    )
    return {
        "campaign": campaign,
        "list": mailing_list,
        "subscriber": mailing_list.subscribers.first(),
        "job": SubscriberImport.objects.create(mailing_list=mailing_list, original_name="people.csv"),
        "message": message,
        "credential": credential,
        "token": ApiToken.issue("app")[0],
        "suppression": Suppression.objects.create(email="gone@example.test", reason="hard_bounce"),
        "bounce": Bounce.objects.create(kind="unparsed", source="listener", report=b"Subject: ?\r\n\r\n?\r\n"),
        "mailbox": make_mailbox(port=closed_port),
    }


def _url(name: str, params: tuple[str, ...], objects: dict) -> str:
    pk_of = {
        "smtp_settings": SmtpServer.objects.get().pk,
        "lists": objects["list"].pk,
        "outbox": objects["message"].pk,
        "access": objects["credential"].pk,
        "suppressions": objects["suppression"].pk,
        "bounces": objects["bounce"].pk,
        "bounce_mailboxes": objects["mailbox"].pk,
    }
    values = {
        "pk": pk_of.get(name.split(":")[0], objects["campaign"].pk),
        "subscriber_pk": objects["subscriber"].pk,
        "import_pk": objects["job"].pk,
        "token_pk": objects["token"].pk,
        "token": unsubscribe_url(objects["subscriber"].pk, None).rsplit("/", 2)[-2],
        "name": "00000000000000000001.P1Q1.relaydeck",  # a sandbox inbox message's name
    }
    return reverse(name, kwargs={param: values[param] for param in params})


def _everything() -> tuple:
    """What any action could change, to show that a refused one changed nothing."""
    return (
        list(Campaign.objects.values_list("pk", "status", "name")),
        list(MailingList.objects.values_list("pk", "name")),
        list(Subscriber.objects.values_list("pk", "status")),
        list(Subscriber.lists.through.objects.values_list("pk")),
        list(SmtpServer.objects.values_list("pk", "enabled", "max_conns")),
        SubscriberImport.objects.count(),
        list(OutboxMessage.objects.values_list("pk", "status", "attempts")),
        list(RelayCredential.objects.values_list("pk", "name", "password_hash", "enabled")),
        list(ApiToken.objects.values_list("pk", "name", "enabled")),
        list(RelayRoute.servers.through.objects.values_list("pk")),
        list(Suppression.objects.values_list("pk", "email", "reason")),
        list(BounceMailbox.objects.values_list("pk", "enabled", "password", "last_checked_at")),
    )


def _client_for(principal, client, login_as):
    return client if principal == "anonymous" else login_as(principal)


@pytest.mark.parametrize("principal", PRINCIPALS, ids=str)
@pytest.mark.parametrize(("name", "params", "needed"), RULED, ids=[name for name, *_ in RULED])
def test_each_url_lets_in_exactly_the_roles_that_include_its_rule(
    principal, name, params, needed, objects, client, login_as
):
    browser = _client_for(principal, client, login_as)
    url = _url(name, params, objects)
    for method in ("get", "post"):
        before = _everything()
        response = getattr(browser, method)(url, {"to_email": "me@example.test"})
        if principal == "anonymous":
            assert response.status_code == 302 and response.url.startswith(reverse("login")), method
        elif principal is None:
            assert response.status_code == 403, method
            assert "Your account has no role yet; ask an admin" in response.content.decode()
        elif not principal.includes(needed):
            assert response.status_code == 403, method
            assert f"This needs the {needed} role; your account has the {principal} role." in response.content.decode()
        else:
            assert response.status_code != 403, method
            assert not (response.status_code == 302 and response.url.startswith(reverse("login"))), method
            continue
        assert _everything() == before, f"a refused {method.upper()} changed something"


def test_the_rules_are_the_ones_the_roles_promise():
    rules = {name: needed for name, _, needed in RULED}
    readable = {name for name, needed in rules.items() if needed == Role.VIEWER}
    assert readable == {
        "home",
        "password_change",  # one's own
        "campaigns:list",
        "campaigns:detail",
        "campaigns:preview",
        "campaigns:preview_html",
        "campaigns:progress",
        "campaigns:links",
        "lists:index",
        "lists:detail",
        "lists:counts",
        "lists:import_status",
        "logs:list",
        "logs:export",
        "logs:connections",
        "logs:campaign",
        "smtp_settings:list",
        "smtp_settings:live",
        "outbox:list",
        "outbox:detail",
        "outbox:counts",
        "outbox:chart",
        "access:index",
        "suppressions:list",
        "suppressions:export",
        "bounces:list",
        "bounces:detail",
        "bounce_mailboxes:list",
        "sandbox_inbox:list",
    }
    administered = {name for name, needed in rules.items() if needed == Role.ADMIN}
    settings = ("smtp_settings:", "access:", "bounce_mailboxes:")
    assert administered == {
        "bounces:report",  # raw reports hold third parties' addresses and headers
        "campaigns:demo_again",  # it resets the demo's server entry
        "sandbox_inbox:detail",  # as an outbox message's text: it may hold password-reset links
        "sandbox_inbox:html",  # the same message's HTML part
        *({name for name in rules if name.startswith(settings)} - readable),
    }
    sent = {name for name, needed in rules.items() if needed == Role.SENDER}
    assert {name for name in sent if name.startswith("outbox:")} == {
        "outbox:requeue",
        "outbox:delete",
        "outbox:requeue_filtered",
        "outbox:delete_filtered",
    }
    assert {name for name in sent if name.startswith("suppressions:")} == {
        "suppressions:add",
        "suppressions:import",
        "suppressions:remove",
    }


@pytest.mark.parametrize("principal", PRINCIPALS, ids=str)
def test_public_pages_stay_open(principal, objects, client, login_as):
    browser = _client_for(principal, client, login_as)
    unsubscribe = _url("unsubscribe", ("token",), objects)
    assert browser.get(unsubscribe).status_code == 200
    assert browser.post(reverse("logout")).status_code == 302
    assert client.get(reverse("login")).status_code == 200


@pytest.mark.parametrize("name", sorted(name for name in PUBLIC if name.startswith("webhooks:")))
def test_the_webhooks_answer_without_a_login(name, client, settings):
    """Their own credentials decide, not a session: no redirect to the login page."""
    settings.ANYMAIL = {"WEBHOOK_SECRET": ["esp:secret"]}
    response = client.post(reverse(name), "{}", content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic ")


def test_an_account_without_a_role_sees_only_the_page_that_says_so(login_as):
    browser = login_as(None)
    response = browser.get(reverse("campaigns:list"))
    content = response.content.decode()
    assert response.status_code == 403
    assert "Your account has no role yet; ask an admin" in content
    assert f'action="{reverse("logout")}"' in content
    assert reverse("lists:index") not in content and reverse("smtp_settings:list") not in content
    assert browser.get("/").status_code == 403


def test_a_refused_post_explains_itself_on_a_styled_page(login_as, objects):
    response = login_as(Role.VIEWER).post(reverse("campaigns:launch", args=[objects["campaign"].pk]))
    assert response.status_code == 403
    content = response.content.decode()
    assert "<h1>Not allowed</h1>" in content and "css/relaydeck.css" in content
    assert "This needs the sender role; your account has the viewer role." in content


# -- buttons: shown only to those who may press them --


def _page(browser, url: str) -> str:
    response = browser.get(url)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(("role", "shown"), [(Role.VIEWER, False), (Role.SENDER, True), (Role.ADMIN, True)])
def test_campaign_and_list_buttons_only_for_senders(role, shown, login_as, objects):
    browser = login_as(role)
    campaign, mailing_list = objects["campaign"], objects["list"]
    pages = {
        reverse("campaigns:list"): [reverse("campaigns:create")],
        reverse("campaigns:detail", args=[campaign.pk]): [
            reverse("campaigns:launch", args=[campaign.pk]),  # a draft: Delete, not Cancel, discards it
            reverse("campaigns:edit", args=[campaign.pk]),
            reverse("campaigns:delete", args=[campaign.pk]),
            reverse("campaigns:test_send", args=[campaign.pk]),
        ],
        reverse("lists:index"): [reverse("lists:create")],
        reverse("lists:detail", args=[mailing_list.pk]): [
            reverse("lists:delete", args=[mailing_list.pk]),
            reverse("lists:import", args=[mailing_list.pk]),
            reverse("lists:remove", args=[mailing_list.pk, objects["subscriber"].pk]),
            reverse("lists:unsubscribe", args=[mailing_list.pk, objects["subscriber"].pk]),
        ],
    }
    for page, actions in pages.items():
        content = _page(browser, page)
        for action in actions:
            assert (f'"{action}"' in content) == shown, (page, action)
    labels = ["Launch", "Send test"]
    detail = _page(browser, reverse("campaigns:detail", args=[campaign.pk]))
    assert [label for label in labels if f">{label}</button>" in detail] == (labels if shown else [])
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.RUNNING)
    running = _page(browser, reverse("campaigns:detail", args=[campaign.pk]))
    assert (f'"{reverse("campaigns:cancel", args=[campaign.pk])}"' in running) == shown
    assert (">Cancel campaign</button>" in running) == shown


@pytest.mark.parametrize(("role", "shown"), [(Role.VIEWER, False), (Role.SENDER, False), (Role.ADMIN, True)])
def test_server_buttons_only_for_admins(role, shown, login_as, objects):
    server = SmtpServer.objects.get()
    content = _page(login_as(role), reverse("smtp_settings:list"))
    assert server.name in content
    assert (f'"{reverse("smtp_settings:create")}"' in content) == shown
    for name in ("edit", "delete", "toggle", "test"):
        assert (f'"{reverse(f"smtp_settings:{name}", args=[server.pk])}"' in content) == shown, name
    assert (">Test connection</button>" in content) == shown


# -- what a role is --


def test_a_fresh_database_has_the_three_role_groups_with_their_permissions():
    groups = {group.name: group for group in Group.objects.prefetch_related("permissions__content_type")}
    assert set(groups) >= {"admin", "sender", "viewer"}

    def perms(role: str) -> set[str]:
        return {f"{p.content_type.app_label}.{p.codename}" for p in groups[role].permissions.all()}

    assert "campaigns.view_campaign" in perms("viewer") and "campaigns.change_campaign" not in perms("viewer")
    assert {"campaigns.change_campaign", "campaigns.delete_mailinglist"} <= perms("sender")
    assert "smtp_settings.change_smtpserver" not in perms("sender")
    assert {"smtp_settings.change_smtpserver", "auth.change_user", "auth.change_group"} <= perms("admin")
    assert perms("viewer") < perms("sender") < perms("admin")


@pytest.mark.django_db(transaction=True)
def test_a_flushed_database_gets_the_role_groups_back():
    call_command("flush", interactive=False, verbosity=0)
    assert set(Group.objects.filter(permissions__isnull=False).values_list("name", flat=True)) == set(Role)


def test_superusers_are_admins_and_the_highest_group_wins(django_user_model):
    boss = django_user_model.objects.create_superuser("boss", password="pw")
    assert role_of(boss) == Role.ADMIN
    both = django_user_model.objects.create_user("both")
    both.groups.add(*Group.objects.filter(name__in=["viewer", "sender"]))
    assert role_of(both) == Role.SENDER
    gone = django_user_model.objects.get(pk=both.pk)
    gone.is_active = False
    assert role_of(gone) is None


# -- the Django admin: staff only, and where admins give roles --


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SENDER, None])
def test_the_django_admin_stays_staff_only(role, login_as):
    response = login_as(role).get(reverse("admin:index"))
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))


def test_an_admin_gives_a_role_in_the_django_admin_by_group(login_as, django_user_model):
    browser = login_as(Role.ADMIN)
    carol = django_user_model.objects.create_user("carol", password="pw")
    sender = Group.objects.get(name="sender")
    assert browser.get(reverse("admin:auth_group_changelist")).status_code == 200
    assert browser.get(reverse("admin:auth_group_change", args=[sender.pk])).status_code == 200

    form = {
        "username": "carol",
        "is_active": "on",
        "groups": [sender.pk],
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }
    response = browser.post(reverse("admin:auth_user_change", args=[carol.pk]), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert role_of(django_user_model.objects.get(pk=carol.pk)) == Role.SENDER

    users = browser.get(reverse("admin:auth_user_changelist")).content.decode()
    assert "Groups (roles)" in users and '<td class="field-group_names">sender</td>' in users
