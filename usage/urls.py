"""Staff console pages of the usage app, namespace "usage" (included under /usage/)."""

from django.urls import path

from usage import views

app_name = "usage"

urlpatterns = [
    path("files/", views.usage_file_import_list, name="usagefileimport_list"),
    path("licenses/<int:pk>/files/", views.license_usage_files, name="license_usage_files"),
    path(
        "licenses/<int:pk>/files/upload/",
        views.license_usage_file_upload,
        name="license_usage_file_upload",
    ),
    path(
        "customers/<int:pk>/files/upload/",
        views.customer_usage_file_upload,
        name="customer_usage_file_upload",
    ),
]
