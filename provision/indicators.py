"""The performance indicators on /indicators/: three weekly rates over the last 26 weeks.

Weeks are ISO weeks (Monday 00:00 to Sunday 24:00) in ``settings.TIME_ZONE``; the last one is
the current week, still partial. Each rate is numerator / denominator for its week; a week
with no denominator has no rate (shown as "—", never 0 %). The definitions below are the ones
the page prints beside each chart and docs/indicators.md explains.

Every indicator is computed for all its weeks at once with ``GROUP BY`` week (or one
conditional column per week), a fixed handful of queries whatever the number of rows. At design
scale those queries read hundreds of thousands of subscriptions and millions of seat reports,
so each week's figures are cached and only missing weeks are computed: a week that may still
change for ``INDICATORS_CACHE_SECONDS``, a settled one (it ended more than ``SETTLED_AFTER``
ago) for ``SETTLED_CACHE_SECONDS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    FilteredRelation,
    IntegerField,
    Max,
    OuterRef,
    Q,
    When,
)
from django.db.models.functions import TruncWeek
from django.utils import timezone

from provision.choices import TRIAL_PLANS, Deployment, LicensingMethod, SubscriptionStatus

WEEKS = 26
SYNC_MIN_DAYS = 5
OFFLINE_PERIOD_DAYS = 31
# Seat Link retries a failed sync for about 17 hours and ticket exports lag: a week's figures
# may still move for two days after it ends; after that it is "settled": only a backdated
# subscription or activation changes it, so its figures are kept for a day (and up to 23
# hours more, staggered per week: see _settled_timeout).
SETTLED_AFTER = timedelta(days=2)
SETTLED_CACHE_SECONDS = 24 * 3600
CACHE_PREFIX = "provision:indicators:v1"


# --- Weeks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Week:
    """One ISO week, Monday to Sunday; ``partial`` while it is still going on."""

    start: date
    partial: bool = False

    @property
    def end(self) -> date:
        """The Sunday."""
        return self.start + timedelta(days=6)

    @property
    def iso(self) -> str:
        """``2026-W47``."""
        year, number, _ = self.start.isocalendar()
        return f"{year}-W{number:02d}"

    @property
    def label(self) -> str:
        """``16 Nov``: the Monday, as the chart's axis shows it."""
        return f"{self.start.day} {self.start:%b}"

    @property
    def span(self) -> str:
        """``16–22 Nov 2026``."""
        if self.start.month == self.end.month:
            return f"{self.start.day}–{self.end.day} {self.end:%b %Y}"
        return f"{self.start.day} {self.start:%b} – {self.end.day} {self.end:%b %Y}"


def indicator_weeks(*, today: date, count: int = WEEKS) -> list[Week]:
    """The ``count`` weeks up to and including the one ``today`` is in, oldest first."""
    monday = today - timedelta(days=today.weekday())
    return [
        Week(start=monday - timedelta(weeks=i), partial=(i == 0)) for i in range(count - 1, -1, -1)
    ]


def _local_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def _monday(value) -> date:
    # TruncWeek gives a date for a date column and an aware datetime for a datetime column
    # (a string from a raw SQLite cursor).
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        value = timezone.localtime(value).date() if timezone.is_aware(value) else value.date()
    return value


# --- Figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeekFigures:
    """One week of one indicator: the rate's two counts and the breakdown behind them."""

    numerator: int
    denominator: int
    parts: dict = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        """numerator / denominator as a percentage; ``None`` when nothing was counted."""
        if not self.denominator:
            return None
        return 100.0 * self.numerator / self.denominator

    @property
    def rate_text(self) -> str:
        """``66.7%``, or ``—`` for a week with nothing to count."""
        return "—" if self.rate is None else f"{self.rate:.1f}%"


def _paid_self_managed(prefix: str = "") -> Q:
    """Self-managed, not a trial, not cancelled (``prefix`` for a related subscription)."""
    return (
        Q(**{f"{prefix}deployment": Deployment.SELF_MANAGED})
        & ~Q(**{f"{prefix}plan__in": sorted(TRIAL_PLANS)})
        & ~Q(**{f"{prefix}status": SubscriptionStatus.CANCELLED})
    )


