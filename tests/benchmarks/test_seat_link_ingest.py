"""Seat Link ingest throughput and latency over real HTTP, against ``GET /-/ping`` on the same
server. Run with ``pytest -m benchmark -s tests/benchmarks/test_seat_link_ingest.py``.

Setup (not timed):

* a dedicated PostgreSQL database (``SEAT_BENCH_DATABASE_URL``, default
  ``postgres://postgres@127.0.0.1:5432/provision_seatbench``), created if missing and migrated
  (``manage.py migrate``) by this test;
* seeded once, in a subprocess, through the real services: ``SEAT_BENCH_SUBSCRIPTIONS``
  online cloud subscriptions (``subscription_create``: provisioning record, ledger, audit),
  each with its license issued (``license_issue``: RSA, stored key, audit). A later run reuses
  the seed and resets what a run changes (instances, reports, rollups, license status,
  first-usage steps), so every run measures the same thing;
* gunicorn started on a free port (gthread, one worker per core × 8 threads, unless
  ``SEAT_BENCH_WORKER_CLASS``, ``SEAT_BENCH_WORKERS``, ``SEAT_BENCH_THREADS`` say otherwise),
  ``DATABASE_CONN_MAX_AGE=60``, rate limit off (all clients are 127.0.0.1).

Timed, ``SEAT_BENCH_CLIENTS`` threads (32), each with its own keep-alive ``http.client``
connection, every phase bounded by ``SEAT_BENCH_REQUESTS`` requests and ``SEAT_BENCH_SECONDS``:

1. ``GET /-/ping``: Django and the middleware, no database (the trivial endpoint);
2. first Seat Link of ``SEAT_BENCH_INSTANCES`` distinct instances spread over the
   subscriptions (instance created and audited, license issued → active, first-usage step
   closed on each subscription's first);
3. the daily Seat Link of the same instances, dated the next day (the steady state: known
   instance, a new report row; the rollup is the minute task's, not the request's);
4. ``GET /-/ping`` again (the ratio uses the mean of both ping phases);
5. the daily Seat Link paced at ``SEAT_BENCH_PACED_RPS`` in total (latency below saturation).

Every answer is checked (200, no ``license`` since each key is current) and the stored rows
are counted afterwards. Targets (the issue): daily ingest ≥ 0.6 × ping throughput, p99 ≤ 25 ms.
The figures are printed; the targets are reported, not asserted (the machine varies).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings

from tests.conftest import require_service

pytestmark = pytest.mark.benchmark

DATABASE_URL = os.environ.get(
    "SEAT_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/provision_seatbench"
)
SUBSCRIPTIONS = int(os.environ.get("SEAT_BENCH_SUBSCRIPTIONS", "2000"))
INSTANCES = int(os.environ.get("SEAT_BENCH_INSTANCES", "6000"))
CLIENTS = int(os.environ.get("SEAT_BENCH_CLIENTS", "32"))
REQUESTS = int(os.environ.get("SEAT_BENCH_REQUESTS", "6000"))
SECONDS = float(os.environ.get("SEAT_BENCH_SECONDS", "30"))
PACED_RPS = float(os.environ.get("SEAT_BENCH_PACED_RPS", "100"))
# The best of the configurations tried (docs/benchmarks.md): one gthread worker per core,
# eight threads each. sync with 2 × cores + 1 workers is the other common choice.
WORKER_CLASS = os.environ.get("SEAT_BENCH_WORKER_CLASS", "gthread")
WORKERS = int(os.environ.get("SEAT_BENCH_WORKERS", str(os.cpu_count() or 1)))
THREADS = int(os.environ.get("SEAT_BENCH_THREADS", "8"))
SEED_BATCH = 200


# --- the dedicated database ---------------------------------------------------------------------


def _server_env(var_dir) -> dict:
    return {
        **os.environ,
        "PROVISION_ENV": "test",
        "PROVISION_VAR_DIR": str(var_dir),
        "DATABASE_URL": DATABASE_URL,
        "DATABASE_CONN_MAX_AGE": "60",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LICENSE_PRIVATE_KEY": "",
        "LICENSE_PRIVATE_KEY_FILE": str(var_dir / "bench-signing-key.pem"),
        "SEAT_LINK_RATE_LIMIT_PER_IP": "0",
        "LOG_LEVEL": "WARNING",
    }


def _ensure_database() -> None:
    import psycopg

    parts = urlsplit(DATABASE_URL)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        require_service(False, f"PostgreSQL for the Seat Link benchmark is unreachable: {exc}")


def _manage(env, *args, timeout=1800) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


SEED_SCRIPT = """
import json, sys, time
from datetime import timedelta
from django.db import connection, transaction
from django.utils import timezone
from licenses.models import License
from licenses.services import license_issue
from provision.models import Subscription
from tests.factories import ContactFactory, CustomerFactory, subscription_factory

