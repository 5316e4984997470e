"""Bounces, complaints and the suppression list.

- `verp.py`: the envelope sender that names one delivery, bounces+<token>@<bounce domain>.
- `record.py`: what every source of bounces calls (send time, the listener, mailboxes, ESP
  webhooks): a `Bounce` row, the suppression rules, an event for the log, and the
  `bounce_recorded` signal, which campaigns receive for their deliveries and subscribers.
- `intake.py`: a DSN or complaint report from the listener or a mailbox, read (parse.py) and
  acted on only for the addresses its message went to (`recipients.py`, whose
  `reference_recipients` signal campaigns answer for their deliveries).
"""