def cloud_licensing_adoption(*, weeks: list[Week], now: datetime) -> dict[date, WeekFigures]:
    """(a) Share of self-managed subscriptions activated in the week with a cloud license.

    A paid self-managed subscription (new or renewal; trials and cancelled ones left out) is
    *activated*, once:

    - a **new online cloud** subscription: when an instance first redeemed its activation code
      (``Activation.activated_at``, the first of any of its codes);
    - **every other** one — offline cloud, legacy, and online cloud renewals: on its term's
      first day (``term_start``). An air-gapped or legacy instance applies its file without
      telling us, and an online renewal reaches the instance through Seat Link, not a new
      activation: the term start is when their license takes effect.

    Numerator: those with a cloud license, online **or offline** (``licensing_method``), as
    GitLab counts cloud licensing. ``parts`` splits online / offline / legacy.
    Two queries: first activations by week, term starts by week.
    """
    from licenses.models import Activation
    from provision.models import Subscription

    today = timezone.localdate(now)
    first, last = weeks[0].start, min(weeks[-1].end, today)
    earlier = Activation.objects.filter(
        activation_code__subscription=OuterRef("activation_code__subscription"),
        activated_at__lt=OuterRef("activated_at"),
    )
    activations = (
        Activation.objects.filter(
            _paid_self_managed("activation_code__subscription__"),
            activation_code__subscription__licensing_method=LicensingMethod.ONLINE_CLOUD,
            activation_code__subscription__renews__isnull=True,
            activated_at__gte=_local_start(first),
            activated_at__lt=min(_local_start(weeks[-1].end + timedelta(days=1)), now),
        )
        .exclude(Exists(earlier))
        .annotate(week=TruncWeek("activated_at"))
        .values("week")
        .annotate(n=Count("activation_code__subscription", distinct=True))
        .order_by()
    )
    starts = (
        Subscription.objects.filter(
            _paid_self_managed(), term_start__gte=first, term_start__lte=last
        )
        .exclude(licensing_method=LicensingMethod.ONLINE_CLOUD, renews__isnull=True)
        .annotate(week=TruncWeek("term_start"))
        .values("week")
        .annotate(
            online=Count("id", filter=Q(licensing_method=LicensingMethod.ONLINE_CLOUD)),
            offline=Count("id", filter=Q(licensing_method=LicensingMethod.OFFLINE_CLOUD)),
            legacy=Count("id", filter=Q(licensing_method=LicensingMethod.LEGACY)),
        )
        .order_by()
    )
    counts = {w.start: {"online": 0, "offline": 0, "legacy": 0} for w in weeks}
    for row in activations:
        counts[_monday(row["week"])]["online"] += row["n"]
    for row in starts:
        for key in ("online", "offline", "legacy"):
            counts[_monday(row["week"])][key] += row[key]
    return {
        monday: WeekFigures(
            numerator=c["online"] + c["offline"],
            denominator=c["online"] + c["offline"] + c["legacy"],
            parts=c,
        )
        for monday, c in counts.items()
    }


def sync_days_required(week: Week, today: date) -> int:
    """Days with usage a customer needs in ``week``: 5 of 7, and for the week still going on
    the same share of the days so far (today included), rounded up."""
    if not week.partial:
        return SYNC_MIN_DAYS
    elapsed = min(7, (today - week.start).days + 1)
    return max(1, math.ceil(SYNC_MIN_DAYS * elapsed / 7))


