from django.urls import path

from smtp_settings.api import views

app_name = "api"
urlpatterns = [
    path("messages", views.submit_message, name="messages"),
    path("messages/<int:pk>", views.message_status, name="message"),
]
