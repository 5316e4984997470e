"""The outbox page's queries: its filters, a page of messages, the counts per status."""

from dataclasses import dataclass

from django import forms
from django.db.models import Count, QuerySet, TextField
from django.db.models.functions import Cast

from project.forms import TimeRangeForm
from project.paging import older_page
from smtp_settings.models import OutboxMessage, SmtpServer

PAGE_SIZE = 50
# What the table shows; the message itself (up to RELAY_MAX_MESSAGE_BYTES) is never read for it.
LISTED = (
    "created_at",
    "updated_at",
    "sent_at",
    "status",
    "mail_from",
    "recipients",
    "subject",
    "server__name",
    "attempts",
    "last_code",
    "last_reply",
    "source",
    "submitted_by",
    "size",
)


class OutboxFilterForm(TimeRangeForm):
    """The outbox's filters, from the query string; `before` is the keyset bound of a page."""

    status = forms.ChoiceField(choices=[("", "All statuses"), *OutboxMessage.Status.choices], required=False)
    server = forms.ModelChoiceField(
        queryset=SmtpServer.objects.only("name").order_by("name"), required=False, empty_label="All servers"
    )
    to = forms.CharField(label="Recipient", max_length=254, required=False, help_text="Part of an address.")
    before = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)

    FILTERS = ("status", "server", "to", "since", "until")
    field_order = FILTERS


def filtered_messages(cleaned: dict) -> QuerySet:
    """The messages the filter selects (by creation time), newest first."""
    messages = OutboxMessage.objects.order_by("-id")
    if cleaned.get("status"):
        messages = messages.filter(status=cleaned["status"])
    if cleaned.get("server"):
        messages = messages.filter(server=cleaned["server"])
    if cleaned.get("to"):
        messages = messages.alias(to=Cast("recipients", TextField())).filter(to__icontains=cleaned["to"])
    if cleaned.get("since"):
        messages = messages.filter(created_at__gte=cleaned["since"])
    if cleaned.get("until"):
        messages = messages.filter(created_at__lt=cleaned["until"])
    return messages


@dataclass
class Page:
    messages: list[OutboxMessage]
    older: int | None  # the `before` of the next page, if there is one


def page(messages: QuerySet, before: int | None = None) -> Page:
    return Page(*older_page(messages.select_related("server").only(*LISTED), before, PAGE_SIZE))


def status_counts() -> dict[str, int]:
    """How many messages the outbox holds in each status, every status named."""
    counts = dict(OutboxMessage.objects.order_by().values_list("status").annotate(Count("id")))
    return {status: counts.get(status, 0) for status in OutboxMessage.Status.values}
