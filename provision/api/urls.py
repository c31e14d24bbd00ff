"""The one API router; each app registers its viewsets here."""

from rest_framework.routers import DefaultRouter

from provision.api import views

router = DefaultRouter()
router.register("customers", views.CustomerViewSet, basename="customer")
router.register("subscriptions", views.SubscriptionViewSet, basename="subscription")
router.register(
    "provisioning-records", views.ProvisioningRecordViewSet, basename="provisioningrecord"
)
router.register("audit-events", views.AuditEventViewSet, basename="auditevent")
