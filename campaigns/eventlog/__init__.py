"""The event log: what the connection pools and the campaign senders did, kept as `Event` rows
(the model lives in `campaigns.models`, with the app's migrations) and shown at /logs/.

`writer` buffers events and writes them in bulk; `filters` holds the log's queries, `charts`
a campaign's timeline as a picture, and `views`/`urls` the pages. Callers record and flush
through the names below: `from campaigns import eventlog; eventlog.flush()`.
"""

from campaigns.eventlog.writer import AUTO_PAUSE, TASK_ERROR, flush, prune, record_campaign_event, record_pool_event

__all__ = ["AUTO_PAUSE", "TASK_ERROR", "flush", "prune", "record_campaign_event", "record_pool_event"]
