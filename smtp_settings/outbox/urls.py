from django.urls import path

from smtp_settings.outbox import views

app_name = "outbox"
urlpatterns = [
    path("", views.message_list, name="list"),
    path("counts/", views.live_counts, name="counts"),
    path("chart/", views.live_chart, name="chart"),
    path("requeue/", views.requeue_filtered, name="requeue_filtered"),
    path("delete/", views.delete_filtered, name="delete_filtered"),
    path("<int:pk>/", views.message_detail, name="detail"),
    path("<int:pk>/requeue/", views.requeue, name="requeue"),
    path("<int:pk>/delete/", views.delete, name="delete"),
]
