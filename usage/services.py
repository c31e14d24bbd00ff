"""Writes to usage data: daily rollups, GitLab.com namespaces and their seat figures.

Staff-facing services are keyword-only, take an actor and a reason, run in one transaction and
write their audit event in it (see provision/services.py). Derived data (the daily rollup) and
figures pushed by GitLab.com are written by the system.
"""

from __future__ import annotations

import functools
import logging
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import Exists, OuterRef, Sum
from django.utils import timezone

from provision import permissions
from provision.audit import audit_record, diff_fields, require_reason
from provision.choices import (
    ActorKind,
    Deployment,
    ProvisioningStepKind,
    SubscriptionStatus,
)
from provision.context import four_eyes_granted
from provision.exceptions import ApplicationError
from provision.models import SeatLedgerEntry, Subscription
from provision.services import provisioning_steps_complete
from usage.choices import SeatReportSource
from usage.models import Namespace, SeatReport, SubscriptionUsageDaily

logger = logging.getLogger(__name__)

# --- Daily rollups ----------------------------------------------------------------------------

# SubscriptionUsageDaily.utilization is DECIMAL(7, 4); a 1-seat subscription with thousands of
# users would overflow it, and nobody reads "4,000 % used" more precisely than "over 999 ×".
_UTILIZATION_CAP = Decimal("999.9999")
_UTILIZATION_STEP = Decimal("0.0001")
# Above this many dates one range scan of the subscription's reports beats a long IN list
# (and stays under SQLite's 999 parameters).
_ROLLUP_IN_LIST_MAX = 400
ROLLUP_UPDATE_FIELDS = (
    "seats",
    "billable_users",
    "max_users",
    "overage",
    "utilization",
    "computed_at",
)


def _day_end(day: date) -> datetime:
    """The first instant after ``day`` in the project time zone (report dates are local days)."""
    return timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))


def _utilization(billable: int, seats: int) -> Decimal:
    if seats <= 0:
        return Decimal("0.0000")
    ratio = (Decimal(billable) / Decimal(seats)).quantize(_UTILIZATION_STEP, ROUND_HALF_UP)
    return min(ratio, _UTILIZATION_CAP)


def subscription_usage_rollup(*, subscription_id: int, dates: Iterable[date]) -> None:
    """Recompute the subscription's ``SubscriptionUsageDaily`` rows for exactly ``dates``.

    Called by every path that writes seat reports (Seat Link, usage-file import, GitLab.com
    namespace figures) inside its own transaction, right after the reports, and by the
    ``usage_rollup_recent`` safety-net task. Per day:

    * ``billable_users`` and ``max_users`` are the sums over the subscription's sources
      (instances and namespaces) of that day's ``billable_users`` and ``max_historical_users``.
      Sources are separate installations or groups (production and staging each count their
      own users), so their peaks add up: the same rule as ``subscription_usage_series`` and
      ``customer_usage_overview``, so the chart, the overview and the rollup agree.
    * ``seats`` is what the subscription was paying for that day: the latest
      ``SeatLedgerEntry`` effective before the end of the day. Days before the first ledger
      entry (a back-dated order's first weeks) use that first entry, the seats as sold.
    * ``overage = max(0, max_users - seats)``; ``utilization = billable_users / seats``
      (0 when seats = 0, capped at 999.9999 by the column).

    Dates with no report get no row: no data is not zero users. Reports are only ever
    upserted, never deleted, so a day once rolled up always still has reports.

    Cost is independent of the number of dates: a lock on the subscription row, one aggregate
    over the reports of those days, one read of the subscription's seat ledger (a handful of
    rows: one per seat change) and one ``INSERT … ON CONFLICT DO UPDATE`` (split only past
    SQLite's parameter limit, every 124 days). Nothing else is rescanned. Then the customer is
    marked changed for the CRMs (``crm_sync_request_push``: two statements per target, and one
    debounced push queued after the commit).

    The lock serialises concurrent rollups of one subscription (two instances reporting in the
    same second): each recomputes from committed reports after the other's write, so the last
    write always holds every report. No audit event: the rows are derived, fully recomputable
    from seat reports and the seat ledger, which carry their own history; auditing a
    recomputation would add a row per subscription per day and say nothing a person did.
    """
    days = sorted(set(dates))
    if not days:
        return
    with transaction.atomic(savepoint=False):
        locked = (
            Subscription.objects.select_for_update()
            .filter(pk=subscription_id)
            .values_list("seats", "customer_id")
            .first()
        )
        if locked is None:
            return
        current_seats, customer_id = locked
        reports = SeatReport.objects.filter(subscription_id=subscription_id)
        if len(days) <= _ROLLUP_IN_LIST_MAX:
            reports = reports.filter(report_date__in=days)
        else:
            reports = reports.filter(report_date__range=(days[0], days[-1]))
        totals = {
            report_date: (billable, peak)
            for report_date, billable, peak in reports.order_by()
            .values("report_date")
            .annotate(billable=Sum("billable_users"), peak=Sum("max_historical_users"))
            .values_list("report_date", "billable", "peak")
        }
        ledger = list(
            SeatLedgerEntry.objects.filter(subscription_id=subscription_id)
            .order_by("effective_at", "id")
            .values_list("effective_at", "seats")
        )
        effective = [entry[0] for entry in ledger]

        def seats_on(day: date) -> int:
            if not ledger:
                return current_seats
            position = bisect_left(effective, _day_end(day)) - 1
            return ledger[max(position, 0)][1]

        now = timezone.now()
        rows = []
        for day in days:
            if day not in totals:
                continue
            billable, peak = totals[day]
            seats = seats_on(day)
            rows.append(
                SubscriptionUsageDaily(
                    subscription_id=subscription_id,
                    date=day,
                    seats=seats,
                    billable_users=billable,
                    max_users=peak,
                    overage=max(0, peak - seats),
                    utilization=_utilization(billable, seats),
                    computed_at=now,
                )
            )
        if rows:
            SubscriptionUsageDaily.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["subscription", "date"],
                update_fields=list(ROLLUP_UPDATE_FIELDS),
            )
            # The CRMs carry these figures: queue the customer's push (after the commit).
            from crm_sync.services import crm_sync_request_push

            crm_sync_request_push(customer_ids=[customer_id])


# The safety net's watermark: where the previous run of ``subscription_usage_rollup_recent``
# started. Only an optimisation: without it (first run, cache flushed, per-process cache) the
# run covers the whole window, which is still correct.
ROLLUP_RECENT_WATERMARK_KEY = "usage:rollup_recent:watermark"
# received_at is stamped inside the writer's transaction and committed a moment later; runs
# overlap by this much so that a report committed just after a run read is seen by the next.
ROLLUP_RECENT_OVERLAP = timedelta(minutes=10)


