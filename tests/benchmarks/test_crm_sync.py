"""CRM sync at the design's size: a full sync of every customer of the scale data to the fake
Salesforce through Bulk API 2.0, an incremental run after 1 % of the customers changed, and an
idle incremental run. Run with ``pytest -m benchmark -s tests/benchmarks/test_crm_sync.py``.

Setup (not timed):

* a PostgreSQL database loaded by ``seed_scale`` (``CRM_BENCH_DATABASE_URL``, default
  ``postgres://postgres@127.0.0.1:5432/provision_scale``; ``seed_scale --customers 200000
  --days 3`` is enough, ~1 minute), migrated by this test (``manage.py migrate``);
* per batch size in ``CRM_BENCH_BATCH_SIZES`` (default ``5000,20000``): the fake Salesforce
  (``tests/fakes/salesforce.py``) started in its own process (``python -m tests.fakes.salesforce``,
  a fresh, empty org each time), and the measuring code run in another subprocess (``measure``
  below) with ``DATABASE_URL`` pointing at the scale database, ``CRM_SYNC_BATCH_CUSTOMERS`` =
  the batch size, ``SALESFORCE_BULK_WAIT_SECONDS=0`` and a ready session on the fake. The
  subprocess first deletes every ``SyncRowError``, ``CrmRecordState`` and ``SyncRun`` (only the
  sync writes them), so every run starts with nothing pushed and measures the same thing.

Timed, in that subprocess, with ``crm_sync_run(target="salesforce", client=...)``:

1. **full**: every customer computed, diffed (nothing stored yet: every row differs) and sent,
   accounts and subscription usage records, by Bulk API 2.0 whenever a call has more than
   ``SALESFORCE_BULK_THRESHOLD`` rows; the state of every customer written.
   **Baseline in the same run**: the same rows (the payload rows mapped to Salesforce field
   names, ``None`` as ``#N/A``) written to CSV text with the ``csv`` module, timed apart and
   subtracted from the run's time. rows/s of both and their ratio.
2. **1 % changed** (not timed): for ``CRM_BENCH_CHANGED`` customers (2,000) spread over the id
   range, each with usage, the latest ``SubscriptionUsageDaily`` row of each of their tracked
   subscriptions gets one more billable user (repeatable: +1 on every run), then
   ``crm_mark_changed`` notes them. No service writes a rollup row directly (rollups are
   recomputed from seat reports by ``subscription_usage_rollup``, which also queues a
   debounced Celery push), so the rows are updated through the ORM here.
3. **incremental**: only those customers are candidates; one account row and the changed
   subscription rows each are sent. Rows sent and time against the full run.
4. **idle**: the same again with nothing changed (0 sent): the fixed cost of a run at 200k.

Where the time goes: the engine's phases are timed by wrapping them in the subprocess
(``crm_payloads``: payload computation; ``client.upsert``: the client's CSV work, HTTP and the
fake; ``_record_batch``: state writes; candidate queries; the rest of the run: reading stored
states, the diff, mapping). CPU seconds of the fake's process, the sync process and its
PostgreSQL backend come from ``/proc`` and ``getrusage``; peak RSS of the sync process from
``getrusage``. Correctness is asserted (every customer sent once in the full run; customers
sent by the incremental run = the changed customers, rows = theirs; nothing sent when idle);
speed is printed, never asserted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import require_service

pytestmark = pytest.mark.benchmark

DATABASE_URL = os.environ.get(
    "CRM_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/provision_scale"
)
BATCH_SIZES = [
    int(size) for size in os.environ.get("CRM_BENCH_BATCH_SIZES", "5000,20000").split(",")
]
CHANGED_CUSTOMERS = int(os.environ.get("CRM_BENCH_CHANGED", "2000"))
REPO = Path(__file__).resolve().parents[2]
BULK_NULL = "#N/A"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- measuring, in the subprocess ---------------------------------------------------------------


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of another process, or None when /proc does not say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _process_memory(pid: int | str, name: str) -> float | None:
    """``VmHWM`` (peak) or ``VmRSS`` of a process in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Phases:
    """Wall seconds and call counts per named phase of a run."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def timed(self, name: str, function):
        """``function`` wrapped so that each call adds its duration to ``name``."""

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started
                self.calls[name] += 1

        return wrapper

    def timed_iterator(self, name: str, function):
        """``function`` (a generator function) wrapped so that each step adds to ``name``."""

        def wrapper(*args, **kwargs):
            iterator = function(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.seconds[name] += time.perf_counter() - started
                    self.calls[name] += 1
                yield item

        return wrapper


class CsvBaseline:
    """The baseline: the rows a run sends, serialised to CSV text with the csv module."""

    def __init__(self):
        self.rows = 0
        self.seconds = 0.0
        self.characters = 0

    def serialise(self, records) -> None:
        """Write ``records`` (OutgoingRecord) to CSV as Bulk would carry them, timed."""
        if not records:
            return
        started = time.perf_counter()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(list(records[0].fields))
        writer.writerows(
            [BULK_NULL if value is None else str(value) for value in record.fields.values()]
            for record in records
        )
        text = buffer.getvalue()
        self.seconds += time.perf_counter() - started
        self.rows += len(records)
        self.characters += len(text)


class TimedClient:
    """The real SalesforceClient, each ``upsert`` timed, the same rows also given to the
    baseline (before the call, timed apart)."""

    def __init__(self, client, phases: Phases, baseline: CsvBaseline | None):
        self.client = client
        self.phases = phases
        self.baseline = baseline
        self.calls: dict[str, int] = defaultdict(int)

    def upsert(self, *, object_name, external_id_field, records):
        """Delegate to the real client."""
        records = list(records)
        if self.baseline is not None:
            self.baseline.serialise(records)
        transport = "bulk" if len(records) > self.client.config.bulk_threshold else "collections"
        self.calls[f"{object_name} {transport}"] += 1
        started = time.perf_counter()
        try:
            return self.client.upsert(
                object_name=object_name, external_id_field=external_id_field, records=records
            )
        finally:
            self.phases.seconds["send"] += time.perf_counter() - started
            self.phases.calls["send"] += 1

    def close(self) -> None:
        """Close the real client."""
        self.client.close()


def _reset_crm_state() -> dict:
    """Forget everything a sync wrote (only the sync writes these tables)."""
    from django.db import connection

    from crm_sync.models import CrmRecordState, SyncRowError, SyncRun

    before = {
        "states": CrmRecordState.objects.count(),
        "runs": SyncRun.objects.count(),
        "row_errors": SyncRowError.objects.count(),
    }
    tables = [model._meta.db_table for model in (SyncRowError, CrmRecordState, SyncRun)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)}")
        cursor.execute(f"ANALYZE {', '.join(tables)}")
    return before


def _change_customers(count: int) -> dict:
    """One more billable user on the latest rollup row of each tracked subscription of
    ``count`` customers spread over the id range, then ``crm_mark_changed`` for them."""
    from django.db.models import Max
    from django.utils import timezone

    from crm_sync.selectors import CRM_SUBSCRIPTION_STATUSES
    from crm_sync.services import crm_mark_changed
    from provision.models import Customer, Subscription
    from usage.models import SubscriptionUsageDaily

    ids = list(Customer.objects.order_by("pk").values_list("pk", flat=True))
    candidates = ids[:: max(len(ids) // (count * 2), 1)]
    owner = dict(
        Subscription.objects.filter(
            customer_id__in=candidates, status__in=CRM_SUBSCRIPTION_STATUSES
        ).values_list("pk", "customer_id")
    )
    latest = dict(
        SubscriptionUsageDaily.objects.filter(subscription_id__in=list(owner))
        .values("subscription_id")
        .annotate(last=Max("date"))
        .values_list("subscription_id", "last")
    )
    with_usage = {owner[subscription_id] for subscription_id in latest}
    chosen = [pk for pk in candidates if pk in with_usage][:count]
    chosen_set = set(chosen)
    rows = [
        row
        for row in SubscriptionUsageDaily.objects.filter(
            subscription_id__in=[s for s in latest if owner[s] in chosen_set],
            date__in=set(latest.values()),
        )
        if latest[row.subscription_id] == row.date
    ]
    now = timezone.now()
    for row in rows:
        row.billable_users += 1
        ratio = Decimal(row.billable_users) / Decimal(row.seats) if row.seats else Decimal(0)
        row.utilization = min(ratio.quantize(Decimal("0.0001"), ROUND_HALF_UP), Decimal("999.9999"))
        row.computed_at = now
    SubscriptionUsageDaily.objects.bulk_update(
        rows, ["billable_users", "utilization", "computed_at"], batch_size=1000
    )
    crm_mark_changed(customer_ids=chosen)
    return {"customers": len(chosen), "subscription_rows": len(rows)}


def _timed_run(kind: str, client, *, fake_pid: int, backend_pid: int) -> dict:
    """One ``crm_sync_run`` of Salesforce with its phases, CPU and memory."""
    from crm_sync import services

    phases = Phases()
    batches: list[dict] = []
    originals = (services.crm_payloads, services._record_batch, services._candidate_batches)
    services.crm_payloads = phases.timed("payloads", originals[0])
    services._record_batch = phases.timed("state_writes", originals[1])
    services._candidate_batches = phases.timed_iterator("candidates", originals[2])
    client.phases = phases
    client.calls.clear()
    last = [time.perf_counter(), {}]

    def progress(summary):
        # Per batch: its wall seconds and each phase's share, to see whether batches slow down.
        now = time.perf_counter()
        phases_now = dict(phases.seconds)
        batch = {name: value - last[1].get(name, 0.0) for name, value in phases_now.items()}
        batch["wall"] = now - last[0]
        batches.append(batch)
        last[0], last[1] = now, phases_now

    fake_cpu, backend_cpu, own_cpu = (
        _process_cpu(fake_pid),
        _process_cpu(backend_pid),
        _own_cpu(),
    )
    try:
        summary = services.crm_sync_run(
            target="salesforce", kind=kind, trigger="staff", client=client, progress=progress
        )
    finally:
        services.crm_payloads, services._record_batch, services._candidate_batches = originals
    result = summary.as_dict()
    result.update(
        phases=dict(phases.seconds),
        phase_calls=dict(phases.calls),
        client_calls=dict(client.calls),
        batch_seconds=batches,
        cpu_sync=_own_cpu() - own_cpu,
        cpu_fake=(_process_cpu(fake_pid) or 0) - (fake_cpu or 0),
        cpu_postgres=(_process_cpu(backend_pid) or 0) - (backend_cpu or 0),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        rss_mib=_process_memory("self", "VmRSS"),
    )
    return result


def measure(out_path: str, fake_pid: int) -> None:
    """The benchmark proper, in a process whose settings point at the scale database and the
    fake (see the module docstring); writes its figures as JSON to ``out_path``."""
    from django.conf import settings
    from django.db import connection

    from crm_sync.clients.salesforce import SalesforceClient
    from provision.models import Customer

    report: dict = {"batch_customers": settings.CRM_SYNC_BATCH_CUSTOMERS}
    report["reset"] = _reset_crm_state()
    report["customers"] = Customer.objects.count()
    report["rss_before_mib"] = _process_memory("self", "VmRSS")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend_pid = cursor.fetchone()[0]

    baseline = CsvBaseline()
    client = TimedClient(SalesforceClient.from_settings(), Phases(), baseline)
    try:
        full = _timed_run("full", client, fake_pid=fake_pid, backend_pid=backend_pid)
        full["baseline_rows"] = baseline.rows
        full["baseline_seconds"] = baseline.seconds
        full["baseline_mib"] = baseline.characters / 2**20
        full["fake_rss_mib"] = _process_memory(fake_pid, "VmRSS")
        report["full"] = full
        client.baseline = None
        started = time.perf_counter()
        report["changed"] = _change_customers(CHANGED_CUSTOMERS)
        report["changed"]["seconds"] = time.perf_counter() - started
        report["incremental"] = _timed_run(
            "incremental", client, fake_pid=fake_pid, backend_pid=backend_pid
        )
        report["idle"] = _timed_run(
            "incremental", client, fake_pid=fake_pid, backend_pid=backend_pid
        )
    finally:
        client.close()
    report["fake_peak_rss_mib"] = _process_memory(fake_pid, "VmHWM")
    Path(out_path).write_text(json.dumps(report, default=str))


# --- the test: databases and processes ----------------------------------------------------------


def _env(var_dir: Path, **extra) -> dict:
    return {
        **os.environ,
        "PROVISION_ENV": "test",
        "DEBUG": "false",  # DEBUG keeps every query in memory
        "PROVISION_VAR_DIR": str(var_dir),
        "DATABASE_URL": DATABASE_URL,
        "DJANGO_SETTINGS_MODULE": "provision.settings",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def _check_database() -> None:
    import psycopg

    parts = urlsplit(DATABASE_URL)
    try:
        with psycopg.connect(DATABASE_URL, connect_timeout=5) as conn:
            customers = conn.execute(
                "SELECT reltuples FROM pg_class WHERE relname = 'provision_customer'"
            ).fetchone()
    except psycopg.OperationalError as exc:
        require_service(False, f"the scale database {parts.path} is unreachable: {exc}")
        return
    require_service(
        bool(customers and customers[0] > 0),
        f"{parts.path} holds no customers: load it with manage.py seed_scale (docs/benchmarks.md)",
    )


def _run(command, env, timeout=3600) -> str:
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


class FakeProcess:
    """``python -m tests.fakes.salesforce`` on a free port, stopped by its process id."""

    def __init__(self, env):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.salesforce", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"the fake Salesforce did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def stop(self) -> None:
        """Terminate it and wait."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stdout.close()


