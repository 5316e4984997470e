"""The SMTP relay, the outbox's main door: `python manage.py smtp_relay`.

`server.py` speaks SMTP (aiosmtpd): who may send, envelope checks, limits, STARTTLS.
`writer.py` writes what the sessions hand over to the outbox, many sessions' messages in one
transaction, and gives each session its reply: 250 only once its message is committed.
`credentials.py` checks an AUTH login against the relay credentials.
"""