def subscription_usage_rollup_recent(*, now: datetime | None = None, days: int = 2) -> dict:
    """Roll up every (subscription, day) whose seat reports arrived since the previous run, and
    the last ``days`` days (today, yesterday) of subscriptions whose seats changed since then.

    This is how Seat Link reports reach ``SubscriptionUsageDaily`` (the task runs every
    minute): one rollup per subscription and day however many instances reported, off the
    request path. For usage-file imports and GitLab.com figures, which roll up inline, it is
    the safety net. Candidates:

    * seat reports received since the previous run (any report date: an instance that was
      offline for a week sends old days too) whose day has no rollup row computed after the
      report arrived;
    * subscriptions whose seats changed since the previous run after a day of the window was
      rolled up (overage and utilisation depend on seats).

    Each subscription is rolled up in its own transaction; one failure is logged and does not
    stop the others, and the watermark then stays put so the next run retries it.

    Cost: an index range scan of ``received_at`` over the reports since the previous run (a
    minute's worth), plus four statements per subscription rolled up. Without a watermark
    (first run, cache flushed, a per-process cache) the run covers the reports received since
    the start of the window, which is still correct.
    """
    now = now or timezone.now()
    today = timezone.localdate(now)
    window = [today - timedelta(days=n) for n in range(days)]
    window_start = timezone.make_aware(datetime.combine(window[-1], time.min))
    since = cache.get(ROLLUP_RECENT_WATERMARK_KEY)
    if since is None or since < window_start:
        since = window_start

    pending: dict[int, set[date]] = {}
    rolled_up_after_report = SubscriptionUsageDaily.objects.filter(
        subscription_id=OuterRef("subscription_id"),
        date=OuterRef("report_date"),
        computed_at__gte=OuterRef("received_at"),
    )
    behind = (
        SeatReport.objects.filter(received_at__gte=since)
        .filter(~Exists(rolled_up_after_report))
        .values_list("subscription_id", "report_date")
        .distinct()
    )
    for subscription_id, report_date in behind:
        pending.setdefault(subscription_id, set()).add(report_date)
    rolled_up_before_change = SubscriptionUsageDaily.objects.filter(
        subscription_id=OuterRef("subscription_id"),
        date__in=window,
        computed_at__lt=OuterRef("effective_at"),
    )
    reseated = (
        SeatLedgerEntry.objects.filter(effective_at__gte=since, effective_at__lte=now)
        .filter(Exists(rolled_up_before_change))
        .values_list("subscription_id", flat=True)
        .distinct()
    )
    for subscription_id in reseated:
        pending.setdefault(subscription_id, set()).update(window)

    failed = 0
    for subscription_id, dates in sorted(pending.items()):
        try:
            subscription_usage_rollup(subscription_id=subscription_id, dates=dates)
        except Exception:
            failed += 1
            logger.exception("rollup of subscription %s failed", subscription_id)
    if not failed:
        cache.set(ROLLUP_RECENT_WATERMARK_KEY, now - ROLLUP_RECENT_OVERLAP, timeout=None)
    return {
        "subscriptions": len(pending),
        "days": sum(len(dates) for dates in pending.values()),
        "failed": failed,
    }


# --- GitLab.com namespaces --------------------------------------------------------------------

# Subscriptions that still hold a namespace: linking the namespace elsewhere takes it from them.
_OPEN_SUBSCRIPTION_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING)
# GitLab.com's clock and ours may differ a little; a figure "as of" further ahead is refused.
_AS_OF_FUTURE_TOLERANCE = timedelta(hours=1)


def _require_fix_permission(actor) -> None:
    # System writes (actor=None) come from tasks and commands that already decided to act.
    if actor is not None and not permissions.can_fix(actor):
        raise ApplicationError(
            "You do not have permission to change customer data.", code="forbidden"
        )


def _seats_owed(*, max_seats_used: int, subscription: Subscription | None) -> int:
    """``max(0, max_seats_used - seats)`` for paid plans; trials and unlinked groups owe none
    (gitlab-wire-protocol §5.4)."""
    if subscription is None or subscription.is_trial:
        return 0
    return max(0, max_seats_used - subscription.seats)


def _complete_open_steps(*, actor, subscription: Subscription, kind: str, reason: str) -> int:
    return provisioning_steps_complete(
        actor=actor,
        subscription_id=subscription.pk,
        kind=kind,
        reason=reason,
        actor_kind=None if actor is not None else ActorKind.SYSTEM,
    )


@transaction.atomic
def namespace_associate(
    *,
    actor,
    namespace: Namespace,
    subscription: Subscription,
    reason: str,
    ticket_url: str = "",
    force: bool = False,
) -> Namespace:
    """Link a GitLab.com top-level group to a GitLab.com subscription (support "Force Associate",
    support-workflows §1.9).

    One active order per namespace: a group already linked to another active or pending
    subscription is refused unless ``force=True``, which takes it from that subscription (the
    old subscription's group drops to Free) and needs a support lead and the ticket link. A
    subscription is linked to one group: linking it to a new group ("Change linked group")
    unlinks its previous one, audited on that namespace too. Linking closes the
    subscription's open "namespace provisioned" steps.
    """
    _require_fix_permission(actor)
    reason = require_reason(reason)
    namespace = (
        Namespace.objects.select_for_update(of=("self",))
        .select_related("subscription__customer")
        .get(pk=namespace.pk)
    )
    subscription = Subscription.objects.select_related("customer").get(pk=subscription.pk)
    if subscription.deployment != Deployment.GITLAB_COM:
        raise ApplicationError(
            f"{subscription.name} is a {subscription.get_deployment_display()} subscription; "
            "only GitLab.com subscriptions are linked to a namespace.",
            code="not_gitlab_com",
        )
    if subscription.status not in _OPEN_SUBSCRIPTION_STATUSES:
        raise ApplicationError(
            f"{subscription.name} is {subscription.get_status_display().lower()}; only a "
            "pending or active subscription can be linked to a namespace.",
            code="subscription_closed",
        )
    previous = namespace.subscription
    if previous is not None and previous.pk == subscription.pk:
        raise ApplicationError(
            f"{namespace.full_path} is already linked to {subscription.name}.", code="no_change"
        )
    occupied = previous is not None and previous.status in _OPEN_SUBSCRIPTION_STATUSES
    if occupied and not force:
        raise ApplicationError(
            f"{namespace.full_path} is already linked to {previous.name} "
            f"({previous.customer.name}), which is {previous.get_status_display().lower()}. "
            "Clear its subscription first, or Force Associate (support lead).",
            code="namespace_occupied",
            extra={"linked_subscription": previous.name},
        )
    if (
        occupied
        and actor is not None
        and not (
            permissions.can_approve(actor) and four_eyes_granted(action="namespace_force_associate")
        )
    ):
        raise ApplicationError(
            "Force Associate takes the namespace from an active subscription; it needs a "
            "second person: request it, and a support lead approves it.",
            code="needs_approval",
        )
    if occupied and not (ticket_url or "").strip():
        raise ValidationError({"ticket_url": "Force Associate needs the ticket link."})

    # "Change linked group": the subscription's current group, if any, is let go.
    for other in Namespace.objects.select_for_update().filter(subscription=subscription):
        old_owed = other.seats_owed
        other.subscription = None
        other.seats_owed = 0
        other.save(update_fields=["subscription", "seats_owed"])
        audit_record(
            actor=actor,
            action="usage.namespace_disassociated",
            target=other,
            customer=subscription.customer,
            changes={"subscription": [subscription.name, None], "seats_owed": [old_owed, 0]},
            reason=f"{subscription.name} moved to {namespace.full_path}: {reason}",
            ticket_url=ticket_url,
            metadata={"moved_to_namespace_id": namespace.gitlab_namespace_id},
        )

    new_owed = _seats_owed(max_seats_used=namespace.max_seats_used, subscription=subscription)
    changes = {
        "subscription": [previous.name if previous else None, subscription.name],
        **diff_fields(namespace, {"seats_owed": new_owed}),
    }
    namespace.subscription = subscription
    namespace.seats_owed = new_owed
    namespace.full_clean(validate_unique=False, validate_constraints=False)
    namespace.save(update_fields=["subscription", "seats_owed"])
    audit_record(
        actor=actor,
        action="usage.namespace_associated",
        target=namespace,
        customer=subscription.customer,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
        metadata={
            "forced": bool(occupied),
            "previous_subscription_id": previous.pk if previous else None,
            "previous_customer_id": previous.customer_id if previous else None,
        },
    )
    _complete_open_steps(
        actor=actor,
        subscription=subscription,
        kind=ProvisioningStepKind.NAMESPACE_PROVISIONED,
        reason=f"Namespace {namespace.full_path} linked: {reason}",
    )
    return namespace