def _measure_one(tmp_path: Path, batch_size: int) -> dict:
    from tests.fakes.salesforce import DEFAULT_ACCESS_TOKEN

    var_dir = tmp_path / "var"
    fake = FakeProcess(_env(var_dir))
    out = tmp_path / f"crm-bench-{batch_size}.json"
    try:
        env = _env(
            var_dir,
            CRM_SYNC_BATCH_CUSTOMERS=str(batch_size),
            SALESFORCE_INSTANCE_URL=fake.url,
            SALESFORCE_ACCESS_TOKEN=DEFAULT_ACCESS_TOKEN,
            SALESFORCE_ALLOW_HTTP="true",
            SALESFORCE_BULK_WAIT_SECONDS="0",
            SALESFORCE_TIMEOUT_SECONDS="600",
        )
        code = (
            "import django; django.setup(); "
            "from tests.benchmarks.test_crm_sync import measure; "
            f"measure({str(out)!r}, {fake.process.pid})"
        )
        _run([sys.executable, "-c", code], env)
    finally:
        fake.stop()
    return json.loads(out.read_text())


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "–"


def _batch_text(batch: dict) -> str:
    return " ".join(f"{name} {value:.1f}" for name, value in batch.items())


def _phase_line(name: str, run: dict) -> str:
    phases = run["phases"]
    send = phases.get("send", 0.0)
    engine = run["seconds"] - run.get("baseline_seconds", 0.0)
    accounted = sum(phases.get(k, 0.0) for k in ("payloads", "send", "state_writes", "candidates"))
    return (
        f"  {name}: payloads {phases.get('payloads', 0):.1f} s, send {send:.1f} s "
        f"(fake CPU {run['cpu_fake']:.1f} s), state writes {phases.get('state_writes', 0):.1f} s, "
        f"candidates {phases.get('candidates', 0):.2f} s, rest (stored states, diff, mapping, "
        f"progress) {engine - accounted:.1f} s; CPU: sync process {run['cpu_sync']:.1f} s, "
        f"PostgreSQL backend {run['cpu_postgres']:.1f} s; calls {run['client_calls']}"
    )


