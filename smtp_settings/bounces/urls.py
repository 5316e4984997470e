from django.urls import path

from smtp_settings.bounces import views

app_name = "bounces"
urlpatterns = [
    path("", views.bounce_list, name="list"),
    path("<int:pk>/", views.bounce_detail, name="detail"),
    path("<int:pk>/report.eml", views.report_download, name="report"),
]