@transaction.atomic
def namespace_disassociate(
    *, actor, namespace: Namespace, reason: str, ticket_url: str = ""
) -> Namespace:
    """Unlink a namespace from its subscription (support "Clear Subscription"). On GitLab.com
    the group drops to Free; its seat reports stay with the subscription they were made for."""
    _require_fix_permission(actor)
    reason = require_reason(reason)
    namespace = (
        Namespace.objects.select_for_update(of=("self",))
        .select_related("subscription__customer")
        .get(pk=namespace.pk)
    )
    previous = namespace.subscription
    if previous is None:
        raise ApplicationError(
            f"{namespace.full_path} is not linked to a subscription.", code="no_change"
        )
    changes = {
        "subscription": [previous.name, None],
        **diff_fields(namespace, {"seats_owed": 0}),
    }
    namespace.subscription = None
    namespace.seats_owed = 0
    namespace.save(update_fields=["subscription", "seats_owed"])
    audit_record(
        actor=actor,
        action="usage.namespace_disassociated",
        target=namespace,
        customer=previous.customer,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
        metadata={"previous_subscription_id": previous.pk},
    )
    return namespace


@dataclass(frozen=True)
class NamespaceSeatsResult:
    """What ``namespace_seats_update`` did: ``updated``, ``unchanged`` (the same figures as of
    the same time, a resent push) or ``stale`` (older than what is already recorded)."""

    namespace: Namespace
    status: str


def _as_aware(moment: datetime | date) -> datetime:
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


@transaction.atomic
def namespace_seats_update(
    *,
    namespace: Namespace,
    seats_in_use: int,
    max_seats_used: int,
    billable_members: int | None = None,
    as_of: datetime | date,
    full_path: str | None = None,
) -> NamespaceSeatsResult:
    """Record a namespace's seat figures from GitLab.com (a system write, not audited: the
    day's ``SeatReport`` with its raw figures is the record) and roll the day up.

    * Out-of-order pushes: figures older than the last refresh or the last max-seats reset are
      ``stale`` and ignored; the same figures as of the same time again are ``unchanged``.
    * ``max_seats_used`` is Provision's high-water mark for the term. GitLab.com's counter is
      followed whenever it moves (a new peak, or GitLab.com's own new-term reset); while it
      reports the same value as last time, Provision keeps its own, so a support "Reset max
      seats" here is not undone by the next push of the old figure. It is never below
      ``seats_in_use``.
    * ``seats_owed = max(0, max_seats_used - subscription.seats)`` (paid plans only);
      ``max_seats_used_changed_at`` is the ``as_of`` of the push that changed the maximum.
    * A linked namespace gets the day's ``SeatReport`` (source ``saas``, upserted on
      subscription, namespace and day): billable users are ``billable_members`` when given,
      else ``seats_in_use``; the maximum is the high-water mark above. The first one closes
      the subscription's "first usage received" step.
    * A different ``full_path`` (the group was renamed on GitLab.com) is taken over unless
      another namespace row holds that path; a rename is audited.
    """
    for field, value in (("seats_in_use", seats_in_use), ("max_seats_used", max_seats_used)):
        if value is None or value < 0:
            raise ValidationError({field: "Give a count of 0 or more."})
    if billable_members is not None and billable_members < 0:
        raise ValidationError({"billable_members": "Give a count of 0 or more."})
    as_of = _as_aware(as_of)
    now = timezone.now()
    if as_of > now + _AS_OF_FUTURE_TOLERANCE:
        raise ValidationError({"as_of": "These figures are dated in the future."})

    namespace = (
        Namespace.objects.select_for_update(of=("self",))
        .select_related("subscription")
        .get(pk=namespace.pk)
    )
    newest = max(
        (t for t in (namespace.last_refreshed_at, namespace.max_seats_used_changed_at) if t),
        default=None,
    )
    if newest is not None and as_of < newest:
        return NamespaceSeatsResult(namespace=namespace, status="stale")

    subscription = namespace.subscription
    previous_raw, previous_subscription_id = (
        SeatReport.objects.filter(namespace=namespace)
        .order_by("-report_date", "-received_at")
        .values_list("raw_payload", "subscription_id")
        .first()
    ) or (None, None)
    previous_reported_max = (previous_raw or {}).get("max_seats_used")
    if previous_reported_max is None or previous_reported_max != max_seats_used:
        new_max = max(max_seats_used, seats_in_use)
    else:
        new_max = max(namespace.max_seats_used, seats_in_use)
    new_values = {
        "seats_in_use": seats_in_use,
        "max_seats_used": new_max,
        "seats_owed": _seats_owed(max_seats_used=new_max, subscription=subscription),
        "last_refreshed_at": as_of,
    }
    if new_max != namespace.max_seats_used:
        new_values["max_seats_used_changed_at"] = as_of
    changes = diff_fields(namespace, new_values)
    rename = None
    full_path = (full_path or "").strip()
    path_taken = Namespace.objects.filter(full_path=full_path).exclude(pk=namespace.pk)
    if full_path and full_path != namespace.full_path and not path_taken.exists():
        rename = [namespace.full_path, full_path]
        new_values["full_path"] = full_path
    if not changes and rename is None:
        return NamespaceSeatsResult(namespace=namespace, status="unchanged")

    for field, value in new_values.items():
        setattr(namespace, field, value)
    # The subscription link is not changed here: skip its existence query (per item of a batch).
    namespace.full_clean(
        exclude=["subscription"], validate_unique=False, validate_constraints=False
    )
    namespace.save(update_fields=list(new_values))
    if rename is not None:
        audit_record(
            actor=None,
            action="usage.namespace_renamed",
            target=namespace,
            customer=subscription.customer if subscription else None,
            changes={"full_path": rename},
            reason="Renamed on GitLab.com (seat usage push)",
        )
    if subscription is not None:
        report_date = timezone.localdate(as_of)
        SeatReport.objects.bulk_create(
            [
                SeatReport(
                    subscription=subscription,
                    namespace=namespace,
                    report_date=report_date,
                    billable_users=(
                        billable_members if billable_members is not None else seats_in_use
                    ),
                    max_historical_users=new_max,
                    source=SeatReportSource.SAAS,
                    raw_payload={
                        "seats_in_use": seats_in_use,
                        "max_seats_used": max_seats_used,
                        "billable_members": billable_members,
                        "as_of": as_of.isoformat(),
                        "full_path": namespace.full_path,
                    },
                    received_at=now,
                )
            ],
            update_conflicts=True,
            unique_fields=["subscription", "namespace", "report_date"],
            update_fields=[
                "billable_users",
                "max_historical_users",
                "source",
                "raw_payload",
                "received_at",
            ],
        )
        subscription_usage_rollup(subscription_id=subscription.pk, dates=[report_date])
        # Only a namespace's first report for this subscription can be its first usage.
        if previous_subscription_id != subscription.pk:
            _complete_open_steps(
                actor=None,
                subscription=subscription,
                kind=ProvisioningStepKind.FIRST_USAGE,
                reason=f"First seat figures from GitLab.com for {namespace.full_path}",
            )
    return NamespaceSeatsResult(namespace=namespace, status="updated")


