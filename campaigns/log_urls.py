from django.urls import path

from campaigns.views import logs

app_name = "logs"
urlpatterns = [
    path("", logs.event_list, name="list"),
    path("export.csv", logs.event_export, name="export"),
    path("campaign/<int:pk>/", logs.campaign_events, name="campaign"),
]
