"""Sending a campaign in the background, every recipient exactly once, by any number of
senders (django-q2 tasks) on any hosts at once.

- leases.py: a sender's lease on a campaign, its claims, and the fence at every final dot;
- recovery.py: what becomes of the rows of a sender that died or lost its lease;
- rotation.py: which of the campaign's servers sends the next batch;
- loop.py: the sender loop, from joining a campaign to recording each outcome;
- watchdog.py: scheduled launches, campaigns nobody sends, rows nobody holds.
"""
