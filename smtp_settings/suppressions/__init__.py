"""The suppression list's page, /suppressions/: addresses nothing is sent to any more.

Hard bounces, complaints, repeated soft bounces (smtp_settings/bounces/record.py) and
unsubscribes put addresses on it by themselves; a sender adds one by hand, imports a CSV file
(`importing.py`) or takes one off, saying why (`actions.py`, an event in the log). `filters.py`
holds the page's queries and the CSV export. Campaign senders skip a suppressed address, and
the outbox drops it from a message's recipients, at send time.
"""
