"""Staff console pages of the licenses app, namespace "licenses" (included under /licenses/)."""

from django.urls import path

from licenses import views

app_name = "licenses"

urlpatterns = [
    path("", views.license_list, name="license_list"),
    path("<int:pk>/", views.license_detail, name="license_detail"),
    path("<int:pk>/download/", views.license_download, name="license_download"),
    path("<int:pk>/send/", views.license_send, name="license_send"),
    path("<int:pk>/reissue/", views.license_reissue, name="license_reissue"),
    path("<int:pk>/revoke/", views.license_revoke, name="license_revoke"),
    path("subscriptions/<int:pk>/issue/", views.license_issue, name="license_issue"),
    path(
        "subscriptions/<int:pk>/activation-code/",
        views.activation_code_send,
        name="activation_code_send",
    ),
    path(
        "activation-codes/<int:pk>/release/",
        views.activation_code_release,
        name="activation_code_release",
    ),
    path("signing-key/", views.signing_key, name="signing_key"),
    path(
        f"signing-key/{views.PUBLIC_KEY_FILENAME}",
        views.signing_key_download,
        name="signing_key_download",
    ),
    path("troubleshoot/", views.troubleshoot, name="troubleshoot"),
]
