from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from provision import permissions, selectors, services
from provision.api.serializers import (
    AuditEventSerializer,
    CustomerSerializer,
    ProvisioningRecordSerializer,
    SeatsChangeInputSerializer,
    SubscriptionSerializer,
)
from provision.exceptions import ApplicationError
from provision.filters import (
    AuditEventFilterSet,
    CustomerFilterSet,
    ProvisioningRecordFilterSet,
    SubscriptionFilterSet,
)


class CustomerViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilterSet

    def get_queryset(self):
        return selectors.customer_list(actor=self.request.user)[0]


class SubscriptionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = SubscriptionSerializer
    filterset_class = SubscriptionFilterSet

    def get_queryset(self):
        queryset, _ = selectors.subscription_list(actor=self.request.user)
        return queryset.prefetch_related("add_ons")

    @extend_schema(request=SeatsChangeInputSerializer, responses=SubscriptionSerializer)
    @action(detail=True, methods=["post"])
    def seats(self, request, pk=None):
        """Change the seat count (support roles). Needs a reason; writes an audit event."""
        if not permissions.SubscriptionPolicy.can_change_seats(request.user):
            raise ApplicationError("Changing seats needs a support role.", code="forbidden")
        subscription = self.get_object()
        data = SeatsChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        subscription = services.subscription_seats_change(
            actor=request.user, subscription=subscription, **data.validated_data
        )
        return Response(SubscriptionSerializer(subscription).data)


class ProvisioningRecordViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ProvisioningRecordSerializer
    filterset_class = ProvisioningRecordFilterSet

    def get_queryset(self):
        return selectors.provisioning_record_list(actor=self.request.user)[0]


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail, read-only: there is no way to change or delete an event."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet

    def get_queryset(self):
        return selectors.audit_event_list(actor=self.request.user)[0]
