from django.urls import path

from campaigns.views import compose, control, demo, preview

app_name = "campaigns"
urlpatterns = [
    path("", compose.campaign_list, name="list"),
    path("new/", compose.campaign_create, name="create"),
    path("demo/again/", demo.run_again, name="demo_again"),
    path("<int:pk>/", compose.campaign_detail, name="detail"),
    path("<int:pk>/edit/", compose.campaign_edit, name="edit"),
    path("<int:pk>/preview/", preview.campaign_preview, name="preview"),
    path("<int:pk>/preview/html/", preview.campaign_preview_html, name="preview_html"),
    path("new/preview/", preview.preview_unsaved, name="preview_unsaved"),
    path("<int:pk>/edit/preview/", preview.preview_unsaved, name="preview_unsaved_edit"),
    path("preview/html/", preview.preview_unsaved_html, name="preview_unsaved_html"),
    path("<int:pk>/test-send/", compose.campaign_test_send, name="test_send"),
    path("<int:pk>/delete/", compose.campaign_delete, name="delete"),
    path("<int:pk>/launch/", control.launch, name="launch"),
    path("<int:pk>/pause/", control.pause, name="pause"),
    path("<int:pk>/resume/", control.resume, name="resume"),
    path("<int:pk>/cancel/", control.cancel, name="cancel"),
    path("<int:pk>/retry-failed/", control.retry_failed, name="retry_failed"),
    path("<int:pk>/progress/", control.progress, name="progress"),
    path("<int:pk>/links/", control.links, name="links"),
]
