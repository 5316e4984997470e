from django.urls import path

from campaigns.eventlog import views

app_name = "logs"
urlpatterns = [
    path("", views.event_list, name="list"),
    path("export.csv", views.event_export, name="export"),
    path("connections/", views.connection_timeline, name="connections"),
    path("campaign/<int:pk>/", views.campaign_events, name="campaign"),
]
