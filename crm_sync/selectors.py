"""Reads of CRM sync state, run history, and the payloads the sync engine pushes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Max, OuterRef, Subquery
from django.db.models.functions import Coalesce

from crm_sync.choices import CrmTarget, SyncRunStatus
from crm_sync.filters import CrmRecordStateFilterSet, SyncRunFilterSet
from crm_sync.models import CrmRecordState, SyncRowError, SyncRun
from provision.selectors import require_staff

# Subscriptions whose usage the CRM tracks: those running or about to start.
CRM_SUBSCRIPTION_STATUSES = ("active", "pending")
# A target whose last runs all failed, this many in a row, gets a banner on every staff page.
FAILURE_BANNER_RUNS = 3


def sync_run_list(*, actor, filters: dict | None = None):
    """Sync runs, newest first, filtered by ``SyncRunFilterSet`` (page and API)."""
    require_staff(actor)
    queryset = SyncRun.objects.select_related("triggered_by", "customer").order_by(
        "-created_at", "-pk"
    )
    filterset = SyncRunFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def sync_run_detail(*, actor, run_id: int) -> tuple[SyncRun, list[SyncRowError]]:
    """One run and its row errors (at most 500, the CRM's own code and message each)."""
    require_staff(actor)
    run = SyncRun.objects.select_related("triggered_by", "customer").get(pk=run_id)
    errors = list(run.row_errors.select_related("customer").order_by("id")[:500])
    return run, errors


def crm_record_state_list(*, actor, filters: dict | None = None):
    """Per-customer CRM state rows, filtered by ``CrmRecordStateFilterSet`` (page and API)."""
    require_staff(actor)
    queryset = CrmRecordState.objects.select_related("customer").order_by("target", "customer_id")
    filterset = CrmRecordStateFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def customer_crm_states(*, customer) -> list[dict]:
    """What each CRM target last received for one customer, for the customer page: one entry
    per target (a target never pushed to shows as such), with its last row errors."""
    states = {state.target: state for state in CrmRecordState.objects.filter(customer=customer)}
    errors: dict[str, list[SyncRowError]] = {}
    for error in (
        SyncRowError.objects.filter(customer=customer)
        .select_related("run")
        .order_by("-created_at", "-id")[:20]
    ):
        errors.setdefault(error.run.target, []).append(error)
    return [
        {
            "target": target,
            "label": label,
            "state": states.get(target),
            "errors": errors.get(target, [])[:5],
        }
        for target, label in CrmTarget.choices
    ]


def crm_failing_targets() -> list[dict]:
    """Targets whose last ``FAILURE_BANNER_RUNS`` finished runs all failed (the staff banner).

    One small query per target over the (target, -created_at) index."""
    failing = []
    for target, label in CrmTarget.choices:
        statuses = list(
            SyncRun.objects.filter(target=target, dry_run=False)
            .exclude(status__in=[SyncRunStatus.QUEUED, SyncRunStatus.RUNNING])
            .order_by("-created_at", "-pk")
            .values_list("status", "error", "pk")[:FAILURE_BANNER_RUNS]
        )
        if len(statuses) == FAILURE_BANNER_RUNS and all(
            status == SyncRunStatus.FAILED for status, _, _ in statuses
        ):
            _, error, run_id = statuses[0]
            failing.append({"target": target, "label": label, "error": error, "run_id": run_id})
    return failing


# --- payloads -------------------------------------------------------------------------------


def _iso_date(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _iso_moment(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _percent(billable: int, seats: int) -> float:
    if seats <= 0:
        return 0.0
    ratio = Decimal(billable) * 100 / Decimal(seats)
    return float(ratio.quantize(Decimal("0.1"), ROUND_HALF_UP))


def payload_hash(payload: dict) -> str:
    """SHA-256 of the payload's canonical JSON: equal payloads, equal hashes, whatever order
    their keys were built in."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def crm_payloads(*, customer_ids: Sequence[int]) -> dict[int, dict]:
    """The target-neutral payload of each customer: ``{"account": {...}, "subscriptions":
    [{...}, ...]}`` with the logical field names of ``crm_sync.mapping``.

    Figures come from the usage rollups (``SubscriptionUsageDaily``): per subscription, its
    latest rolled-up day (seats as of that day, billable users, max users, seats owed =
    overage, utilization); the account sums its current subscriptions. Last usage sync is the
    latest Seat Link, usage file or GitLab.com refresh of any of its instances or namespaces;
    license status is that of the subscription's latest issued license.

    Five queries for any number of customers (run it in batches: ``CRM_SYNC_BATCH_CUSTOMERS``),
    each on an indexed foreign key; nothing scans seat reports.
    """
    from licenses.models import License
    from provision.models import Customer, Subscription
    from usage.models import Instance, Namespace, SubscriptionUsageDaily

    ids = list(customer_ids)
    if not ids:
        return {}
    customers = list(
        Customer.objects.filter(pk__in=ids).values_list("pk", "billing_account_number", "name")
    )
    # Each subscription's latest rolled-up day, one backward probe of the (subscription, date)
    # unique index per subscription and column: the cost does not grow with the history kept.
    latest = SubscriptionUsageDaily.objects.filter(subscription_id=OuterRef("pk")).order_by("-date")
    subscriptions = list(
        Subscription.objects.filter(customer_id__in=ids, status__in=CRM_SUBSCRIPTION_STATUSES)
        .annotate(
            usage_date=Subquery(latest.values("date")[:1]),
            usage_seats=Subquery(latest.values("seats")[:1]),
            usage_billable=Subquery(latest.values("billable_users")[:1]),
            usage_max=Subquery(latest.values("max_users")[:1]),
            usage_overage=Subquery(latest.values("overage")[:1]),
        )
        .order_by("customer_id", "name")
        .values_list(
            "pk",
            "customer_id",
            "name",
            "plan",
            "term_start",
            "term_end",
            "seats",
            "usage_date",
            "usage_seats",
            "usage_billable",
            "usage_max",
            "usage_overage",
        )
    )
    subscription_ids = [row[0] for row in subscriptions]
    usage = {row[0]: row[7:] for row in subscriptions if row[7] is not None}
    last_sync: dict[int, datetime] = {}
    sources = (
        Instance.objects.filter(subscription_id__in=subscription_ids)
        .values("subscription_id")
        .annotate(last=Max(Coalesce("last_sync_at", "last_seen_at")))
        .values_list("subscription_id", "last"),
        Namespace.objects.filter(subscription_id__in=subscription_ids)
        .values("subscription_id")
        .annotate(last=Max("last_refreshed_at"))
        .values_list("subscription_id", "last"),
    )
    for source in sources:
        for subscription_id, moment in source:
            known = last_sync.get(subscription_id)
            if moment is not None and (known is None or moment > known):
                last_sync[subscription_id] = moment
    license_status: dict[int, str] = {}
    for subscription_id, status in (
        License.objects.filter(subscription_id__in=subscription_ids)
        .order_by("subscription_id", "-issued_at", "-pk")
        .values_list("subscription_id", "status")
    ):
        license_status.setdefault(subscription_id, status)

    by_customer: dict[int, list[dict]] = {}
    largest_plan: dict[int, tuple[int, str, str]] = {}
    for pk, customer_id, name, plan, term_start, term_end, seats, *_ in subscriptions:
        usage_date, day_seats, billable, peak, owed = (None, seats, 0, 0, 0)
        if pk in usage:
            usage_date, day_seats, billable, peak, owed = usage[pk]
        record = {
            "subscription_key": name,
            "customer_key": None,  # filled below
            "name": name,
            "plan": plan,
            "term_start": _iso_date(term_start),
            "term_end": _iso_date(term_end),
            "usage_date": _iso_date(usage_date),
            "seats": day_seats,
            "billable_users": billable,
            "max_users": peak,
            "seats_owed": owed,
            "utilization_pct": _percent(billable, day_seats),
            "last_usage_sync": _iso_moment(last_sync.get(pk)),
            "license_status": license_status.get(pk, "none"),
            "_term_end": term_end,
        }
        by_customer.setdefault(customer_id, []).append(record)
        current = largest_plan.get(customer_id)
        if current is None or seats > current[0]:
            largest_plan[customer_id] = (seats, plan, record["license_status"])

    base_url = settings.PROVISION_PUBLIC_URL
    payloads = {}
    for pk, account_number, name in customers:
        records = by_customer.get(pk, [])
        renewal = min((r.pop("_term_end") for r in records), default=None)
        for record in records:
            record["customer_key"] = account_number
        seats = sum(r["seats"] for r in records)
        billable = sum(r["billable_users"] for r in records)
        syncs = [r["last_usage_sync"] for r in records if r["last_usage_sync"]]
        _, plan, status = largest_plan.get(pk, (0, None, "none"))
        payloads[pk] = {
            "account": {
                "customer_key": account_number,
                "name": name,
                "plan": plan,
                "subscription_count": len(records),
                "seats": seats,
                "billable_users": billable,
                "max_users": sum(r["max_users"] for r in records),
                "seats_owed": sum(r["seats_owed"] for r in records),
                "utilization_pct": _percent(billable, seats),
                "last_usage_sync": max(syncs, default=None),
                "license_status": status,
                "renewal_date": _iso_date(renewal),
                "console_url": f"{base_url}/customers/{pk}/",
            },
            "subscriptions": records,
        }
    return payloads


def crm_target_configured(target: str) -> bool:
    """Whether credentials for ``target`` are set at all (whether they work is the run's to
    find out). Scheduled runs skip a target that is not configured."""
    if target == CrmTarget.SALESFORCE:
        return bool(settings.SALESFORCE_INSTANCE_URL or settings.SALESFORCE_USERNAME)
    if target == CrmTarget.GAINSIGHT:
        return bool(settings.GAINSIGHT_BASE_URL)
    return False
