"""The relay page: who may hand mail to the outbox (relay credentials for the SMTP relay, API
tokens for the HTTP API) and where mail that names no server goes (the default route)."""
