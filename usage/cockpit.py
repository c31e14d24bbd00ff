"""The seat utilization cockpit (reads): one row per customer with an active subscription, the
per-customer page (usage chart, run-out forecast, quarterly reconciliation preview) and the
CSV export. The page, the CSV and ``/api/cockpit/`` all read ``cockpit_list``, so one query
string gives the same rows in the same order everywhere.

Definitions (shown on the page; ``DEFINITIONS`` is the text):

* **Seats**: the seats purchased, summed over the customer's active subscriptions.
* **Billable**: each active subscription's latest daily rollup (``SubscriptionUsageDaily``),
  summed. A subscription that never reported adds nothing; a customer none of whose
  subscriptions reported has no figure ("no data", never 0).
* **Max used**, per subscription: self-managed, the highest daily maximum users in the current
  term's rollups (GitLab's "maximum users" of the license period); GitLab.com, the linked
  namespaces' maximum seats used (what GitLab.com bills, lowered by an approved "Reset max
  seats"), else the term's rollups. Summed over the active subscriptions.
* **Seats owed**, per subscription ``max(0, max used - seats)``, summed: one subscription's
  spare seats never cancel another's overage. For GitLab.com this equals the namespace's
  ``seats_owed``.
* **Utilization** = billable / seats, in percent.
* **Risk flags**: over seats (owed > 0); under 50 % used; an instance gone dark (an online cloud
  license in force, not air-gapped, silent for ``INSTANCE_DARK_AFTER_DAYS`` days: the rule of
  ``usage.selectors.instance_health``); renewal within 90 days with under 50 % used.

Query shape: the list query carries the figures as SQL aliases (correlated subqueries; the
rollup reads are lookups on the (subscription, date) unique index), evaluated only where a
filter or the sort names one: sorted by name, the page is an index scan. The rows shown are
then completed in three queries (``cockpit_rows_complete``: their subscriptions' figures,
last sync and dark instances, the trend), the same definitions computed per subscription.
Sorting or filtering by a figure evaluates it for every customer in scope (an account
manager's book of ~1,000, or ~190,000 for a lead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Cast, Coalesce, Concat, Greatest, NullIf, Trim
from django.shortcuts import get_object_or_404
from django.utils import timezone

from provision import permissions
from provision.choices import Deployment, Plan, SubscriptionStatus
from provision.models import Customer, Subscription
from usage.models import Instance, Namespace, SubscriptionUsageDaily

# Thresholds of the risk flags.
UNDER_USED_BELOW_PERCENT = 50
RENEWAL_RISK_DAYS = 90
# The sparkline: daily billable users over this many days, today included.
TREND_DAYS = 30
# The run-out forecast: a least-squares line through the last FORECAST_WINDOW_DAYS days of
# billable users, when at least FORECAST_MIN_POINTS of them have a rollup.
FORECAST_WINDOW_DAYS = 60
FORECAST_MIN_POINTS = 14
# The CSV export reads (and completes) this many rows at a time.
CSV_CHUNK = 1000


class CockpitRisk:
    """The risk flags: the ``risk`` filter's values and the labels the page shows."""

    OVER_SEATS = "over_seats"
    UNDER_USED = "under_used"
    INSTANCE_DARK = "instance_dark"
    RENEWAL_LOW_USE = "renewal_low_use"
    ANY = "any"

    LABELS = {
        OVER_SEATS: "Over seats",
        UNDER_USED: f"Under {UNDER_USED_BELOW_PERCENT}% used",
        INSTANCE_DARK: "Instance dark",
        RENEWAL_LOW_USE: f"Renewal ≤ {RENEWAL_RISK_DAYS} days, low use",
    }
    # The table's badges (the full label is their tooltip).
    SHORT_LABELS = {
        OVER_SEATS: "Over seats",
        UNDER_USED: f"< {UNDER_USED_BELOW_PERCENT}%",
        INSTANCE_DARK: "Dark",
        RENEWAL_LOW_USE: "Renewal",
    }
    choices = [(ANY, "Any risk"), *LABELS.items()]


# The ``sort`` parameter: name → the expression it orders by (annotations and aliases below).
SORT_FIELDS = {
    "name": "name",
    "owner": "owner_name",
    "seats": "seats",
    "billable": "billable_users",
    "max_used": "max_used",
    "utilization": "utilization",
    "owed": "seats_owed",
    "last_sync": "last_sync_at",
    "renewal": "renewal_date",
    "risk": "risk_count",
}
SORT_LABELS = {
    "name": "Customer",
    "owner": "Account owner",
    "seats": "Seats",
    "billable": "Billable",
    "max_used": "Max used",
    "utilization": "Utilization",
    "owed": "Seats owed",
    "last_sync": "Last sync",
    "renewal": "Renewal",
    "risk": "Risk flags",
}

