from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from campaigns.views.unsubscribe import unsubscribe
from project.password_change import change_password
from project.roles import Role, role_required

urlpatterns = [
    path("", role_required(Role.VIEWER)(RedirectView.as_view(pattern_name="campaigns:list")), name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", change_password, name="password_change"),
    path("campaigns/", include("campaigns.urls")),
    path("lists/", include("campaigns.lists.urls")),
    path("logs/", include("campaigns.eventlog.urls")),
    path("u/<str:token>/", unsubscribe, name="unsubscribe"),
    path("outbox/", include("smtp_settings.outbox.urls")),
    path("suppressions/", include("smtp_settings.suppressions.urls")),
    path("bounces/", include("smtp_settings.bounces.urls")),
    path("sandbox/", include("smtp_settings.sandbox_inbox.urls")),
    path("settings/smtp/", include("smtp_settings.urls")),
    path("settings/relay/", include("smtp_settings.access.urls")),
    path("settings/bounce-mailboxes/", include("smtp_settings.bounce_mailboxes.urls")),
    path("api/v1/", include("smtp_settings.api.urls")),
    path("webhooks/", include("smtp_settings.webhooks.urls")),
    path("admin/", admin.site.urls),
]