def seat_sync_rate(*, weeks: list[Week], now: datetime) -> dict[date, WeekFigures]:
    """(b) Share of cloud-licensed customers whose usage arrived on at least 5 of the 7 days.

    Denominator: customers with a paid self-managed cloud subscription (online or offline;
    not a trial, not cancelled) in force on at least one day of the week
    (``term_start ≤ day < term_end``). A customer with an online one in force that week is an
    **online** customer, else an **offline** one.

    - Online: Seat Link reports (``SeatReport`` with source ``seat_link``, any instance, for
      the customer's online cloud subscriptions in force on the report's day) on at least 5
      distinct ``report_date`` days of the week.
    - Offline: an imported usage file (``UsageFileImport``, status imported) for any of the
      customer's cloud subscriptions, uploaded in the 31 days up to the week's end — offline
      customers send one a month.

    For the current week the 5 days scale to the days so far (``sync_days_required``).
    Three queries: customers in force per week (``COUNT(DISTINCT)`` per week); for the
    customers with an offline subscription only, whether each week they were offline and had
    a file (one conditional column per week); one ``GROUP BY`` customer and week over the
    seat reports.
    """
    from provision.models import Subscription
    from usage.choices import SeatReportSource, UsageFileImportStatus
    from usage.models import SeatReport

    today = timezone.localdate(now)
    first, last = weeks[0].start, min(weeks[-1].end, today)
    cloud = (LicensingMethod.ONLINE_CLOUD, LicensingMethod.OFFLINE_CLOUD)
    period = timedelta(days=OFFLINE_PERIOD_DAYS)
    # Only the files that can fall in some week's period are joined (MAX ignores repeats).
    files = FilteredRelation(
        "usage_file_imports",
        condition=Q(
            usage_file_imports__status=UsageFileImportStatus.IMPORTED,
            usage_file_imports__uploaded_at__gt=_local_start(first) - period,
            usage_file_imports__uploaded_at__lte=now,
        ),
    )
    in_window = Subscription.objects.filter(
        _paid_self_managed(), licensing_method__in=cloud, term_start__lte=last, term_end__gt=first
    )
    offline_customers = in_window.filter(licensing_method=LicensingMethod.OFFLINE_CLOUD)
    counts, columns, totals = {}, {}, {}
    for i, week in enumerate(weeks):
        in_force = Q(term_start__lte=min(week.end, today), term_end__gt=week.start)
        online = in_force & Q(licensing_method=LicensingMethod.ONLINE_CLOUD)
        counts[f"on{i}"] = Count("customer_id", distinct=True, filter=online)
        counts[f"any{i}"] = Count("customer_id", distinct=True, filter=in_force)
        # Per customer with an offline subscription: in force, online, a file in the period.
        period_end = min(_local_start(week.end + timedelta(days=1)), now)
        file_in_period = Q(
            period_files__uploaded_at__gt=period_end - period,
            period_files__uploaded_at__lte=period_end,
        )
        for name, condition in (("on", online), ("any", in_force), ("file", file_in_period)):
            columns[f"{name}{i}"] = Max(
                Case(When(condition, then=1), default=0, output_field=IntegerField())
            )
        on, any_, file = (connection.ops.quote_name(f"{c}{i}") for c in ("on", "any", "file"))
        # Offline this week (in force, none online) with a file in the period: (any - on) * file.
        totals[f"offok{i}"] = f"SUM(({any_} - {on}) * {file})"
    customers = in_window.aggregate(**counts)
    per_customer = (
        in_window.filter(customer_id__in=offline_customers.values("customer_id"))
        .annotate(period_files=files)
        .values("customer_id")
        .annotate(**columns)
        .order_by()
    )
    # Summing the per-customer flags is a second aggregation over the first, which the ORM
    # refuses ("is an aggregate"): the ORM's SQL is wrapped, its parameters kept apart.
    sql, params = per_customer.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(totals.values())} FROM ({sql}) t", params)  # noqa: S608
        customers.update(zip(totals, cursor.fetchone(), strict=True))

    reports = (
        SeatReport.objects.filter(
            _paid_self_managed("subscription__"),
            source=SeatReportSource.SEAT_LINK,
            report_date__gte=first,
            report_date__lte=last,
            subscription__licensing_method=LicensingMethod.ONLINE_CLOUD,
            subscription__term_start__lte=F("report_date"),
            subscription__term_end__gt=F("report_date"),
            # Redundant for Seat Link (a day's report is sent on that day, or retried later),
            # with two days' margin for instance clocks ahead of UTC; it lets the received_at
            # index serve the usual computation, the last week or two of a large table.
            received_at__gte=_local_start(first) - timedelta(days=2),
        )
        .values("subscription__customer_id", week=TruncWeek("report_date"))
        .annotate(days=Count("report_date", distinct=True))
        .order_by()
    )
    sql, params = reports.query.sql_with_params()
    # Again two levels: (customer, week) groups, then how many groups per week and day count.
    w, d = connection.ops.quote_name("week"), connection.ops.quote_name("days")
    histogram_sql = f"SELECT {w}, {d}, COUNT(*) FROM ({sql}) t GROUP BY 1, 2"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(histogram_sql, params)
        histogram = cursor.fetchall()
    synced = {w.start: 0 for w in weeks}
    required = {w.start: sync_days_required(w, today) for w in weeks}
    for week_value, days, n in histogram:
        monday = _monday(week_value)
        if monday in synced and days >= required[monday]:
            synced[monday] += n

    figures = {}
    for i, week in enumerate(weeks):
        online = customers[f"on{i}"] or 0
        offline = (customers[f"any{i}"] or 0) - online
        online_ok = synced[week.start]
        offline_ok = customers[f"offok{i}"] or 0
        figures[week.start] = WeekFigures(
            numerator=online_ok + offline_ok,
            denominator=online + offline,
            parts={
                "online": online,
                "online_synced": online_ok,
                "offline": offline,
                "offline_synced": offline_ok,
                "days_required": required[week.start],
            },
        )
    return figures


