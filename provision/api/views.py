from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.response import Response

from provision import permissions, selectors, services
from provision.api.base import SelectorReadOnlyViewSet
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


class CustomerViewSet(SelectorReadOnlyViewSet):
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilterSet

    list_selector = staticmethod(selectors.customer_list)


class SubscriptionViewSet(SelectorReadOnlyViewSet):
    serializer_class = SubscriptionSerializer
    filterset_class = SubscriptionFilterSet

    list_selector = staticmethod(selectors.subscription_list)

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


class ProvisioningRecordViewSet(SelectorReadOnlyViewSet):
    serializer_class = ProvisioningRecordSerializer
    filterset_class = ProvisioningRecordFilterSet

    list_selector = staticmethod(selectors.provisioning_record_list)


class AuditEventViewSet(SelectorReadOnlyViewSet):
    """The audit trail, read-only: there is no way to change or delete an event."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet

    list_selector = staticmethod(selectors.audit_event_list)
