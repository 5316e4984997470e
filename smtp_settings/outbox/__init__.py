"""Transactional mail: the outbox and the doors into it.

Applications hand messages over through the SMTP relay (`smtp_settings/relay/`) or the HTTP
API (`smtp_settings/api/`); each door calls `queue.enqueue`, which writes an `OutboxMessage`
in the caller's transaction and wakes the delivery (`delivery.py`) once it commits. The
outbox page (`views.py`) lists the messages, and requeues or deletes them (`actions.py`).
"""
