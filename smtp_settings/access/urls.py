from django.urls import path

from smtp_settings.access import views

app_name = "access"
urlpatterns = [
    path("", views.index, name="index"),
    path("logins/new/", views.credential_create, name="credential_create"),
    path("logins/<int:pk>/edit/", views.credential_edit, name="credential_edit"),
    path("logins/<int:pk>/delete/", views.credential_delete, name="credential_delete"),
    path("tokens/new/", views.token_create, name="token_create"),
    path("tokens/<int:token_pk>/revoke/", views.token_revoke, name="token_revoke"),
    path("route/", views.route, name="route"),
]
