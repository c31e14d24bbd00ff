"""Reads of instances, namespaces and seat usage for the staff pages."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, Max, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from provision import permissions
from provision.choices import Channel, LicensingMethod, SubscriptionStatus
from provision.models import Customer, Subscription
from provision.selectors import require_staff
from usage.filters import InstanceFilterSet, NamespaceFilterSet, SeatReportFilterSet
from usage.models import Instance, Namespace, SeatReport, SubscriptionUsageDaily


def customer_usage_overview(*, customer: Customer) -> dict:
    """Instances, namespaces and each subscription's latest reported usage, in four queries.

    A subscription may report from several instances (production, staging) or namespaces, so
    the latest day's figures are summed over its sources, as the usage chart does.
    """
    instances = list(
        instance_health_annotate(
            Instance.objects.filter(customer=customer)
            .select_related("subscription")
            .order_by("-last_sync_at")
        )
    )
    now = timezone.now()
    for instance in instances:
        instance.health = instance_health(instance, now=now)
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


def _series_from_rollups(rows) -> dict:
    """Chart data from SubscriptionUsageDaily rows summed per day: billable, max and the seats
    purchased on each day (a list: seats change during a term)."""
    per_day: dict = {}
    for day, billable, peak, seats, overage in rows:
        totals = per_day.setdefault(day, [0, 0, 0, 0])
        totals[0] += billable
        totals[1] += peak
        totals[2] += seats
        totals[3] += overage
    dates = sorted(per_day)
    return {
        "labels": [d.isoformat() for d in dates],
        "billable": [per_day[d][0] for d in dates],
        "max": [per_day[d][1] for d in dates],
        "seats": [per_day[d][2] for d in dates],
        "overage": [per_day[d][3] for d in dates],
    }


_ROLLUP_FIELDS = ("date", "billable_users", "max_users", "seats", "overage")


def subscription_usage_series(*, subscription: Subscription) -> dict:
    """Daily billable and max users against the seats purchased, over the current term (up to
    today), from the daily rollup: one indexed range read, whatever the number of sources."""
    today = timezone.localdate()
    rows = SubscriptionUsageDaily.objects.filter(
        subscription=subscription,
        date__gte=subscription.term_start,
        date__lte=min(today, subscription.term_end),
    ).values_list(*_ROLLUP_FIELDS)
    series = _series_from_rollups(rows)
    series["current_seats"] = subscription.seats
    return series


def customer_usage_series(*, customer: Customer, days: int = 365) -> dict:
    """The customer's seat usage across its active and pending subscriptions, per day."""
    since = timezone.localdate() - timedelta(days=days)
    rows = SubscriptionUsageDaily.objects.filter(
        subscription__customer=customer,
        subscription__status__in=[SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING],
        date__gte=since,
    ).values_list(*_ROLLUP_FIELDS)
    return _series_from_rollups(rows)


