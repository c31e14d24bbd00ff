"""Reads of instances, namespaces and seat usage for the staff pages."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Max
from django.utils import timezone

from provision.models import Customer, Subscription
from provision.selectors import require_staff
from usage.filters import InstanceFilterSet, NamespaceFilterSet, SeatReportFilterSet
from usage.models import Instance, Namespace, SeatReport


def customer_usage_overview(*, customer: Customer) -> dict:
    """Instances, namespaces and each subscription's latest reported usage, in three queries."""
    instances = list(
        Instance.objects.filter(customer=customer)
        .select_related("subscription")
        .order_by("-last_sync_at")
    )
    namespaces = list(
        Namespace.objects.filter(subscription__customer=customer).select_related("subscription")
    )
    latest = {}
    rows = (
        SeatReport.objects.filter(subscription__customer=customer)
        .values("subscription_id")
        .annotate(last_date=Max("report_date"), peak=Max("max_historical_users"))
    )
    for row in rows:
        latest[row["subscription_id"]] = row
    last_reports = {
        (r.subscription_id, r.report_date): r
        for r in SeatReport.objects.filter(
            subscription__customer=customer,
            report_date__in={row["last_date"] for row in latest.values()},
        )
    }
    usage_by_subscription = {}
    for subscription_id, row in latest.items():
        report = last_reports.get((subscription_id, row["last_date"]))
        usage_by_subscription[subscription_id] = {
            "last_date": row["last_date"],
            "billable_users": report.billable_users if report else None,
            "peak": row["peak"],
        }
    stale_before = timezone.now() - timedelta(hours=36)
    return {
        "instances": instances,
        "namespaces": namespaces,
        "usage_by_subscription": usage_by_subscription,
        "stale_before": stale_before,
    }


def subscription_usage_series(*, subscription: Subscription, days: int = 120) -> dict:
    """Daily billable and max users (summed over the subscription's sources) for a chart."""
    since = timezone.localdate() - timedelta(days=days)
    per_day: dict = {}
    reports = SeatReport.objects.filter(
        subscription=subscription, report_date__gte=since
    ).values_list("report_date", "billable_users", "max_historical_users")
    for report_date, billable, peak in reports:
        day = per_day.setdefault(report_date, [0, 0])
        day[0] += billable
        day[1] += peak
    dates = sorted(per_day)
    return {
        "labels": [d.isoformat() for d in dates],
        "billable": [per_day[d][0] for d in dates],
        "max": [per_day[d][1] for d in dates],
        "seats": subscription.seats,
    }


def instance_list(*, actor, filters: dict | None = None):
    require_staff(actor)
    queryset = Instance.objects.select_related("customer", "subscription").order_by(
        "hostname", "pk"
    )
    filterset = InstanceFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def namespace_list(*, actor, filters: dict | None = None):
    require_staff(actor)
    queryset = Namespace.objects.select_related("subscription").order_by("full_path")
    filterset = NamespaceFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def seat_report_list(*, actor, filters: dict | None = None):
    require_staff(actor)
    queryset = SeatReport.objects.select_related("subscription").order_by("-report_date", "-pk")
    filterset = SeatReportFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset
