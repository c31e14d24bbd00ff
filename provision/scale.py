"""Synthetic data at the sizes of design.md §5, for benchmarks (``manage.py seed_scale``).

Proportions. Customers come in blocks of four (``k = customer index % 4``):

==  ======================================================  =========  ==============
k   subscriptions                                           instances  namespaces
==  ======================================================  =========  ==============
0   self-managed online, multi-year (+ Duo Pro add-on);     1          2 (1 linked,
    GitLab.com (+ compute minutes unless a trial)                      1 unlinked)
1   self-managed, expired, and its renewal (online; every   1          1 (unlinked)
    fifth offline, air-gapped)
2   GitLab.com (every tenth a trial, some not started)      0          1 (linked)
3   self-managed legacy license (some expired)              0          1 (unlinked)
==  ======================================================  =========  ==============

So for N customers (N a multiple of 4): N contacts (the sold-to), 3N/2 subscriptions (two
thirds self-managed), 3N/2 seat-ledger entries and provisioning records, 13N/2 provisioning
steps, N/2 instances, 5N/4 namespaces (N/2 linked to a subscription; the rest are customers'
other top-level groups), and with ``days`` > 0: N/2 × days seat reports (every instance reports
every day) and as many daily rollups. 200,000 customers → 300,000 subscriptions, 100,000
instances, 250,000 namespaces and, over 365 days, 36.5 million seat reports. ``expected_counts``
computes the exact figures for any N.

Why not the services: this is bulk synthetic data for benchmarks. It is written with raw bulk
inserts (COPY on PostgreSQL, ``bulk_create`` on SQLite), and the run writes **one** summary audit
event (``provision.scale_data_seeded``) in the same transaction: an audit event per synthetic
row would record nothing anybody did and would itself distort the benchmarks. Not created:
licenses, activation codes and per-row audit events (issue licenses for a sample through
``licenses.services.license_issue`` when a benchmark needs them).

Seat reports are generated day by day (the order they arrive in production, so the heap is laid
out as it would be), with ``raw_payload`` left empty so the table stays at its design size. On
PostgreSQL the seat-report and rollup tables' secondary indexes and foreign keys are dropped for
the load and recreated from their own definitions afterwards, all inside the one transaction: a
failed run rolls back to exactly the indexes it started with.

Re-running adds more: customer numbering continues after the last scale customer (billing
accounts A5xxxxxxx; the demo uses A0001xxxx), so every identifier stays unique.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.db import connection, models, transaction
from django.db.models import Max
from django.utils import timezone

from provision.audit import audit_record
from provision.choices import (
    GITLAB_COM_STEPS,
    SELF_MANAGED_STEPS,
    AddOnKind,
    Channel,
    ContactRole,
    Deployment,
    LicensingMethod,
    OrderKind,
    PartnerKind,
    Plan,
    ProvisioningStepKind,
    Role,
    StepState,
    SubscriptionStatus,
)
from provision.models import (
    Contact,
    Customer,
    Partner,
    ProvisioningRecord,
    ProvisioningStep,
    SeatLedgerEntry,
    Subscription,
    SubscriptionAddOn,
)
from usage.choices import SeatReportSource
from usage.models import Instance, Namespace, SeatReport, SubscriptionUsageDaily

FIRST_CUSTOMER_NUMBER = 50_000_000  # billing accounts A50000000…
SUBSCRIPTION_NUMBER_BASE = 50_000_000  # subscriptions A-S5…: two numbers per customer
NAMESPACE_ID_BASE = 500_000_000  # GitLab namespace ids: two per customer
SCALE_ACCOUNT_MANAGERS = 200  # owners of the books: ~1,000 customers each at 200,000
SCALE_PARTNERS = 20
SUBSCRIPTIONS_PER_K = (2, 2, 1, 1)
INSTANCES_PER_K = (1, 1, 0, 0)
NAMESPACES_PER_K = (2, 1, 1, 1)
STEPS_PER_K = (
    len(SELF_MANAGED_STEPS) + len(GITLAB_COM_STEPS),
    2 * len(SELF_MANAGED_STEPS),
    len(GITLAB_COM_STEPS),
    len(SELF_MANAGED_STEPS),
)
# Every 97th customer's newest order is stuck (its open steps overdue): a realistic queue.
STUCK_EVERY = 97
SEEDED_MODELS = (
    Customer, Contact, Subscription, SubscriptionAddOn, SeatLedgerEntry, ProvisioningRecord,
    ProvisioningStep, Instance, Namespace, SeatReport, SubscriptionUsageDaily,
)  # fmt: skip

WORDS = (
    "Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Acme", "Hooli",
    "Vandelay", "Soylent", "Tyrell", "Cyberdyne", "Aperture", "Gringotts", "Monarch", "Oscorp",
    "Wonka", "Pied Piper", "Dunder", "Massive", "Blue Sun", "Nakatomi", "Virtucon", "Zorin",
    "Abstergo", "Ingen", "Weyland", "Yutani", "Omni", "Rekall", "Genco", "Sirius", "Polaris",
    "Helios", "Aurora", "Cobalt", "Granite", "Juniper", "Kestrel", "Lumen", "Meridian", "Nimbus",
    "Orion", "Pioneer", "Quantum", "Redwood", "Summit", "Trident", "Vertex", "Willow", "Zenith",
    "Alder", "Beacon", "Cedar", "Delta", "Ember", "Falcon", "Harbor", "Ivory",
)  # fmt: skip
INDUSTRIES = (
    "Robotics", "Analytics", "Logistics", "Financial", "Health", "Software", "Energy",
    "Aerospace", "Biotech", "Media", "Telecom", "Insurance", "Automotive", "Semiconductors",
    "Retail", "Payments", "Mobility", "Security", "Games", "Labs", "Systems", "Networks",
    "Foods", "Pharma", "Capital", "Cloud", "Data", "Devices", "Motors", "Materials",
    "Airlines", "Shipping", "Banking", "Mining", "Chemicals", "Studios", "Foundry", "Works",
    "Group", "Holdings",
)  # fmt: skip
LEGAL_FORMS = ("Inc.", "LLC", "Ltd", "GmbH", "AG", "SA", "B.V.", "AB", "plc", "Corp.")
COUNTRIES = ("US", "US", "US", "GB", "DE", "FR", "NL", "CA", "SE", "JP", "AU", "IN")
FIRST_NAMES = (
    "Ava", "Ben", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kara",
    "Liam", "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor",
    "Wen", "Yara", "Zoe",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Müller", "Garcia", "Rossi", "Dubois", "Jansen", "Nilsson", "Tanaka", "Kowalski",
    "Novak", "Silva", "Murphy", "Schmidt", "Khan", "Lee", "Martin", "Brown", "Wilson", "Taylor",
    "Anders", "Becker", "Costa", "Dias", "Evans",
)  # fmt: skip
SEAT_SIZES = (10, 15, 20, 25, 25, 30, 40, 50, 50, 75, 100, 100, 150, 200, 250, 300, 500, 750,
              1000, 2500)  # fmt: skip
VERSIONS = ("16.11.10-ee", "17.5.5-ee", "17.8.7-ee", "17.11.4-ee", "18.0.2-ee", "18.1.1-ee",
            "18.2.1-ee")  # fmt: skip
# Small deterministic day-to-day wobble in billable users.
NOISE = tuple(((i * 2_654_435_761) >> 7) % 5 - 2 for i in range(256))


def _mix(value: int) -> int:
    """A cheap deterministic spread of an index over 32 bits (Knuth's multiplicative hash)."""
    return (value * 2_654_435_761) & 0xFFFF_FFFF


def expected_counts(*, first: int, customers: int, days: int, rollups: bool = True) -> dict:
    """Exact row counts a run over customer indexes [first, first + customers) adds."""
    ks = [(first + i) % 4 for i in range(customers)]
    instances = sum(INSTANCES_PER_K[k] for k in ks)
    subscriptions = sum(SUBSCRIPTIONS_PER_K[k] for k in ks)
    return {
        "customers": customers,
        "contacts": customers,
        "subscriptions": subscriptions,
        "seat ledger entries": subscriptions,
        "provisioning records": subscriptions,
        "provisioning steps": sum(STEPS_PER_K[k] for k in ks),
        "instances": instances,
        "namespaces": sum(NAMESPACES_PER_K[k] for k in ks),
        "seat reports": instances * days,
        "daily rollups": instances * days if rollups else 0,
    }


@dataclass
class TableResult:
    label: str
    rows: int
    seconds: float
    index_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class ScaleResult:
    first_customer: int
    tables: list[TableResult] = field(default_factory=list)
    seconds: float = 0.0
    vacuum_seconds: float = 0.0
    database_bytes: int | None = None
    method: str = ""

    def counts(self) -> dict[str, int]:
        return {table.label: table.rows for table in self.tables}


# --- Writers: COPY on PostgreSQL, bulk_create elsewhere ----------------------------------------


def _columns(model, names: Iterable[str]) -> list[models.Field]:
    return [model._meta.get_field(name) for name in names]


class Writer:
    """Streams rows (tuples of Python values in ``columns`` order) into one table."""

    method = ""

    def __init__(self, *, batch: int):
        self.batch = batch

    def write(self, model, columns: list[str], rows: Iterable[tuple]) -> int:
        raise NotImplementedError

    def write_lines(self, model, columns, lines: Iterable[tuple], formatter) -> int:
        """Fast path for the big tables; the default just writes the rows."""
        return self.write(model, columns, lines)


class BulkCreateWriter(Writer):
    method = "bulk_create"

    def write(self, model, columns, rows) -> int:
        fields = _columns(model, columns)
        attnames = [f.attname for f in fields]
        count, pending = 0, []
        for row in rows:
            pending.append(model(**dict(zip(attnames, row, strict=True))))
            if len(pending) >= self.batch:
                model.objects.bulk_create(pending)
                count += len(pending)
                pending = []
        if pending:
            model.objects.bulk_create(pending)
            count += len(pending)
        return count


class CopyWriter(Writer):
    """PostgreSQL ``COPY … FROM STDIN`` through psycopg 3."""

    method = "COPY"

    def _copy_sql(self, model, columns) -> str:
        quote = connection.ops.quote_name
        cols = ", ".join(quote(f.column) for f in _columns(model, columns))
        return f"COPY {quote(model._meta.db_table)} ({cols}) FROM STDIN"

    def write(self, model, columns, rows) -> int:
        fields = _columns(model, columns)
        json_positions = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
        count = 0
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(self._copy_sql(model, columns)) as copy,
        ):
            for row in rows:
                if json_positions:
                    row = list(row)
                    for i in json_positions:
                        row[i] = json.dumps(row[i])
                copy.write_row(row)
                count += 1
        return count

    def write_lines(self, model, columns, lines, formatter) -> int:
        """Rows pre-formatted as COPY text by ``formatter``, sent in large chunks."""
        count, chunk = 0, []
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(self._copy_sql(model, columns)) as copy,
        ):
            for row in lines:
                chunk.append(formatter(row))
                if len(chunk) >= self.batch:
                    copy.write("".join(chunk))
                    count += len(chunk)
                    chunk = []
            if chunk:
                copy.write("".join(chunk))
                count += len(chunk)
        return count


# --- PostgreSQL: indexes and sequences --------------------------------------------------------


@dataclass
class DroppedIndexes:
    table: str
    constraints: list[tuple[str, str]]  # (name, definition) for ALTER TABLE … ADD CONSTRAINT
    indexes: list[str]  # CREATE INDEX statements


def pg_drop_secondary_indexes(model) -> DroppedIndexes:
    """Drop a table's foreign keys, unique constraints and non-primary indexes, remembering
    their exact definitions (names included) so that they can be recreated as they were."""
    table = model._meta.db_table
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('f', 'u') ORDER BY contype DESC",
            [table],
        )
        constraints = [(name, definition) for name, definition, _ in cursor.fetchall()]
        cursor.execute(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND i.indexrelid NOT IN "
            "(SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass)",
            [table, table],
        )
        indexes = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}")
        for name, _ in indexes:
            cursor.execute(f"DROP INDEX {name}")
    return DroppedIndexes(
        table=table, constraints=constraints, indexes=[statement for _, statement in indexes]
    )


def pg_recreate_indexes(dropped: DroppedIndexes) -> None:
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for statement in dropped.indexes:
            cursor.execute(statement)
        # Unique constraints before foreign keys (constraints were read foreign keys last).
        for name, definition in sorted(dropped.constraints, key=lambda c: "FOREIGN" in c[1]):
            cursor.execute(
                f"ALTER TABLE {quote(dropped.table)} ADD CONSTRAINT {quote(name)} {definition}"
            )


def _reserve_ids(model, count: int) -> int:
    """The first of ``count`` consecutive ids nobody else will be given."""
    table = model._meta.db_table
    last_used = model.objects.aggregate(last=Max("pk"))["last"] or 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT COALESCE(last_value, 0) FROM pg_sequences "
                "WHERE schemaname || '.' || sequencename = pg_get_serial_sequence(%s, 'id')",
                [table],
            )
            last_used = max(last_used, cursor.fetchone()[0])
            # Move the identity sequence past the range now, so that concurrent inserts (and
            # later ones) never collide with the ids written here.
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", [table, last_used + count]
            )
    return last_used + 1


# --- The seeder -------------------------------------------------------------------------------


@dataclass
class _Sub:
    id: int
    customer_id: int
    index: int  # customer index
    name: str
    deployment: str
    plan: str
    term_start: date
    term_end: date
    seats: int
    method: str
    renews_id: int | None
    partner_id: int | None
    status: str
    stuck: bool = False


class ScaleSeeder:
    def __init__(
        self,
        *,
        customers: int,
        days: int = 365,
        batch: int = 5000,
        rollups: bool = True,
        reason: str,
        progress: Callable[[str], None] = lambda message: None,
        today: date | None = None,
    ):
        if customers <= 0:
            raise ValueError("customers must be positive")
        if days < 0:
            raise ValueError("days cannot be negative")
        self.count = customers
        self.days = days
        self.rollups = rollups
        self.reason = reason
        self.progress = progress
        self.today = today or timezone.localdate()
        self.now = timezone.now()
        self.postgres = connection.vendor == "postgresql"
        self.writer = CopyWriter(batch=batch) if self.postgres else BulkCreateWriter(batch=batch)

    # -- Orchestration ---------------------------------------------------------------------------

    def run(self) -> ScaleResult:
        started = time.monotonic()
        self.first = self._next_customer_index()
        result = ScaleResult(first_customer=self.first, method=self.writer.method)
        outer = connection.in_atomic_block
        with transaction.atomic():
            if self.postgres:
                with connection.cursor() as cursor:
                    # Index builds at the end of the load sort tens of millions of rows.
                    cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
                    # Check foreign keys statement by statement rather than queueing millions
                    # of deferred checks until commit.
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            self._prepare()
            steps = (
                ("customers", Customer, self._customer_rows),
                ("contacts", Contact, self._contact_rows),
                ("subscriptions", Subscription, self._subscription_rows),
                ("subscription add-ons", SubscriptionAddOn, self._add_on_rows),
                ("seat ledger entries", SeatLedgerEntry, self._ledger_rows),
                ("provisioning records", ProvisioningRecord, self._record_rows),
                ("provisioning steps", ProvisioningStep, self._step_rows),
                ("instances", Instance, self._instance_rows),
                ("namespaces", Namespace, self._namespace_rows),
            )
            for label, model, rows in steps:
                result.tables.append(self._load(label, model, *rows()))
            if self.days:
                result.tables.append(self._load_big("seat reports", SeatReport, self._seat_report))
                if self.rollups:
                    result.tables.append(
                        self._load_big("daily rollups", SubscriptionUsageDaily, self._rollup)
                    )
            self._audit(result)
        if self.postgres and not outer:
            # VACUUM cannot run in a transaction; it sets the visibility map (index-only scans)
            # and statistics, as autovacuum would on a production table.
            self.progress("vacuum analyze …")
            vacuum_started = time.monotonic()
            with connection.cursor() as cursor:
                for model in SEEDED_MODELS:
                    cursor.execute(f"VACUUM (ANALYZE) {model._meta.db_table}")
            result.vacuum_seconds = time.monotonic() - vacuum_started
        if self.postgres:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_database_size(current_database())")
                result.database_bytes = cursor.fetchone()[0]
        result.seconds = time.monotonic() - started
        return result

    def _next_customer_index(self) -> int:
        last = (
            Customer.objects.filter(billing_account_number__startswith="A5")
            .order_by("-billing_account_number")
            .values_list("billing_account_number", flat=True)
            .first()
        )
        return int(last[1:]) - FIRST_CUSTOMER_NUMBER + 1 if last else 0

    def _load(self, label, model, columns, rows) -> TableResult:
        started = time.monotonic()
        count = self.writer.write(model, columns, rows)
        table = TableResult(label, count, time.monotonic() - started)
        self.progress(f"{label:<22} {count:>12,} rows {table.seconds:8.1f}s {table.rate:>10,.0f}/s")
        return table

    def _load_big(self, label, model, spec) -> TableResult:
        columns, rows, formatter = spec()
        dropped = pg_drop_secondary_indexes(model) if self.postgres else None
        started = time.monotonic()
        count = self.writer.write_lines(model, columns, rows, formatter)
        seconds = time.monotonic() - started
        index_seconds = 0.0
        if dropped is not None:
            index_started = time.monotonic()
            pg_recreate_indexes(dropped)
            index_seconds = time.monotonic() - index_started
        table = TableResult(label, count, seconds, index_seconds)
        self.progress(
            f"{label:<22} {count:>12,} rows {seconds:8.1f}s {table.rate:>10,.0f}/s"
            + (f"  (+{index_seconds:.1f}s rebuilding indexes)" if dropped is not None else "")
        )
        return table

    def _audit(self, result: ScaleResult) -> None:
        first_customer = Customer.objects.get(pk=self.customer_base)
        audit_record(
            actor=None,
            action="provision.scale_data_seeded",
            target=first_customer,
            customer=None,
            reason=self.reason,
            metadata={
                "customer_indexes": [self.first, self.first + self.count - 1],
                "days": self.days,
                "rows": result.counts(),
                "method": self.writer.method,
            },
        )

    # -- The plan: who has what ------------------------------------------------------------------

    def _prepare(self) -> None:
        self.account_managers = self._ensure_account_managers()
        self.partner_ids = self._ensure_partners()
        indexes = range(self.first, self.first + self.count)
        self.customer_base = _reserve_ids(Customer, self.count)
        counts = expected_counts(first=self.first, customers=self.count, days=self.days)
        self.subscription_base = _reserve_ids(Subscription, counts["subscriptions"])
        self.record_base = _reserve_ids(ProvisioningRecord, counts["subscriptions"])
        self.instance_base = _reserve_ids(Instance, counts["instances"])
        self.namespace_base = _reserve_ids(Namespace, counts["namespaces"])
        self.subs: list[_Sub] = []
        self.instances: list[tuple] = []
        self._next_sub = self.subscription_base
        next_instance = self.instance_base
        today = self.today
        window_start = today - timedelta(days=max(self.days, 1) - 1)
        for offset, c in enumerate(indexes):
            k, v = c % 4, _mix(c)
            base = {
                "customer_id": self.customer_base + offset,
                "index": c,
                "partner_id": self.partner_ids[v % len(self.partner_ids)] if c % 10 == 7 else None,
                "seats": SEAT_SIZES[v % len(SEAT_SIZES)],
                "plan": Plan.ULTIMATE if v % 5 < 2 else Plan.PREMIUM,
            }
            if k == 0:
                # A multi-year self-managed deal that covers the whole report window.
                start = window_start - timedelta(days=1 + v % 200)
                years = (today - start).days // 365 + 1 + v % 2
                current = self._add_sub(
                    base,
                    slot=0,
                    deployment=Deployment.SELF_MANAGED,
                    start=start,
                    end=start + timedelta(days=365 * years),
                    method=LicensingMethod.ONLINE_CLOUD,
                )
                saas_start = today - timedelta(days=1 + v % 330)
                self._add_sub(
                    base,
                    slot=1,
                    deployment=Deployment.GITLAB_COM,
                    start=saas_start,
                    end=saas_start + timedelta(days=365),
                )
                self.instances.append(
                    (next_instance, c, base["customer_id"], current, None, False, v)
                )
                next_instance += 1
            elif k == 1:
                # A renewal; the term it renews covers the start of the report window.
                renewal_start = today - timedelta(days=1 + v % 330)
                years = max(1, -(-self.days // 365))
                offline = c % 20 == 1
                method = LicensingMethod.OFFLINE_CLOUD if offline else LicensingMethod.ONLINE_CLOUD
                previous = self._add_sub(
                    {**base, "seats": max(5, base["seats"] * 4 // 5)},
                    slot=0,
                    deployment=Deployment.SELF_MANAGED,
                    start=renewal_start - timedelta(days=365 * years),
                    end=renewal_start,
                    method=method,
                )
                current = self._add_sub(
                    base,
                    slot=1,
                    deployment=Deployment.SELF_MANAGED,
                    start=renewal_start,
                    end=renewal_start + timedelta(days=365),
                    method=method,
                    renews=previous.id,
                )
                self.instances.append(
                    (next_instance, c, base["customer_id"], current, previous, offline, v)
                )
                next_instance += 1
            elif k == 2:
                if c % 40 == 2:  # a trial
                    start, end = today - timedelta(days=v % 25), None
                    end = start + timedelta(days=30)
                    trial = (
                        Plan.ULTIMATE_TRIAL if base["plan"] == Plan.ULTIMATE else Plan.PREMIUM_TRIAL
                    )
                    base = {**base, "plan": trial}
                elif c % 40 == 22:  # booked, not started yet
                    start = today + timedelta(days=3 + v % 25)
                    end = start + timedelta(days=365)
                else:
                    start = today - timedelta(days=1 + v % 330)
                    end = start + timedelta(days=365)
                self._add_sub(base, slot=0, deployment=Deployment.GITLAB_COM, start=start, end=end)
            else:
                # Legacy license files: some of these customers have since lapsed.
                start = today - timedelta(days=1 + v % 420)
                self._add_sub(
                    base,
                    slot=0,
                    deployment=Deployment.SELF_MANAGED,
                    start=start,
                    end=start + timedelta(days=365),
                    method=LicensingMethod.LEGACY,
                )
            if c % STUCK_EVERY == 0:
                self.subs[-1].stuck = True

    def _add_sub(self, base, *, slot, deployment, start, end, method="", renews=None) -> _Sub:
        row = _Sub(
            id=self._next_sub,
            customer_id=base["customer_id"],
            index=base["index"],
            name=f"A-S{SUBSCRIPTION_NUMBER_BASE + 2 * base['index'] + slot:08d}",
            deployment=deployment,
            plan=base["plan"],
            term_start=start,
            term_end=end,
            seats=base["seats"],
            method=method,
            renews_id=renews,
            partner_id=base["partner_id"],
            status=_status(start, end, self.today),
        )
        self._next_sub += 1
        self.subs.append(row)
        return row

    def _ensure_account_managers(self) -> list[int]:
        User = get_user_model()
        names = [f"scale.am{n:03d}" for n in range(1, SCALE_ACCOUNT_MANAGERS + 1)]
        existing = dict(User.objects.filter(username__in=names).values_list("username", "pk"))
        missing = [
            # Owners of synthetic books, not logins: an unusable password.
            User(
                username=name,
                first_name="Scale",
                last_name=f"AM {name[-3:]}",
                password=make_password(None),
            )
            for name in names
            if name not in existing
        ]
        if missing:
            created = User.objects.bulk_create(missing)
            group = Group.objects.get_or_create(name=Role.ACCOUNT_MANAGER)[0]
            group.user_set.add(*created)
            existing.update({user.username: user.pk for user in created})
        return [existing[name] for name in names]

    def _ensure_partners(self) -> list[int]:
        names = [f"Scale Channel Partner {n:02d}" for n in range(1, SCALE_PARTNERS + 1)]
        existing = dict(Partner.objects.filter(name__in=names).values_list("name", "pk"))
        missing = [
            Partner(
                name=name,
                kind=PartnerKind.DISTRIBUTOR if n % 4 == 0 else PartnerKind.RESELLER,
                email=f"licensing@scale-partner-{n:02d}.example",
            )
            for n, name in enumerate(names, start=1)
            if name not in existing
        ]
        if missing:
            existing.update({p.name: p.pk for p in Partner.objects.bulk_create(missing)})
        return [existing[name] for name in names]

    # -- Row generators: (columns, rows) ---------------------------------------------------------

    def _slug(self, c: int) -> str:
        v = _mix(c)
        return f"{WORDS[v % len(WORDS)]}-{INDUSTRIES[(v >> 8) % len(INDUSTRIES)]}".lower().replace(
            " ", "-"
        )

    def _customer_rows(self):
        columns = [
            "id", "billing_account_number", "name", "email_domains", "salesforce_account_id",
            "gainsight_company_id", "account_owner", "csm", "partner", "country", "created_at",
            "updated_at",
        ]  # fmt: skip
        ams, partners, now = self.account_managers, self.partner_ids, self.now

        def rows():
            for offset in range(self.count):
                c = self.first + offset
                v = _mix(c)
                name = (
                    f"{WORDS[v % len(WORDS)]} {INDUSTRIES[(v >> 8) % len(INDUSTRIES)]} "
                    f"{LEGAL_FORMS[(v >> 16) % len(LEGAL_FORMS)]}"
                )
                yield (
                    self.customer_base + offset,
                    f"A{FIRST_CUSTOMER_NUMBER + c:08d}",
                    name,
                    [f"{self._slug(c)}-{c}.example"],
                    f"001SC{c:013d}",
                    f"1P02SC{c:012d}" if c % 5 else None,
                    ams[c % len(ams)],
                    ams[(c * 7 + 3) % len(ams)] if c % 3 == 0 else None,
                    partners[v % len(partners)] if c % 10 == 7 else None,
                    COUNTRIES[(v >> 4) % len(COUNTRIES)],
                    now,
                    now,
                )

        return columns, rows()

    def _contact_rows(self):
        columns = [
            "customer", "role", "first_name", "last_name", "email", "phone", "created_at",
            "updated_at",
        ]  # fmt: skip

        def rows():
            for offset in range(self.count):
                c = self.first + offset
                v = _mix(c)
                first = FIRST_NAMES[v % len(FIRST_NAMES)]
                last = LAST_NAMES[(v >> 5) % len(LAST_NAMES)]
                email = f"{first}.{last}@{self._slug(c)}-{c}.example".lower()
                yield (
                    self.customer_base + offset,
                    ContactRole.SOLD_TO,
                    first,
                    last,
                    email.replace("ü", "ue"),
                    f"+1 555 {c % 10_000_000:07d}",
                    self.now,
                    self.now,
                )

        return columns, rows()

    def _subscription_rows(self):
        columns = [
            "id", "name", "customer", "plan", "deployment", "status", "term_start", "term_end",
            "seats", "channel", "partner", "licensing_method", "auto_renew",
            "quarterly_reconciliation", "contract_overages_allowed", "renews", "created_at",
            "updated_at",
        ]  # fmt: skip

        def rows():
            for s in self.subs:
                trial = s.plan in (Plan.PREMIUM_TRIAL, Plan.ULTIMATE_TRIAL)
                if s.partner_id:
                    channel = Channel.PARTNER
                elif s.seats <= 25:
                    channel = Channel.WEB_DIRECT
                else:
                    channel = Channel.SALES_ASSISTED
                yield (
                    s.id, s.name, s.customer_id, s.plan, s.deployment, s.status, s.term_start,
                    s.term_end, s.seats, channel, s.partner_id, s.method,
                    not trial and s.index % 7 != 0, not trial, s.index % 9 != 0, s.renews_id,
                    self.now, self.now,
                )  # fmt: skip

        return columns, rows()

    def _add_on_rows(self):
        columns = ["subscription", "kind", "quantity", "starts_on", "ends_on", "created_at",
                   "updated_at"]  # fmt: skip

        def rows():
            for s in self.subs:
                k = s.index % 4
                if k == 0 and s.deployment == Deployment.SELF_MANAGED:
                    kind, quantity = AddOnKind.DUO_PRO, max(5, s.seats // 5)
                elif k == 2 and s.plan in (Plan.PREMIUM, Plan.ULTIMATE):
                    kind, quantity = AddOnKind.COMPUTE_MINUTES, 10_000
                else:
                    continue
                yield (s.id, kind, quantity, s.term_start, s.term_end, self.now, self.now)

        return columns, rows()

    def _ledger_rows(self):
        columns = ["subscription", "seats", "previous_seats", "effective_at"]
        return columns, ((s.id, s.seats, None, self.now) for s in self.subs)

    def _record_rows(self):
        columns = ["id", "subscription", "order_reference", "kind", "completed_at", "created_at",
                   "updated_at"]  # fmt: skip

        def rows():
            for offset, s in enumerate(self.subs):
                kinds = (
                    SELF_MANAGED_STEPS
                    if s.deployment == Deployment.SELF_MANAGED
                    else GITLAB_COM_STEPS
                )
                open_ = any(_step_open(s, kind, kinds) for kind in kinds)
                yield (
                    self.record_base + offset,
                    s.id,
                    f"ORD-{s.name}",
                    OrderKind.RENEWAL if s.renews_id else OrderKind.NEW,
                    None if open_ else self.now,
                    self.now,
                    self.now,
                )

        return columns, rows()

    def _step_rows(self):
        columns = ["record", "kind", "position", "state", "due_at", "completed_at", "last_error",
                   "attempts", "updated_at"]  # fmt: skip
        overdue = self.now - timedelta(days=3)
        due_soon = self.now + timedelta(hours=20)
        waiting = {ProvisioningStepKind.ACTIVATED, ProvisioningStepKind.FIRST_USAGE}

        def rows():
            for offset, s in enumerate(self.subs):
                record_id = self.record_base + offset
                legacy = s.method == LicensingMethod.LEGACY
                if s.deployment == Deployment.SELF_MANAGED:
                    kinds = SELF_MANAGED_STEPS
                else:
                    kinds = GITLAB_COM_STEPS
                for position, kind in enumerate(kinds):
                    state, due, done_at = StepState.DONE, self.now, self.now
                    if _step_open(s, kind, kinds):
                        state, done_at = StepState.PENDING, None
                        due = overdue if s.stuck else due_soon
                    elif legacy and kind in waiting:
                        state = StepState.SKIPPED
                    yield (record_id, kind, position, state, due, done_at, "", 0, self.now)

        return columns, rows()

    def _instance_rows(self):
        columns = ["id", "instance_id", "unique_instance_id", "customer", "subscription",
                   "hostname", "version", "air_gapped", "first_seen_at", "last_seen_at",
                   "last_sync_at"]  # fmt: skip
        window_start = self.today - timedelta(days=max(self.days, 1) - 1)
        first_seen = datetime.combine(window_start, datetime.min.time(), tzinfo=UTC)

        def rows():
            for instance_id, c, customer_id, current, _previous, offline, v in self.instances:
                seen = self._received(self.today, v)
                yield (
                    instance_id,
                    f"5ca1e000-0000-4000-8000-{c:012x}",
                    f"{zlib.crc32(str(c).encode()):08x}{c:024x}",
                    customer_id,
                    current.id,
                    f"gitlab.{self._slug(c)}-{c}.example",
                    VERSIONS[v % len(VERSIONS)],
                    offline,
                    first_seen,
                    seen if self.days else None,
                    None if offline or not self.days else seen,
                )

        return columns, rows()

    def _namespace_rows(self):
        columns = ["id", "gitlab_namespace_id", "full_path", "name", "subscription",
                   "seats_in_use", "max_seats_used", "max_seats_used_changed_at", "seats_owed",
                   "last_refreshed_at"]  # fmt: skip
        saas = {}
        for s in self.subs:
            if s.deployment == Deployment.GITLAB_COM:
                saas[s.index] = s

        def rows():
            namespace_id = self.namespace_base
            for offset in range(self.count):
                c = self.first + offset
                k, v = c % 4, _mix(c)
                slug = self._slug(c)
                linked = saas.get(c) if k in (0, 2) else None
                slots = []
                if linked is not None:
                    slots.append((0, linked))
                if k in (0, 1, 3):
                    slots.append((1, None))
                for slot, s in slots:
                    if s is not None and s.status != SubscriptionStatus.PENDING:
                        in_use = max(1, s.seats * (60 + v % 55) // 100)
                        peak = in_use + v % 7
                        owed = max(0, peak - s.seats)
                        refreshed = self.now - timedelta(hours=v % 20)
                    else:
                        in_use = peak = owed = 0
                        refreshed = None
                    yield (
                        namespace_id,
                        NAMESPACE_ID_BASE + 2 * c + slot,
                        f"{slug}-{c}" if slot == 0 else f"{slug}-{c}-sandbox",
                        f"{slug.replace('-', ' ').title()}" + ("" if slot == 0 else " Sandbox"),
                        s.id if s is not None else None,
                        in_use,
                        peak,
                        refreshed,
                        owed,
                        refreshed,
                    )
                    namespace_id += 1

        return columns, rows()

    # -- The big tables --------------------------------------------------------------------------

    def _received(self, day: date, v: int) -> datetime:
        seconds = 3 * 3600 + v % 7200  # Seat Link's 03:00–05:00 UTC window
        return datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(seconds=seconds)

    def _usage(self) -> Iterator[tuple]:
        """(instance position, subscription id, seats, day number, billable, max historical),
        day by day: each instance's billable users follow one of four profiles (steady, growth,
        overage, under-use) with a little daily noise; max historical resets with each term."""
        days, today = self.days, self.today
        first_day = today - timedelta(days=days - 1)
        params = []
        for instance_id, _c, _customer, current, previous, _offline, v in self.instances:
            seats = current.seats
            profile = v % 100
            if profile < 12:  # overage
                start_pct, end_pct = 95, 120
            elif profile < 27:  # under-use
                start_pct, end_pct = 35, 30
            elif profile < 57:  # growth
                start_pct, end_pct = 60, 92
            else:
                start_pct = end_pct = 75 + v % 20
            switch = (current.term_start - first_day).days if previous else -1
            params.append(
                (
                    instance_id,
                    current.id,
                    seats,
                    previous.id if previous else current.id,
                    previous.seats if previous else seats,
                    switch,
                    seats * start_pct,
                    seats * (end_pct - start_pct),
                )
            )
        peaks = [0] * len(params)
        span = max(days - 1, 1)
        for d in range(days):
            for j, (instance_id, cur, seats, prev, prev_seats, switch, base, delta) in enumerate(
                params
            ):
                billable = (base + delta * d // span) // 100 + NOISE[(j + d) & 255]
                if billable < 0:
                    billable = 0
                if d < switch:
                    sub_id, sub_seats = prev, prev_seats
                else:
                    sub_id, sub_seats = cur, seats
                    if d == switch:
                        peaks[j] = 0  # a new term starts counting again
                peak = peaks[j]
                if billable > peak:
                    peak = peaks[j] = billable
                yield j, instance_id, sub_id, sub_seats, d, billable, peak

    def _report_days(self) -> list[date]:
        first_day = self.today - timedelta(days=self.days - 1)
        return [(first_day + timedelta(days=d)) for d in range(self.days)]

    def _seat_report(self):
        columns = ["subscription", "instance", "report_date", "billable_users",
                   "max_historical_users", "add_on_metrics", "source", "raw_payload",
                   "received_at"]  # fmt: skip
        day_dates = self._report_days()
        duo = {
            s.id: max(5, s.seats // 5)
            for s in self.subs
            if s.index % 4 == 0 and s.deployment == Deployment.SELF_MANAGED
        }
        sources = []
        metrics = []
        times = []
        for _id, _c, _customer, current, _previous, offline, v in self.instances:
            sources.append(SeatReportSource.USAGE_FILE if offline else SeatReportSource.SEAT_LINK)
            metrics.append(
                [{"add_on_type": "code_suggestions", "purchased_seats": duo[current.id],
                  "assigned_seats": duo[current.id] * (50 + v % 50) // 100}]
                if current.id in duo
                else []
            )  # fmt: skip
            times.append(3 * 3600 + v % 7200)
        midnight = [datetime.combine(day, datetime.min.time(), tzinfo=UTC) for day in day_dates]

        if self.postgres:
            day_text = [day.isoformat() for day in day_dates]
            metric_text = [json.dumps(m) for m in metrics]
            time_text = [f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}+00" for t in times]
            template = "%d\t%d\t%s\t%d\t%d\t%s\t%s\t{}\t%s %s\n"

            def formatter(row):
                j, instance_id, sub_id, _seats, d, billable, peak = row
                return template % (
                    sub_id, instance_id, day_text[d], billable, peak, metric_text[j],
                    sources[j], day_text[d], time_text[j],
                )  # fmt: skip

            return columns, self._usage(), formatter

        def rows():
            for j, instance_id, sub_id, _seats, d, billable, peak in self._usage():
                yield (
                    sub_id, instance_id, day_dates[d], billable, peak, metrics[j], sources[j], {},
                    midnight[d] + timedelta(seconds=times[j]),
                )  # fmt: skip

        return columns, rows(), None

    def _rollup(self):
        columns = ["subscription", "date", "seats", "billable_users", "max_users", "overage",
                   "utilization", "computed_at"]  # fmt: skip
        day_dates = self._report_days()
        # The nightly rollup runs at 06:00 the next morning (today's row: now).
        computed = [
            min(datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
                + timedelta(hours=6), self.now)
            for day in day_dates
        ]  # fmt: skip
        if self.postgres:
            day_text = [day.isoformat() for day in day_dates]
            computed_text = [moment.isoformat() for moment in computed]
            template = "%d\t%s\t%d\t%d\t%d\t%d\t%.4f\t%s\n"

            def formatter(row):
                _j, _instance, sub_id, seats, d, billable, peak = row
                over = peak - seats
                return template % (
                    sub_id, day_text[d], seats, billable, peak, over if over > 0 else 0,
                    billable / seats, computed_text[d],
                )  # fmt: skip

            return columns, self._usage(), formatter

        def rows():
            for _j, _instance, sub_id, seats, d, billable, peak in self._usage():
                yield (
                    sub_id, day_dates[d], seats, billable, peak, max(0, peak - seats),
                    Decimal(billable / seats).quantize(Decimal("0.0001")), computed[d],
                )  # fmt: skip

        return columns, rows(), None


def _step_open(s: _Sub, kind: str, kinds: tuple) -> bool:
    """Stuck orders and those whose term has not started have their last steps open (a legacy
    order its delivery: legacy licenses are neither activated nor reported)."""
    if not (s.stuck or s.status == SubscriptionStatus.PENDING):
        return False
    if s.method == LicensingMethod.LEGACY:
        return kind == ProvisioningStepKind.DELIVERED
    return kind in kinds[-2:]


def _status(start: date, end: date, today: date) -> str:
    if end <= today:
        return SubscriptionStatus.EXPIRED
    if start > today:
        return SubscriptionStatus.PENDING
    return SubscriptionStatus.ACTIVE
