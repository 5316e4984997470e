from anymail import urls as anymail_urls
from django.urls import path

from smtp_settings.webhooks.views import tracking_webhook

# anymail's tracking webhook for every ESP it knows, at its own path ("postmark/tracking/"),
# named for the ESP ("webhooks:postmark"). Its inbound webhooks are left out: nothing here
# receives mail.
app_name = "webhooks"
urlpatterns = [
    path(str(route.pattern), tracking_webhook(route.callback), name=route.name.removesuffix("_tracking_webhook"))
    for route in anymail_urls.urlpatterns
    if route.name.endswith("_tracking_webhook")
]
