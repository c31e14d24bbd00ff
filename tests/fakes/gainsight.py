"""A fake Gainsight CS (NXT) data API: a real threaded HTTP server for tests and ``make demo``.

It speaks the synchronous Company / Custom Object API shapes described in
``/work/shared/reference/crm-apis.md`` §3 (labels there: [DOC], [3P], [UNCONFIRMED]):

* every ``/v1`` call needs the header ``accesskey`` (any case); otherwise **401**.
* ``POST /v1/data/objects/{obj}`` inserts ``{"records": [...]}``; ``PUT
  /v1/data/objects/{obj}?keys=f1,f2`` updates the records whose key fields match;
  ``POST /v1/data/objects/query/{obj}`` reads with
  ``{"select": [...], "where": {"conditions": [{"name", "alias", "value": [...], "operator"}],
  "expression": "A AND (B OR C)"}, "limit": n, "offset": n}`` (operators EQ, NE, IN, NOT_IN,
  IS_NULL, IS_NOT_NULL; limit at most 5,000).
* At most 50 records a write, else **400**. Gainsight validates the whole call: one bad record
  (unknown field → ``GSOBJ_1002``, string over 255 characters → ``GSOBJ_1001``, an injected
  rejection, a duplicate key) fails the entire call and nothing of it is written.
* Every answer is the envelope ``{"result", "errorCode", "errorDesc", "requestId", "data":
  {"count", "errors", "records"}, "message"}``; failures have ``result: false``.
* A fixed-window limit (default 100 calls a minute, on the injectable ``clock``) answers **429**
  ``GU_2400``.

Objects it knows by default (``DEFAULT_OBJECTS``; change with ``define_object``): ``Company``
keyed by ``Provision_Customer_Id__gc`` and the custom object ``Provision_Subscription_Usage__gc``
keyed by ``Provision_Subscription_Id__gc``, each with a fixed field list; other field names are
``GSOBJ_1002``. Inserting a key that already exists (or twice in one call) is a duplicate, so a
blind retried POST shows up.

Choices of this fake where Gainsight's behaviour is [UNCONFIRMED] (codes that are not from
Gainsight's published list are the fake's own and say so by not being numeric):

* PUT with a key that matches no record, switch ``update_unmatched``: ``"report"`` (default)
  answers 200 ``result: true`` and lists the record in ``data.errors`` as ``{"index": i,
  "errorCode": "GSOBJ_NO_MATCH", "errorDesc": ..., "record": {<key fields>}}``, not updated;
  ``"ignore"`` leaves it out silently; ``"fail"`` fails the whole call with 400
  ``GSOBJ_NO_MATCH``.
* Duplicate insert: 400 ``GSOBJ_DUPLICATE``. Over 50 records: 400 ``GSOBJ_RECORD_LIMIT``.
  Malformed body: 400 ``GSOBJ_BAD_REQUEST``. Unknown object: 404 ``GSOBJ_OBJECT_NOT_FOUND``.
  Bad access key: 401 ``GS_ACCESS_DENIED``. 500: ``GU_1101`` (as in rudder-transformer's mocks).
* Write answers echo each written record (``Gsid`` plus its fields) in ``data.records``.

Inspection and fault injection, from Python (``FakeGainsight`` methods) or over HTTP (no access
key needed, not logged, not rate limited):

* ``POST /__fake__/reset``: forget records, log and faults; restore defaults. A call still held
  by ``delay`` wakes and answers 503 without touching the fresh state.
* ``POST /__fake__/faults`` with any of ``{"fail_next": {"count", "status", "after",
  "operation", "after_write"}, "reject_keys": {"keys", "object", "code", "message"}, "delay":
  {"seconds", "count"}, "access_key": "...", "calls_per_minute": n, "update_unmatched": "..."}``.
* ``GET /__fake__/records/{obj}`` and ``GET /__fake__/log``.
* Python only: ``seed()`` and ``delete()`` records behind the client's back, and
  ``before_call`` (a callable given each ``LoggedCall`` before it is handled) to act between a
  client's calls.

Run standalone with ``python -m tests.fakes.gainsight --port 8802``: it prints its URL and
serves until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes._server import (
    Admission,
    FakeServer,
    Reply,
    argument_parser,
    json_reply,
    serve_forever_until_signal,
)

DEFAULT_ACCESS_KEY = "fake-gainsight-access-key"
MAX_RECORDS_PER_CALL = 50
MAX_QUERY_LIMIT = 5000
MAX_STRING_LENGTH = 255
UPDATE_UNMATCHED_MODES = ("report", "ignore", "fail")
FAULT_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class ObjectSchema:
    """A Gainsight object the fake knows: its unique key field and the fields it accepts."""

    key_field: str
    fields: frozenset[str]

    def unknown(self, names: Iterable[str]) -> list[str]:
        """Field names this object lacks (``Gsid`` is always known), sorted."""
        return sorted({n for n in names if n != "Gsid" and n not in self.fields})


_USAGE_FIELDS = (
    "Provision_Seats_Purchased__gc",
    "Provision_Billable_Users__gc",
    "Provision_Max_Users__gc",
    "Provision_Utilization_Pct__gc",
    "Provision_Overage_Seats__gc",
    "Provision_Last_Usage_Sync__gc",
    "Provision_Last_Seat_Report_At__gc",
    "Provision_Plan__gc",
    "Provision_License_Status__gc",
)

DEFAULT_OBJECTS: dict[str, ObjectSchema] = {
    "Company": ObjectSchema(
        key_field="Provision_Customer_Id__gc",
        fields=frozenset(
            {
                "Name",
                "Provision_Customer_Id__gc",
                "Provision_Subscription_Count__gc",
                "Provision_Renewal_Date__gc",
                "Provision_Console_Url__gc",
                *_USAGE_FIELDS,
            }
        ),
    ),
    "Provision_Subscription_Usage__gc": ObjectSchema(
        key_field="Provision_Subscription_Id__gc",
        fields=frozenset(
            {
                "Name",
                "Provision_Subscription_Id__gc",
                "Provision_Customer_Id__gc",
                "Provision_Start_Date__gc",
                "Provision_End_Date__gc",
                "Provision_Usage_Date__gc",
                *_USAGE_FIELDS,
            }
        ),
    ),
}


@dataclass
class LoggedCall:
    """One ``/v1`` request the fake received, and how it answered."""

    method: str
    path: str
    object_name: str
    operation: str  # "insert", "update", "query" or "other"
    record_count: int
    keys: tuple[str, ...]
    window: int  # the fixed rate-limit window (minute number on the fake's clock)
    status: int = 0
    error_code: str | None = None


@dataclass
class _FailRule:
    """A queued ``fail_next`` fault."""

    status: int
    count: int
    after: int = 0
    operation: str | None = None
    after_write: bool = False


@dataclass
class _Rejection:
    """A ``reject_keys`` fault for one key value."""

    code: str
    message: str
    object_name: str | None


@dataclass
class _Answer:
    """An HTTP status and JSON body to send back."""

    status: int
    body: dict[str, Any]


class _CallFailed(Exception):
    """Raised inside request handling to answer with a failure envelope."""

    def __init__(self, status: int, code: str | None, desc: str):
        super().__init__(desc)
        self.status = status
        self.code = code
        self.desc = desc


def envelope(
    *, result: bool = True, data: Any = None, code: str | None = None, desc: str | None = None
) -> dict[str, Any]:
    """Gainsight's response envelope (§3.2): ``result``, ``errorCode``, ``errorDesc``, ``data``."""
    return {
        "result": result,
        "errorCode": code,
        "errorDesc": desc,
        "requestId": str(uuid.uuid4()),
        "data": data,
        "message": None,
    }


