from django.urls import path

from campaigns.lists import views
from campaigns.models import Subscriber

Status = Subscriber.Status
member = "<int:pk>/subscribers/<int:subscriber_pk>"

app_name = "lists"
urlpatterns = [
    path("", views.list_index, name="index"),
    path("new/", views.list_create, name="create"),
    path("<int:pk>/", views.list_detail, name="detail"),
    path("<int:pk>/counts/", views.list_counts, name="counts"),
    path("<int:pk>/delete/", views.list_delete, name="delete"),
    path("<int:pk>/import/", views.import_upload, name="import"),
    path("imports/<int:import_pk>/", views.import_status, name="import_status"),
    path(f"{member}/remove/", views.remove_subscriber, name="remove"),
    path(f"{member}/remove/confirm/", views.confirm_member_action, {"action": "remove"}, name="confirm_remove"),
    path(f"{member}/unsubscribe/", views.set_status, {"status": Status.UNSUBSCRIBED}, name="unsubscribe"),
    path(f"{member}/blocklist/", views.set_status, {"status": Status.BLOCKLISTED}, name="blocklist"),
    path(
        f"{member}/blocklist/confirm/", views.confirm_member_action, {"action": "blocklist"}, name="confirm_blocklist"
    ),
    path(f"{member}/reactivate/", views.set_status, {"status": Status.ACTIVE}, name="reactivate"),
]
