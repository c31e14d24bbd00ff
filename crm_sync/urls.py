"""Staff console pages of the CRM sync app, namespace "crm_sync" (included under /crm/)."""

from django.urls import path

from crm_sync import views

app_name = "crm_sync"

urlpatterns = [
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("customers/<int:pk>/push/", views.customer_push, name="customer_push"),
]