wanted, out, batch = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
prefix = "A-S9"
started = time.perf_counter()
have = Subscription.objects.filter(name__startswith=prefix).count()
today = timezone.localdate()
while have < wanted:
    with transaction.atomic():
        for n in range(have, min(have + batch, wanted)):
            # Explicit unique values: a resumed seed restarts the factories' sequences.
            customer = CustomerFactory(
                name=f"Seat bench {n}",
                billing_account_number=f"A9{n:07d}",
                salesforce_account_id=f"009{n:015d}",
                email_domains=[f"seat-bench-{n}.test"],
            )
            ContactFactory(customer=customer, email=f"buyer{n}@seat-bench-{n}.test")
            subscription = subscription_factory(
                customer,
                name=f"{prefix}{n:07d}",
                seats=100,
                term_start=today - timedelta(days=40),
                term_end=today + timedelta(days=325),
            )
            license_issue(actor=None, subscription=subscription, reason="Seat Link benchmark")
    have = min(have + batch, wanted)
seeded = time.perf_counter() - started
# Undo what a previous run changed, so that every run starts from freshly issued licenses.
with connection.cursor() as cursor:
    cursor.execute(
        "TRUNCATE usage_seatreport, usage_subscriptionusagedaily, usage_instance CASCADE"
    )
    cursor.execute("UPDATE licenses_license SET status = 'issued' WHERE status = 'active'")
    cursor.execute(
        "UPDATE provision_provisioningstep SET state = 'pending', completed_at = NULL "
        "WHERE kind = 'first_usage' AND state = 'done'"
    )
    cursor.execute("UPDATE provision_provisioningrecord SET completed_at = NULL")
keys = list(
    License.objects.filter(subscription__name__startswith=prefix)
    .order_by("subscription__name")
    .values_list("key", flat=True)[:wanted]
)
json.dump({"keys": keys, "seed_seconds": seeded}, open(out, "w"))
"""


def _seed(env, var_dir) -> tuple[list[str], float]:
    out = var_dir / "seat-bench-keys.json"
    script = var_dir / "seat_bench_seed.py"
    script.write_text(SEED_SCRIPT)
    code = (
        "import runpy, sys; "
        f"sys.argv = ['seed', '{SUBSCRIPTIONS}', '{out}', '{SEED_BATCH}']; "
        f"runpy.run_path('{script}', run_name='__main__')"
    )
    _manage(env, "shell", "-c", code)
    data = json.loads(out.read_text())
    return data["keys"], data["seed_seconds"]


def _vacuum() -> None:
    import psycopg

    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# --- the server and the clients -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn serving provision.wsgi on a free port, stopped by its process id."""

    def __init__(self, env, log_path):
        self.port = _free_port()
        self.log = log_path.open("w")
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "provision.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(WORKERS),
            "--worker-class",
            WORKER_CLASS,
            "--backlog",
            "2048",
            "--log-level",
            "warning",
        ]
        if WORKER_CLASS == "gthread":
            command += ["--threads", str(THREADS), "--keep-alive", "30"]
        self.process = subprocess.Popen(
            command,
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                if Client(self.port).send("GET", "/-/ping")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer /-/ping in time")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


HEADERS = {"User-Agent": "GitLab/17.6.1-ee", "Accept": "application/json"}


class Client:
    """One keep-alive connection, reopened when the server closes it (sync workers do)."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def send(self, method, path, body: bytes | None = None):
        headers = dict(HEADERS)
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
            except (http.client.HTTPException, OSError):
                # A keep-alive connection the server closed meanwhile: retry once, fresh.
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return response.status, payload
        raise AssertionError("unreachable")


def seat_link(key: str, instance_id: str, moment: datetime, billable: int) -> bytes:
    """The newest generation's body (wire protocol §1.3)."""
    return json.dumps(
        {
            "gitlab_version": "17.6.1-ee",
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "license_key": key,
            "max_historical_user_count": billable + 5,
            "billable_users_count": billable,
            "hostname": f"gitlab-{instance_id[:8]}.bench.test",
            "instance_id": instance_id,
            "unique_instance_id": instance_id,
            "add_on_metrics": [
                {"add_on_type": "duo_enterprise", "purchased_seats": 10, "assigned_seats": 3}
            ],
        }
    ).encode()


def run_phase(clients, calls, *, pace_rps: float | None = None):
    """Send ``(method, path, body)`` calls from every client thread until the calls, or
    SECONDS, run out. Closed loop, or open loop at ``pace_rps`` in total. Returns
    ``(latencies in s, statuses, payloads, wall seconds)``."""
    lock = threading.Lock()
    position = [0]
    results = []
    start = time.perf_counter()
    deadline = start + SECONDS

    def worker(client):
        local = []
        while True:
            with lock:
                index = position[0]
                position[0] += 1
            if index >= len(calls) or time.perf_counter() > deadline:
                break
            if pace_rps:
                due = start + index / pace_rps
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            began = time.perf_counter()
            status, payload = client.send(*calls[index])
            local.append((time.perf_counter() - began, status, payload))
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=worker, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return results, wall


def summary(name, results, wall) -> dict:
    latencies = sorted(r[0] * 1000 for r in results)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "name": name,
        "n": len(latencies),
        "p50": cuts[49],
        "p90": cuts[89],
        "p99": cuts[98],
        "rps": len(latencies) / wall,
    }