DEFINITIONS = [
    ("Seats", "Seats purchased, summed over the customer's active subscriptions."),
    (
        "Billable",
        "Each active subscription's latest daily usage rollup (billable users, summed over its "
        "instances or namespaces), summed. “No data” means no subscription has reported yet.",
    ),
    (
        "Max used",
        "Per subscription: self-managed, the highest daily maximum users in the current term; "
        "GitLab.com, the namespace's maximum seats used (what GitLab.com bills; lowered by an "
        "approved “Reset max seats”). Summed over the active subscriptions.",
    ),
    (
        "Seats owed",
        "Per subscription max(0, max used − seats), summed: spare seats on one subscription "
        "never cancel an overage on another. For GitLab.com it equals the namespace's seats owed.",
    ),
    ("Utilization", "Billable ÷ seats."),
    (
        "Trend",
        f"Daily billable users over the last {TREND_DAYS} days (gaps: no report that day); the "
        "number is the change from the first to the last day shown.",
    ),
    ("Last sync", "The latest Seat Link of any instance or refresh of any GitLab.com namespace."),
    ("Renewal", "The nearest end of term among the active subscriptions."),
    (
        "Risk flags",
        f"Over seats: seats owed > 0. Under {UNDER_USED_BELOW_PERCENT}% used: utilization below "
        f"{UNDER_USED_BELOW_PERCENT}%. Instance dark: an instance with an online cloud license "
        f"in force, not air-gapped, silent for {settings.INSTANCE_DARK_AFTER_DAYS} days or more. "
        f"Renewal ≤ {RENEWAL_RISK_DAYS} days, low use: renewal within {RENEWAL_RISK_DAYS} days "
        f"and under {UNDER_USED_BELOW_PERCENT}% used.",
    ),
]


# --- The list -----------------------------------------------------------------------------------


def _active_subscriptions_of_customer():
    """The active subscriptions of the customer row of the enclosing query."""
    return Subscription.objects.filter(
        customer_id=OuterRef("pk"), status=SubscriptionStatus.ACTIVE
    ).order_by()


def subscription_figures(queryset: QuerySet[Subscription]) -> QuerySet[Subscription]:
    """Annotate each subscription's ``latest_billable``, ``term_max_used``, ``max_used`` and
    ``seats_owed`` (module docstring); one index lookup or range per figure."""
    rollups = SubscriptionUsageDaily.objects.filter(subscription_id=OuterRef("pk"))
    latest_billable = rollups.order_by("-date").values("billable_users")[:1]
    term_max = (
        rollups.filter(date__gte=OuterRef("term_start"), date__lte=OuterRef("term_end"))
        .order_by()
        .values("subscription_id")
        .annotate(peak=Max("max_users"))
        .values("peak")
    )
    namespace_max = (
        Namespace.objects.filter(subscription_id=OuterRef("pk"))
        .order_by()
        .values("subscription_id")
        .annotate(peak=Sum("max_seats_used"))
        .values("peak")
    )
    queryset = queryset.annotate(
        latest_billable=Subquery(latest_billable, output_field=IntegerField()),
        term_max_used=Subquery(term_max, output_field=IntegerField()),
    )
    return queryset.annotate(
        max_used=Case(
            When(
                deployment=Deployment.GITLAB_COM,
                then=Coalesce(
                    Subquery(namespace_max, output_field=IntegerField()), F("term_max_used")
                ),
            ),
            default=F("term_max_used"),
            output_field=IntegerField(),
        ),
    ).annotate(
        # Max used read once: no usage yet owes 0 (SQLite's MAX(NULL, 0) is NULL, hence the
        # Coalesce; PostgreSQL's GREATEST already skips the NULL).
        seats_owed=Coalesce(
            Greatest(F("max_used") - F("seats"), Value(0)),
            Value(0),
            output_field=IntegerField(),
        ),
    )


def _per_customer(expression, aggregate=Sum, output_field=None):
    """``aggregate(expression)`` (or ``expression`` built of aggregates, with ``aggregate``
    None) over the customer's active subscriptions, as a subquery."""
    subscriptions = subscription_figures(_active_subscriptions_of_customer())
    total = expression if aggregate is None else aggregate(expression)
    return Subquery(
        subscriptions.values("customer_id").annotate(total=total).values("total"),
        output_field=output_field or IntegerField(),
    )


def _dark_instances(*, today: date, now: datetime):
    """The customer's instances gone dark (``usage.selectors.instances_gone_dark``'s rule)."""
    from usage.selectors import instance_health_annotate

    cutoff = now - timedelta(days=settings.INSTANCE_DARK_AFTER_DAYS)
    return (
        instance_health_annotate(
            Instance.objects.filter(customer_id=OuterRef("pk"), air_gapped=False), today=today
        )
        .annotate(last_heard_at=Coalesce("last_sync_at", "first_seen_at"))
        .filter(has_online_cloud_license=True, last_heard_at__lte=cutoff)
    )