class ManualClock:
    """A clock that only moves when slept on: shared by the fake and a client under test.

    ``time()`` answers the current reading; ``sleep(s)`` advances it by ``s`` at once, so a
    rate limiter that waits for the next minute costs no real time. ``slept`` sums the waits.
    """

    def __init__(self, start: float = 1_700_000_040.0):
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept = 0.0

    def time(self) -> float:
        """The current reading, in seconds since the epoch."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Advance the clock instead of waiting."""
        with self._lock:
            self._now += max(0.0, seconds)
            self.slept += max(0.0, seconds)


class FakeGainsight(FakeServer):
    """The fake server: its state, its fault switches, and its HTTP listener.

    Use as a context manager or call ``start()`` / ``stop()``. ``url`` is the base URL to give
    a client (``http://127.0.0.1:<port>``). All methods are thread-safe.
    """

    name = "Gainsight"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_key: str = DEFAULT_ACCESS_KEY,
        calls_per_minute: int = 100,
        update_unmatched: str = "report",
        clock: Callable[[], float] = time.time,
    ):
        """Configure the defaults ``reset()`` returns to; ``clock`` drives the rate-limit
        windows (a ``ManualClock().time`` moves them without waiting)."""
        super().__init__(host=host, port=port)
        self._default_access_key = access_key
        self._default_calls_per_minute = calls_per_minute
        self._default_update_unmatched = update_unmatched
        self._default_clock = clock
        self.reset()

    def provision_settings(self) -> dict[str, Any]:
        """Provision's settings that point its Gainsight client at this running fake: its URL
        over plain HTTP, the access key it accepts now, and a short timeout."""
        return {
            "GAINSIGHT_BASE_URL": self.url,
            "GAINSIGHT_ACCESS_KEY": self.access_key,
            "GAINSIGHT_ALLOW_HTTP": True,
            "GAINSIGHT_TIMEOUT_SECONDS": 5,
        }

    # --- state -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget records, log and faults; restore the default settings and clock.

        A call still in flight (one held by ``delay``) is answered 503 without touching the
        new state, so it cannot store, count in the rate limit or be logged in the next test."""
        with self._lock:
            self._invalidate_calls_in_flight()
            self.objects: dict[str, ObjectSchema] = dict(DEFAULT_OBJECTS)
            self._records: dict[str, list[dict[str, Any]]] = {}
            self.log: list[LoggedCall] = []
            self.access_key = self._default_access_key
            self.calls_per_minute = self._default_calls_per_minute
            self.update_unmatched = self._default_update_unmatched
            self.clock = self._default_clock
            self._window_counts: dict[int, int] = {}
            self._fail_rules: list[_FailRule] = []
            self._rejections: dict[str, _Rejection] = {}
            self._delay_seconds = 0.0
            self._delay_count: int | None = None
            self.before_call: Callable[[LoggedCall], None] | None = None

    def define_object(self, name: str, *, key_field: str, fields: Iterable[str]) -> None:
        """Add or replace an object the fake knows (its records are kept)."""
        with self._lock:
            self.objects[name] = ObjectSchema(key_field, frozenset({key_field, *fields}))

    def records(self, object_name: str) -> list[dict[str, Any]]:
        """Copies of the stored records of an object, in insertion order (each has ``Gsid``)."""
        with self._lock:
            return copy.deepcopy(self._records.get(object_name, []))

    def record(self, object_name: str, key: str) -> dict[str, Any] | None:
        """A copy of the record whose key field equals ``key``, or None."""
        schema = self.objects.get(object_name)
        if schema is None:
            return None
        with self._lock:
            for stored in self._records.get(object_name, []):
                if stored.get(schema.key_field) == key:
                    return copy.deepcopy(stored)
        return None

    def seed(self, object_name: str, records: Iterable[dict[str, Any]]) -> None:
        """Store records directly (no validation, not logged), giving each a ``Gsid``."""
        with self._lock:
            stored = self._records.setdefault(object_name, [])
            for record in records:
                stored.append({"Gsid": _new_gsid(), **record})

    def delete(self, object_name: str, key: str) -> bool:
        """Remove the record whose key field equals ``key`` (as another Gainsight user might)."""
        schema = self.objects.get(object_name)
        if schema is None:
            return False
        with self._lock:
            stored = self._records.get(object_name, [])
            kept = [r for r in stored if r.get(schema.key_field) != key]
            self._records[object_name] = kept
            return len(kept) != len(stored)

    def calls(
        self, operation: str | None = None, object_name: str | None = None
    ) -> list[LoggedCall]:
        """The logged ``/v1`` calls, optionally only one operation and/or object."""
        with self._lock:
            return [
                c
                for c in self.log
                if (operation is None or c.operation == operation)
                and (object_name is None or c.object_name == object_name)
            ]

    def sent_keys(self, operation: str, object_name: str | None = None) -> list[str]:
        """Every key sent by successful calls of ``operation``, in order (repeats included)."""
        return [
            key
            for call in self.calls(operation, object_name)
            if 200 <= call.status < 300
            for key in call.keys
        ]

    # --- faults ------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 503,
        after: int = 0,
        operation: str | None = None,
        after_write: bool = False,
    ) -> None:
        """Fail ``count`` calls with ``status`` after letting ``after`` calls through.

        ``operation`` limits the rule to "insert", "update" or "query" calls. ``after_write``
        performs the write first and then answers the error (the ambiguous case: it landed,
        but the client cannot know).
        """
        if status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of {FAULT_STATUSES}, got {status}")
        if count < 1 or after < 0:
            raise ValueError("count must be 1 or more and after 0 or more")
        if operation not in (None, "insert", "update", "query"):
            raise ValueError(f"unknown operation {operation!r}")
        with self._lock:
            self._fail_rules.append(_FailRule(status, count, after, operation, after_write))

    def reject_keys(
        self,
        keys: Iterable[str],
        *,
        object_name: str | None = None,
        code: str = "GSOBJ_1008",
        message: str = "Generic data validation error",
    ) -> None:
        """Make any write carrying one of these key values fail validation (the whole call)."""
        with self._lock:
            for key in keys:
                self._rejections[str(key)] = _Rejection(code, message, object_name)

    def delay(self, seconds: float, *, count: int | None = None) -> None:
        """Answer the next ``count`` calls (all when None) ``seconds`` late."""
        with self._lock:
            self._delay_seconds = float(seconds)
            self._delay_count = count

    def set_access_key(self, access_key: str) -> None:
        """Accept only this key from now on (simulates a rotated or wrong key)."""
        with self._lock:
            self.access_key = access_key

    def apply_faults(self, spec: dict[str, Any]) -> None:
        """Apply a control-plane fault document (see the module docstring)."""
        if not isinstance(spec, dict):
            raise ValueError("the fault document must be a JSON object")
        known = {
            "fail_next",
            "reject_keys",
            "delay",
            "access_key",
            "calls_per_minute",
            "update_unmatched",
        }
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault(s): {sorted(unknown)}")
        if "fail_next" in spec:
            rule = spec["fail_next"]
            self.fail_next(
                int(rule.get("count", 1)),
                status=int(rule.get("status", 503)),
                after=int(rule.get("after", 0)),
                operation=rule.get("operation"),
                after_write=bool(rule.get("after_write", False)),
            )
        if "reject_keys" in spec:
            rule = spec["reject_keys"]
            self.reject_keys(
                rule["keys"],
                object_name=rule.get("object"),
                code=rule.get("code", "GSOBJ_1008"),
                message=rule.get("message", "Generic data validation error"),
            )
        if "delay" in spec:
            rule = spec["delay"]
            self.delay(float(rule["seconds"]), count=rule.get("count"))
        if "access_key" in spec:
            self.set_access_key(str(spec["access_key"]))
        if "calls_per_minute" in spec:
            with self._lock:
                self.calls_per_minute = int(spec["calls_per_minute"])
        if "update_unmatched" in spec:
            mode = spec["update_unmatched"]
            if mode not in UPDATE_UNMATCHED_MODES:
                raise ValueError(f"update_unmatched must be one of {UPDATE_UNMATCHED_MODES}")
            with self._lock:
                self.update_unmatched = mode

    # --- request handling (called from handler threads) --------------------------------------

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one HTTP request: the ``/__fake__`` control plane or the ``/v1`` API."""
        parts = urlsplit(raw_path)
        if parts.path.startswith("/__fake__/"):
            answer = self.handle_control(method, parts.path, body)
        else:
            answer = self.handle_api(method, parts.path, parse_qs(parts.query), headers, body)
        return json_reply(answer.status, answer.body)

    def _reply_to_a_bug(self) -> Reply:
        """A bug in the fake answers as Gainsight's own 500 does."""
        answer = _failure(500, "GU_1101", "Internal server error")
        return json_reply(answer.status, answer.body)

    def handle_api(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> _Answer:
        """Answer one ``/v1`` call: auth, rate limit, faults, then the operation itself."""
        operation, object_name = _route(method, path)
        payload, parse_error = _parse_json(body)
        keys = self._keys_in(object_name, payload) if operation in ("insert", "update") else ()
        count = len(payload.get("records") or []) if isinstance(payload, dict) else 0
        with self._lock:
            window = int(self.clock() // 60)
            call = LoggedCall(method, path, object_name, operation, count, keys, window)
            self.log.append(call)
            delay = self._take_delay()
            admission = self._admit()
        if delay:
            # Real time, not ``clock``: a delay is for client timeouts, which run on real time.
            admission.wait(delay)
        with self._lock:
            before_call = None if self._reset_since(admission) else self.before_call
        if before_call is not None:
            # A test seam: simulate what other Gainsight users do between a client's calls.
            before_call(call)
        answer = self._answer(call, query, headers, payload, parse_error, admission)
        with self._lock:
            call.status = answer.status
            call.error_code = answer.body.get("errorCode")
        return answer

    def _answer(self, call, query, headers, payload, parse_error, admission: Admission) -> _Answer:
        """Auth, rate limit and faults (in that order), then the operation, under the lock."""
        with self._lock:
            if self._reset_since(admission):
                # Reset while this call waited: answer it without touching the new state.
                return _failure(503, None, "The fake was reset during this call")
            if headers.get("accesskey") != self.access_key:
                return _failure(401, "GS_ACCESS_DENIED", "Invalid or missing access key")
            used = self._window_counts.get(call.window, 0) + 1
            self._window_counts[call.window] = used
            if used > self.calls_per_minute:
                return _failure(429, "GU_2400", "Rate limit exceeded, try again later")
            rule = self._take_fail_rule(call.operation)
            try:
                if call.operation == "other":
                    raise _CallFailed(404, None, f"No API at {call.method} {call.path}")
                if parse_error:
                    raise _CallFailed(400, "GSOBJ_BAD_REQUEST", parse_error)
                if rule is not None and not rule.after_write:
                    return _fault_answer(rule.status)
                if call.operation == "insert":
                    answer = self._insert(call.object_name, payload)
                elif call.operation == "update":
                    answer = self._update(call.object_name, payload, query)
                else:
                    answer = self._query(call.object_name, payload)
            except _CallFailed as failed:
                return _failure(failed.status, failed.code, failed.desc)
            if rule is not None:
                return _fault_answer(rule.status)
            return answer

    def _take_delay(self) -> float:
        """Seconds to stall this call, consuming one use of the delay fault."""
        if not self._delay_seconds:
            return 0.0
        if self._delay_count is None:
            return self._delay_seconds
        seconds = self._delay_seconds
        self._delay_count -= 1
        if self._delay_count <= 0:
            self._delay_seconds, self._delay_count = 0.0, None
        return seconds

    def _take_fail_rule(self, operation: str) -> _FailRule | None:
        """The fault rule this call triggers, if any (consumes it)."""
        if not self._fail_rules:
            return None
        rule = self._fail_rules[0]
        if rule.operation is not None and rule.operation != operation:
            return None
        if rule.after > 0:
            rule.after -= 1
            return None
        rule.count -= 1
        if rule.count <= 0:
            self._fail_rules.pop(0)
        return rule

    def _keys_in(self, object_name: str, payload: Any) -> tuple[str, ...]:
        """The key-field values of a write's records, for the log."""
        schema = self.objects.get(object_name)
        if schema is None or not isinstance(payload, dict):
            return ()
        records = payload.get("records")
        if not isinstance(records, list):
            return ()
        return tuple(str(r.get(schema.key_field)) for r in records if isinstance(r, dict))

    def _schema(self, object_name: str) -> ObjectSchema:
        """The object's schema, or a 404 failure for an unknown object."""
        schema = self.objects.get(object_name)
        if schema is None:
            raise _CallFailed(404, "GSOBJ_OBJECT_NOT_FOUND", f"Object {object_name} not found")
        return schema

    def _validated_records(self, object_name: str, payload: Any) -> list[dict[str, Any]]:
        """The records of a write, or a whole-call failure as Gainsight validates all of them."""
        schema = self._schema(object_name)
        records = payload.get("records") if isinstance(payload, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", 'Body must be {"records": [{...}]}')
        if not records:
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", "No records in the request")
        if len(records) > MAX_RECORDS_PER_CALL:
            raise _CallFailed(
                400,
                "GSOBJ_RECORD_LIMIT",
                f"At most {MAX_RECORDS_PER_CALL} records per call, got {len(records)}",
            )
        unknown = schema.unknown(name for r in records for name in r)
        if unknown:
            raise _CallFailed(
                400,
                "GSOBJ_1002",
                f"Invalid field, please re-check data mapping: {', '.join(unknown)}",
            )
        for record in records:
            for name, value in record.items():
                if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
                    raise _CallFailed(
                        400, "GSOBJ_1001", f"Field exceeds maximum allowed length ({name})"
                    )
            key = record.get(schema.key_field)
            rejection = self._rejections.get(str(key)) if key is not None else None
            if rejection and rejection.object_name in (None, object_name):
                raise _CallFailed(
                    400,
                    rejection.code,
                    f"{rejection.message} ({schema.key_field} = {key})",
                )
        return records

    def _insert(self, object_name: str, payload: Any) -> _Answer:
        """POST: insert all records or none (duplicates fail the call)."""
        records = self._validated_records(object_name, payload)
        schema = self.objects[object_name]
        stored = self._records.setdefault(object_name, [])
        existing = {r.get(schema.key_field) for r in stored}
        seen: set[Any] = set()
        for record in records:
            key = record.get(schema.key_field)
            if key is None or key == "":
                raise _CallFailed(
                    400, "GSOBJ_1007", f"Invalid field value ({schema.key_field} = null)"
                )
            if key in existing or key in seen:
                raise _CallFailed(
                    400,
                    "GSOBJ_DUPLICATE",
                    f"Duplicate record: {schema.key_field} = {key} already exists",
                )
            seen.add(key)
        written = []
        for record in records:
            new = {**{k: v for k, v in record.items() if k != "Gsid"}, "Gsid": _new_gsid()}
            stored.append(new)
            written.append(copy.deepcopy(new))
        data = {"count": len(written), "errors": None, "records": written}
        return _Answer(200, envelope(data=data))

    def _update(self, object_name: str, payload: Any, query: dict[str, list[str]]) -> _Answer:
        """PUT ?keys=: update records matching the key fields; see ``update_unmatched``."""
        records = self._validated_records(object_name, payload)
        schema = self.objects[object_name]
        key_fields = [k for k in ",".join(query.get("keys", [])).split(",") if k]
        if not key_fields:
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", "The keys query parameter is required")
        unknown = schema.unknown(key_fields)
        if unknown:
            raise _CallFailed(
                400,
                "GSOBJ_1002",
                f"Invalid field, please re-check data mapping: {', '.join(unknown)}",
            )
        stored = self._records.setdefault(object_name, [])
        matches: list[list[dict[str, Any]]] = []
        errors = []
        for index, record in enumerate(records):
            if any(record.get(k) in (None, "") for k in key_fields):
                raise _CallFailed(
                    400, "GSOBJ_1007", f"Invalid field value (update keys {key_fields} missing)"
                )
            found = [s for s in stored if all(s.get(k) == record[k] for k in key_fields)]
            if not found:
                desc = "No record matches " + ", ".join(f"{k} = {record[k]}" for k in key_fields)
                if self.update_unmatched == "fail":
                    raise _CallFailed(400, "GSOBJ_NO_MATCH", desc)
                if self.update_unmatched == "report":
                    errors.append(
                        {
                            "index": index,
                            "errorCode": "GSOBJ_NO_MATCH",
                            "errorDesc": desc,
                            "record": {k: record[k] for k in key_fields},
                        }
                    )
            matches.append(found)
        written = []
        for record, found in zip(records, matches, strict=True):
            for target in found:
                target.update({k: v for k, v in record.items() if k != "Gsid"})
                written.append(copy.deepcopy(target))
        data = {"count": len(written), "errors": errors or None, "records": written}
        return _Answer(200, envelope(data=data))

    def _query(self, object_name: str, payload: Any) -> _Answer:
        """POST query: filter, select and page the stored records."""
        schema = self._schema(object_name)
        if not isinstance(payload, dict):
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", "Body must be a JSON object")
        select = payload.get("select")
        if (
            not isinstance(select, list)
            or not select
            or not all(isinstance(s, str) for s in select)
        ):
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", "select must be a list of field names")
        where = payload.get("where") or {}
        conditions = where.get("conditions") or [] if isinstance(where, dict) else None
        if conditions is None or not isinstance(conditions, list):
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", "where.conditions must be a list")
        names = list(select) + [c.get("name") for c in conditions if isinstance(c, dict)]
        unknown = schema.unknown(str(n) for n in names)
        if unknown:
            raise _CallFailed(
                400,
                "GSOBJ_1002",
                f"Invalid field, please re-check data mapping: {', '.join(unknown)}",
            )
        try:
            limit = int(payload.get("limit", 100))
            offset = int(payload.get("offset", 0))
        except (TypeError, ValueError):
            raise _CallFailed(
                400, "GSOBJ_BAD_REQUEST", "limit and offset must be integers"
            ) from None
        if not 0 < limit <= MAX_QUERY_LIMIT or offset < 0:
            raise _CallFailed(
                400, "GSOBJ_BAD_REQUEST", f"limit must be 1..{MAX_QUERY_LIMIT}, offset ≥ 0"
            )
        predicate = _compile_where(conditions, where.get("expression") if where else None)
        matched = [r for r in self._records.get(object_name, []) if predicate(r)]
        page = [{name: r.get(name) for name in select} for r in matched[offset : offset + limit]]
        data = {"count": len(page), "errors": None, "records": page}
        return _Answer(200, envelope(data=data))

    def handle_control(self, method: str, path: str, body: bytes) -> _Answer:
        """Answer one ``/__fake__`` control-plane call."""
        if method == "POST" and path == "/__fake__/reset":
            self.reset()
            return _Answer(200, {"ok": True})
        if method == "POST" and path == "/__fake__/faults":
            spec, error = _parse_json(body)
            try:
                if error:
                    raise ValueError(error)
                self.apply_faults(spec)
            except (ValueError, KeyError, TypeError) as exc:
                return _Answer(400, {"ok": False, "error": str(exc)})
            return _Answer(200, {"ok": True})
        if method == "GET" and path.startswith("/__fake__/records/"):
            name = unquote(path.removeprefix("/__fake__/records/"))
            return _Answer(200, {"object": name, "records": self.records(name)})
        if method == "GET" and path == "/__fake__/log":
            with self._lock:
                calls = [dict(vars(c), keys=list(c.keys)) for c in self.log]
            return _Answer(200, {"calls": calls})
        return _Answer(404, {"ok": False, "error": f"no control endpoint {method} {path}"})


def _new_gsid() -> str:
    # Real Gsids look like "1P02IPMVRW48UK4Q..."; only uniqueness matters here.
    """A fresh, unique Gsid."""
    return "1P02" + uuid.uuid4().hex[:20].upper()


def _failure(status: int, code: str | None, desc: str) -> _Answer:
    """A failure envelope with Gainsight's ``result: false``."""
    return _Answer(status, envelope(result=False, code=code, desc=desc))


def _fault_answer(status: int) -> _Answer:
    """The answer of an injected ``fail_next`` fault."""
    if status == 429:
        return _failure(429, "GU_2400", "Rate limit exceeded, try again later")
    if status == 500:
        return _failure(500, "GU_1101", "Internal server error")
    return _failure(status, None, HTTPStatus(status).phrase)


def _route(method: str, path: str) -> tuple[str, str]:
    """(operation, object name) of a ``/v1`` path; operation "other" when nothing matches."""
    query_match = re.fullmatch(r"/v1/data/objects/query/([^/]+)", path)
    if query_match and method == "POST":
        return "query", unquote(query_match.group(1))
    write_match = re.fullmatch(r"/v1/data/objects/([^/]+)", path)
    if write_match and method == "POST":
        return "insert", unquote(write_match.group(1))
    if write_match and method == "PUT":
        return "update", unquote(write_match.group(1))
    return "other", ""


def _parse_json(body: bytes) -> tuple[Any, str | None]:
    """(parsed body, None) or ({}, error text) for a malformed body."""
    if not body:
        return {}, None
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, f"Malformed JSON: {exc}"


_OPERATORS: dict[str, Callable[[Any, list[Any]], bool]] = {
    "EQ": lambda value, wanted: bool(wanted) and value == wanted[0],
    "NE": lambda value, wanted: bool(wanted) and value != wanted[0],
    "IN": lambda value, wanted: value in wanted,
    "NOT_IN": lambda value, wanted: value not in wanted,
    "IS_NULL": lambda value, wanted: value is None,
    "IS_NOT_NULL": lambda value, wanted: value is not None,
}


def _compile_where(conditions: list[Any], expression: str | None) -> Callable[[dict], bool]:
    """A predicate for ``where``: conditions by alias, combined by AND/OR/parentheses."""
    tests: dict[str, Callable[[dict], bool]] = {}
    for index, condition in enumerate(conditions):
        if not isinstance(condition, dict) or "name" not in condition:
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", "each condition needs a name")
        operator = str(condition.get("operator", "EQ")).upper()
        if operator not in _OPERATORS:
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", f"unsupported operator {operator}")
        wanted = condition.get("value", [])
        wanted = wanted if isinstance(wanted, list) else [wanted]
        alias = str(condition.get("alias") or chr(ord("A") + index))
        name, check = condition["name"], _OPERATORS[operator]
        tests[alias] = lambda record, name=name, check=check, wanted=wanted: check(
            record.get(name), wanted
        )
    if not tests:
        return lambda record: True
    if not expression:
        return lambda record: all(test(record) for test in tests.values())
    tokens = re.findall(r"\(|\)|[A-Za-z0-9_]+", expression)
    position = 0

    def parse_chain(word, parse_operand, combine):
        """``operand (word operand)*``, folded left with ``combine``."""
        nonlocal position
        left = parse_operand()
        while position < len(tokens) and tokens[position].upper() == word:
            position += 1
            left = combine(left, parse_operand())
        return left

    def parse_or():
        return parse_chain("OR", parse_and, lambda a, b: lambda r: a(r) or b(r))

    def parse_and():
        return parse_chain("AND", parse_atom, lambda a, b: lambda r: a(r) and b(r))

    def parse_atom():
        nonlocal position
        if position >= len(tokens):
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", f"bad expression {expression!r}")
        token = tokens[position]
        position += 1
        if token == "(":
            inner = parse_or()
            if position >= len(tokens) or tokens[position] != ")":
                raise _CallFailed(400, "GSOBJ_BAD_REQUEST", f"bad expression {expression!r}")
            position += 1
            return inner
        if token not in tests:
            raise _CallFailed(400, "GSOBJ_BAD_REQUEST", f"unknown alias {token} in expression")
        return tests[token]

    predicate = parse_or()
    if position != len(tokens):
        raise _CallFailed(400, "GSOBJ_BAD_REQUEST", f"bad expression {expression!r}")
    return predicate


def main(argv: list[str] | None = None) -> int:
    """Serve a fake Gainsight until SIGTERM/Ctrl-C (for ``make demo`` and manual poking)."""
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    parser.add_argument("--calls-per-minute", type=int, default=100)
    parser.add_argument("--update-unmatched", choices=UPDATE_UNMATCHED_MODES, default="report")
    args = parser.parse_args(argv)
    fake = FakeGainsight(
        host=args.host,
        port=args.port,
        access_key=args.access_key,
        calls_per_minute=args.calls_per_minute,
        update_unmatched=args.update_unmatched,
    )
    return serve_forever_until_signal(fake, lambda fake: f"fake Gainsight listening on {fake.url}")


if __name__ == "__main__":
    sys.exit(main())
