"""Cloud activation latency over real HTTP: gunicorn in a subprocess, GitLab's newest request
body posted from this process. Run with ``pytest -m benchmark -s
tests/benchmarks/test_activation_latency.py`` (PostgreSQL: DATABASE_URL=postgres://…).

The server runs against this test run's database (a file on SQLite), so the subscriptions,
licenses and codes made here are committed first (transactional test). Each subscription gets
its license issued up front, as an order does, and one activation code. Then, with a few client
threads: every code's first activation (binds an instance, marks the license active, audits,
closes the provisioning step), every code's repeat from the same instance (idempotent), and two
baselines on the same server: a wrong code (the same path up to the code lookup) and
``GET /health/`` (database and cache check). Rate limits are off for the server: this measures
the work, not the limiter. Figures are printed; the assertions check every answer is right.

Size with ACTIVATION_BENCH_SUBSCRIPTIONS (250: 500 activation requests), client threads with
ACTIVATION_BENCH_CONCURRENCY (4), gunicorn workers with ACTIVATION_BENCH_WORKERS (2).
"""

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
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import connection

from licenses import services
from licenses.models import License
from licenses.signing import generate_private_key_pem
from tests.factories import ContactFactory, CustomerFactory, subscription_factory
from tests.licenses.test_graphql import GITLAB_HEADERS, newest_body

pytestmark = [pytest.mark.benchmark, pytest.mark.django_db(transaction=True)]

SUBSCRIPTIONS = int(os.environ.get("ACTIVATION_BENCH_SUBSCRIPTIONS", "250"))
CONCURRENCY = int(os.environ.get("ACTIVATION_BENCH_CONCURRENCY", "4"))
WORKERS = int(os.environ.get("ACTIVATION_BENCH_WORKERS", "2"))
HMAC_KEY = "activation-benchmark-hmac-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    """The URL of the database this test run uses (the test database, not the configured one)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Server:
    """gunicorn serving provision.wsgi on a free port, stopped by its process id."""

    def __init__(self, tmp_path, key_file):
        self.port = _free_port()
        env = {
            **os.environ,
            "PROVISION_ENV": "test",
            "PROVISION_VAR_DIR": str(tmp_path / "server-var"),
            "DATABASE_URL": _database_url(),
            # Keep connections, as production does with sync workers (configuration.md).
            "DATABASE_CONN_MAX_AGE": "60",
            "ALLOWED_HOSTS": "127.0.0.1",
            "LICENSE_PRIVATE_KEY": "",
            "LICENSE_PRIVATE_KEY_FILE": str(key_file),
            "ACTIVATION_CODE_HMAC_KEY": HMAC_KEY,
            "ACTIVATION_RATE_LIMIT_PER_IP": "0",
            "ACTIVATION_RATE_LIMIT_PER_CODE": "0",
            "LOG_LEVEL": "WARNING",
        }
        self.log = (tmp_path / "gunicorn.log").open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "provision.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(WORKERS),
                "--log-level",
                "warning",
            ],
            cwd=django_settings.BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                status, _ = request(self.port, "GET", "/health/")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer /health/ in time")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


_connections = threading.local()


def request(port, method, path, body=None):
    """One request on this thread's connection (reopened when the server closes it)."""
    conn = getattr(_connections, "conn", None)
    if conn is None or conn.port != port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        _connections.conn = conn
    headers = dict(GITLAB_HEADERS)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    except (http.client.HTTPException, OSError):
        conn.close()
        raise
    if response.getheader("Connection", "").lower() == "close":
        conn.close()
    return response.status, payload


def run_phase(port, calls):
    """Send ``(method, path, body)`` calls with CONCURRENCY threads; latencies and wall time."""

    def timed(call):
        started = time.perf_counter()
        status, payload = request(port, *call)
        return time.perf_counter() - started, status, payload

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        results = list(pool.map(timed, calls))
    return results, time.perf_counter() - started


def summary(name, results, wall):
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