def _last_instance_sync():
    return Subquery(
        Instance.objects.filter(customer_id=OuterRef("pk"))
        .order_by()
        .values("customer_id")
        .annotate(latest=Max("last_sync_at"))
        .values("latest")
    )


def _last_namespace_refresh():
    return Subquery(
        Namespace.objects.filter(
            subscription__customer_id=OuterRef("pk"),
            subscription__status=SubscriptionStatus.ACTIVE,
        )
        .order_by()
        .values("subscription__customer_id")
        .annotate(latest=Max("last_refreshed_at"))
        .values("latest")
    )


def _figure(name: str, *, today: date, now: datetime):
    """The SQL of one figure of a customer row (the ``cockpit_queryset`` aliases)."""
    under_used = Q(utilization__lt=UNDER_USED_BELOW_PERCENT)
    renewal_soon = Q(renewal_date__lte=today + timedelta(days=RENEWAL_RISK_DAYS))
    flag = {"default": False, "output_field": BooleanField()}
    builders = {
        "seats": lambda: _per_customer(F("seats")),
        "billable_users": lambda: _per_customer(F("latest_billable")),
        "max_used": lambda: _per_customer(F("max_used")),
        "seats_owed": lambda: _per_customer(F("seats_owed")),
        "renewal_date": lambda: Subquery(
            _active_subscriptions_of_customer()
            .values("customer_id")
            .annotate(nearest=Min("term_end"))
            .values("nearest")
        ),
        # One pass over the subscriptions (not billable and seats apart): the whole-scope sort
        # and the range filters evaluate it for every customer in scope.
        "utilization": lambda: _per_customer(
            Cast(Sum("latest_billable"), FloatField())
            * Value(100.0)
            / NullIf(Cast(Sum("seats"), FloatField()), Value(0.0)),
            aggregate=None,
            output_field=FloatField(),
        ),
        "instance_sync": _last_instance_sync,
        "namespace_refresh": _last_namespace_refresh,
        "instance_dark": lambda: Exists(_dark_instances(today=today, now=now)),
        # As the rows show the owner: the full name, else the login.
        "owner_name": lambda: Coalesce(
            NullIf(
                Trim(Concat("account_owner__first_name", Value(" "), "account_owner__last_name")),
                Value(""),
            ),
            "account_owner__username",
        ),
        # SQLite's MAX(a, NULL) is NULL where PostgreSQL's GREATEST skips the NULL.
        "last_sync_at": lambda: Coalesce(
            Greatest("instance_sync", "namespace_refresh"), "instance_sync", "namespace_refresh"
        ),
        "risk_over_seats": lambda: Case(When(seats_owed__gt=0, then=True), **flag),
        "risk_under_used": lambda: Case(When(under_used, then=True), **flag),
        "risk_instance_dark": lambda: F("instance_dark"),
        "risk_renewal_low_use": lambda: Case(When(renewal_soon & under_used, then=True), **flag),
        "risk_count": lambda: sum(
            (
                Case(When(**{f"risk_{risk}": True}, then=1), default=0)
                for risk in CockpitRisk.LABELS
            ),
            start=Value(0),
        ),
    }
    return builders[name]()


# The filters that evaluate a figure for every customer in scope.
FIGURE_FILTERS = ("risk", "utilization_min", "utilization_max")
# What each figure is computed from (the figures a filter or the sort names are added first).
FIGURE_DEPENDENCIES = {
    "last_sync_at": ("instance_sync", "namespace_refresh"),
    "risk_over_seats": ("seats_owed",),
    "risk_under_used": ("utilization",),
    "risk_instance_dark": ("instance_dark",),
    "risk_renewal_low_use": ("renewal_date", "utilization"),
    "risk_count": tuple(f"risk_{risk}" for risk in CockpitRisk.LABELS),
}


class CockpitQuerySet(QuerySet):
    """The cockpit's rows: customers with an active subscription. ``with_figures(name, …)``
    adds the SQL of the figures a filter or the sort names (and what they are computed from),
    as aliases: only those are built and evaluated.

    ``count_every_active_customer()`` marks an unfiltered scope (every customer with an active
    subscription), which the paginators then count from the subscriptions' (customer, status)
    index: ~25 ms instead of ~80 ms at 200,000 customers. The mark is not copied to clones, so
    a further filter counts the ordinary way."""

    _count_every_active_customer = False
    _count_with_page = False
    _today: date | None = None
    _now: datetime | None = None

    def _clone(self):
        clone = super()._clone()
        clone._today, clone._now = self._today, self._now
        return clone

    def with_figures(self, *names: str) -> CockpitQuerySet:
        queryset = self
        for name in names:
            queryset = queryset.with_figures(*FIGURE_DEPENDENCIES.get(name, ()))
            if name not in queryset.query.annotations:
                queryset = queryset.alias(
                    **{name: _figure(name, today=queryset._today, now=queryset._now)}
                )
        return queryset

    def count_every_active_customer(self) -> CockpitQuerySet:
        self._count_every_active_customer = True
        return self

    def count_with_page(self) -> CockpitQuerySet:
        """Mark rows filtered on a figure: ``CockpitPaginator`` counts them in the page query."""
        self._count_with_page = True
        return self

    def count(self) -> int:
        if self._count_every_active_customer and self._result_cache is None:
            return (
                Subscription.objects.filter(status=SubscriptionStatus.ACTIVE)
                .order_by()
                .values("customer_id")
                .distinct()
                .count()
            )
        return super().count()


