from django.urls import path

from provision import views

app_name = "provision"

urlpatterns = [
    path("", views.home, name="home"),
    path("search/", views.search, name="search"),
    path("customers/", views.customer_list, name="customer_list"),
    path("customers/<int:pk>/", views.customer_detail, name="customer_detail"),
    path("customers/<int:pk>/edit/", views.customer_edit, name="customer_edit"),
    path("customers/<int:pk>/notes/", views.note_add, name="note_add"),
    path("subscriptions/<int:pk>/", views.subscription_detail, name="subscription_detail"),
    path(
        "subscriptions/<int:pk>/seats/",
        views.subscription_seats_change,
        name="subscription_seats_change",
    ),
    path("provisioning/", views.provisioning_record_list, name="provisioningrecord_list"),
    path("audit/", views.audit_event_list, name="auditevent_list"),
]
