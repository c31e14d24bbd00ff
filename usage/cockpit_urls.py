"""The seat utilization cockpit, namespace "cockpit" (included at /cockpit/)."""

from django.urls import path

from usage import views

app_name = "cockpit"

urlpatterns = [
    path("", views.cockpit_list, name="cockpit"),
    path("export.csv", views.cockpit_export, name="export"),
    path("customers/<int:pk>/", views.cockpit_customer, name="customer"),
]
