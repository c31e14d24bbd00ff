#!/usr/bin/env python3
"""Run Provision locally: prepare the database, then the web app, a Celery worker and beat,
and the fake Salesforce and Gainsight that the CRM sync pushes to.

Called by ``make demo`` with the project's virtualenv interpreter. Uses only the embedded
defaults (SQLite and kombu's filesystem broker under ``var/``), so nothing else has to run.

Why a script and not shell job control: one place that starts the three processes in their own
sessions, prefixes their output, notices when one dies, and on Ctrl-C (or SIGTERM, or the
terminal closing) stops all of them cleanly — gunicorn and the worker finish what they are
doing — instead of leaving a worker or beat behind.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
START_TIMEOUT = 120  # seconds for all three processes to be up
STOP_TIMEOUT = 15  # seconds for a graceful stop before SIGKILL

_print_lock = threading.Lock()
_COLOURS = {
    "web": "36",
    "worker": "35",
    "beat": "33",
    "salesforce": "34",
    "gainsight": "32",
    "demo": "1",
}


def say(name: str, line: str) -> None:
    prefix = f"{name:<6} | "
    if sys.stdout.isatty():
        prefix = f"\033[{_COLOURS.get(name, '0')}m{prefix}\033[0m"
    with _print_lock:
        sys.stdout.write(prefix + line.rstrip("\n") + "\n")
        sys.stdout.flush()


def fail(message: str) -> None:
    """The one readable line that says why the demo did not start."""
    with _print_lock:
        sys.stdout.flush()
        sys.stderr.write(f"make demo: {message}\n")
        sys.stderr.flush()


def _child_setup() -> None:
    """In the child: its own session (so the terminal's Ctrl-C reaches only us and we stop the
    children in order), and on Linux a SIGTERM if this script dies without cleaning up."""
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Process:
    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name = name
        self.command = command
        self.env = env
        self.tail: collections.deque[str] = collections.deque(maxlen=30)
        self.popen: subprocess.Popen | None = None
        self.ready = threading.Event()
        self.ready_marker: str | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",
            # preexec_fn is unsafe once threads run; all children start before any pump thread.
            preexec_fn=_child_setup,
        )

    def pump(self) -> None:
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.popen.stdout:
            self.tail.append(line.rstrip("\n"))
            say(self.name, line)
            if self.ready_marker and self.ready_marker in line:
                self.ready.set()

    def exited(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def last_words(self) -> str:
        """The most telling line of its output: the last error-looking one, else the last one."""
        lines = [line.strip() for line in self.tail if line.strip()]
        for line in reversed(lines):
            if any(word in line for word in ("Error", "error", "Exception", "denied", "in use")):
                return line
        return lines[-1] if lines else "(no output)"

    def signal_group(self, sig: int) -> None:
        """Signal the child's whole session; works after the child itself has exited, so pool
        processes it left behind are reached too."""
        if self.popen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)


def run_step(title: str, args: list[str], env: dict[str, str]) -> str:
    """Run one manage.py step to completion; show its output; stop the demo if it fails."""
    say("demo", title)
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
    )
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        for line in output.splitlines()[-20:]:
            say("demo", line)
        last = output.splitlines()[-1] if output else "(no output)"
        fail(f"`manage.py {' '.join(args)}` failed with exit code {result.returncode}: {last}")
        sys.exit(1)
    return result.stdout.strip("\n")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now (the fake CRMs take it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def crm_fakes(env: dict[str, str]) -> tuple[list[Process], dict[str, str]]:
    """The fake Salesforce and Gainsight (tests/fakes) as processes, and the settings that
    point the CRM sync at them: a new user watches usage arrive in "their CRM" without one.
    Changes are pushed 10 s after they happen instead of a minute, for the same reason."""
    salesforce_port, gainsight_port = free_port(), free_port()
    settings = {
        "SALESFORCE_INSTANCE_URL": f"http://127.0.0.1:{salesforce_port}",
        "SALESFORCE_ALLOW_HTTP": "true",
        "SALESFORCE_USERNAME": "provision-sync@example.com",
        "SALESFORCE_PASSWORD": "fake-password",
        "SALESFORCE_SECURITY_TOKEN": "fake-security-token",
        "GAINSIGHT_BASE_URL": f"http://127.0.0.1:{gainsight_port}",
        "GAINSIGHT_ALLOW_HTTP": "true",
        "GAINSIGHT_ACCESS_KEY": "fake-gainsight-access-key",
        "CRM_PUSH_DEBOUNCE_SECONDS": "10",
    }
    processes = [
        Process(
            "salesforce",
            [PYTHON, "-m", "tests.fakes.salesforce", "--port", str(salesforce_port)],
            env,
        ),
        Process(
            "gainsight",
            [PYTHON, "-m", "tests.fakes.gainsight", "--port", str(gainsight_port)],
            env,
        ),
    ]
    return processes, settings


def login_page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_all(processes: list[Process]) -> None:
    # SIGTERM to the main processes only: gunicorn and the Celery worker (warm shutdown) let
    # their own children finish the current request or task.
    for process in processes:
        if process.popen and process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        if not process.popen:
            continue
        try:
            process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say("demo", f"{process.name} did not stop in {STOP_TIMEOUT}s; killing it")
        # Also reap anything the process left in its session (gunicorn or pool workers).
        process.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    options = parser.parse_args()
    port = options.port
    url = f"http://127.0.0.1:{port}/"

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "provision.settings"}
    # The demo is the embedded profile whatever the shell has exported for other work.
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "PROVISION_ENV", "CELERY_TASK_ALWAYS_EAGER"):
        if env.pop(name, None):
            say(
                "demo", f"Ignoring {name} from the environment: the demo uses the embedded defaults"
            )

    if not port_is_free(port):
        fail(
            f"port {port} on 127.0.0.1 is already in use; stop what runs there or "
            f"run `make demo DEMO_PORT={port + 1}`"
        )
        return 1

    fakes, crm_settings = crm_fakes(dict(env))
    env.update(crm_settings)
    env["PROVISION_PUBLIC_URL"] = url.rstrip("/")

    started = time.monotonic()
    run_step("Applying database migrations (SQLite under var/)", ["migrate", "--noinput"], env)
    dev_key = run_step(
        "Making sure a development license signing key exists", ["license_dev_key"], env
    )
    if dev_key:
        for line in dev_key.splitlines():
            say("demo", line)
    seeded = run_step("Loading demo data", ["seed_demo"], env)
    for line in seeded.splitlines():
        say("demo", line)
    # seed_demo ends with its table of logins; repeat just that once everything is up.
    lines = seeded.splitlines()
    table_start = next((i for i, line in enumerate(lines) if line.startswith("username")), 0)
    logins = lines[table_start:]

    web = Process(
        "web",
        [
            PYTHON,
            "-m",
            "gunicorn",
            "provision.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--graceful-timeout",
            "5",
            "--access-logfile",
            "-",
            "--error-logfile",
            "-",
        ],
        env,
    )
    worker = Process(
        "worker",
        [
            PYTHON,
            "-m",
            "celery",
            "-A",
            "provision",
            "worker",
            "-Q",
            "default,ingest,crm",
            "--concurrency",
            "2",
            "--hostname",
            "demo@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        env,
    )
    worker.ready_marker = " ready."
    beat = Process(
        "beat", [PYTHON, "-m", "celery", "-A", "provision", "beat", "--loglevel", "INFO"], env
    )
    processes = [*fakes, web, worker, beat]

    stopping = threading.Event()

    def on_signal(signum, _frame):
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    problem = ""
    try:
        for process in processes:
            process.start()
        for process in processes:
            process.pump()
        problem = supervise(processes, worker, url, started, logins, stopping, crm_settings)
    finally:
        stop_all(processes)
        say("demo", "Stopped.")
    if problem:
        fail(problem)  # last, so it is the line left on the screen
        return 1
    return 0


def supervise(processes, worker, url, started, logins, stopping, crm_settings) -> str:
    """Wait for start-up, then watch until Ctrl-C. Returns why it stopped, or "" if asked to."""

    def dead() -> Process | None:
        for process in processes:
            if process.exited() is not None:
                time.sleep(0.3)  # let the pump thread print its last lines
                return process
        return None

    # Start-up: the login page answers, the worker says it is ready, nobody has died.
    deadline = time.monotonic() + START_TIMEOUT
    web_up = False
    while not stopping.is_set():
        if process := dead():
            return (
                f"{process.name} exited with code {process.exited()} during start-up: "
                f"{process.last_words()}"
            )
        web_up = web_up or login_page_answers(url + "login/")
        if web_up and worker.ready.is_set():
            break
        if time.monotonic() > deadline:
            waiting = [
                n for n, ok in (("web", web_up), ("worker", worker.ready.is_set())) if not ok
            ]
            return f"{' and '.join(waiting)} not up after {START_TIMEOUT}s"
        time.sleep(0.25)
    if stopping.is_set():
        return ""

    say("demo", "")
    say("demo", f"Provision is up after {time.monotonic() - started:.0f}s: {url}")
    for line in logins:
        say("demo", line)
    say(
        "demo",
        "CRM sync pushes to a fake Salesforce and Gainsight; what they hold: "
        f"{crm_settings['SALESFORCE_INSTANCE_URL']}/__fake__/records/Account and "
        f"{crm_settings['GAINSIGHT_BASE_URL']}/__fake__/records/Company",
    )
    say("demo", "Worker and beat are running. Press Ctrl-C to stop everything.")
    say("demo", "")

    while not stopping.is_set():
        if process := dead():
            return (
                f"{process.name} stopped unexpectedly with code {process.exited()}: "
                f"{process.last_words()}"
            )
        stopping.wait(0.5)
    say("demo", "Stopping web, worker, beat and the fake CRMs…")
    return ""


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C during the set-up steps, before any process started
        sys.exit(130)