def provisioning_ticket_share(*, weeks: list[Week], now: datetime) -> dict[date, WeekFigures]:
    """(c) Share of the week's License & Renewals tickets that are provisioning-related.

    Denominator: imported support tickets created in the week (every imported ticket is an
    L&R ticket: import the L&R form's export). Numerator: those the rule in
    ``PROVISIONING_TICKET_RULE`` marks provisioning-related, as stored when they were
    imported or last classified. One query.
    """
    from provision.models import SupportTicket

    rows = (
        SupportTicket.objects.filter(
            created_at__gte=_local_start(weeks[0].start),
            created_at__lt=_local_start(weeks[-1].end + timedelta(days=1)),
        )
        .annotate(week=TruncWeek("created_at"))
        .values("week")
        .annotate(total=Count("id"), provisioning=Count("id", filter=Q(is_provisioning=True)))
        .order_by()
    )
    counts = {w.start: (0, 0) for w in weeks}
    for row in rows:
        counts[_monday(row["week"])] = (row["provisioning"], row["total"])
    return {
        monday: WeekFigures(
            numerator=provisioning,
            denominator=total,
            parts={"provisioning": provisioning, "tickets": total},
        )
        for monday, (provisioning, total) in counts.items()
    }


# --- The dashboard -------------------------------------------------------------------------


@dataclass(frozen=True)
class IndicatorDefinition:
    """What an indicator measures, in the words the page and the CSV use."""

    key: str
    title: str
    question: str
    numerator: str
    denominator: str
    notes: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (parts key, column label) for the table and CSV
    unit: str  # what the denominator counts, for the chart's count axis
    numerator_label: str
    denominator_label: str
    compute: object


DEFINITIONS = (
    IndicatorDefinition(
        key="cloud_adoption",
        title="Cloud Licensing adoption rate",
        question=(
            "Of the self-managed subscriptions activated this week, new or renewal, how many "
            "use a cloud license?"
        ),
        numerator="Activated subscriptions with a cloud license: online or offline cloud.",
        denominator="Paid self-managed subscriptions activated in the week (no trials).",
        notes=(
            "A new online cloud subscription is activated when an instance first redeems its "
            "activation code.",
            "Offline cloud, legacy and online renewals count in the week their term starts: "
            "their license takes effect then, without an activation we can see.",
        ),
        columns=(("online", "Online cloud"), ("offline", "Offline cloud"), ("legacy", "Legacy")),
        unit="subscriptions activated",
        numerator_label="Cloud",
        denominator_label="Activated",
        compute=cloud_licensing_adoption,
    ),
    IndicatorDefinition(
        key="seat_sync",
        title="Seat-utilization sync rate",
        question=(
            "Of the customers on cloud licensing, how many sent us their seat usage this week?"
        ),
        numerator=(
            "Online customers with Seat Link usage on at least 5 of the 7 days, plus offline "
            "customers with a usage file imported in the 31 days up to the week's end."
        ),
        denominator=(
            "Customers with a paid self-managed cloud subscription in force during the week."
        ),
        notes=(
            "A customer with any online cloud subscription in force is an online customer; "
            "usage from any of its instances counts.",
            "The current week needs the same share of the days so far (5 of 7, rounded up).",
        ),
        columns=(
            ("online_synced", "Online synced"),
            ("online", "Online customers"),
            ("offline_synced", "Offline with a file"),
            ("offline", "Offline customers"),
        ),
        unit="cloud customers",
        numerator_label="Synced",
        denominator_label="Customers",
        compute=seat_sync_rate,
    ),
    IndicatorDefinition(
        key="provisioning_tickets",
        title="Provisioning share of L&R tickets",
        question=(
            "Of the License & Renewals support tickets opened this week, how many are about "
            "provisioning?"
        ),
        numerator=(
            "Tickets the classification rule marks provisioning-related (creating, changing, "
            "delivering or repairing an entitlement)."
        ),
        denominator="L&R tickets created in the week, from the imported help-desk export.",
        notes=(
            "Rule, in order: an excluded category → no; any listed tag → yes; a listed "
            "category (or its parent) → yes; a key word in the subject → yes; else no.",
            "Tickets reach Provision through manage.py tickets_import; weeks after the last "
            "import are incomplete.",
        ),
        columns=(),
        unit="tickets",
        numerator_label="Provisioning",
        denominator_label="Tickets",
        compute=provisioning_ticket_share,
    ),
)