class CockpitPaginator(Paginator):
    """Django's paginator; rows filtered on a figure are counted in the page's own query.

    A filter on a figure (a risk flag, a utilization range) is evaluated for every customer in
    scope, and a separate ``COUNT(*)`` would evaluate it all over again: for one owner's rows
    filtered so (``count_with_page``) the page's query carries ``COUNT(*) OVER ()``, the number
    of rows matching before the LIMIT, in the same pass (an account manager's "over seats":
    ~230 ms of SQL instead of ~400 with 90 days of rollups). Other rows count apart, which
    keeps the name index's early exit for the page. A page past the end counts, then shows the
    last page."""

    def get_page(self, number):
        rows = self.object_list
        if not getattr(rows, "_count_with_page", False):
            return super().get_page(number)
        try:
            number = max(1, int(number))
        except (TypeError, ValueError):
            number = 1
        bottom = (number - 1) * self.per_page
        found = list(
            rows.annotate(rows_matching=Window(Count("pk")))[bottom : bottom + self.per_page]
        )
        if found:
            self.__dict__["count"] = found[0].rows_matching
            return self._get_page(found, number, self)
        if number == 1:
            self.__dict__["count"] = 0
            return self._get_page([], 1, self)
        return super().get_page(self.num_pages)


def cockpit_queryset(*, today: date | None = None, now: datetime | None = None) -> CockpitQuerySet:
    """Customers with an active subscription, ordered by name. The figures the filters and the
    sort name (``seats``, ``billable_users``, ``max_used``, ``seats_owed``, ``utilization``,
    ``renewal_date``, ``last_sync_at``, ``owner_name``, ``risk_*``, ``risk_count``) are added
    as aliases on demand (``with_figures``): SQL evaluates a figure only where a filter or the
    sort names it. The rows shown get their figures from ``cockpit_rows_complete`` (the same
    definitions, computed per subscription for the page's customers only), so a deep page or a
    name sort never computes figures for the rows it skips."""
    queryset = CockpitQuerySet(model=Customer)
    queryset._now = now or timezone.now()
    queryset._today = today or timezone.localdate(queryset._now)
    return (
        queryset.select_related("account_owner")
        .filter(Exists(_active_subscriptions_of_customer()))
        .order_by("name", "pk")
    )


def _with_book_default(actor, filters) -> tuple[dict, bool]:
    """Account managers start on their own book: without an ``account_owner_id`` parameter
    (an empty one means every owner) or ``all``, the owner is the account manager. Sorting,
    paging and the other filters keep the book."""
    data = filters.copy() if filters is not None else {}
    if hasattr(data, "_mutable"):
        data._mutable = True
    widened = "account_owner_id" in data or str(data.get("all", "")).lower() in (
        "1",
        "true",
        "on",
        "yes",
    )
    if permissions.is_account_manager_only(actor) and not widened:
        data["account_owner_id"] = str(actor.pk)
        return data, True
    return data, False


@dataclass
class CockpitList:
    """The cockpit's rows (not yet evaluated), the bound FilterSet, and whether the rows are
    the account manager's book by default."""

    rows: QuerySet[Customer]
    filterset: object
    book_default: bool
    # The rows are the actor's own book (by default or chosen in the owner filter).
    own_book: bool = False

    @property
    def valid(self) -> bool:
        return self.filterset.is_valid()


def cockpit_list(*, actor, filters=None, today: date | None = None) -> CockpitList:
    """The cockpit rows for ``filters`` (a query string's parameters), in the requested order.
    Invalid parameters give no rows and the FilterSet's form errors, never a guess."""
    from provision.selectors import require_staff
    from usage.filters import CockpitFilterSet

    require_staff(actor)
    data, book_default = _with_book_default(actor, filters)
    filterset = CockpitFilterSet(data, queryset=cockpit_queryset(today=today))
    own_book = str(data.get("account_owner_id", "")) == str(actor.pk)
    if not filterset.is_valid():
        rows = Customer.objects.none()
    else:
        rows = filterset.qs
        narrowing = {
            k: v for k, v in filterset.form.cleaned_data.items() if k not in ("sort", "all")
        }
        if all(value in (None, "", []) for value in narrowing.values()):
            rows = rows.count_every_active_customer()
        elif narrowing.get("account_owner_id") and any(
            narrowing.get(name) not in (None, "") for name in FIGURE_FILTERS
        ):
            # One book (~1,000 customers): evaluate the figure filter once, for the page and
            # its count together. Across every owner the page stops at its 50th match while
            # the count goes on, so counting apart is cheaper there.
            rows = rows.count_with_page()
    return CockpitList(rows=rows, filterset=filterset, book_default=book_default, own_book=own_book)


