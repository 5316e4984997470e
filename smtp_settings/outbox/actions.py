"""What a person may do to messages in the outbox: requeue them or delete them, one or many.

Each is one conditional statement, so a message a worker has just claimed (`sending`) is
never requeued nor deleted under it, whatever the timing of the click: a worker that holds a
message alone decides how it ends.
"""

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from smtp_settings.models import OutboxMessage
from smtp_settings.outbox import queue

Status = OutboxMessage.Status
REQUEUABLE = (Status.DEFERRED, Status.FAILED, Status.SKIPPED)  # skipped: once its recipients are off the list


def requeuable(messages: QuerySet) -> QuerySet:
    return messages.filter(status__in=REQUEUABLE)


def deletable(messages: QuerySet) -> QuerySet:
    return messages.exclude(status=Status.SENDING)


def requeue(messages: QuerySet) -> int:
    """Put the deferred, failed and skipped ones among `messages` back in line as if new (no attempts,
    due now) and wake the delivery once that commits; how many were requeued."""
    with transaction.atomic():
        requeued = requeuable(messages).update(
            status=Status.QUEUED, attempts=0, next_attempt_at=None, updated_at=timezone.now()
        )
        if requeued:
            # They are queued whether or not a worker can be woken now: the next wake sends them.
            transaction.on_commit(queue.wake, robust=True)
    return requeued


def delete(messages: QuerySet) -> int:
    """Delete `messages` but those being sent; how many were deleted."""
    # Nothing refers to an outbox message, so this is one DELETE with the condition in it.
    return deletable(messages).delete()[0]
