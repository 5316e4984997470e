from django.urls import path

from smtp_settings.bounce_mailboxes import views

app_name = "bounce_mailboxes"
urlpatterns = [
    path("", views.mailbox_list, name="list"),
    path("new/", views.mailbox_create, name="create"),
    path("<int:pk>/edit/", views.mailbox_edit, name="edit"),
    path("<int:pk>/delete/", views.mailbox_delete, name="delete"),
    path("<int:pk>/toggle/", views.mailbox_toggle, name="toggle"),
    path("<int:pk>/check/", views.mailbox_check, name="check"),
    path("<int:pk>/test/", views.mailbox_test, name="test"),
]