@transaction.atomic
def namespace_max_seats_reset(
    *,
    actor,
    namespace: Namespace,
    reason: str,
    approval_url: str,
    ticket_url: str = "",
    max_seats_used: int | None = None,
) -> Namespace:
    """Lower a namespace's maximum seats used (support "Reset max seats", support-workflows
    §1.14; at a new term, gitlab-wire-protocol §5.4).

    Lowering the maximum waives the seats owed above it (a QSR or true-up), so it needs a
    support lead and the documented approval (the Chatter or SFDC case link). The new value
    defaults to the seats in use, as GitLab.com does at a new term; it may be set higher to
    waive only part of the overage, never below the seats in use nor above the current
    maximum. Audited with the before and after figures.
    """
    if actor is not None and not permissions.can_approve(actor):
        raise ApplicationError(
            "Resetting max seats waives a true-up; it needs a support lead.",
            code="needs_approval",
        )
    reason = require_reason(reason)
    approval_url = (approval_url or "").strip()
    if not approval_url:
        raise ValidationError(
            {"approval_url": "Link the approval (Chatter or SFDC case): the reset waives seats."}
        )
    URLValidator(schemes=["http", "https"])(approval_url)
    namespace = (
        Namespace.objects.select_for_update(of=("self",))
        .select_related("subscription__customer")
        .get(pk=namespace.pk)
    )
    value = namespace.seats_in_use if max_seats_used is None else max_seats_used
    if value < namespace.seats_in_use:
        raise ValidationError(
            {
                "max_seats_used": f"Cannot go below the {namespace.seats_in_use} seats in use: "
                "the maximum includes today."
            }
        )
    if value > namespace.max_seats_used:
        raise ValidationError(
            {"max_seats_used": f"A reset lowers the maximum; it is {namespace.max_seats_used}."}
        )
    if value == namespace.max_seats_used:
        raise ApplicationError(
            f"{namespace.full_path} already has a maximum of {value} seats used.",
            code="no_change",
        )
    subscription = namespace.subscription
    new_values = {
        "max_seats_used": value,
        "seats_owed": _seats_owed(max_seats_used=value, subscription=subscription),
        "max_seats_used_changed_at": timezone.now(),
    }
    changes = diff_fields(namespace, new_values)
    changes.pop("max_seats_used_changed_at", None)
    for field, new in new_values.items():
        setattr(namespace, field, new)
    namespace.full_clean(validate_unique=False, validate_constraints=False)
    namespace.save(update_fields=list(new_values))
    audit_record(
        actor=actor,
        action="usage.namespace_max_seats_reset",
        target=namespace,
        customer=subscription.customer if subscription else None,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
        metadata={"approval_url": approval_url, "seats_in_use": namespace.seats_in_use},
    )
    return namespace


# --- Integration accounts ---------------------------------------------------------------------