def test_seat_link_ingest_against_ping(tmp_path):
    var_dir = tmp_path / "server-var"
    var_dir.mkdir()
    env = _server_env(var_dir)
    _ensure_database()
    _manage(env, "migrate", "--no-input")
    from licenses.signing import generate_private_key_pem

    (var_dir / "bench-signing-key.pem").write_bytes(generate_private_key_pem())
    keys, seed_seconds = _seed(env, var_dir)
    assert len(keys) == SUBSCRIPTIONS
    _vacuum()

    instances = [(keys[n % len(keys)], str(uuid.uuid4())) for n in range(INSTANCES)]
    now = datetime.now(UTC)
    # Dated the next day (allowed: a day of clock skew), so the daily phase inserts new rows.
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=1, microsecond=0)
    first_calls = [
        ("POST", "/api/v1/seat_links", seat_link(key, iid, now, 40)) for key, iid in instances
    ]
    daily_calls = [
        ("POST", "/api/v1/seat_links", seat_link(key, iid, tomorrow, 41)) for key, iid in instances
    ]
    ping_calls = [("GET", "/-/ping", None)] * REQUESTS

    load_before = os.getloadavg()[0]
    server = Server(env, tmp_path / "gunicorn.log")
    try:
        clients = [Client(server.port) for _ in range(CLIENTS)]
        # Warm every worker (imports, database connections) before anything is timed.
        run_phase(clients, [("GET", "/health/", None)] * (WORKERS * THREADS * 8))
        ping1 = run_phase(clients, ping_calls[:REQUESTS])
        first = run_phase(clients, first_calls[:REQUESTS])
        daily = run_phase(clients, daily_calls[: len(first[0])])
        ping2 = run_phase(clients, ping_calls[:REQUESTS])
        paced_calls = [
            ("POST", "/api/v1/seat_links", seat_link(key, iid, tomorrow, 42))
            for key, iid in instances[: min(len(first[0]), int(PACED_RPS * SECONDS * 0.9))]
        ]
        paced = run_phase(clients, paced_calls, pace_rps=PACED_RPS)
    finally:
        server.stop()

    load_after = os.getloadavg()[0]
    for results, _ in (first, daily, paced):
        for _, status, payload in results:
            assert status == 200, payload[:300]
            answer = json.loads(payload)
            assert answer["success"] is True and "license" not in answer, answer
    for results, _ in (ping1, ping2):
        assert all(status == 200 for _, status, _ in results)

    import psycopg

    with psycopg.connect(DATABASE_URL) as conn:
        reports = conn.execute("SELECT count(*) FROM usage_seatreport").fetchone()[0]
        stored_instances = conn.execute("SELECT count(*) FROM usage_instance").fetchone()[0]
    assert stored_instances == len(first[0])
    assert reports == len(first[0]) + len(daily[0])

    rows = [
        summary("GET /-/ping (1)", *ping1),
        summary("Seat Link: first report", *first),
        summary("Seat Link: daily report", *daily),
        summary("GET /-/ping (2)", *ping2),
        summary(f"Seat Link: daily, paced {PACED_RPS:g}/s", *paced),
    ]
    ping_rps = (rows[0]["rps"] + rows[3]["rps"]) / 2
    lines = [
        f"\nSeat Link ingest over HTTP on PostgreSQL ({DATABASE_URL.rsplit('/', 1)[-1]}): "
        f"gunicorn {WORKERS} {WORKER_CLASS} workers"
        + (f" × {THREADS} threads" if WORKER_CLASS == "gthread" else "")
        + f", {CLIENTS} keep-alive client threads, {os.cpu_count()} CPUs; "
        f"{SUBSCRIPTIONS} subscriptions, {len(first[0])} instances "
        f"(seeding {seed_seconds:.0f} s, not timed); load average {load_before:.1f} before, "
        f"{load_after:.1f} after",
        f"{'phase':<34}{'n':>6}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>9}",
    ]
    for row in rows:
        lines.append(
            f"{row['name']:<34}{row['n']:>6}{row['p50']:>9.1f}{row['p90']:>9.1f}"
            f"{row['p99']:>9.1f}{row['rps']:>9.1f}"
        )
    daily_row = rows[2]
    ratio = daily_row["rps"] / ping_rps
    lines.append(
        f"daily ingest / ping throughput: {ratio:.2f} (target ≥ 0.60: "
        f"{'met' if ratio >= 0.6 else 'NOT met'}); daily p99 {daily_row['p99']:.1f} ms "
        f"(target ≤ 25 ms: {'met' if daily_row['p99'] <= 25 else 'NOT met'}); "
        f"paced p99 {rows[4]['p99']:.1f} ms"
    )
    print("\n".join(lines))