@dataclass(frozen=True)
class WeekRow:
    """One week of one indicator as the page shows it."""

    week: Week
    figures: WeekFigures


@dataclass
class IndicatorSeries:
    """One indicator's definition and its weeks, oldest first."""

    definition: IndicatorDefinition
    rows: list[WeekRow]

    @property
    def latest(self) -> WeekRow | None:
        """The most recent complete week."""
        complete = [row for row in self.rows if not row.week.partial]
        return complete[-1] if complete else None

    @property
    def overall(self) -> WeekFigures:
        """All complete weeks together: the sums of their numerators and denominators."""
        complete = [row.figures for row in self.rows if not row.week.partial]
        return WeekFigures(
            numerator=sum(f.numerator for f in complete),
            denominator=sum(f.denominator for f in complete),
        )

    @property
    def change(self) -> float | None:
        """Percentage points between the latest complete week and the one before."""
        complete = [row for row in self.rows if not row.week.partial]
        if len(complete) < 2:
            return None
        now, before = complete[-1].figures.rate, complete[-2].figures.rate
        if now is None or before is None:
            return None
        return now - before

    @property
    def change_text(self) -> str:
        """``+4.2 pts`` / ``−1.0 pts`` / ``no change``; empty when there is nothing to compare."""
        change = self.change
        if change is None:
            return ""
        if round(change, 1) == 0:
            return "no change"
        return f"{'+' if change > 0 else '−'}{abs(change):.1f} pts"

    def table(self) -> list[tuple[WeekRow, list[int]]]:
        """The rows of the table under the chart, newest first, with the breakdown columns."""
        keys = [key for key, _ in self.definition.columns]
        return [(row, [row.figures.parts.get(k, 0) for k in keys]) for row in reversed(self.rows)]

    def chart_data(self) -> dict:
        """What indicators.js draws: labels, rates (``None`` = no data) and the counts."""
        return {
            "key": self.definition.key,
            "title": self.definition.title,
            "unit": self.definition.unit,
            "labels": [row.week.label for row in self.rows],
            "weeks": [row.week.iso for row in self.rows],
            "rates": [
                None if row.figures.rate is None else round(row.figures.rate, 1)
                for row in self.rows
            ],
            "numerators": [row.figures.numerator for row in self.rows],
            "denominators": [row.figures.denominator for row in self.rows],
            "partial": [row.week.partial for row in self.rows],
        }


@dataclass
class Dashboard:
    """The three indicators, the weeks they cover, and when their figures were computed."""

    weeks: list[Week]
    series: list[IndicatorSeries]
    computed_at: datetime
    ticket_rule: object
    last_ticket_import: object | None
    tickets_stale: int
    tickets_total: int
    cache_seconds: int = 0

    @property
    def period(self) -> str:
        """``1 Jun – 29 Nov 2026``: the first Monday to the last Sunday."""
        first, last = self.weeks[0].start, self.weeks[-1].end
        return f"{first.day} {first:%b %Y} – {last.day} {last:%b %Y}"

    @property
    def freshness(self) -> str:
        """How old the figures may be, in words, for the page's footnote."""
        if not self.cache_seconds:
            return "Figures are computed on every request."
        recent = _duration(self.cache_seconds)
        settled = _duration(max(self.cache_seconds, SETTLED_CACHE_SECONDS))
        return (
            f"A week's figures are reused for {recent} while it may still change, and for "
            f"{settled} once it ended more than two days ago."
        )


def _duration(seconds: int) -> str:
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


def _version(definition: IndicatorDefinition, *, rule_version: str, last_import_id) -> str:
    if definition.key == "provisioning_tickets":
        # A new import or a changed rule changes every week's ticket figures.
        return f"{rule_version}-{last_import_id or 0}"
    return "0"


def _cache_key(definition, version: str, week: Week, today: date) -> str:
    # The current week's figures depend on the day (its threshold, its days so far).
    when = f"open-{today.isoformat()}" if week.partial else "full"
    return f"{CACHE_PREFIX}:{definition.key}:{version}:{week.start.isoformat()}:{when}"


def _missing_runs(weeks: list[Week], missing: set[date]) -> list[list[Week]]:
    """The missing weeks as runs of consecutive weeks: each run is computed in one go."""
    runs: list[list[Week]] = []
    for week in weeks:
        if week.start not in missing:
            continue
        if runs and runs[-1][-1].start + timedelta(weeks=1) == week.start:
            runs[-1].append(week)
        else:
            runs.append([week])
    return runs


