"""The one API router; each app's viewsets are registered here."""

from django.urls import re_path
from rest_framework.routers import DefaultRouter

from crm_sync.api import views as crm_views
from licenses.api import views as license_views
from provision.api import views
from usage.api import views as usage_views
from usage.api.cockpit import CockpitViewSet


class ProvisionRouter(DefaultRouter):
    """DefaultRouter plus the few endpoints that are operations, not resources (the support
    fixes, ``/api/fixes/{action}/{pk}/``): ``provision/urls.py`` includes ``router.urls``
    alone, so everything under ``/api/`` is declared in this file."""

    def __init__(self, *args, extra_urls=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_urls = list(extra_urls)

    def get_urls(self):
        return super().get_urls() + self.extra_urls


router = ProvisionRouter(
    extra_urls=[
        # The same lookup pattern as the router's; a pk that is not a number is a JSON 404.
        re_path(
            r"^fixes/(?P<action>[^/.]+)/(?P<pk>[^/.]+)/preview/$",
            views.FixPreviewView.as_view(),
            name="fix-preview",
        ),
        re_path(
            r"^fixes/(?P<action>[^/.]+)/(?P<pk>[^/.]+)/$",
            views.FixApplyView.as_view(),
            name="fix-apply",
        ),
    ]
)
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
router.register("usage-rollups", usage_views.UsageRollupViewSet, basename="usagerollup")
router.register("fix-requests", views.FixRequestViewSet, basename="fixrequest")
router.register("cockpit", CockpitViewSet, basename="cockpit")
