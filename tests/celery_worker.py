"""A real ``celery worker`` subprocess for the integration tests, against the test database.

The worker is a separate process started with ``python -m celery -A provision worker``: it boots
Django itself, from the environment this module hands it (the *test* database's URL, the broker
the settings name, the test's ``PROVISION_VAR_DIR`` and any extra settings a test needs, e.g. a
fake CRM's URL). Messages go through the real broker: kombu's filesystem transport locally, Redis
in CI. Each worker consumes a private queue, so neither a demo worker nor a parallel test run on
the same broker can take its messages.

It runs ``--pool solo``: the task runs in the worker's main process, so one SIGKILL (``kill()``)
loses the worker and its task at once, as an OOM kill or a lost node would.

Tests that use it need ``pytest.mark.django_db(transaction=True)`` (or ``transactional_db``):
the worker has its own connection and sees only committed rows. Every wait is bounded and a
timeout fails with the end of the worker's log.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from tests.support import require_service

WORKER_START_TIMEOUT = 60
TASK_TIMEOUT = 60
LOG_TAIL = 3000

T = TypeVar("T")


def database_url() -> str:
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


def require_broker() -> None:
    """Skip locally (fail in CI) when the configured Redis broker does not answer."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        import redis

        try:
            reachable = bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
        except redis.RedisError:
            reachable = False
        require_service(reachable, f"Redis broker at {url} does not answer")


class Worker:
    """One ``celery worker`` subprocess consuming one private queue, with its log on disk.

    ``env`` adds or overrides environment variables (i.e. settings) for the worker only.
    Usable as a context manager: started on entry, stopped on exit whatever happened.
    """

    def __init__(self, log_path: Path, *, env: Mapping[str, str] | None = None):
        # A queue of its own, so a demo worker or a parallel test run on the same broker cannot
        # take this test's messages (nor this worker theirs). No dots: kombu's filesystem
        # transport splits file names on the first one.
        self.queue = f"itest_{uuid.uuid4().hex[:12]}"
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the worker and wait until it reports ready (stopped again if it never does)."""
        env = {
            **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
            "DJANGO_SETTINGS_MODULE": "provision.settings",
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "PROVISION_VAR_DIR": str(settings.VAR_DIR),
            "CELERY_TASK_ALWAYS_EAGER": "false",
            **self.extra_env,
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
        try:
            self.wait_for_log(r"\bready\.", WORKER_START_TIMEOUT, "the worker to report ready")
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    def fail(self, message: str) -> None:
        """Fail the test with ``message`` and the end of the worker's log."""
        pytest.fail(f"{message}\n--- worker log ({self.log_path}) ---\n{self.log()[-LOG_TAIL:]}")

    def wait_for_log(self, pattern: str, timeout: float, what: str) -> re.Match:
        """The first match of ``pattern`` in the log, waiting up to ``timeout`` seconds."""
        return self.wait_until(lambda: re.search(pattern, self.log()), timeout, what)

    def wait_until(self, condition: Callable[[], T], timeout: float, what: str) -> T:
        """Poll ``condition`` until it returns something truthy (returned); fail on timeout or
        if the worker exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if self.process is not None and self.process.poll() is not None:
                self.fail(
                    f"Celery worker exited with {self.process.returncode} while waiting for {what}"
                )
            if time.monotonic() >= deadline:
                self.fail(f"Timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)

    def send(self, task: Any, **kwargs: Any) -> str:
        """Enqueue ``task`` with ``kwargs`` on this worker's queue; return the task id."""
        return task.apply_async(kwargs=kwargs, queue=self.queue).id

    def wait_for_task(self, task: Any, task_id: str, timeout: float = TASK_TIMEOUT) -> re.Match:
        """Wait for the worker's final log line about ``task_id`` (retries are not final):
        group 1 is ``succeeded``, ``raised`` or ``failed``."""
        return self.wait_for_log(
            rf"{re.escape(task.name)}\[{re.escape(task_id)}\] (succeeded|raised|failed)[^\n]*",
            timeout,
            f"task {task.name}[{task_id}] to finish",
        )

    def run(self, task: Any, **kwargs: Any) -> str:
        """Enqueue ``task`` through the broker and wait for it; return the worker's logged
        result line (fails the test unless the task succeeded)."""
        match = self.wait_for_task(task, self.send(task, **kwargs))
        if match.group(1) != "succeeded":
            self.fail(f"Task did not succeed: {match.group(0)}")
        return match.group(0)

    def kill(self) -> None:
        """SIGKILL the worker (no warm shutdown, no ack of the task it runs) and reap it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown (the current task finishes), killed if it takes over 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the current task
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
