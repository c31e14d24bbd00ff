from django.urls import path

from provision import fix_views, views

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
    path("provisioning/stuck/", views.stuck_queue, name="stuck_queue"),
    path("audit/", views.audit_event_list, name="auditevent_list"),
    path("indicators/", views.indicators, name="indicators"),
    # Support fixes: one page per fix and target; four-eyes requests and their decisions.
    path("fixes/<slug:action>/<int:pk>/", fix_views.fix_action, name="fix"),
    path("approvals/", fix_views.fix_request_list, name="fixrequest_list"),
    path("approvals/<int:pk>/", fix_views.fix_request_detail, name="fixrequest_detail"),
    path("approvals/<int:pk>/approve/", fix_views.fix_request_approve, name="fixrequest_approve"),
    path("approvals/<int:pk>/reject/", fix_views.fix_request_reject, name="fixrequest_reject"),
    path(
        "approvals/<int:pk>/withdraw/",
        fix_views.fix_request_withdraw,
        name="fixrequest_withdraw",
    ),
]
