"""The one API router; each app's viewsets are registered here."""

from rest_framework.routers import DefaultRouter

from crm_sync.api import views as crm_views
from licenses.api import views as license_views
from provision.api import views
from usage.api import views as usage_views

router = DefaultRouter()
router.register("customers", views.CustomerViewSet, basename="customer")
router.register("subscriptions", views.SubscriptionViewSet, basename="subscription")
router.register(
    "provisioning-records", views.ProvisioningRecordViewSet, basename="provisioningrecord"
)
router.register("audit-events", views.AuditEventViewSet, basename="auditevent")
router.register("licenses", license_views.LicenseViewSet, basename="license")
router.register("activations", license_views.ActivationViewSet, basename="activation")
router.register("instances", usage_views.InstanceViewSet, basename="instance")
router.register("namespaces", usage_views.NamespaceViewSet, basename="namespace")
router.register("seat-reports", usage_views.SeatReportViewSet, basename="seatreport")
router.register("crm/sync-runs", crm_views.SyncRunViewSet, basename="syncrun")
router.register("crm/record-states", crm_views.CrmRecordStateViewSet, basename="crmrecordstate")