def utilization_percent(billable: int | None, seats: int | None) -> float | None:
    """Billable / seats in percent, as the ``utilization`` alias computes it (None: no data or
    no seats)."""
    if billable is None or not seats:
        return None
    return billable * 100.0 / seats


def risk_flags(customer, *, today: date) -> list[str]:
    """The risk flags of a completed row, by the same rules as the ``risk_*`` aliases."""
    flags = []
    if (customer.seats_owed or 0) > 0:
        flags.append(CockpitRisk.OVER_SEATS)
    under_used = customer.utilization_pct is not None and (
        customer.utilization_pct < UNDER_USED_BELOW_PERCENT
    )
    if under_used:
        flags.append(CockpitRisk.UNDER_USED)
    if customer.instance_dark:
        flags.append(CockpitRisk.INSTANCE_DARK)
    renewal = customer.renewal_date
    if under_used and renewal is not None and renewal <= today + timedelta(days=RENEWAL_RISK_DAYS):
        flags.append(CockpitRisk.RENEWAL_LOW_USE)
    return flags


def _sum(values) -> int | None:
    """SQL's SUM: None when every value is None."""
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def cockpit_rows_complete(
    customers, *, today: date | None = None, now: datetime | None = None
) -> list[Customer]:
    """The figures of a page (or a CSV chunk) of customers, in three queries whatever their
    number: their active subscriptions with each one's latest billable and max used
    (``subscription_figures``), their last sync and dark instances, and the daily billable
    users of the last ``TREND_DAYS`` days. Per customer, as the aliases of
    ``cockpit_queryset`` compute them: ``seats``, ``billable_users``, ``max_used``,
    ``seats_owed``, ``utilization_pct``, ``renewal_date``, ``last_sync_at``,
    ``instance_dark``, ``plans``, ``deployments``, ``trend`` (None: no report that day),
    ``trend_change`` and the ``flags``."""
    now = now or timezone.now()
    today = today or timezone.localdate(now)
    customers = list(customers)
    ids = [c.pk for c in customers]
    if not ids:
        return customers
    subscriptions: dict[int, list] = {pk: [] for pk in ids}
    rows = (
        subscription_figures(
            Subscription.objects.filter(customer_id__in=ids, status=SubscriptionStatus.ACTIVE)
        )
        .order_by("customer_id", "plan", "pk")
        .values_list(
            "customer_id", "plan", "deployment", "seats", "term_end", "latest_billable", "max_used"
        )
    )
    for customer_id, *figures in rows:
        subscriptions[customer_id].append(figures)
    extras = {
        pk: rest
        for pk, *rest in Customer.objects.filter(pk__in=ids)
        .annotate(
            instance_sync=_last_instance_sync(),
            namespace_refresh=_last_namespace_refresh(),
            instance_dark=Exists(_dark_instances(today=today, now=now)),
        )
        .values_list("pk", "instance_sync", "namespace_refresh", "instance_dark")
    }
    start = today - timedelta(days=TREND_DAYS - 1)
    trend = {pk: [None] * TREND_DAYS for pk in ids}
    daily = (
        SubscriptionUsageDaily.objects.filter(
            subscription__customer_id__in=ids,
            subscription__status=SubscriptionStatus.ACTIVE,
            date__gte=start,
            date__lte=today,
        )
        .order_by()
        .values("subscription__customer_id", "date")
        .annotate(billable=Sum("billable_users"))
        .values_list("subscription__customer_id", "date", "billable")
    )
    for customer_id, day, billable in daily:
        trend[customer_id][(day - start).days] = billable
    for customer in customers:
        own = subscriptions[customer.pk]
        customer.plans = list(dict.fromkeys(Plan(plan).label for plan, *_ in own))
        customer.deployments = sorted({Deployment(d).label for _, d, *_ in own})
        customer.seats = _sum(seats for _, _, seats, *_ in own)
        customer.billable_users = _sum(row[4] for row in own)
        customer.max_used = _sum(row[5] for row in own)
        # Per subscription, no usage yet owing nothing (the seats_owed alias's rule).
        customer.seats_owed = _sum(
            max(0, row[5] - row[2]) if row[5] is not None else 0 for row in own
        )
        customer.renewal_date = min((row[3] for row in own), default=None)
        instance_sync, namespace_refresh, dark = extras.get(customer.pk, (None, None, False))
        customer.instance_sync, customer.namespace_refresh = instance_sync, namespace_refresh
        customer.last_sync_at = max(
            (t for t in (instance_sync, namespace_refresh) if t), default=None
        )
        customer.instance_dark = bool(dark)
        customer.trend = trend[customer.pk]
        points = [v for v in customer.trend if v is not None]
        customer.trend_change = points[-1] - points[0] if len(points) >= 2 else None
        customer.utilization_pct = utilization_percent(customer.billable_users, customer.seats)
        customer.flags = risk_flags(customer, today=today)
        customer.flag_labels = [CockpitRisk.LABELS[f] for f in customer.flags]
        customer.flag_items = [
            (flag, CockpitRisk.LABELS[flag], CockpitRisk.SHORT_LABELS[flag])
            for flag in customer.flags
        ]
    return customers