def _settled_timeout(week: Week, seconds: int) -> int:
    # Settled weeks computed together would all expire together, and one unlucky request a
    # day would recompute every week of Seat Link reports. Each keeps its figures for another
    # hour of the day, so they expire one at a time and a recomputation is one week's worth.
    stagger = (week.start.toordinal() // 7) % 24 * 3600
    return max(seconds, SETTLED_CACHE_SECONDS) + stagger


def _figures(
    definition, weeks: list[Week], *, now: datetime, version: str
) -> tuple[dict, datetime]:
    """The definition's figures for ``weeks``: cached ones reused, the missing ones computed
    (one computation per run of consecutive missing weeks) and cached. Returns them and when
    the oldest was computed."""
    seconds = settings.INDICATORS_CACHE_SECONDS
    today = timezone.localdate(now)
    keys = {week.start: _cache_key(definition, version, week, today) for week in weeks}
    found = cache.get_many(list(keys.values())) if seconds else {}
    figures, oldest = {}, now
    for week in weeks:
        hit = found.get(keys[week.start])
        if hit is not None:
            numerator, denominator, parts, computed_at = hit
            figures[week.start] = WeekFigures(numerator, denominator, parts)
            oldest = min(oldest, computed_at)
    for run in _missing_runs(weeks, set(keys) - set(figures)):
        computed = definition.compute(weeks=run, now=now)
        for week in run:
            value = figures[week.start] = computed[week.start]
            if not seconds:
                continue
            entry = (value.numerator, value.denominator, value.parts, now)
            if week.end + SETTLED_AFTER < today:
                cache.set(keys[week.start], entry, _settled_timeout(week, seconds))
            else:
                cache.set(keys[week.start], entry, seconds)
    return figures, oldest


def indicator_dashboard(*, now: datetime | None = None) -> Dashboard:
    """All three indicators over the last ``WEEKS`` weeks, for the page and its CSV.

    A bounded number of queries: the last ticket import and the tickets classified under
    another rule (2, and a third to count all tickets when there are such), then per indicator
    and run of consecutive weeks missing from the cache, 2, 3 and 1 — usually one run: the
    open weeks, or all 26 when the cache is empty or off.
    """
    from provision.models import SupportTicket, SupportTicketImport
    from provision.tickets import ticket_rule

    now = now or timezone.now()
    weeks = indicator_weeks(today=timezone.localdate(now))
    rule = ticket_rule()
    last_import = SupportTicketImport.objects.select_related("actor").first()
    # "<" or ">" rather than "<>": both are ranges on the rule_version index, so the check
    # stays cheap however many tickets are stored (all of them, usually, under this rule).
    stale = SupportTicket.objects.filter(
        Q(rule_version__lt=rule.version) | Q(rule_version__gt=rule.version)
    ).count()
    total = SupportTicket.objects.count() if stale else 0
    series, oldest = [], now
    for definition in DEFINITIONS:
        version = _version(
            definition,
            rule_version=rule.version,
            last_import_id=last_import.pk if last_import else None,
        )
        figures, computed_at = _figures(definition, weeks, now=now, version=version)
        oldest = min(oldest, computed_at)
        rows = [WeekRow(week=w, figures=figures[w.start]) for w in weeks]
        series.append(IndicatorSeries(definition=definition, rows=rows))
    return Dashboard(
        weeks=weeks,
        series=series,
        computed_at=oldest,
        ticket_rule=rule,
        last_ticket_import=last_import,
        tickets_stale=stale,
        tickets_total=total,
        cache_seconds=settings.INDICATORS_CACHE_SECONDS,
    )


def dashboard_csv_rows(dashboard: Dashboard):
    """The numbers behind the charts, one row per indicator and week (the CSV download)."""
    yield [
        "indicator",
        "week",
        "week_start",
        "week_end",
        "partial",
        "numerator",
        "denominator",
        "rate_percent",
        "breakdown",
    ]
    for series in dashboard.series:
        for row in series.rows:
            figures = row.figures
            labels = dict(series.definition.columns)
            breakdown = "; ".join(f"{labels[key]}={figures.parts.get(key, 0)}" for key in labels)
            yield [
                series.definition.key,
                row.week.iso,
                row.week.start.isoformat(),
                row.week.end.isoformat(),
                "yes" if row.week.partial else "no",
                figures.numerator,
                figures.denominator,
                "" if figures.rate is None else f"{figures.rate:.1f}",
                breakdown,
            ]
