from collections import Counter

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import action
from rest_framework.response import Response

from provision import permissions
from provision.api.base import FixRequestFiledSerializer, SelectorReadOnlyViewSet, submit_fix
from provision.exceptions import ApplicationError
from usage import selectors, services
from usage.api.permissions import CanPushUsage
from usage.api.serializers import (
    InstanceSerializer,
    NamespaceAssociateInputSerializer,
    NamespaceDisassociateInputSerializer,
    NamespaceMaxSeatsResetInputSerializer,
    NamespaceSeatUsageBatchSerializer,
    NamespaceSeatUsageItemSerializer,
    NamespaceSeatUsageResponseSerializer,
    NamespaceSerializer,
    SeatReportSerializer,
    UsageRollupSerializer,
)
from usage.filters import (
    InstanceFilterSet,
    NamespaceFilterSet,
    SeatReportFilterSet,
    UsageDailyFilterSet,
)


class InstanceViewSet(SelectorReadOnlyViewSet):
    serializer_class = InstanceSerializer
    filterset_class = InstanceFilterSet

    list_selector = staticmethod(selectors.instance_list)


class NamespaceViewSet(SelectorReadOnlyViewSet):
    serializer_class = NamespaceSerializer
    filterset_class = NamespaceFilterSet

    list_selector = staticmethod(selectors.namespace_list)

    @extend_schema(
        request=NamespaceAssociateInputSerializer,
        responses={200: NamespaceSerializer, 202: FixRequestFiledSerializer},
    )
    @action(detail=True, methods=["post"])
    def associate(self, request, pk=None):
        """Link the namespace to a GitLab.com subscription (support roles). ``force`` takes it
        from another open subscription: that needs the ticket link and a second person, so it
        files a four-eyes request (202) that a support lead approves in the console."""
        if not permissions.NamespacePolicy.can_associate(request.user):
            raise ApplicationError("Linking a namespace needs a support role.", code="forbidden")
        namespace = self.get_object()
        data = NamespaceAssociateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        subscription = selectors.subscription_find(
            actor=request.user,
            pk=values.pop("subscription_id", None),
            name=values.pop("subscription_name", None),
        )
        force = values.pop("force", False)
        return submit_fix(
            request,
            action="namespace_force_associate" if force else "namespace_associate",
            target_pk=namespace.pk,
            params={"subscription": subscription.name},
            data=values,
            on_done=lambda: NamespaceSerializer(self.get_object()).data,
        )

    @extend_schema(request=NamespaceDisassociateInputSerializer, responses=NamespaceSerializer)
    @action(detail=True, methods=["post"])
    def disassociate(self, request, pk=None):
        """Unlink the namespace from its subscription ("Clear Subscription"; support roles)."""
        if not permissions.NamespacePolicy.can_disassociate(request.user):
            raise ApplicationError("Unlinking a namespace needs a support role.", code="forbidden")
        namespace = self.get_object()
        data = NamespaceDisassociateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        namespace = services.namespace_disassociate(
            actor=request.user, namespace=namespace, **data.validated_data
        )
        return Response(NamespaceSerializer(namespace).data)

    @extend_schema(request=NamespaceMaxSeatsResetInputSerializer, responses=NamespaceSerializer)
    @action(detail=True, methods=["post"], url_path="reset-max-seats")
    def reset_max_seats(self, request, pk=None):
        """Lower the maximum seats used (waives seats owed): support lead, with the approval."""
        if not permissions.NamespacePolicy.can_reset_max_seats(request.user):
            raise ApplicationError(
                "Resetting max seats waives a true-up; it needs a support lead.",
                code="forbidden",
            )
        namespace = self.get_object()
        data = NamespaceMaxSeatsResetInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        namespace = services.namespace_max_seats_reset(
            actor=request.user, namespace=namespace, **data.validated_data
        )
        return Response(NamespaceSerializer(namespace).data)

    @extend_schema(
        request=NamespaceSeatUsageItemSerializer(many=True),
        responses=NamespaceSeatUsageResponseSerializer,
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="seat-usage",
        # Token first: a request without credentials gets 401 with WWW-Authenticate: Token.
        authentication_classes=[TokenAuthentication, SessionAuthentication],
        permission_classes=[CanPushUsage],
    )
    def seat_usage(self, request):
        """GitLab.com seat figures for up to 1,000 namespaces (integration accounts only).

        Every item is validated before any is applied (one bad item: 400, nothing written).
        Each namespace is then updated in its own transaction and gets its own result:
        ``updated``, ``unchanged`` (a resent push), ``stale`` (older than what is recorded),
        ``unknown`` (no such namespace here) or ``rejected``. Resending a batch is harmless.
        """
        batch = NamespaceSeatUsageBatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        items = batch.validated_data
        namespaces = selectors.namespaces_by_gitlab_id(
            actor=request.user, gitlab_ids=[item["namespace_id"] for item in items]
        )
        now = timezone.now()
        results = []
        for item in items:
            namespace = namespaces.get(item["namespace_id"])
            if namespace is None:
                results.append(
                    {
                        "namespace_id": item["namespace_id"],
                        "status": "unknown",
                        "message": "No namespace with this id is known to Provision.",
                    }
                )
                continue
            try:
                outcome = services.namespace_seats_update(
                    namespace=namespace,
                    seats_in_use=item["seats_in_use"],
                    max_seats_used=item["max_seats_used"],
                    billable_members=item.get("billable_members"),
                    as_of=item.get("as_of") or now,
                    full_path=item.get("full_path"),
                )
            except (ApplicationError, DjangoValidationError) as error:
                message = getattr(error, "message", None) or "; ".join(error.messages)
                results.append(
                    {"namespace_id": item["namespace_id"], "status": "rejected", "message": message}
                )
                continue
            updated = outcome.namespace
            results.append(
                {
                    "namespace_id": item["namespace_id"],
                    "status": outcome.status,
                    "seats_in_use": updated.seats_in_use,
                    "max_seats_used": updated.max_seats_used,
                    "seats_owed": updated.seats_owed,
                    "subscription": updated.subscription.name if updated.subscription else None,
                }
            )
        counts = Counter(result["status"] for result in results)
        return Response({"results": results, "counts": dict(counts)})


class SeatReportViewSet(SelectorReadOnlyViewSet):
    serializer_class = SeatReportSerializer
    filterset_class = SeatReportFilterSet

    list_selector = staticmethod(selectors.seat_report_list)


class UsageRollupViewSet(SelectorReadOnlyViewSet):
    """Daily usage per subscription (the rollup the dashboards and the CRM sync read), newest
    day first; filter by subscription, customer and date range (``since``/``until``)."""

    serializer_class = UsageRollupSerializer
    filterset_class = UsageDailyFilterSet

    list_selector = staticmethod(selectors.usage_rollup_list)
