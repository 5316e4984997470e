"""The HTTP API (mounted at /api/v1/): `POST messages` puts a message in the outbox, `GET
messages/<id>` says what became of it. A bearer token made on the relay page opens it."""
