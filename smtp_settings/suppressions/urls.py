from django.urls import path

from smtp_settings.suppressions import views

app_name = "suppressions"
urlpatterns = [
    path("", views.suppression_list, name="list"),
    path("export/", views.suppression_export, name="export"),
    path("add/", views.suppression_add, name="add"),
    path("import/", views.suppression_import, name="import"),
    path("<int:pk>/remove/", views.suppression_remove, name="remove"),
]
