from django.urls import path

from campaigns.views import compose, control, demo

app_name = "campaigns"
urlpatterns = [
    path("", compose.campaign_list, name="list"),
    path("new/", compose.campaign_create, name="create"),
    path("demo/again/", demo.run_again, name="demo_again"),
    path("<int:pk>/", compose.campaign_detail, name="detail"),
    path("<int:pk>/edit/", compose.campaign_edit, name="edit"),
    path("<int:pk>/preview/", compose.campaign_preview, name="preview"),
    path("<int:pk>/preview/html/", compose.campaign_preview_html, name="preview_html"),
    path("<int:pk>/test-send/", compose.campaign_test_send, name="test_send"),
    path("<int:pk>/delete/", compose.campaign_delete, name="delete"),
    path("<int:pk>/launch/", control.launch, name="launch"),
    path("<int:pk>/pause/", control.pause, name="pause"),
    path("<int:pk>/resume/", control.resume, name="resume"),
    path("<int:pk>/cancel/", control.cancel, name="cancel"),
    path("<int:pk>/retry-failed/", control.retry_failed, name="retry_failed"),
    path("<int:pk>/progress/", control.progress, name="progress"),
]
