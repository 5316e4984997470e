from django.urls import path

from smtp_settings.sandbox_inbox import views

app_name = "sandbox_inbox"
urlpatterns = [
    path("", views.message_list, name="list"),
    path("<str:name>/", views.message_detail, name="detail"),
    path("<str:name>/html/", views.message_html, name="html"),
]
