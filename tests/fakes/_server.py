"""What the fake CRM servers share: a threaded HTTP listener on 127.0.0.1, reset-safe held calls,
and the ``python -m tests.fakes.<name>`` entry point.

A fake subclasses ``FakeServer`` and implements ``handle(method, raw_path, headers, body)``,
answering a ``Reply``; the listener, its lifecycle and the wire details (keep-alive, no Nagle,
quiet logs, clients that hang up) live here once.

Held calls and ``reset()``: a fake that delays answers must not let a call from one test land in
the next. Each call is *admitted* (``_admit()``, under the fake's lock) before it may wait; a
reset calls ``_invalidate_calls_in_flight()`` (under the lock), which wakes every waiting call
and starts a new generation, and a call that finds it was admitted before a reset
(``_reset_since(admission)``) answers 503 without touching the new state.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, TypeVar


@dataclass
class Reply:
    """What the listener writes back for one request."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, *, content_type: str = "application/json") -> Reply:
    """A reply carrying ``payload`` as JSON."""
    return Reply(status, json.dumps(payload).encode("utf-8"), content_type)


@dataclass(frozen=True)
class Admission:
    """When a call arrived, for telling whether a reset came since: the fake's reset generation
    then, and the event the next reset sets to wake the call if it is waiting."""

    generation: int
    wake: threading.Event

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the fake is reset or stopped meanwhile."""
        self.wake.wait(seconds)


class FakeServer:
    """A fake service in a daemon thread: ``start()`` / ``stop()`` or ``with``, then ``url``.

    Subclasses set ``name`` (for messages and the thread name) and implement ``handle``; they
    call ``super().__init__(host=..., port=...)`` before their own ``reset()``.
    """

    name = "fake"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0):
        """Remember where to listen (port 0 = any free port); nothing is bound until start()."""
        self.host = host
        self.port = port
        # Reentrant: public methods take it and call one another.
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._wake = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (the port is known once started)."""
        if self._server is None:
            raise RuntimeError(f"the fake {self.name} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread (a no-op when already serving); answers ``self``."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=f"fake-{self.name.lower()}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release the port and wake any call still held by a delay."""
        with self._lock:
            self._wake_held_calls()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what a subclass provides ----------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one HTTP request (called from the listener's threads)."""
        raise NotImplementedError

    def _reply_to_a_bug(self) -> Reply:
        """The answer when ``handle`` raised: a 500 in the service's own error shape."""
        return json_reply(500, {"error": f"unexpected error in the fake {self.name}"})

    # --- calls held across a reset ---------------------------------------------------------
    def _admit(self) -> Admission:
        """Stamp a call on arrival; call under ``self._lock``, before the call may wait."""
        return Admission(self._generation, self._wake)

    def _reset_since(self, admission: Admission) -> bool:
        """Whether a reset came after ``admission``; call under ``self._lock``."""
        return admission.generation != self._generation

    def _invalidate_calls_in_flight(self) -> None:
        """Start a new generation and wake held calls; call under ``self._lock`` from reset().

        Both happen under the lock, so a woken call that takes the lock next already sees the
        new generation and answers 503 instead of reaching into the new state."""
        self._generation += 1
        self._wake_held_calls()

    def _wake_held_calls(self) -> None:
        woken, self._wake = self._wake, threading.Event()
        woken.set()


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, asks the fake (``server.fake``), writes its reply."""

    protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session and simple-salesforce expect
    # Headers and body are written separately; with Nagle on, each answer waits ~40 ms for the
    # client's delayed ACK.
    disable_nagle_algorithm = True

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fake: FakeServer = self.server.fake  # type: ignore[attr-defined]
        try:
            reply = fake.handle(self.command, self.path, self.headers, body)
        except Exception:  # a bug in the fake: answer as the service would, and show it
            traceback.print_exc()
            reply = fake._reply_to_a_bug()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def handle_one_request(self) -> None:
        """Serve one request; a client that hung up first is expected, not an error."""
        # Timeout tests close their socket before a delayed answer is written.
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Stay quiet; each fake keeps its own request log."""


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The standalone command line every fake accepts: ``--host`` and ``--port`` (0 = any)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    return parser


FakeT = TypeVar("FakeT", bound=FakeServer)


def serve_forever_until_signal(fake: FakeT, banner: Callable[[FakeT], str]) -> int:
    """Start ``fake``, print ``banner(fake)`` (it knows the URL by then), serve until SIGTERM
    or Ctrl-C, stop; answers the exit status (0). Callers (``make demo``, the benchmarks) read
    the first printed line for the URL, so the banner starts with "... listening on <url>"."""
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with fake:
        print(banner(fake), flush=True)
        stopped.wait()
    return 0
