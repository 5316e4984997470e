from django.urls import path

from campaigns.views import control

app_name = "campaigns"
urlpatterns = [
    path("<int:pk>/launch/", control.launch, name="launch"),
    path("<int:pk>/pause/", control.pause, name="pause"),
    path("<int:pk>/resume/", control.resume, name="resume"),
    path("<int:pk>/cancel/", control.cancel, name="cancel"),
    path("<int:pk>/retry-failed/", control.retry_failed, name="retry_failed"),
    path("<int:pk>/progress/", control.progress, name="progress"),
]