def test_activation_latency_over_http(tmp_path, settings):
    key_file = tmp_path / "signing-key.pem"
    key_file.write_bytes(generate_private_key_pem())
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(key_file)
    settings.ACTIVATION_CODE_HMAC_KEY = HMAC_KEY

    started = time.perf_counter()
    codes, subscription_ids = [], []
    for _ in range(SUBSCRIPTIONS):
        customer = CustomerFactory()
        ContactFactory(customer=customer)
        subscription = subscription_factory(customer, seats=100)
        services.license_issue(actor=None, subscription=subscription, reason="Benchmark order")
        _, code = services.activation_code_generate(
            actor=None, subscription=subscription, reason="Benchmark order"
        )
        codes.append(code)
        subscription_ids.append(subscription.pk)
    setup = time.perf_counter() - started
    instances = [uuid.uuid4() for _ in codes]

    server = Server(tmp_path, key_file)
    try:
        # Warm every worker's imports and connections before anything is timed.
        run_phase(server.port, [("GET", "/health/", None)] * (WORKERS * 4))
        first, first_wall = run_phase(
            server.port,
            [
                ("POST", "/graphql", newest_body(c, i))
                for c, i in zip(codes, instances, strict=True)
            ],
        )
        repeat, repeat_wall = run_phase(
            server.port,
            [
                ("POST", "/graphql", newest_body(c, i))
                for c, i in zip(codes, instances, strict=True)
            ],
        )
        wrong, wrong_wall = run_phase(
            server.port,
            [("POST", "/graphql", newest_body("Z" * 20 + f"{n:04d}")) for n in range(len(codes))],
        )
        health, health_wall = run_phase(server.port, [("GET", "/health/", None)] * len(codes))
    finally:
        server.stop()

    keys = dict(License.objects.values_list("subscription_id", "key"))
    for subscription_id, (_, status, payload) in zip(subscription_ids, first, strict=True):
        assert status == 200, payload[:300]
        answer = json.loads(payload)["data"]["cloudActivationActivate"]
        assert answer["errors"] == [] and answer["newSubscription"] is True, answer
        assert answer["licenseKey"] == keys[subscription_id]
    for (_, status, payload), (_, _, first_payload) in zip(repeat, first, strict=True):
        assert status == 200
        again = json.loads(payload)["data"]["cloudActivationActivate"]
        assert again["errors"] == [] and again["newSubscription"] is False
        assert (
            again["licenseKey"]
            == json.loads(first_payload)["data"]["cloudActivationActivate"]["licenseKey"]
        )
    for _, status, payload in wrong:
        assert status == 200
        assert json.loads(payload)["data"]["cloudActivationActivate"]["errors"] == [
            "invalid activation code"
        ]
    assert all(status == 200 for _, status, _ in health)

    rows = [
        summary("first activation", first, first_wall),
        summary("repeat (idempotent)", repeat, repeat_wall),
        summary("baseline: wrong code", wrong, wrong_wall),
        summary("baseline: GET /health/", health, health_wall),
    ]
    lines = [
        f"\nCloud activation over HTTP on {connection.vendor}: gunicorn {WORKERS} sync workers, "
        f"{CONCURRENCY} client threads, {SUBSCRIPTIONS} subscriptions "
        f"(setup {setup:.1f} s, not timed)",
        f"{'phase':<26}{'n':>5}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>9}",
    ]
    for row in rows:
        lines.append(
            f"{row['name']:<26}{row['n']:>5}{row['p50']:>9.1f}{row['p90']:>9.1f}"
            f"{row['p99']:>9.1f}{row['rps']:>9.1f}"
        )
    by_name = {row["name"]: row for row in rows}
    for name in ("first activation", "repeat (idempotent)"):
        lines.append(
            f"{name} / wrong code: p50 ×{by_name[name]['p50'] / rows[2]['p50']:.2f}, "
            f"req/s ×{by_name[name]['rps'] / rows[2]['rps']:.2f}; "
            f"/ health: p50 ×{by_name[name]['p50'] / rows[3]['p50']:.2f}"
        )
    print("\n".join(lines))
