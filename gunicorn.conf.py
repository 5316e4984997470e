"""gunicorn's settings for the dashboard: read by `manage.py serve` when DEBUG is off, and by
`gunicorn project.wsgi` run from this directory (see docs/deploy.md). The address comes from
the command line (`--bind`)."""

import os

wsgi_app = "project.wsgi:application"

# Threads, so that a long CSV export or a slow client holds one thread rather than a whole
# process, and gunicorn's worker timeout does not kill a long streaming response.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))

# On SIGTERM, requests in progress get this long to finish: less than the 20 s `serve` waits
# before it kills what is left.
graceful_timeout = 15

accesslog = "-"  # stdout, like the rest of the logs; errors go to stderr

# Django alone decides whether X-Forwarded-Proto is to be believed (BEHIND_TLS_PROXY);
# gunicorn would otherwise believe it from any local address, or any Unix socket peer.
secure_scheme_headers = {}

# gunicornc's control socket has one default path per user, which two instances on one host
# would fight over; nothing here uses it.
control_socket_disable = True