@transaction.atomic
def integration_token_create(
    *, actor, username: str, reason: str, rotate: bool = False
) -> tuple[str, bool]:
    """Create (or, with ``rotate``, replace) the API token of an integration account and return
    ``(token, account_created)``. The caller shows the token once; nothing shows it again.

    The account is made on first use: no usable password (it cannot log in to the console),
    in the ``integration`` group only, so it can push usage and read nothing (see
    ``provision.permissions``). A staff login is never turned into one. An existing token is
    refused unless ``rotate``; rotating invalidates the old token at once. Audited with the
    last four characters of the token, never the token itself. Staff: admins only.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from provision.choices import Role

    if actor is not None and Role.ADMIN not in permissions.roles_of(actor):
        raise ApplicationError("Only an admin may create integration tokens.", code="forbidden")
    reason = require_reason(reason)
    username = (username or "").strip()
    if not username:
        raise ValidationError({"username": "Give the integration account's username."})
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    created = user is None
    if created:
        user = user_model(username=username, is_active=True)
        user.set_unusable_password()
        user.full_clean(exclude=["password"])
        user.save()
        user.groups.add(Group.objects.get_or_create(name=Role.INTEGRATION)[0])
    else:
        groups = set(user.groups.values_list("name", flat=True))
        if user.is_superuser or user.is_staff or groups & permissions.STAFF_ROLES:
            raise ApplicationError(
                f"{username} is a staff login; integration accounts are separate users.",
                code="not_integration_account",
            )
        if Role.INTEGRATION not in groups:
            raise ApplicationError(
                f"{username} exists but is not an integration account.",
                code="not_integration_account",
            )
    previous = Token.objects.filter(user=user).first()
    if previous is not None and not rotate:
        raise ApplicationError(
            f"{username} already has a token; rotate it to replace it (the old one stops working).",
            code="token_exists",
        )
    previous_hint = f"…{previous.key[-4:]}" if previous is not None else None
    if previous is not None:
        previous.delete()
    token = Token.objects.create(user=user)
    audit_record(
        actor=actor,
        action="usage.integration_token_created",
        target=user,
        customer=None,
        changes={"token": [previous_hint, f"…{token.key[-4:]}"]},
        reason=reason,
        metadata={"account_created": created, "rotated": previous is not None},
    )
    return token.key, created


# --- Seat Link ----------------------------------------------------------------------------------

# A superseded key is still taken, and answered with its successor, this long after the
# successor was issued: an instance picks the new key up at its next daily sync, so a key still
# in use a month later is a copy on another instance or an instance that cannot install it.
SEAT_LINK_SUPERSEDED_GRACE = timedelta(days=30)
# Renewals of renewals are followed this far when an old key comes back after several terms.
SEAT_LINK_RENEWAL_DEPTH = 5


@dataclass(frozen=True)
class SeatLinkResult:
    """A stored Seat Link: what was written, and what to answer (wire protocol §1.4)."""

    seat_report_id: int
    instance_pk: int
    subscription_id: int
    report_date: date
    license_key: str | None  # a different license for the instance to install, else None
    future_subscriptions: list[dict]
    next_reconciliation_date: date | None
    display_alert_from: date | None

    def response_body(self) -> dict:
        """The JSON GitLab reads: ``license`` only when it must change (the instance creates
        a new License row whenever the string differs by one byte), ``future_subscriptions``
        always (an empty list clears the instance's copy, as a missing one would), the two
        reconciliation dates together or not at all (either missing removes the banner)."""
        body: dict = {"success": True}
        if self.license_key is not None:
            body["license"] = self.license_key
        body["future_subscriptions"] = self.future_subscriptions
        if self.next_reconciliation_date and self.display_alert_from:
            body["next_reconciliation_date"] = self.next_reconciliation_date.isoformat()
            body["display_alert_from"] = self.display_alert_from.isoformat()
        return body


def seat_link_ingest(
    *,
    payload: dict,
    client_ip: str | None,
    user_agent: str = "",
    now: datetime | None = None,
) -> SeatLinkResult:
    """Store one Seat Link (``POST /api/v1/seat_links``) and say what to answer.

    The body is checked field by field (``usage.seat_link.parse_payload``: every generation
    from 12.9 to the newest). The license is found by the SHA-256 of its key as GitLab
    normalises it, never by decoding: only a key Provision issued and stored is accepted.
    Refusals raise ``SeatLinkRefused`` (HTTP 4xx, stored nothing), before anything is written:

    * unknown key (never issued, altered, or another portal's): ``unknown_license``;
    * an offline cloud or legacy license: ``not_online_cloud``. GitLab itself never sends
      Seat Link for them (``should_sync_seats?``: cloud and not offline); an old GitLab with
      Seat Link switched on sends it for a legacy key, and those customers report through the
      license usage file instead, so the answer tells the administrator that;
    * a revoked key: ``license_revoked``;
    * a superseded key whose successor was issued more than ``SEAT_LINK_SUPERSEDED_GRACE``
      ago, or whose subscription no longer has an online cloud license: ``license_superseded``.
      Within the grace period it is taken and answered with the successor, which is how a
      seat change reaches the instance;
    * a report dated before the license existed (with ``BEFORE_LICENSE_MARGIN``).

    An expired key is taken (GitLab syncs until it has a new one; the answer carries the
    renewal's license once that term has started).

    Writes, in one transaction, with the database's own upserts (never read-then-write):

    * the ``Instance``: version, hostname, ids, last seen/sync, and the customer and
      subscription of the key, by one ``UPDATE`` of the row the lookup found (instances are
      never deleted). An instance seen for the first time is created with ``get_or_create``
      instead, which tells exactly one of several concurrent first reports that it created it;
    * the ``SeatReport`` for (subscription, instance, report date = the timestamp's UTC date),
      ``ON CONFLICT DO UPDATE``: a second report the same day (a manual sync, a retried job)
      replaces that day's counts and answers 200, where GitLab's portal failed
      (customers-gitlab-com#3163). The last one received wins: a retried job (Sidekiq keeps
      its original timestamp) that lands after a manual sync puts that day's earlier counts
      back, until the next report. The raw payload is kept without the key (kilobytes a row,
      and a credential; the license row has its hash);
    * the license issued → active, by a conditional update (the first sync with that key);
    * an open "first usage" provisioning step → done, only when the lookup saw one open.

    Audit: a Seat Link is telemetry from a machine, ~100,000 a day; the seat report row is
    its own append-only record (one per instance and day, with the raw payload and the time
    it arrived), so no event is written per report. Events are written for what a person
    would ask about later, each at most once: an instance first seen
    (``usage.instance_registered``), an instance moving to another subscription
    (``usage.instance_relinked``), a license's first sync (``licenses.license_first_synced``,
    issued → active) and the first-usage step (``provision.provisioning_step_changed``). The
    actor is the instance (actor None, kind "instance").

    The subscription's daily rollup is not computed here: the ``usage_rollup_recent`` task
    (every minute) rolls up each (subscription, day) whose reports arrived since its previous
    run, once however many of the subscription's instances reported. Inline it cost 60 % of
    the request's CPU and serialised a subscription's instances on its row lock.

    Queries on the daily path (known instance, unchanged license, no later term): one lookup
    (license, subscription and every decision above, ``seat_link_license_lookup``), the
    instance update and the report upsert. The rare paths (a new instance, a license's first
    sync, the first-usage step, a new key to send, future terms) read what they need when
    they need it.
    """
    from usage import seat_link
    from usage.selectors import seat_link_license_lookup

    now = now or timezone.now()
    today = timezone.localdate(now)
    data = seat_link.parse_payload(payload, now=now, user_agent=user_agent, client_ip=client_ip)
    with transaction.atomic():
        license = seat_link_license_lookup(
            key=data.license_key, instance_uuid=data.instance_uuid, today=today
        )
        _seat_link_check_license(license=license, data=data, now=now)
        subscription = license.subscription()  # built from the values read: no query
        instance_pk = _seat_link_instance_upsert(
            data=data, license=license, subscription=subscription, now=now
        )
        report_id = _seat_report_upsert(
            subscription_id=subscription.pk, instance_pk=instance_pk, data=data, now=now
        )
        # No rollup here: ``usage_rollup_recent`` (every minute) rolls up the days whose
        # reports arrived since its last run, once per subscription and day however many
        # instances reported (docs/benchmarks.md, "Seat Link ingest").
        _seat_link_license_first_sync(license=license, instance_uuid=data.instance_uuid)
        if license.first_usage_open:
            _seat_link_close_first_usage(subscription_id=subscription.pk, data=data)
    answer = _seat_link_answer(license=license, subscription=subscription, today=today)
    return SeatLinkResult(
        seat_report_id=report_id,
        instance_pk=instance_pk,
        subscription_id=subscription.pk,
        report_date=data.report_date,
        **answer,
    )


def _seat_report_upsert(*, subscription_id: int, instance_pk: int, data, now: datetime) -> int:
    """The day's report, ``INSERT … ON CONFLICT DO UPDATE`` written out (PostgreSQL and
    SQLite take the same statement); returns its id.

    Hand-written because it runs ~100,000 times a morning: building a model instance,
    ``full_clean`` and the ORM's SQL compiler cost more CPU than the database spends on the
    statement (docs/benchmarks.md, "Seat Link ingest"). What ``full_clean`` checked is checked
    before: ``parse_payload`` validates every value (whole numbers in range, texts within their
    columns' lengths, a report date), and the table's check constraints hold the counts.
    """
    import json

    from django.db import connection

    report_date = data.report_date
    with connection.cursor() as cursor:
        cursor.execute(
            _SEAT_REPORT_UPSERT_SQL,
            [
                subscription_id,
                instance_pk,
                connection.ops.adapt_datefield_value(report_date),
                data.billable_users,
                data.max_historical_users,
                json.dumps(data.add_on_metrics or []),
                SeatReportSource.SEAT_LINK.value,
                json.dumps(data.raw),
                connection.ops.adapt_datetimefield_value(now),
            ],
        )
        return cursor.fetchone()[0]


_SEAT_REPORT_UPSERT_SQL = """
INSERT INTO usage_seatreport
    (subscription_id, instance_id, namespace_id, report_date, billable_users,
     max_historical_users, add_on_metrics, source, raw_payload, received_at)
VALUES (%s, %s, NULL, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (subscription_id, instance_id, report_date) DO UPDATE SET
    billable_users = EXCLUDED.billable_users,
    max_historical_users = EXCLUDED.max_historical_users,
    add_on_metrics = EXCLUDED.add_on_metrics,
    source = EXCLUDED.source,
    raw_payload = EXCLUDED.raw_payload,
    received_at = EXCLUDED.received_at
RETURNING id
"""


def _seat_link_check_license(*, license, data, now: datetime) -> None:
    from licenses.choices import LicenseKind, LicenseStatus
    from usage.seat_link import BEFORE_LICENSE_MARGIN, SeatLinkRefused

    def refuse(code: str, problem: str, *, field: str = "license_key"):
        raise SeatLinkRefused(problem, code=code, fields={field: [problem]})

    if license is None:
        refuse(
            "unknown_license",
            "is not a license key this portal issued (unknown, altered or from another "
            "portal): activate the instance with its activation code",
        )
    if license.kind != LicenseKind.ONLINE_CLOUD:
        refuse(
            "not_online_cloud",
            f"is an {LicenseKind(license.kind).label.lower()}, which does not sync: report usage "
            "with the license usage file (Admin › Subscription › Export license usage file)",
        )
    if license.status == LicenseStatus.REVOKED:
        revoked = f" on {license.revoked_at:%Y-%m-%d}" if license.revoked_at else ""
        refuse(
            "license_revoked",
            f"was revoked{revoked}: activate the instance again with a current activation code",
        )
    if license.status == LicenseStatus.SUPERSEDED:
        successor_issued = license.successor_issued_at
        if license.current_license_id is None and license.renewal_license_id is None:
            refuse(
                "license_superseded",
                "was replaced, and its subscription no longer has an online cloud license: "
                "install the license file you were sent",
            )
        if successor_issued is not None and successor_issued < now - SEAT_LINK_SUPERSEDED_GRACE:
            refuse(
                "license_superseded",
                f"was replaced on {successor_issued:%Y-%m-%d} by a newer license that this "
                "instance never installed: activate it again with its activation code",
            )
    earliest = min(license.starts_on, timezone.localdate(license.issued_at)) - (
        BEFORE_LICENSE_MARGIN
    )
    if data.report_date < earliest:
        refuse(
            "report_before_license",
            f"is {data.report_date:%Y-%m-%d}, long before this license was issued",
            field="timestamp" if data.timestamp is not None else "date",
        )


def _seat_link_instance_upsert(*, data, license, subscription, now: datetime) -> int:
    """The instance row, upserted; returns its primary key (see ``seat_link_ingest``)."""
    from usage import seat_link
    from usage.models import Instance
    from usage.seat_link import anonymous_instance_uuid

    if data.instance_uuid is not None:
        instance_uuid = data.instance_uuid
        prior = (
            (license.prior_instance_pk, license.prior_instance_subscription_id)
            if license.prior_instance_pk is not None
            else None
        )
    else:
        # Before 14.x GitLab sent no instance id; the lookup could not see this one.
        instance_uuid = anonymous_instance_uuid(subscription.pk)
        prior = (
            Instance.objects.filter(instance_id=instance_uuid)
            .values_list("pk", "subscription_id")
            .first()
        )
    values = {
        "customer_id": subscription.customer_id,
        "subscription_id": subscription.pk,
        "last_seen_at": now,
        "last_sync_at": now,
        # It just synced: whatever it was before (known from usage files), it is online now.
        "air_gapped": False,
    }
    # Only what this generation of the body says; older bodies do not erase newer facts.
    if data.hostname is not None:
        values["hostname"] = data.hostname
    if data.gitlab_version is not None:
        values["version"] = data.gitlab_version
    if data.unique_instance_id:
        values["unique_instance_id"] = data.unique_instance_id
    if prior is None:
        row = Instance(instance_id=instance_uuid, first_seen_at=now, **values)
        row.full_clean(
            exclude=["customer", "subscription"], validate_unique=False, validate_constraints=False
        )
        instance, created = Instance.objects.get_or_create(
            instance_id=instance_uuid, defaults={**values, "first_seen_at": now}
        )
        if created:
            audit_record(
                actor=None,
                actor_kind=ActorKind.INSTANCE,
                action="usage.instance_registered",
                target=instance,
                customer=subscription.customer,
                changes={
                    "instance_id": [None, str(instance_uuid)],
                    "subscription": [None, subscription.name],
                    "hostname": [None, instance.hostname],
                    "version": [None, instance.version],
                },
                reason=f"First Seat Link from instance {instance_uuid}",
                metadata={
                    "generation": data.generation,
                    "client_ip": data.raw[seat_link.RECEIPT_KEY]["client_ip"],
                    "anonymous": data.instance_uuid is None,
                },
            )
            return instance.pk
        # Another request created it a moment ago: carry on as for a known instance.
        prior = (instance.pk, instance.subscription_id)
    prior_pk, prior_subscription_id = prior
    if prior_subscription_id != subscription.pk:
        # A conditional update, so that only one of several concurrent reports audits it.
        same_link = Instance.objects.filter(pk=prior_pk, subscription_id=prior_subscription_id)
        moved = same_link.update(
            subscription_id=subscription.pk, customer_id=subscription.customer_id
        )
        if moved == 1:
            audit_record(
                actor=None,
                actor_kind=ActorKind.INSTANCE,
                action="usage.instance_relinked",
                target=Instance(pk=prior_pk, instance_id=instance_uuid),
                customer=subscription.customer,
                changes={"subscription_id": [prior_subscription_id, subscription.pk]},
                reason=f"Seat Link from instance {instance_uuid} with a license of "
                f"{subscription.name}",
                metadata={"license": license.pk},
            )
    # The row exists (the lookup or get_or_create saw it, and instances are never deleted):
    # a plain UPDATE by primary key, written out for the reason ``_seat_report_upsert`` is;
    # ``parse_payload`` already held every text to its column's length.
    from django.db import connection

    columns = sorted(values)
    params = [
        connection.ops.adapt_datetimefield_value(values[name])
        if isinstance(values[name], datetime)
        else values[name]
        for name in columns
    ]
    # Column names come from the model, never from the request; values are parameters.
    assignments = ", ".join(f"{name} = %s" for name in _instance_columns(tuple(columns)))
    statement = f"UPDATE usage_instance SET {assignments} WHERE id = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(statement, [*params, prior_pk])
    return prior_pk


@functools.cache
def _instance_columns(names: tuple[str, ...]) -> list[str]:
    """Column names of Instance fields by attribute name (``customer_id``), checked against
    the model so that a renamed field fails loudly rather than writing the wrong column.
    Cached: a handful of name sets, asked for on every daily Seat Link."""
    from usage.models import Instance

    fields = {field.attname: field for field in Instance._meta.concrete_fields}
    return [fields[name].column for name in names]


def _seat_link_license_first_sync(*, license, instance_uuid) -> None:
    """Issued → active on the first Seat Link that carries the key (a conditional update: one
    of several concurrent reports moves it, and only that one audits)."""
    from licenses.choices import LicenseStatus
    from licenses.models import License

    if license.status != LicenseStatus.ISSUED:
        return
    moved = License.objects.filter(pk=license.pk, status=LicenseStatus.ISSUED).update(
        status=LicenseStatus.ACTIVE
    )
    if moved != 1:
        return
    row = (
        License.objects.select_related("subscription__customer")
        .defer("key", "attributes")
        .get(pk=license.pk)
    )
    audit_record(
        actor=None,
        actor_kind=ActorKind.INSTANCE,
        action="licenses.license_first_synced",
        target=row,
        customer=row.subscription.customer,
        changes={"status": [LicenseStatus.ISSUED, LicenseStatus.ACTIVE]},
        reason="First Seat Link with this license"
        + (f" (instance {instance_uuid})" if instance_uuid else ""),
        metadata={"key_sha256": license.key_sha256},
    )


def _seat_link_close_first_usage(*, subscription_id: int, data) -> None:
    who = f"instance {data.instance_uuid}" if data.instance_uuid else "an instance"
    provisioning_steps_complete(
        actor=None,
        actor_kind=ActorKind.INSTANCE,
        subscription_id=subscription_id,
        kind=ProvisioningStepKind.FIRST_USAGE,
        reason=f"First Seat Link received from {who} for {data.report_date:%Y-%m-%d}",
    )


def _seat_link_answer(*, license, subscription: Subscription, today: date) -> dict:
    """The license to send (if it changed), future terms and reconciliation dates.

    No query when the key is the subscription's current license and no later term exists (the
    daily case); otherwise the license to send, and the future terms, are read. Reconciliation
    dates come from ``usage.selectors.next_reconciliation_date``, the same rule (trials,
    partners, offline, terms that are not 12 months are out) that staff pages show.
    """
    from licenses.choices import CURRENT_LICENSE_STATUSES, LicenseKind
    from licenses.models import License
    from licenses.selectors import subscription_future_entries
    from usage.seat_link import RECONCILIATION_ALERT_DAYS, future_subscription_entries
    from usage.selectors import next_reconciliation_date

    target_id = license.renewal_license_id or license.current_license_id or license.pk
    holds = License(pk=license.pk, subscription=subscription, trial=license.trial)
    changed = target_id != license.pk
    if changed:
        holds = License.objects.select_related("subscription").get(pk=target_id)
        seen = {holds.pk}
        for _ in range(SEAT_LINK_RENEWAL_DEPTH if license.renewal_license_id else 0):
            # An old key after several renewals: the newest term in force wins.
            later = (
                License.objects.select_related("subscription")
                .filter(
                    kind=LicenseKind.ONLINE_CLOUD,
                    status__in=CURRENT_LICENSE_STATUSES,
                    subscription__renews_id=holds.subscription_id,
                    starts_on__lte=today,
                )
                .exclude(subscription__status=SubscriptionStatus.CANCELLED)
                .order_by("-starts_on", "-issued_at")
                .first()
            )
            if later is None or later.pk in seen:
                break
            seen.add(later.pk)
            holds = later
        subscription = holds.subscription
    entries = []
    if changed or license.has_later_terms:
        entries = subscription_future_entries(subscription, today=today, exclude=holds)
    reconciliation = None
    if not holds.trial:
        reconciliation = next_reconciliation_date(subscription=subscription, today=today)
    return {
        "license_key": holds.key if changed else None,
        "future_subscriptions": future_subscription_entries(entries),
        "next_reconciliation_date": reconciliation,
        "display_alert_from": (
            reconciliation - timedelta(days=RECONCILIATION_ALERT_DAYS) if reconciliation else None
        ),
    }


# --- Usage files (license_usage.csv from air-gapped instances) ----------------------------------

# The UUIDs of the Instance rows that stand for air-gapped installations are derived from this
# namespace and the subscription's id, so every import of a subscription finds the same row.
# (Fixed forever; a random value, distinct from Seat Link's anonymous-instance namespace.)
OFFLINE_INSTANCE_NAMESPACE = "5b0d3c8e-2f61-4a7e-9c1d-7e4f0a9b6d25"
USAGE_FILE_NAME_MAX = 255
_USAGE_FILE_REPORT_FIELDS = [
    "billable_users",
    "max_historical_users",
    "source",
    "raw_payload",
    "received_at",
]


def _usage_file_name(file_name: str) -> str:
    # Browsers send a bare name, but old ones and scripts may send a Windows or Unix path.
    name = (file_name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return (name or "upload.csv")[:USAGE_FILE_NAME_MAX]


def _usage_file_text(content: bytes) -> str:
    """What is kept of the upload for support to read: the text, bytes that are not UTF-8
    replaced, NUL (which PostgreSQL text cannot hold) too. Nothing of an oversized upload."""
    from usage.usage_file import MAX_FILE_BYTES

    if len(content) > MAX_FILE_BYTES or content.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        return ""
    return content.decode("utf-8", "replace").replace("\x00", "\ufffd")


# Kept texts longer than this are sent to PostgreSQL as a bound parameter (see below).
_BOUND_TEXT_MIN_CHARS = 64 * 1024


def _usage_file_import_save(file_import) -> None:
    """Insert the import row. On PostgreSQL a long file text is then written by an UPDATE
    whose parameter is bound on the server: Django's psycopg cursors bind on the client,
    which quotes the text into the SQL and has the server parse it back, ~40 ms for a 4 MB
    file here (the text was ~40 % of a large import). Same transaction, same row; only the
    way the value travels differs. Real exports (~10 KB a year) take the plain path.
    """
    from django.db import connection

    text = file_import.content
    if connection.vendor != "postgresql" or len(text) < _BOUND_TEXT_MIN_CHARS:
        file_import.save()
        return
    import psycopg
    from psycopg import sql

    file_import.content = ""
    file_import.save()
    file_import.content = text
    meta = type(file_import)._meta
    statement = sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
        sql.Identifier(meta.db_table),
        sql.Identifier(meta.get_field("content").column),
        sql.Identifier(meta.pk.column),
    )
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(statement, [text, file_import.pk])


def _usage_file_license(*, parsed):
    """The license whose key the file carries.

    Found by the SHA-256 of the exact key (as Seat Link finds keys): only a key Provision
    issued and stored is accepted. A key that is not found is decoded only to say why:
    another signer's key (GitLab Inc.'s, another portal's) or a key that was altered.
    """
    from licenses.keyformat import LicenseKeyError
    from licenses.models import License
    from licenses.selectors import license_find_by_key, license_key_decode
    from usage.usage_file import EXPORT_HINT, UsageFileError

    found = license_find_by_key(parsed.license_key)
    if found is None:
        try:
            decoded = license_key_decode(parsed.license_key)
        except LicenseKeyError as error:
            if error.reason == "unknown_signing_key":
                raise UsageFileError(
                    "key_unknown",
                    "The license key in the file is not one we issued (it was signed by "
                    "someone else, for example GitLab Inc. or another portal), so the file "
                    "cannot be matched to a subscription. Check that it was exported from the "
                    "instance that runs the license we sent.",
                ) from None
            raise UsageFileError(
                "key_tampered",
                f"The license key in the file was changed after it was issued ({error.message}) "
                f"and no longer matches any license we issued. {EXPORT_HINT}",
            ) from None
        issued = License.objects.filter(pk=decoded.license_id).exists()
        raise UsageFileError(
            "key_tampered" if issued else "key_unknown",
            "The license key in the file is not the key we issued"
            + (f" as license {decoded.license_id}" if issued else "")
            + ": it was re-made or altered, so its usage cannot be trusted. "
            + EXPORT_HINT,
        )
    return found


def _usage_file_check(*, parsed, found, license, customer) -> None:
    """The file's license against where it was uploaded, its kind and its term."""
    from licenses.choices import LicenseKind
    from usage.usage_file import EXPORT_HINT, UsageFileError

    subscription = found.subscription
    if license is not None and found.subscription_id != license.subscription_id:
        raise UsageFileError(
            "key_other_subscription",
            f"The file carries the license key of subscription {subscription.name} "
            f"(license {found.pk}), not of {license.subscription.name}, whose license it was "
            "uploaded to. Upload it to the right license, or ask the customer for the file "
            "of this one.",
        )
    if customer is not None and subscription.customer_id != customer.pk:
        raise UsageFileError(
            "key_other_customer",
            f"The file carries the license key of subscription {subscription.name}, which "
            f"belongs to another customer than {customer.name}.",
        )
    if found.kind == LicenseKind.ONLINE_CLOUD:
        raise UsageFileError(
            "online_cloud_license",
            f"The file is for license {found.pk} of {subscription.name}, an online cloud "
            "license: its instance reports its usage every day by itself (Seat Link), and a "
            "file imported beside that would count the same users twice. Usage files are for "
            "offline cloud and legacy licenses.",
        )
    if (parsed.starts_on, parsed.expires_on) != (found.starts_on, found.expires_on):
        raise UsageFileError(
            "license_details_mismatch",
            f"The file says the license runs from {parsed.starts_on} to {parsed.expires_on}, "
            f"but the license key in it runs from {found.starts_on} to {found.expires_on}: "
            f"the file was edited. {EXPORT_HINT}",
        )


def _usage_file_instance(*, subscription: Subscription, generated_at: datetime):
    """The air-gapped Instance for the subscription's usage files, created on first use and
    locked (imports of one subscription run one at a time).

    The file names no instance (§3.2: no instance id, hostname or version), so its reports
    need a stand-in. One per subscription, not per license: a seat change supersedes the
    license mid-term, and the new license's export repeats every day since the term began;
    per-license stand-ins would count those days twice in every per-subscription sum (the
    usage overview, the chart, the daily rollup). Two air-gapped installations that run the
    same license cannot be told apart by their files in any case.
    """
    import uuid

    from usage.models import Instance

    instance_id = uuid.uuid5(
        uuid.UUID(OFFLINE_INSTANCE_NAMESPACE), f"subscription:{subscription.pk}"
    )
    Instance.objects.get_or_create(  # safe against a concurrent first import (savepoint)
        instance_id=instance_id,
        defaults={
            "customer_id": subscription.customer_id,
            "subscription": subscription,
            "hostname": f"air-gapped ({subscription.name})",
            "air_gapped": True,
            "first_seen_at": generated_at,
        },
    )
    instance = Instance.objects.select_for_update().get(instance_id=instance_id)
    if instance.last_seen_at is None or instance.last_seen_at < generated_at:
        instance.last_seen_at = generated_at  # when the customer's instance wrote the file
        instance.save(update_fields=["last_seen_at"])
    return instance


def _usage_file_store(*, actor, parsed, found, file_name, file_sha256, text, reason):
    from usage.choices import UsageFileImportStatus
    from usage.models import UsageFileImport

    subscription = found.subscription
    instance = _usage_file_instance(subscription=subscription, generated_at=parsed.generated_at)
    stored = {
        day: (billable, peak)
        for day, billable, peak in SeatReport.objects.filter(
            subscription=subscription,
            instance=instance,
            report_date__range=(parsed.first_day, parsed.last_day),
        ).values_list("report_date", "billable_users", "max_historical_users")
    }
    changed = [
        day
        for day in parsed.days
        if stored.get(day.day) != (day.billable_users, day.max_historical_users)
    ]
    now = timezone.now()
    earlier = (
        UsageFileImport.objects.filter(
            subscription=subscription,
            file_sha256=file_sha256,
            status=UsageFileImportStatus.IMPORTED,
        )
        .order_by("uploaded_at", "pk")
        .values_list("pk", flat=True)
        .first()
    )
    file_import = UsageFileImport(
        subscription=subscription,
        license=found,
        uploaded_by=actor,
        uploaded_at=now,
        file_name=file_name,
        file_sha256=file_sha256,
        content=text,
        status=UsageFileImportStatus.IMPORTED,
        rows_total=parsed.rows_total,
        rows_imported=len(changed),
        finished_at=now,
    )
    file_import.full_clean(exclude=["subscription", "license", "uploaded_by", "content"])
    _usage_file_import_save(file_import)
    # The parser checked every value (whole numbers 0..999,999,999, calendar days in the
    # license term) and the database's check constraints hold the rest, so the rows are not
    # full_clean()ed one by one: that would cost more than reading the whole file.
    reports = [
        SeatReport(
            subscription=subscription,
            instance=instance,
            report_date=day.day,
            billable_users=day.billable_users,
            max_historical_users=day.max_historical_users,
            source=SeatReportSource.USAGE_FILE,
            raw_payload={
                "usage_file_import_id": file_import.pk,
                "license_id": found.pk,
                "generated_at": parsed.generated_at.isoformat(),
                "rows": day.rows,
            },
            received_at=now,
        )
        for day in changed
    ]
    if reports:
        # An upsert, not an insert: a day another import stored meanwhile is replaced.
        SeatReport.objects.bulk_create(
            reports,
            update_conflicts=True,
            unique_fields=["subscription", "instance", "report_date"],
            update_fields=_USAGE_FILE_REPORT_FIELDS,
            batch_size=500,
        )
        subscription_usage_rollup(
            subscription_id=subscription.pk, dates=[report.report_date for report in reports]
        )
    created = sum(1 for day in changed if day.day not in stored)
    audit_record(
        actor=actor,
        action="usage.usage_file_imported",
        target=file_import,
        customer=subscription.customer,
        changes={
            "status": [None, UsageFileImportStatus.IMPORTED],
            "rows_imported": [None, len(changed)],
        },
        reason=reason,
        metadata={
            "file_sha256": file_sha256,
            "license": found.pk,
            "instance": str(instance.instance_id),
            "rows_total": parsed.rows_total,
            "days": len(parsed.days),
            "reports_created": created,
            "reports_updated": len(changed) - created,
            "first_day": parsed.first_day.isoformat(),
            "last_day": parsed.last_day.isoformat(),
            "peak_users": parsed.peak_users,
            "generated_at": parsed.generated_at.isoformat(),
            "count_column": parsed.count_column,
            "same_file_imported_before": earlier,
        },
    )
    _complete_open_steps(
        actor=actor,
        subscription=subscription,
        kind=ProvisioningStepKind.FIRST_USAGE,
        reason=f"First usage received: {file_name} (usage file import {file_import.pk})",
    )
    return file_import


@transaction.atomic
def _usage_file_reject(
    *, actor, error, file_name, file_sha256, text, license, customer, found, reason
):
    from usage.choices import UsageFileImportStatus
    from usage.models import UsageFileImport

    # Shown where it was uploaded: on the license chosen, else on the license the key names
    # (unless that is another customer's); an upload on a customer page with no usable key
    # is found through its audit event, which names the customer.
    linked = license
    if linked is None and found is not None and customer in (None, found.subscription.customer):
        linked = found
    now = timezone.now()
    file_import = UsageFileImport(
        subscription=linked.subscription if linked else None,
        license=linked,
        uploaded_by=actor,
        uploaded_at=now,
        file_name=file_name,
        file_sha256=file_sha256,
        content=text,
        status=UsageFileImportStatus.REJECTED,
        rejection_reason=error.message,
        finished_at=now,
    )
    # The text may be empty (an empty, oversized or binary upload), which is still a record.
    file_import.full_clean(exclude=["subscription", "license", "uploaded_by", "content"])
    _usage_file_import_save(file_import)
    audit_record(
        actor=actor,
        action="usage.usage_file_rejected",
        target=file_import,
        customer=customer or (linked.subscription.customer if linked else None),
        changes={"status": [None, UsageFileImportStatus.REJECTED]},
        reason=reason,
        metadata={
            "reason_code": error.reason_code,
            "file_sha256": file_sha256,
            "license": found.pk if found else None,
        },
    )
    file_import.reason_code = error.reason_code
    return file_import


def usage_file_import(
    *,
    actor,
    file_name: str,
    content: bytes,
    license=None,
    customer=None,
    reason: str = "",
):
    """Import a ``license_usage.csv`` an air-gapped customer sent (support-workflows §1.20).

    ``license`` is given when staff upload on a license page (the key must be one of that
    subscription's), ``customer`` on a customer page (the key must be one of that customer's);
    the command gives neither. Support roles may import; the system (``actor=None``) too.

    Every attempt is recorded as a ``UsageFileImport`` with the file's SHA-256 and text, and
    audited (``usage.usage_file_imported`` / ``usage.usage_file_rejected``). The returned
    import says what happened: ``status``, ``rows_total`` (rows in the file),
    ``rows_imported`` (daily reports created or changed), ``rejection_reason``; a rejected
    one also carries ``reason_code`` (one of ``usage.usage_file.REASONS``), not stored on the
    row but in its audit event.

    On success one ``SeatReport`` per day (source ``usage_file``: the day's highest count, and
    the running maximum since the file's first day as the historical maximum) is upserted for
    (subscription, the subscription's air-gapped instance, day); the subscription's daily
    rollup is recomputed for the days that changed; the first-usage provisioning step closes.

    Idempotent: a day whose stored counts equal the file's is left alone, so importing the
    same file again stores nothing and is recorded as imported with 0 new rows (the audit
    event names the earlier import of the same bytes, and the page says "already imported
    on …"). Recorded rather than refused, because a second copy of a file is not an error
    the customer must fix, and support can see both attempts.

    Ordering: the file is parsed and matched to its license first (reads only); the instance,
    the import row, the reports, the rollup, the audit event and the step are then written in
    one transaction. Any refusal writes only the rejected import and its audit event, in a
    transaction of their own after the first has rolled back, so a rejected file stores no
    report. The rejection is returned, not raised, so its record stays even when the caller
    runs inside a transaction. Errors that are not the file's fault (the database) raise.
    """
    import hashlib

    from usage.usage_file import UsageFileError, parse_usage_file

    if actor is not None and not permissions.can_fix(actor):
        raise ApplicationError(
            "You do not have permission to import usage files.", code="forbidden"
        )
    if license is not None and customer not in (None, license.subscription.customer):
        raise ValueError("the license does not belong to the customer")
    file_name = _usage_file_name(file_name)
    reason = (reason or "").strip() or f"Usage file {file_name}"
    file_sha256 = hashlib.sha256(content).hexdigest()
    text = _usage_file_text(content)
    found = None
    try:
        parsed = parse_usage_file(content)
        found = _usage_file_license(parsed=parsed)
        _usage_file_check(parsed=parsed, found=found, license=license, customer=customer)
        with transaction.atomic():
            file_import = _usage_file_store(
                actor=actor,
                parsed=parsed,
                found=found,
                file_name=file_name,
                file_sha256=file_sha256,
                text=text,
                reason=reason,
            )
    except UsageFileError as error:
        return _usage_file_reject(
            actor=actor,
            error=error,
            file_name=file_name,
            file_sha256=file_sha256,
            text=text,
            license=license,
            customer=customer,
            found=found,
            reason=reason,
        )
    file_import.reason_code = None
    return file_import
