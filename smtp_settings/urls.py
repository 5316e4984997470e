from django.urls import path

from smtp_settings import views

app_name = "smtp_settings"
urlpatterns = [
    path("", views.server_list, name="list"),
    path("new/", views.server_create, name="create"),
    path("test/", views.form_test, name="form_test"),
    path("<int:pk>/edit/", views.server_edit, name="edit"),
    path("<int:pk>/delete/", views.server_delete, name="delete"),
    path("<int:pk>/toggle/", views.server_toggle, name="toggle"),
    path("<int:pk>/live/", views.server_live, name="live"),
    path("<int:pk>/test/", views.server_test, name="test"),
    path("<int:pk>/apply-learned/", views.server_apply_learned, name="apply_learned"),
]
