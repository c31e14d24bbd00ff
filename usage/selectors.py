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
    """Instances, namespaces and each subscription's latest reported usage, in four queries.

    A subscription may report from several instances (production, staging) or namespaces, so
    the latest day's figures are summed over its sources, as the usage chart does.
    """
    instances = list(
        Instance.objects.filter(customer=customer)
        .select_related("subscription")
        .order_by("-last_sync_at")
    )
    namespaces = list(
        Namespace.objects.filter(subscription__customer=customer).select_related("subscription")
    )
    last_dates = dict(
        SeatReport.objects.filter(subscription__customer=customer)
        .values("subscription_id")
        .annotate(last_date=Max("report_date"))
        .values_list("subscription_id", "last_date")
    )
    usage_by_subscription = {
        subscription_id: {"last_date": last_date, "billable_users": 0, "peak": 0}
        for subscription_id, last_date in last_dates.items()
    }
    latest_reports = SeatReport.objects.filter(
        subscription__customer=customer, report_date__in=set(last_dates.values())
    ).values_list("subscription_id", "report_date", "billable_users", "max_historical_users")
    for subscription_id, report_date, billable, peak in latest_reports:
        row = usage_by_subscription[subscription_id]
        if report_date == row["last_date"]:
            row["billable_users"] += billable
            row["peak"] += peak
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