# --- CSV export ---------------------------------------------------------------------------------

CSV_HEADERS = [
    "Customer ID",
    "Customer",
    "Billing account",
    "Account owner",
    "Plans",
    "Seats",
    "Billable users",
    "Max used",
    "Utilization %",
    "Seats owed",
    f"Billable change over {TREND_DAYS} days",
    "Last sync (UTC)",
    "Renewal date",
    "Risk flags",
]


def _plain(value) -> str | int | float:
    return "" if value is None else value


def _csv_row(customer) -> list:
    owner = customer.account_owner
    last_sync = customer.last_sync_at
    return [
        customer.pk,
        customer.name,
        customer.billing_account_number,
        (owner.get_full_name() or owner.username) if owner else "",
        "; ".join(customer.plans),
        _plain(customer.seats),
        _plain(customer.billable_users),
        _plain(customer.max_used),
        "" if customer.utilization_pct is None else f"{customer.utilization_pct:.1f}",
        _plain(customer.seats_owed),
        _plain(customer.trend_change),
        last_sync.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if last_sync else "",
        customer.renewal_date.isoformat() if customer.renewal_date else "",
        "; ".join(customer.flag_labels),
    ]


def cockpit_csv_rows(rows: QuerySet[Customer], *, today: date | None = None):
    """The header, then one list per row of ``rows`` in its order, completed ``CSV_CHUNK`` at
    a time (two queries per chunk) while the rows stream from one cursor."""
    today = today or timezone.localdate()
    yield CSV_HEADERS
    chunk = []
    for customer in rows.iterator(chunk_size=CSV_CHUNK):
        chunk.append(customer)
        if len(chunk) == CSV_CHUNK:
            yield from map(_csv_row, cockpit_rows_complete(chunk, today=today))
            chunk = []
    if chunk:
        yield from map(_csv_row, cockpit_rows_complete(chunk, today=today))


# --- One customer -------------------------------------------------------------------------------


@dataclass
class Forecast:
    """When billable users reach the seats purchased, on a least-squares line."""

    status: str  # "date", "not_within_term", "already_over", "not_enough_data"
    summary: str
    run_out_on: date | None = None
    points: int = 0
    window_start: date | None = None
    window_end: date | None = None
    intercept: float | None = None
    slope: float | None = None
    at_term_end: float | None = None
    method: str = ""


@dataclass
class Quarter:
    """One quarter of a QSR term: its highest daily max users, the seats paid for, and the
    overage billed at its reconciliation date, prorated for the quarters left."""

    number: int
    start: date
    end: date  # exclusive: the reconciliation date (the term end for Q4)
    status: str  # "reconciled", "in_progress", "upcoming"
    max_used: int | None
    paid: int | None
    owed: int
    quarters_left: int
    seat_quarters: int
    paid_after: int | None
    arithmetic: str

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)


@dataclass
class Reconciliation:
    """The true-up / quarterly reconciliation preview of one subscription."""

    qsr: bool
    quarters: list[Quarter] = field(default_factory=list)
    seat_years: float = 0.0
    not_in_qsr_reason: str = ""
    term_max_used: int | None = None
    true_up: int = 0
    true_up_arithmetic: str = ""


@dataclass
class SubscriptionCockpit:
    """One active subscription on the customer's cockpit page."""

    subscription: Subscription
    chart: dict
    forecast: Forecast
    reconciliation: Reconciliation

    @property
    def chart_id(self) -> str:
        return f"cockpit-chart-{self.subscription.pk}"

    @property
    def data_id(self) -> str:
        return f"cockpit-chart-{self.subscription.pk}-data"


