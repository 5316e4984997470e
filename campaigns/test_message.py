"""One message of a campaign sent now to an address the user types, to see it as a
subscriber will: rendered by the same renderer, through the campaign's own server."""

from dataclasses import dataclass

from django.core.mail import get_connection, make_msgid

from campaigns.models import Campaign, Subscriber
from campaigns.rendering import CampaignRenderer, RenderError, message_domain, sample_subscriber
from smtp_settings.models import SmtpServer
from smtp_settings.results import SENT, SmtpResult

BACKEND = "smtp_settings.backends.RotatingEmailBackend"


@dataclass
class TestSend:
    to_email: str
    error: str = ""
    server: SmtpServer | None = None
    message_id: str = ""
    result: SmtpResult | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.status == SENT


def send_test_message(campaign: Campaign, to_email: str) -> TestSend:
    """Send one message of the campaign to `to_email`, now, through its first enabled server.

    It is rendered for the subscriber with that address if there is one, else with the sample
    subscriber's name and attributes; either way its unsubscribe link is a test's, whose page
    says so and unsubscribes nobody.
    """
    test = TestSend(to_email)
    test.server = campaign.servers.filter(enabled=True).order_by("pk").first()
    if test.server is None:
        test.error = "This campaign has no enabled SMTP server to send through."
        return test
    recipient = Subscriber.objects.filter(email=Subscriber.normalise_email(to_email)).first()
    if recipient is None:
        sample = sample_subscriber(campaign)
        recipient = Subscriber(email=to_email, name=sample.name, attributes=sample.attributes)
    test.message_id = make_msgid("relaydeck-test", domain=message_domain(campaign))
    try:
        message = CampaignRenderer(campaign, test=True).message(recipient, test.message_id)
    except RenderError as error:
        test.error = f"The message could not be rendered: {error}"
        return test
    # The log shows the test's connection as the campaign's; its counters leave it out.
    context = {"campaign_id": campaign.pk, "test_message": True}
    get_connection(BACKEND, server=test.server, fail_silently=True, event_context=context).send_messages([message])
    test.result = getattr(message, "smtp_result", None)
    if test.result is None:
        test.error = f"The server “{test.server.name}” is not available."
    return test