def test_crm_sync_full_and_incremental(tmp_path):
    _check_database()
    (tmp_path / "var").mkdir()
    _run([sys.executable, "manage.py", "migrate", "--no-input"], _env(tmp_path / "var"))

    load_before = os.getloadavg()
    reports = [_measure_one(tmp_path, size) for size in BATCH_SIZES]
    load_after = os.getloadavg()

    lines = [
        f"\nCRM sync to the fake Salesforce ({DATABASE_URL.rsplit('/', 1)[-1]}), "
        f"{os.cpu_count()} CPUs; load average {load_before[0]:.1f}/{load_before[1]:.1f} before, "
        f"{load_after[0]:.1f}/{load_after[1]:.1f} after (1/5 min)",
        f"{'batch':>6} {'run':<12}{'customers':>10}{'sent':>8}{'rows':>9}{'s':>8}"
        f"{'rows/s':>9}{'csv rows/s':>11}{'ratio':>7}{'vs full':>8}{'peak RSS':>10}",
    ]
    for report in reports:
        full, incremental, idle = report["full"], report["incremental"], report["idle"]
        changed = report["changed"]

        # Correctness (not speed): every customer once; exactly the changed ones; none.
        assert full["status"] == "succeeded", full["error"]
        assert full["sent"] == full["considered"] == report["customers"]
        assert full["baseline_rows"] == full["rows_sent"]
        assert incremental["status"] == "succeeded", incremental["error"]
        assert incremental["sent"] == changed["customers"] == CHANGED_CUSTOMERS
        assert incremental["rows_sent"] == changed["customers"] + changed["subscription_rows"]
        assert idle["status"] == "succeeded" and idle["sent"] == 0 and idle["rows_sent"] == 0

        engine_seconds = full["seconds"] - full["baseline_seconds"]
        engine_rate = full["rows_sent"] / engine_seconds
        csv_rate = full["baseline_rows"] / full["baseline_seconds"]
        size = report["batch_customers"]
        lines.append(
            f"{size:>6} {'full':<12}{full['sent']:>10,}{full['sent']:>8,}{full['rows_sent']:>9,}"
            f"{engine_seconds:>8.1f}{engine_rate:>9,.0f}{csv_rate:>11,.0f}"
            f"{engine_rate / csv_rate:>7.3f}{1:>8.3f}{full['peak_rss_mib']:>9.0f}M"
        )
        for name, run in (("incremental", incremental), ("idle", idle)):
            lines.append(
                f"{size:>6} {name:<12}{run['considered']:>10,}{run['sent']:>8,}"
                f"{run['rows_sent']:>9,}{run['seconds']:>8.2f}"
                f"{_rate(run['rows_sent'], run['seconds']):>9}{'':>11}{'':>7}"
                f"{run['seconds'] / engine_seconds:>8.3f}{run['peak_rss_mib']:>9.0f}M"
            )
        batches = full["batch_seconds"]
        walls = [batch["wall"] for batch in batches]
        lines += [
            _phase_line("full", full),
            _phase_line("incremental", incremental),
            _phase_line("idle", idle),
            f"  full run batches ({len(batches)}, s): {' '.join(f'{w:.1f}' for w in walls)}; "
            f"first {_batch_text(batches[0])}; last {_batch_text(batches[-1])}; "
            f"RSS before {report['rss_before_mib']:.0f} MiB, after {full['rss_mib']:.0f} MiB; "
            f"fake peak RSS {report['fake_peak_rss_mib']:.0f} MiB; CSV text "
            f"{full['baseline_mib']:.0f} MiB in {full['baseline_seconds']:.2f} s; "
            f"changed {changed['customers']} customers, {changed['subscription_rows']} rollup "
            f"rows ({changed['seconds']:.1f} s); reset removed {report['reset']}",
        ]
    print("\n".join(lines))