@dataclass
class CustomerCockpit:
    """The customer's cockpit page: its row (the same figures as the list) and one section per
    active subscription."""

    customer: Customer
    subscriptions: list[SubscriptionCockpit]


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """``(intercept, slope)`` of the least-squares line through ``(x, y)`` points."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = 0.0 if spread == 0 else sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x, slope


def seat_forecast(*, daily: dict[date, int], seats: int, term_end: date, today: date) -> Forecast:
    """The date billable users reach ``seats``: a least-squares line through the daily billable
    users of the last ``FORECAST_WINDOW_DAYS`` days (x = days since the window's first report).
    Already at or over the seats: "already over"; a flat or falling line, or a date after the
    term: "not within the term"."""
    window_start = today - timedelta(days=FORECAST_WINDOW_DAYS - 1)
    window = sorted((day, value) for day, value in daily.items() if window_start <= day <= today)
    if len(window) < FORECAST_MIN_POINTS:
        return Forecast(
            status="not_enough_data",
            summary=(
                f"Not enough data: {len(window)} day(s) of usage in the last "
                f"{FORECAST_WINDOW_DAYS} days; the forecast needs {FORECAST_MIN_POINTS}."
            ),
            points=len(window),
        )
    first_day, last_day = window[0][0], window[-1][0]
    intercept, slope = least_squares([((day - first_day).days, value) for day, value in window])
    latest = window[-1][1]
    end_x = (term_end - first_day).days
    forecast = Forecast(
        status="",
        summary="",
        points=len(window),
        window_start=first_day,
        window_end=last_day,
        intercept=intercept,
        slope=slope,
        at_term_end=intercept + slope * end_x,
        method=(
            f"Least-squares line through the {len(window)} daily billable-user counts from "
            f"{first_day:%Y-%m-%d} to {last_day:%Y-%m-%d}: billable ≈ {intercept:.1f} "
            f"{'+' if slope >= 0 else '−'} {abs(slope):.2f} × days since {first_day:%Y-%m-%d}; "
            f"the seats run out where the line reaches {seats}."
        ),
    )
    if latest >= seats:
        forecast.status = "already_over"
        forecast.summary = (
            f"Already out of seats: {latest} billable users on {last_day:%Y-%m-%d} "
            f"for {seats} seats."
        )
        return forecast
    if slope <= 0:
        forecast.status = "not_within_term"
        forecast.summary = (
            f"Not within the term: billable users are flat or falling "
            f"({slope:+.2f} a day); {seats - latest} seats are free."
        )
        return forecast
    days = math.ceil((seats - intercept) / slope)
    run_out = max(first_day + timedelta(days=days), last_day + timedelta(days=1))
    if run_out > term_end:
        forecast.status = "not_within_term"
        forecast.summary = (
            f"Not within the term: about {forecast.at_term_end:.0f} billable users expected "
            f"at the term end ({term_end:%Y-%m-%d}) for {seats} seats."
        )
        return forecast
    forecast.status = "date"
    forecast.run_out_on = run_out
    forecast.summary = (
        f"Seats run out around {run_out:%Y-%m-%d} ({(run_out - today).days} days from now) "
        f"at +{slope:.2f} billable users a day."
    )
    return forecast


def _not_in_qsr_reason(subscription: Subscription) -> str:
    """Why ``subscription_reconciliation_dates`` has none (support-workflows §4.2)."""
    from provision.choices import Channel, LicensingMethod

    if subscription.is_trial:
        return "a trial"
    if not subscription.quarterly_reconciliation:
        return "quarterly reconciliation is switched off"
    if subscription.channel == Channel.PARTNER:
        return "bought through a partner"
    if subscription.licensing_method in (LicensingMethod.OFFLINE_CLOUD, LicensingMethod.LEGACY):
        return "an offline or legacy license file"
    return "the term is not 12 months"


def reconciliation_preview(
    *, subscription: Subscription, rollups: list[tuple[date, int, int]], today: date
) -> Reconciliation:
    """Seats owed per quarter of the term (support-workflows §4.2), from the term's daily
    rollups ``(date, max_users, seats)``.

    Per quarter: max used = the highest daily max users of its days; paid = the seats paid for
    (the most seats purchased on its days, and never below the previous quarter's high-water
    mark, which became the paid count); owed = max(0, max used − paid), billed at the
    reconciliation date × the quarters left (Q1 × 3, Q2 × 2, Q3 × 1; Q4 is not charged, the
    renewal takes over). Not in QSR: the annual true-up, max(0, term max used − seats).
    """
    from usage.selectors import subscription_reconciliation_dates

    in_term = [r for r in rollups if subscription.term_start <= r[0] <= subscription.term_end]
    term_max = max((r[1] for r in in_term), default=None)
    dates = subscription_reconciliation_dates(subscription=subscription)
    if not dates:
        owed = max(0, term_max - subscription.seats) if term_max is not None else 0
        return Reconciliation(
            qsr=False,
            not_in_qsr_reason=_not_in_qsr_reason(subscription),
            term_max_used=term_max,
            true_up=owed,
            true_up_arithmetic=(
                f"max(0, {term_max} max used − {subscription.seats} seats) = {owed}"
                if term_max is not None
                else "No usage reported in this term yet."
            ),
        )
    bounds = [subscription.term_start, *dates, subscription.term_end + timedelta(days=1)]
    quarters = []
    carried = None
    for number, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False), start=1):
        days = [r for r in in_term if start <= r[0] < end]
        quarters_left = 4 - number
        status = "upcoming" if start > today else ("in_progress" if today < end else "reconciled")
        if not days:
            quarters.append(
                Quarter(number, start, end, status, None, carried, 0, quarters_left, 0, carried,
                        "No usage reported in this quarter." if status != "upcoming" else "")
            )  # fmt: skip
            continue
        max_used = max(r[1] for r in days)
        purchased = max(r[2] for r in days)
        paid = purchased if carried is None else max(carried, purchased)
        owed = max(0, max_used - paid)
        seat_quarters = owed * quarters_left
        paid_after = max(paid, max_used)
        if quarters_left:
            arithmetic = (
                f"max(0, {max_used} − {paid}) = {owed} seat{'s' if owed != 1 else ''} "
                f"× {quarters_left} quarter{'s' if quarters_left != 1 else ''} left "
                f"= {seat_quarters} seat-quarter{'s' if seat_quarters != 1 else ''}"
            )
        else:
            arithmetic = (
                f"max(0, {max_used} − {paid}) = {owed}; the fourth quarter is not charged "
                "(the renewal takes over)"
            )
        quarters.append(
            Quarter(number, start, end, status, max_used, paid, owed, quarters_left,
                    seat_quarters, paid_after, arithmetic)
        )  # fmt: skip
        carried = paid_after
    seat_quarters = sum(q.seat_quarters for q in quarters)
    return Reconciliation(
        qsr=True,
        quarters=quarters,
        seat_years=seat_quarters / 4,
        term_max_used=term_max,
    )


def _chart(
    *,
    subscription: Subscription,
    rollups: list[tuple[date, int, int, int]],
    forecast: Forecast,
    today: date,
) -> dict:
    """Chart.js data over the whole term: billable and max users per day up to today, the seats
    purchased (as rolled up each day, then the current seats ahead), and the forecast line."""
    by_day = {day: (billable, peak, seats) for day, billable, peak, seats in rollups}
    labels, billable, peak, seats, trend = [], [], [], [], []
    day = subscription.term_start
    # Before the first rollup, the seats it recorded; after today, the seats as they are now.
    current = rollups[0][3] if rollups else subscription.seats
    while day <= subscription.term_end:
        labels.append(day.isoformat())
        row = by_day.get(day)
        billable.append(row[0] if row else None)
        peak.append(row[1] if row else None)
        if row:
            current = row[2]
        seats.append(subscription.seats if day > today else current)
        if forecast.slope is not None and day >= forecast.window_start:
            x = (day - forecast.window_start).days
            trend.append(round(forecast.intercept + forecast.slope * x, 1))
        else:
            trend.append(None)
        day += timedelta(days=1)
    return {
        "labels": labels,
        "billable": billable,
        "max": peak,
        "seats": seats,
        "forecast": trend,
        "today": today.isoformat(),
        "run_out_on": forecast.run_out_on.isoformat() if forecast.run_out_on else None,
        "current_seats": subscription.seats,
    }


def cockpit_customer(*, actor, pk: int, today: date | None = None) -> CustomerCockpit:
    """The customer's cockpit page in four queries: its row (the list's figures), its active
    subscriptions with their figures, and their rollups since the earliest term start."""
    from provision.selectors import require_staff

    require_staff(actor)
    today = today or timezone.localdate()
    customer = get_object_or_404(Customer.objects.select_related("account_owner"), pk=pk)
    cockpit_rows_complete([customer], today=today)
    subscriptions = list(
        subscription_figures(
            Subscription.objects.filter(customer=customer, status=SubscriptionStatus.ACTIVE)
        ).order_by("term_end", "name")
    )
    rollups: dict[int, list] = {s.pk: [] for s in subscriptions}
    if subscriptions:
        rows = (
            SubscriptionUsageDaily.objects.filter(
                subscription_id__in=list(rollups),
                date__gte=min(s.term_start for s in subscriptions),
            )
            .order_by("date")
            .values_list("subscription_id", "date", "billable_users", "max_users", "seats")
        )
        for subscription_id, day, billable, peak, seats in rows:
            rollups[subscription_id].append((day, billable, peak, seats))
    sections = []
    for subscription in subscriptions:
        own = [r for r in rollups[subscription.pk] if r[0] >= subscription.term_start]
        forecast = seat_forecast(
            daily={day: billable for day, billable, _, _ in own},
            seats=subscription.seats,
            term_end=subscription.term_end,
            today=today,
        )
        sections.append(
            SubscriptionCockpit(
                subscription=subscription,
                chart=_chart(
                    subscription=subscription, rollups=own, forecast=forecast, today=today
                ),
                forecast=forecast,
                reconciliation=reconciliation_preview(
                    subscription=subscription,
                    rollups=[(day, peak, seats) for day, _, peak, seats in own],
                    today=today,
                ),
            )
        )
    return CustomerCockpit(customer=customer, subscriptions=sections)