def instance_list(*, actor, filters: dict | None = None):
    require_staff(actor)
    # The license check as a scalar subquery, not the EXISTS of instance_health_annotate: in
    # the select list of a 100,000-row list PostgreSQL runs an EXISTS as one hashed scan of
    # every license (~200 ms) even when only a page of 50 is read; a scalar subquery runs for
    # the page's rows only. The "dark" filter tests the same flag.
    queryset = (
        Instance.objects.select_related("customer", "subscription")
        .annotate(has_online_cloud_license=_online_cloud_license_flag(timezone.localdate()))
        .order_by("hostname", "pk")
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
    # Newest received first: the received_at index serves the first page at any size (the
    # report-date order would sort every report: ~190 ms at 300,000, and 36M a year).
    queryset = SeatReport.objects.select_related("subscription").order_by("-received_at", "-pk")
    filterset = SeatReportFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


# --- Instance health ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceHealth:
    """How an instance is syncing. ``missed_days`` counts whole days since its last Seat Link
    (since it was first seen, if it never synced); ``dark`` = it holds an active online cloud
    license, is not air-gapped, and has missed ``INSTANCE_DARK_AFTER_DAYS`` days or more."""

    last_sync_at: datetime | None
    missed_days: int
    online_cloud: bool
    dark: bool


def _online_cloud_licenses(today: date):
    """The instance's subscription's current online cloud licenses in force today (to be used
    in a subquery: ``OuterRef("subscription_id")``)."""
    from licenses.choices import CURRENT_LICENSE_STATUSES, LicenseKind
    from licenses.models import License

    return License.objects.filter(
        subscription_id=OuterRef("subscription_id"),
        kind=LicenseKind.ONLINE_CLOUD,
        status__in=CURRENT_LICENSE_STATUSES,
        starts_on__lte=today,
        expires_on__gt=today,
    )


def _online_cloud_license_in_force(today: date):
    """``Exists`` of a current online cloud license of the instance's subscription in force today:
    the instances expected to send Seat Link daily (gitlab-wire-protocol §1.1)."""
    return Exists(_online_cloud_licenses(today))


def _online_cloud_license_flag(today: date):
    """The same check as a scalar subquery (true or false), which PostgreSQL evaluates for the
    rows it returns only, never as one hashed scan of every license as it may an EXISTS."""
    from django.db.models import BooleanField, Subquery, Value

    flag = (
        _online_cloud_licenses(today)
        .order_by()
        .values(flag=Value(True, output_field=BooleanField()))[:1]
    )
    return Coalesce(Subquery(flag, output_field=BooleanField()), Value(False))


def instance_health_annotate(queryset, *, today: date | None = None):
    """Annotate ``has_online_cloud_license`` so ``instance_health`` needs no query per row."""
    today = today or timezone.localdate()
    return queryset.annotate(has_online_cloud_license=_online_cloud_license_in_force(today))


def instance_health(instance: Instance, *, now: datetime | None = None) -> InstanceHealth:
    now = now or timezone.now()
    online_cloud = getattr(instance, "has_online_cloud_license", None)
    if online_cloud is None:
        # Not annotated (a single instance loaded elsewhere): one query.
        online_cloud = (
            instance_health_annotate(
                Instance.objects.filter(pk=instance.pk), today=timezone.localdate(now)
            )
            .values_list("has_online_cloud_license", flat=True)
            .first()
            or False
        )
    since = instance.last_sync_at or instance.first_seen_at
    missed_days = max(0, (now - since) // timedelta(days=1)) if since else 0
    dark = (
        bool(online_cloud)
        and not instance.air_gapped
        and missed_days >= settings.INSTANCE_DARK_AFTER_DAYS
    )
    return InstanceHealth(
        last_sync_at=instance.last_sync_at,
        missed_days=missed_days,
        online_cloud=bool(online_cloud),
        dark=dark,
    )


def instances_gone_dark(*, actor, now: datetime | None = None):
    """Instances with an active online cloud license that have not synced for
    ``INSTANCE_DARK_AFTER_DAYS`` days (never synced: since first seen), longest silent first.
    Air-gapped instances are expected to be silent and are left out."""
    require_staff(actor)
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.INSTANCE_DARK_AFTER_DAYS)
    queryset = instance_health_annotate(
        Instance.objects.select_related("customer", "subscription"),
        today=timezone.localdate(now),
    )
    return (
        queryset.annotate(last_heard_at=Coalesce("last_sync_at", "first_seen_at"))
        .filter(has_online_cloud_license=True, air_gapped=False, last_heard_at__lte=cutoff)
        .order_by("last_heard_at", "pk")
    )


# --- GitLab.com seat figures (machine endpoint) -------------------------------------------------


def namespaces_by_gitlab_id(*, actor, gitlab_ids) -> dict[int, Namespace]:
    """The namespaces an integration account pushes figures for, by GitLab.com id."""
    if not permissions.can_push_usage(actor):
        raise PermissionDenied
    ids = sorted(set(gitlab_ids))
    found: dict[int, Namespace] = {}
    # Chunked: one IN list per 500 ids keeps every backend well inside its parameter limit.
    for start in range(0, len(ids), 500):
        for namespace in Namespace.objects.filter(gitlab_namespace_id__in=ids[start : start + 500]):
            found[namespace.gitlab_namespace_id] = namespace
    return found


def subscription_find(*, actor, pk: int | None = None, name: str | None = None) -> Subscription:
    """A subscription by id or by name (A-S00012345), for linking a namespace. A miss is a
    validation error on the input, not a 404 of the page it was typed on."""
    from django.core.exceptions import ValidationError

    require_staff(actor)
    lookup = {"pk": pk} if pk else {"name": (name or "").strip()}
    subscription = Subscription.objects.select_related("customer").filter(**lookup).first()
    if subscription is None:
        raise ValidationError({"subscription": f"No subscription {pk or name}."})
    return subscription


# --- Quarterly subscription reconciliation (QSR) ------------------------------------------------

QSR_MONTHS_AFTER_TERM_START = (3, 6, 9)


def _add_months(day: date, months: int) -> date:
    """Same day ``months`` later, on the month's last day when it is shorter (31 Jan → 28 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def subscription_reconciliation_dates(*, subscription: Subscription) -> list[date]:
    """The quarterly reconciliation dates of the subscription's term (support-workflows §4.2).

    Each quarter's overage is billed at the end of that quarter, prorated for the quarters
    left: 3, 6 and 9 months after the term starts. The fourth quarter has none (its overage is
    not charged; the renewal takes over). None when the subscription is not in QSR: a trial,
    quarterly reconciliation switched off, a reseller (partner) purchase, an offline or legacy
    license file, or a term that is not 12 months (multi-year or odd length). Whether the
    subscription is still running is for the caller (``next_reconciliation_date``).
    """
    if subscription.is_trial or not subscription.quarterly_reconciliation:
        return []
    if subscription.channel == Channel.PARTNER:
        return []
    if subscription.licensing_method in (LicensingMethod.OFFLINE_CLOUD, LicensingMethod.LEGACY):
        return []
    one_year_later = _add_months(subscription.term_start, 12)
    if abs((subscription.term_end - one_year_later).days) > 1:
        return []
    return [_add_months(subscription.term_start, months) for months in QSR_MONTHS_AFTER_TERM_START]


def next_reconciliation_date(*, subscription: Subscription, today: date) -> date | None:
    """The next reconciliation date on or after ``today``; None when there is none left or the
    subscription is cancelled or expired."""
    if subscription.status in (SubscriptionStatus.CANCELLED, SubscriptionStatus.EXPIRED):
        return None
    return next(
        (
            day
            for day in subscription_reconciliation_dates(subscription=subscription)
            if day >= today
        ),
        None,
    )


# --- Seat Link ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeatLinkLicense:
    """The license a Seat Link's key names, its subscription, and every fact the ingest decides
    on, read in one statement (``seat_link_license_lookup``). Plain values, not model rows:
    the daily path needs nothing more, and the rare paths load the rows they audit."""

    pk: int
    subscription_id: int
    kind: str
    status: str
    key_sha256: str
    starts_on: date
    issued_at: datetime
    revoked_at: datetime | None
    trial: bool
    # The subscription's fields (an unsaved-looking Subscription is built from them).
    customer_id: int
    subscription_name: str
    plan: str
    subscription_status: str
    term_start: date
    term_end: date
    channel: str
    licensing_method: str
    quarterly_reconciliation: bool
    # The subscription's current online cloud license: in force today, else the next to start.
    in_force_license_id: int | None
    upcoming_license_id: int | None
    # The online cloud license in force today of a (not cancelled) renewal of the subscription.
    renewal_license_id: int | None
    # When the license that superseded this one was issued.
    successor_issued_at: datetime | None
    # Whether future terms can exist (a later license or any renewal): the future-subscriptions
    # list is only built when it can be non-empty.
    has_later_terms: bool
    # Whether a "first usage" provisioning step of the subscription is still open.
    first_usage_open: bool
    # The instance the body names, as it was before this report (None: not known yet).
    prior_instance_pk: int | None
    prior_instance_subscription_id: int | None

    @property
    def current_license_id(self) -> int | None:
        return self.in_force_license_id or self.upcoming_license_id

    def subscription(self) -> Subscription:
        """The subscription as a model instance built from the values read (no query)."""
        return Subscription(
            pk=self.subscription_id,
            customer_id=self.customer_id,
            name=self.subscription_name,
            plan=self.plan,
            status=self.subscription_status,
            term_start=self.term_start,
            term_end=self.term_end,
            channel=self.channel,
            licensing_method=self.licensing_method,
            quarterly_reconciliation=self.quarterly_reconciliation,
        )


# One statement, written out: the ORM spends ~5 ms of CPU compiling this many subqueries, more
# than the database takes to run it, on the endpoint that 100,000 instances call every day.
# Every subquery is an index lookup (license key_sha256, (subscription, status), supersedes,
# subscription renews, provisioning record and step, instance_id).
_SEAT_LINK_LOOKUP_SQL = """
SELECT
    l.id, l.subscription_id, l.kind, l.status, l.key_sha256, l.starts_on, l.issued_at,
    l.revoked_at, l.trial,
    s.customer_id, s.name, s.plan, s.status, s.term_start, s.term_end, s.channel,
    s.licensing_method, s.quarterly_reconciliation,
    (SELECT c.id FROM licenses_license c
      WHERE c.subscription_id = l.subscription_id AND c.kind = %(online)s
        AND c.status IN (%(issued)s, %(active)s) AND c.starts_on <= %(today)s
      ORDER BY c.starts_on DESC, c.issued_at DESC LIMIT 1),
    (SELECT c.id FROM licenses_license c
      WHERE c.subscription_id = l.subscription_id AND c.kind = %(online)s
        AND c.status IN (%(issued)s, %(active)s) AND c.starts_on > %(today)s
      ORDER BY c.starts_on ASC, c.issued_at DESC LIMIT 1),
    (SELECT c.id FROM licenses_license c
       JOIN provision_subscription r ON r.id = c.subscription_id
      WHERE r.renews_id = l.subscription_id AND r.status <> %(cancelled)s
        AND c.kind = %(online)s AND c.status IN (%(issued)s, %(active)s)
        AND c.starts_on <= %(today)s
      ORDER BY c.starts_on DESC, c.issued_at DESC LIMIT 1),
    (SELECT n.issued_at FROM licenses_license n WHERE n.supersedes_id = l.id LIMIT 1),
    (EXISTS (SELECT 1 FROM licenses_license f
              WHERE f.subscription_id = l.subscription_id
                AND f.status IN (%(issued)s, %(active)s) AND f.starts_on > %(today)s)
     OR EXISTS (SELECT 1 FROM provision_subscription r WHERE r.renews_id = l.subscription_id)),
    EXISTS (SELECT 1 FROM provision_provisioningstep st
              JOIN provision_provisioningrecord pr ON pr.id = st.record_id
             WHERE pr.subscription_id = l.subscription_id AND st.kind = %(first_usage)s
               AND st.state NOT IN (%(done)s, %(skipped)s)),
    i.id, i.subscription_id
FROM licenses_license l
JOIN provision_subscription s ON s.id = l.subscription_id
LEFT JOIN usage_instance i ON i.instance_id = %(instance_id)s
WHERE l.key_sha256 IN (%(sha)s, %(normalized_sha)s)
LIMIT 1
"""


def _as_datetime(value) -> datetime | None:
    """A timestamp column read without the ORM: SQLite returns UTC text without an offset."""
    from datetime import UTC

    from django.utils.dateparse import parse_datetime

    parsed = value if value is None or isinstance(value, datetime) else parse_datetime(value)
    if parsed is not None and timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def seat_link_license_lookup(*, key: str, instance_uuid, today: date) -> SeatLinkLicense | None:
    """The license a Seat Link's key names (``SeatLinkLicense``), or None, in one query.

    Found by the SHA-256 of the key as sent or as GitLab normalises it (CRLF, trailing
    newlines), like ``licenses.selectors.license_find_by_key``: only a key Provision issued
    and stored can match. ``instance_uuid`` (None for bodies before 14.x) reads the instance's
    previous state in the same statement.
    """
    from django.db import connection

    from licenses.choices import LicenseKind, LicenseStatus
    from licenses.keyformat import key_sha256, normalized_key
    from provision.choices import ProvisioningStepKind, StepState

    instance_field = Instance._meta.get_field("instance_id")
    params = {
        "online": LicenseKind.ONLINE_CLOUD.value,
        "issued": LicenseStatus.ISSUED.value,
        "active": LicenseStatus.ACTIVE.value,
        "cancelled": SubscriptionStatus.CANCELLED.value,
        "first_usage": ProvisioningStepKind.FIRST_USAGE.value,
        "done": StepState.DONE.value,
        "skipped": StepState.SKIPPED.value,
        "today": connection.ops.adapt_datefield_value(today),
        # NULL (a body before 14.x) never equals a column, so the join finds nothing.
        "instance_id": (
            None
            if instance_uuid is None
            else instance_field.get_db_prep_value(instance_uuid, connection, prepared=False)
        ),
        "sha": key_sha256(key),
        "normalized_sha": key_sha256(normalized_key(key)),
    }
    with connection.cursor() as cursor:
        cursor.execute(_SEAT_LINK_LOOKUP_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    (
        pk,
        subscription_id,
        kind,
        status,
        sha,
        starts_on,
        issued_at,
        revoked_at,
        trial,
        customer_id,
        name,
        plan,
        subscription_status,
        term_start,
        term_end,
        channel,
        licensing_method,
        quarterly_reconciliation,
        in_force,
        upcoming,
        renewal,
        successor_issued_at,
        has_later_terms,
        first_usage_open,
        prior_instance_pk,
        prior_instance_subscription_id,
    ) = row
    return SeatLinkLicense(
        pk=pk,
        subscription_id=subscription_id,
        kind=kind,
        status=status,
        key_sha256=sha,
        starts_on=_as_date(starts_on),
        issued_at=_as_datetime(issued_at),
        revoked_at=_as_datetime(revoked_at),
        trial=bool(trial),
        customer_id=customer_id,
        subscription_name=name,
        plan=plan,
        subscription_status=subscription_status,
        term_start=_as_date(term_start),
        term_end=_as_date(term_end),
        channel=channel,
        licensing_method=licensing_method,
        quarterly_reconciliation=bool(quarterly_reconciliation),
        in_force_license_id=in_force,
        upcoming_license_id=upcoming,
        renewal_license_id=renewal,
        successor_issued_at=_as_datetime(successor_issued_at),
        has_later_terms=bool(has_later_terms),
        first_usage_open=bool(first_usage_open),
        prior_instance_pk=prior_instance_pk,
        prior_instance_subscription_id=prior_instance_subscription_id,
    )


# --- Usage files --------------------------------------------------------------------------------


def usage_file_import_list(*, actor, filters: dict | None = None):
    """Usage-file imports, newest first, without the files' text (up to megabytes each)."""
    from usage.filters import UsageFileImportFilterSet
    from usage.models import UsageFileImport

    require_staff(actor)
    queryset = (
        UsageFileImport.objects.select_related("subscription", "license", "uploaded_by")
        .defer("content")
        .order_by("-uploaded_at", "-pk")
    )
    filterset = UsageFileImportFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def usage_file_import_message(*, file_import) -> str:
    """What the upload form and the command say about an import, in one sentence."""
    from usage.choices import UsageFileImportStatus
    from usage.models import UsageFileImport

    name = file_import.file_name
    if file_import.status == UsageFileImportStatus.REJECTED:
        return f"{name} was rejected: {file_import.rejection_reason}"
    count = file_import.rows_imported
    if count:
        return f"Imported {count} daily report{'s' if count != 1 else ''} from {name}"
    earlier = (
        UsageFileImport.objects.filter(
            subscription_id=file_import.subscription_id,
            file_sha256=file_import.file_sha256,
            status=UsageFileImportStatus.IMPORTED,
            uploaded_at__lte=file_import.uploaded_at,
        )
        .exclude(pk=file_import.pk)
        .order_by("uploaded_at", "pk")
        .values_list("uploaded_at", flat=True)
        .first()
    )
    if earlier is not None:
        day = timezone.localdate(earlier)
        return f"Nothing new in {name}: the same file was already imported on {day:%Y-%m-%d}"
    return f"Nothing new in {name}: every day in it was already stored"


# --- Daily usage rollups ------------------------------------------------------------------------


def usage_rollup_list(*, actor, filters: dict | None = None):
    """Daily usage rollups, by subscription then day, for every staff role (the API's
    ``/api/usage-rollups/``); each row names its subscription and customer without a query."""
    from usage.filters import UsageDailyFilterSet

    require_staff(actor)
    # By subscription, then day: the (subscription, date) unique index serves any page and
    # any customer or date filter without a sort (newest-day-first would sort a whole day).
    queryset = SubscriptionUsageDaily.objects.select_related("subscription").order_by(
        "subscription_id", "date"
    )
    filterset = UsageDailyFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset
