"""Taking an address off the suppression list: recorded in the event log with why, and by whom.

Taking it off only lets mail to the address go again; it resubscribes nobody (a subscriber
who unsubscribed, bounced or was blocklisted keeps that status on their lists)."""

from smtp_settings.events import Kind, PoolEvent, smtp_event
from smtp_settings.models import Suppression


def remove(suppression: Suppression, reason: str, by: str) -> bool:
    """Take `suppression` off the list, saying why; False if someone else took it off first."""
    if not Suppression.objects.filter(pk=suppression.pk).delete()[0]:
        return False
    event = PoolEvent(
        kind=Kind.UNSUPPRESSED,
        server_id=None,
        server_name="",
        text=reason,
        recipient=suppression.email,
        detail={"by": by, "was": suppression.reason, "since": suppression.created_at.isoformat()},
    )
    smtp_event.send(sender=Suppression, event=event)
    return True
