"""ESPs' tracking webhooks: anymail's views at /webhooks/<esp>/tracking/, behind Relaydeck's
rules (`views`), and what their events do to bounces, the suppression list, deliveries and
subscribers (`tracking`)."""
