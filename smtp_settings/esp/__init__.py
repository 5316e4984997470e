"""ESP entries: servers that send through an ESP's HTTP API with django-anymail.

An ESP entry is one more kind of server for the connection pool and the backend: the pool
lends out API sessions (`client.EspConnection`) under the same limits as SMTP sessions
(connections, rates, quotas, throttles, cluster-wide), and the backend sends each message
through anymail on one of them, with the same results as over SMTP.

- `registry.py`: the ESPs on offer, with their anymail backend, credentials and test call.
- `client.py`: one API call, bounded in time and size, judged, cut free of secrets.
- `messages.py`: the message anymail is given, from a Django message or the outbox's bytes.
- `probe.py`: the settings page's "test connection" for an ESP entry.
"""
