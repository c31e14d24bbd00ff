"""A real Celery worker against the test database and the configured broker.

Everything else runs tasks in-process; this is the one place that proves the whole path: the
message leaves through the broker the settings name (kombu's filesystem transport locally, Redis
in CI), a separate worker process picks it up, boots Django against the same test database,
runs the service and stamps its audit event with the task's request id.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from provision.celery import app as celery_app
from provision.choices import AuditSource, SubscriptionStatus
from provision.models import AuditEvent, Subscription
from provision.tasks import subscriptions_expire
from tests.conftest import require_service
from tests.factories import subscription_factory

pytestmark = pytest.mark.integration

WORKER_START_TIMEOUT = 60
TASK_TIMEOUT = 60
TASK_NAME = "provision.tasks.subscriptions_expire"


def _database_url() -> str:
    """The URL of the database this test runs against (the *test* database, not the main one)."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        credentials = quote(db["USER"] or "", safe="")
        if db["PASSWORD"]:
            credentials += ":" + quote(db["PASSWORD"], safe="")
        host = db["HOST"] or "localhost"
        port = f":{db['PORT']}" if db["PORT"] else ""
        return f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"
    pytest.fail(f"No worker database URL for engine {db['ENGINE']}")


def _require_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        import redis

        try:
            reachable = bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
        except redis.RedisError:
            reachable = False
        require_service(reachable, f"Redis broker at {url} does not answer")


class Worker:
    """One ``celery worker`` subprocess consuming one private queue, with its log on disk."""

    def __init__(self, log_path: Path):
        # A queue of its own, so a demo worker or a parallel test run on the same broker cannot
        # take this test's messages (nor this worker theirs). No dots: kombu's filesystem
        # transport splits file names on the first one.
        self.queue = f"itest_{uuid.uuid4().hex[:12]}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
            "DJANGO_SETTINGS_MODULE": "provision.settings",
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PROVISION_VAR_DIR": str(settings.VAR_DIR),
            "CELERY_TASK_ALWAYS_EAGER": "false",
        }
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "provision",
            "worker",
            "--pool",
            "solo",
            "-Q",
            self.queue,
            "--hostname",
            f"{self.queue}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_for(r"\bready\.", WORKER_START_TIMEOUT, "the worker to report ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_for(self, pattern: str, timeout: float, what: str) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.process.poll() is not None:
                pytest.fail(
                    f"Celery worker exited with {self.process.returncode} while waiting for "
                    f"{what}:\n{self.log()[-3000:]}"
                )
            time.sleep(0.2)
        pytest.fail(f"Timed out after {timeout}s waiting for {what}:\n{self.log()[-3000:]}")

    def run(self, **kwargs) -> str:
        """Enqueue the expiry task through the broker; return the worker's logged result."""
        result = subscriptions_expire.apply_async(kwargs=kwargs, queue=self.queue)
        match = self._wait_for(
            rf"{re.escape(TASK_NAME)}\[{re.escape(result.id)}\] (succeeded|raised|failed)[^\n]*",
            TASK_TIMEOUT,
            f"task {result.id} to finish",
        )
        assert match.group(1) == "succeeded", match.group(0)
        return match.group(0)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the current task
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    """One worker for the module (it takes seconds to start and stop), always stopped at the end.

    Between tests it sits idle with no transaction open, so the flush that follows each
    transactional test is not blocked by it.
    """
    assert celery_app.conf.task_always_eager is False, "tasks must go through the broker here"
    _require_broker()
    worker = Worker(tmp_path_factory.mktemp("celery") / "worker.log")
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def ended_subscription(transactional_db):
    """Sold a year ago and recorded while active; its term ended last month."""
    term_start = timezone.localdate() - timedelta(days=400)
    subscription = subscription_factory(
        term_start=term_start,
        term_end=term_start + timedelta(days=365),
        today=term_start + timedelta(days=1),
    )
    assert subscription.status == SubscriptionStatus.ACTIVE
    return subscription


def _expiry_events(subscription):
    return AuditEvent.objects.filter(
        action="provision.subscription_expired",
        target_type="provision.subscription",
        target_id=str(subscription.pk),
    )


def test_provision_tasks_route_to_the_default_queue_the_workers_consume():
    route = celery_app.amqp.router.route({}, TASK_NAME)
    assert route["queue"].name == "default"


def test_worker_expires_an_ended_subscription_and_audits_it_as_a_task(worker, ended_subscription):
    request_id = f"itest-{uuid.uuid4().hex}"

    outcome = worker.run(request_id=request_id)

    assert "'expired': 1" in outcome
    ended_subscription.refresh_from_db()
    assert ended_subscription.status == SubscriptionStatus.EXPIRED
    event = _expiry_events(ended_subscription).get()
    assert event.source == AuditSource.TASK
    assert event.request_id == request_id
    assert event.actor is None and event.actor_kind == "system"
    assert event.changes == {"status": [SubscriptionStatus.ACTIVE, SubscriptionStatus.EXPIRED]}


def test_worker_running_the_expiry_twice_changes_and_audits_once(worker, ended_subscription):
    first = worker.run()
    second = worker.run()

    assert "'expired': 1" in first
    assert "'expired': 0" in second
    ended_subscription.refresh_from_db()
    assert ended_subscription.status == SubscriptionStatus.EXPIRED
    event = _expiry_events(ended_subscription).get()
    # Without a request id from a caller the task's own id links the event to the worker log.
    assert event.request_id.startswith("task-")
    assert event.source == AuditSource.TASK
    assert Subscription.objects.filter(status=SubscriptionStatus.EXPIRED).count() == 1
