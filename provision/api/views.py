from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action

from provision import permissions, selectors
from provision.api.base import FixRequestFiledSerializer, SelectorReadOnlyViewSet, submit_fix
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

    @extend_schema(
        request=SeatsChangeInputSerializer,
        responses={200: SubscriptionSerializer, 202: FixRequestFiledSerializer},
    )
    @action(detail=True, methods=["post"])
    def seats(self, request, pk=None):
        """Change the seat count (support roles), as the console's fix does: reason required,
        audited; a rise of more than 20% files a four-eyes request instead (202)."""
        if not permissions.SubscriptionPolicy.can_change_seats(request.user):
            raise ApplicationError("Changing seats needs a support role.", code="forbidden")
        subscription = self.get_object()
        data = SeatsChangeInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return submit_fix(
            request,
            action="seats_change",
            target_pk=subscription.pk,
            params={"seats": data.validated_data["seats"]},
            data=data.validated_data,
            on_done=lambda: SubscriptionSerializer(self.get_object()).data,
        )


class ProvisioningRecordViewSet(SelectorReadOnlyViewSet):
    serializer_class = ProvisioningRecordSerializer
    filterset_class = ProvisioningRecordFilterSet

    list_selector = staticmethod(selectors.provisioning_record_list)


class AuditEventViewSet(SelectorReadOnlyViewSet):
    """The audit trail, read-only: there is no way to change or delete an event."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet

    list_selector = staticmethod(selectors.audit_event_list)
