from django.urls import path

from campaigns.models import Subscriber
from campaigns.views import lists

Status = Subscriber.Status
member = "<int:pk>/subscribers/<int:subscriber_pk>"

app_name = "lists"
urlpatterns = [
    path("", lists.list_index, name="index"),
    path("new/", lists.list_create, name="create"),
    path("<int:pk>/", lists.list_detail, name="detail"),
    path("<int:pk>/delete/", lists.list_delete, name="delete"),
    path("<int:pk>/import/", lists.import_upload, name="import"),
    path("imports/<int:import_pk>/", lists.import_status, name="import_status"),
    path(f"{member}/remove/", lists.remove_subscriber, name="remove"),
    path(f"{member}/unsubscribe/", lists.set_status, {"status": Status.UNSUBSCRIBED}, name="unsubscribe"),
    path(f"{member}/blocklist/", lists.set_status, {"status": Status.BLOCKLISTED}, name="blocklist"),
    path(f"{member}/reactivate/", lists.set_status, {"status": Status.ACTIVE}, name="reactivate"),
]
