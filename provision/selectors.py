"""Reads for the staff console and the API. Selectors own query shape and visibility."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Exists, Max, OuterRef, Prefetch, Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from provision import permissions
from provision.choices import SubscriptionStatus
from provision.filters import (
    AuditEventFilterSet,
    CustomerFilterSet,
    ProvisioningRecordFilterSet,
    SubscriptionFilterSet,
)
from provision.models import (
    AuditEvent,
    Customer,
    Note,
    ProvisioningRecord,
    ProvisioningStep,
    Subscription,
)


def _require(allowed: bool) -> None:
    if not allowed:
        raise PermissionDenied


def require_staff(actor) -> None:
    """Any Provision role may read; used by every app's list selectors."""
    _require(permissions.is_staff_member(actor))


def customer_list(
    *, actor, filters: dict | None = None
) -> tuple[QuerySet[Customer], CustomerFilterSet]:
    _require(permissions.CustomerPolicy.can_view(actor))
    queryset = (
        Customer.objects.select_related("account_owner", "csm", "partner")
        .annotate(
            active_subscriptions=Count(
                "subscriptions", filter=Q(subscriptions__status=SubscriptionStatus.ACTIVE)
            )
        )
        .order_by("name", "pk")
    )
    filterset = CustomerFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def customer_get(*, actor, pk: int) -> Customer:
    _require(permissions.CustomerPolicy.can_view(actor))
    subscriptions = Subscription.objects.select_related("partner", "renews").prefetch_related(
        "add_ons",
        Prefetch(
            "provisioning_records",
            queryset=ProvisioningRecord.objects.prefetch_related("steps"),
        ),
    )
    queryset = Customer.objects.select_related("account_owner", "csm", "partner").prefetch_related(
        Prefetch("subscriptions", queryset=subscriptions),
        "contacts",
    )
    return get_object_or_404(queryset, pk=pk)


def customer_timeline(*, actor, customer: Customer, limit: int = 50) -> list[AuditEvent]:
    _require(permissions.AuditPolicy.can_view(actor))
    return list(AuditEvent.objects.filter(customer=customer).select_related("actor")[:limit])


def customer_notes(*, actor, customer: Customer) -> list[Note]:
    _require(permissions.CustomerPolicy.can_view(actor))
    return list(Note.objects.filter(customer=customer))


def subscription_list(*, actor, filters: dict | None = None):
    _require(permissions.SubscriptionPolicy.can_view(actor))
    queryset = (
        Subscription.objects.select_related("customer", "partner")
        .prefetch_related("add_ons")
        .order_by("name")
    )
    filterset = SubscriptionFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def subscription_get(*, actor, pk: int) -> Subscription:
    _require(permissions.SubscriptionPolicy.can_view(actor))
    queryset = Subscription.objects.select_related(
        "customer", "partner", "renews"
    ).prefetch_related(
        "add_ons",
        "seat_ledger",
        Prefetch(
            "provisioning_records", queryset=ProvisioningRecord.objects.prefetch_related("steps")
        ),
    )
    return get_object_or_404(queryset, pk=pk)


def provisioning_record_list(*, actor, filters: dict | None = None):
    _require(permissions.SubscriptionPolicy.can_view(actor))
    queryset = (
        ProvisioningRecord.objects.select_related("subscription__customer")
        .prefetch_related("steps")
        .order_by("-created_at", "-pk")
    )
    filterset = ProvisioningRecordFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def audit_event_list(*, actor, filters: dict | None = None):
    _require(permissions.AuditPolicy.can_view(actor))
    queryset = AuditEvent.objects.select_related("actor").order_by("-created_at", "-pk")
    filterset = AuditEventFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


@dataclass(frozen=True)
class HomeCounts:
    customers: int
    active_subscriptions: int
    licenses_by_kind: dict[str, int]
    instances_synced_24h: int
    instances_total: int
    stuck_records: int


def home_counts(*, actor) -> HomeCounts:
    """The live figures on the home page, in a handful of aggregate queries."""
    from licenses.choices import CURRENT_LICENSE_STATUSES, LicenseKind
    from licenses.models import License
    from usage.models import Instance

    _require(permissions.is_staff_member(actor))
    now = timezone.now()
    by_kind = dict(
        License.objects.filter(status__in=CURRENT_LICENSE_STATUSES)
        .values_list("kind")
        .annotate(n=Count("pk"))
        .values_list("kind", "n")
    )
    instances = Instance.objects.aggregate(
        total=Count("pk"), synced=Count("pk", filter=Q(last_sync_at__gte=now - timedelta(hours=24)))
    )
    stuck = ProvisioningRecord.objects.filter(
        Exists(ProvisioningStep.objects.stuck(now).filter(record=OuterRef("pk")))
    ).count()
    return HomeCounts(
        customers=Customer.objects.count(),
        active_subscriptions=Subscription.objects.filter(status=SubscriptionStatus.ACTIVE).count(),
        licenses_by_kind={kind.label: by_kind.get(kind.value, 0) for kind in LicenseKind},
        instances_synced_24h=instances["synced"],
        instances_total=instances["total"],
        stuck_records=stuck,
    )


def stuck_steps(*, actor, limit: int = 10) -> list[ProvisioningStep]:
    _require(permissions.is_staff_member(actor))
    return list(
        ProvisioningStep.objects.stuck()
        .select_related("record__subscription__customer")
        .order_by("due_at")[:limit]
    )


def subscription_peak_usage(*, subscription: Subscription) -> int:
    """The most users the subscription is known to have had this term (seat reports, namespaces)."""
    from usage.models import Namespace, SeatReport

    reported = (
        SeatReport.objects.filter(
            subscription=subscription, report_date__gte=subscription.term_start
        ).aggregate(peak=Max("max_historical_users"))["peak"]
        or 0
    )
    namespace_peak = (
        Namespace.objects.filter(subscription=subscription).aggregate(peak=Max("max_seats_used"))[
            "peak"
        ]
        or 0
    )
    return max(reported, namespace_peak)
