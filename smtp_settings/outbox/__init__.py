"""Transactional mail: the outbox and its three doors.

Applications hand messages over through the SMTP relay (`smtp_settings/relay/`), the HTTP API
(`smtp_settings/api/`) or `smtp_settings.backends.QueuedEmailBackend`; each door calls
`queue.enqueue`, which writes an `OutboxMessage` in the caller's transaction. Workers deliver
the outbox through RotatingEmailBackend under the shared limits (`delivery.py`), with the same
claims, leases and final-dot fence as campaigns.
"""
