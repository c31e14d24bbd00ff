"""Gainsight CS (NXT) client: idempotent upserts over the synchronous data-object API.

Gainsight's synchronous Company and custom-object API documents insert (``POST
/v1/data/objects/{obj}``) and update by keys (``PUT ...?keys=f``) separately, at most 50 records
a call, and no single-call upsert. A blind "insert, on error update" would duplicate records
whenever a POST is retried after it landed, so each chunk of at most 50 keys is:

1. one query (``POST /v1/data/objects/query/{obj}``, ``where key IN (...)``) for the keys that
   already exist;
2. one ``PUT ?keys=<external id field>`` for those, and one ``POST`` for the rest.

Gainsight fails a whole write when any record in it fails validation. The client then splits the
batch in halves (bounded by ``max_split_calls`` per write) until the bad records stand alone, so
good rows still land and only the bad ones come back as ``RowResult(ok=False)``.

Calls are budgeted on the client side (``GAINSIGHT_CALLS_PER_MINUTE``, ``GAINSIGHT_CALLS_PER_DAY``)
in Django's cache, so processes sharing ``CACHE_URL`` share the budget: over the minute budget the
client sleeps until the next window; a spent day raises ``TransientCrmError`` at once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from django.core.cache import cache

from crm_sync.clients.base import (
    CrmError,
    OutgoingRecord,
    PermanentCrmError,
    RowResult,
    TransientCrmError,
)

logger = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 50  # Gainsight's documented limit for the synchronous API
QUERY_LIMIT = 5000  # the most a query returns; generous so duplicate keys still show up
# Gainsight's code for "invalid field, re-check the data mapping": shared by every record of a
# call, so it is a configuration error, not a bad row.
INVALID_FIELD_CODE = "GSOBJ_1002"
RATE_LIMIT_CODE = "GU_2400"
MINUTE = 60
DAY = 86_400


class _WriteRejected(Exception):
    """A write Gainsight refused as a whole for a validation reason (HTTP 400, result false)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class CallBudget:
    """Client-side fixed-window budget of calls per minute and per UTC day, kept in the cache.

    ``acquire()`` takes one call from both windows. When the minute is spent it sleeps until the
    next minute starts; when that wait would exceed ``max_wait_seconds`` or the day is spent it
    raises ``TransientCrmError`` instead (the task retries later). ``clock`` and ``sleep`` are
    the time source, replaceable in tests.
    """

    def __init__(
        self,
        *,
        namespace: str,
        per_minute: int,
        per_day: int,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_seconds: float = MINUTE + 1,
    ):
        if per_minute < 1 or per_day < 1:
            raise ValueError("call budgets must be 1 or more")
        self.namespace = namespace
        self.per_minute = per_minute
        self.per_day = per_day
        self.clock = clock
        self.sleep = sleep
        self.max_wait_seconds = max_wait_seconds

    def _key(self, kind: str, window: int) -> str:
        """The cache key of one window's counter."""
        return f"{self.namespace}:{kind}:{window}"

    @staticmethod
    def _take(key: str, timeout: int) -> int:
        """Add one to a window's counter; answers the new count (atomic in Redis and locmem)."""
        cache.add(key, 0, timeout=timeout)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=timeout)
            return 1

    def acquire(self) -> None:
        """Wait for (or refuse) permission to make one call.

        A cache outage does not stop the sync: the call goes ahead uncounted (and logged), and
        Gainsight's own limit (429, transient) remains the backstop.
        """
        try:
            self._acquire()
        except CrmError:
            raise
        except Exception:
            logger.warning("gainsight call budget unavailable (cache error)", exc_info=True)

    def _acquire(self) -> None:
        """``acquire`` without the cache-outage guard."""
        while True:
            now = self.clock()
            day = int(now // DAY)
            day_key = self._key("day", day)
            if (cache.get(day_key) or 0) >= self.per_day:
                raise TransientCrmError(
                    f"daily call budget spent ({self.per_day} calls this UTC day)",
                    code="BUDGET_DAY",
                )
            minute = int(now // MINUTE)
            if self._take(self._key("min", minute), timeout=2 * MINUTE) <= self.per_minute:
                if self._take(day_key, timeout=2 * DAY) > self.per_day:
                    raise TransientCrmError(
                        f"daily call budget spent ({self.per_day} calls this UTC day)",
                        code="BUDGET_DAY",
                    )
                return
            # A small margin so that float rounding cannot leave us a hair before the boundary.
            wait = (minute + 1) * MINUTE - now + 0.01
            if wait > self.max_wait_seconds:
                raise TransientCrmError(
                    f"minute call budget spent; the next window is {wait:.0f}s away",
                    code="BUDGET_MINUTE",
                )
            logger.info("gainsight call budget: waiting %.1fs for the next minute", wait)
            self.sleep(wait)


@dataclass
class _SplitAllowance:
    """How many extra calls the isolation of bad records may still spend for one write."""

    remaining: int


class GainsightClient:
    """Upserts records into Gainsight objects; implements ``crm_sync.clients.base.CrmClient``."""

    target = "gainsight"

    def __init__(
        self,
        *,
        base_url: str,
        access_key: str,
        timeout: float = 30,
        allow_http: bool = False,
        calls_per_minute: int = 90,
        calls_per_day: int = 45_000,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_split_calls: int = 30,
        session: requests.Session | None = None,
    ):
        missing = [
            name
            for name, value in (
                ("GAINSIGHT_BASE_URL", base_url),
                ("GAINSIGHT_ACCESS_KEY", access_key),
            )
            if not value
        ]
        if missing:
            raise PermanentCrmError(
                f"Gainsight is not configured: {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} empty",
                code="NOT_CONFIGURED",
            )
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise PermanentCrmError(
                f"GAINSIGHT_BASE_URL must be an https:// URL, got {base_url!r}",
                code="NOT_CONFIGURED",
            )
        if parts.scheme == "http" and not allow_http:
            raise PermanentCrmError(
                "GAINSIGHT_BASE_URL uses http://; only https:// is allowed "
                "(set GAINSIGHT_ALLOW_HTTP=true for a local test double)",
                code="NOT_CONFIGURED",
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_split_calls = max_split_calls
        self.calls = 0
        self.session = session or requests.Session()
        self.session.headers.update(
            {
                "accesskey": access_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )
        # One budget per tenant: every process calling the same base URL counts together.
        tenant = hashlib.sha256(self.base_url.encode()).hexdigest()[:16]
        self.budget = CallBudget(
            namespace=f"crm_sync:gainsight:calls:{tenant}",
            per_minute=calls_per_minute,
            per_day=calls_per_day,
            clock=clock,
            sleep=sleep,
        )

    @classmethod
    def from_settings(
        cls,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> GainsightClient:
        """A client configured from the ``GAINSIGHT_*`` settings."""
        return cls(
            base_url=settings.GAINSIGHT_BASE_URL,
            access_key=settings.GAINSIGHT_ACCESS_KEY,
            timeout=settings.GAINSIGHT_TIMEOUT_SECONDS,
            allow_http=settings.GAINSIGHT_ALLOW_HTTP,
            calls_per_minute=settings.GAINSIGHT_CALLS_PER_MINUTE,
            calls_per_day=settings.GAINSIGHT_CALLS_PER_DAY,
            clock=clock or time.time,
            sleep=sleep or time.sleep,
        )

    def close(self) -> None:
        """Release the pooled connections."""
        self.session.close()

    # --- upsert ------------------------------------------------------------------------------

    def upsert(
        self, *, object_name: str, external_id_field: str, records: Sequence[OutgoingRecord]
    ) -> list[RowResult]:
        """Create or update ``records`` in ``object_name`` keyed by ``external_id_field``.

        One ``RowResult`` per record, in the given order. Raises ``TransientCrmError`` or
        ``PermanentCrmError`` when a call fails as a whole; ``.partial`` then holds the results
        of the records already answered (earlier chunks and earlier writes of the same chunk).
        """
        payloads = self._payloads(external_id_field, records)
        answered: dict[str, RowResult] = {}
        try:
            for chunk in chunked(records):
                existing = self._existing_keys(
                    object_name, external_id_field, [r.key for r in chunk]
                )
                updates = [r for r in chunk if r.key in existing]
                inserts = [r for r in chunk if r.key not in existing]
                if updates:
                    self._write_isolating(
                        "update",
                        object_name,
                        external_id_field,
                        updates,
                        payloads,
                        answered,
                        _SplitAllowance(self.max_split_calls),
                    )
                if inserts:
                    self._write_isolating(
                        "insert",
                        object_name,
                        external_id_field,
                        inserts,
                        payloads,
                        answered,
                        _SplitAllowance(self.max_split_calls),
                    )
        except CrmError as error:
            error.partial = [answered[r.key] for r in records if r.key in answered]
            raise
        return [answered[r.key] for r in records]

    @staticmethod
    def _payloads(
        external_id_field: str, records: Sequence[OutgoingRecord]
    ) -> dict[str, dict[str, Any]]:
        """The JSON record per key, refusing input that cannot be upserted safely."""
        payloads: dict[str, dict[str, Any]] = {}
        for record in records:
            if not record.key:
                raise ValueError("every record needs a non-empty key")
            if record.key in payloads:
                raise ValueError(f"key {record.key!r} appears twice in one upsert")
            sent_key = record.fields.get(external_id_field, record.key)
            if sent_key != record.key:
                raise ValueError(
                    f"record {record.key!r} carries {external_id_field}={sent_key!r}, "
                    "which differs from its key"
                )
            payloads[record.key] = {**record.fields, external_id_field: record.key}
        return payloads

    def _existing_keys(self, object_name: str, key_field: str, keys: list[str]) -> set[str]:
        """Which of ``keys`` already exist in Gainsight (one query call)."""
        body = {
            "select": ["Gsid", key_field],
            "where": {
                "conditions": [{"name": key_field, "alias": "A", "value": keys, "operator": "IN"}],
                "expression": "A",
            },
            "limit": QUERY_LIMIT,
            "offset": 0,
        }
        try:
            data = self._call("POST", f"/v1/data/objects/query/{quote(object_name)}", body)
        except _WriteRejected as rejected:
            # A query has no bad rows to isolate: its only input is the key field.
            raise self._rejection_error(rejected, object_name, [key_field]) from None
        return {str(r.get(key_field)) for r in data.get("records") or []}

    def _write_isolating(
        self,
        operation: str,
        object_name: str,
        key_field: str,
        batch: Sequence[OutgoingRecord],
        payloads: dict[str, dict[str, Any]],
        answered: dict[str, RowResult],
        allowance: _SplitAllowance,
    ) -> None:
        """Write ``batch``; on a whole-call validation failure split it to find the bad rows."""
        try:
            answered.update(self._write(operation, object_name, key_field, batch, payloads))
            return
        except _WriteRejected as rejected:
            fields = sorted({name for r in batch for name in payloads[r.key]})
            if rejected.code == INVALID_FIELD_CODE:
                raise self._rejection_error(rejected, object_name, fields) from None
            if len(batch) == 1:
                answered[batch[0].key] = RowResult(
                    key=batch[0].key, ok=False, error_code=rejected.code, message=rejected.message
                )
                return
            if allowance.remaining < 2:
                for record in batch:
                    answered[record.key] = RowResult(
                        key=record.key,
                        ok=False,
                        error_code=rejected.code,
                        message=(
                            f"{rejected.message} (rejected with {len(batch)} others in one call; "
                            "too many bad rows to isolate them all this time)"
                        ),
                        retryable=True,
                    )
                return
            allowance.remaining -= 2
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            self._write_isolating(
                operation, object_name, key_field, half, payloads, answered, allowance
            )

    def _write(
        self,
        operation: str,
        object_name: str,
        key_field: str,
        batch: Sequence[OutgoingRecord],
        payloads: dict[str, dict[str, Any]],
    ) -> dict[str, RowResult]:
        """One insert (POST) or update (PUT ?keys=) call; a result for every record sent."""
        body = {"records": [payloads[r.key] for r in batch]}
        path = f"/v1/data/objects/{quote(object_name)}"
        if operation == "update":
            data = self._call("PUT", path, body, params={"keys": key_field})
        else:
            data = self._call("POST", path, body)
        created = operation == "insert"
        records = data.get("records") or []
        written = {str(r.get(key_field)) for r in records if r.get(key_field) is not None}
        if not written and len(records) == len(batch):
            # Gainsight echoes the fields in practice; if it only sent Gsids, go by position.
            written = {r.key for r in batch}
        errors = {}
        for error in data.get("errors") or []:
            key = self._error_key(error, key_field, batch)
            if key is not None:
                errors[key] = error
        results = {}
        for record in batch:
            if record.key in errors:
                error = errors[record.key]
                results[record.key] = RowResult(
                    key=record.key,
                    ok=False,
                    error_code=str(error.get("errorCode") or "GAINSIGHT_ROW_ERROR"),
                    message=str(error.get("errorDesc") or error),
                    retryable=operation == "update",  # e.g. deleted between query and update
                )
            elif record.key in written:
                results[record.key] = RowResult(key=record.key, ok=True, created=created)
            else:
                results[record.key] = RowResult(
                    key=record.key,
                    ok=False,
                    error_code="NOT_WRITTEN",
                    message=f"Gainsight answered the {operation} without this record",
                    retryable=True,
                )
        return results

    @staticmethod
    def _error_key(error: Any, key_field: str, batch: Sequence[OutgoingRecord]) -> str | None:
        """The key a ``data.errors`` entry is about (by its record, else by its index)."""
        if not isinstance(error, dict):
            return None
        record = error.get("record")
        if isinstance(record, dict) and record.get(key_field) is not None:
            return str(record[key_field])
        index = error.get("index")
        if isinstance(index, int) and 0 <= index < len(batch):
            return batch[index].key
        return None

    @staticmethod
    def _rejection_error(
        rejected: _WriteRejected, object_name: str, fields: Sequence[str]
    ) -> PermanentCrmError:
        """A whole-request refusal that no retry or split can fix: the mapping is wrong."""
        named = [f for f in fields if f in rejected.message]
        what = f"field {', '.join(named)}" if named else f"one of the fields {', '.join(fields)}"
        return PermanentCrmError(
            f"Gainsight object {object_name} rejected {what}: {rejected.message} "
            "(check the field mapping and the object in Gainsight Data Management)",
            code=rejected.code,
            status=400,
        )

    # --- transport ---------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, body: Any, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One budgeted HTTP call; answers ``data`` or raises a classified error."""
        self.budget.acquire()
        self.calls += 1
        url = f"{self.base_url}{path}"
        try:
            response = self.session.request(
                method, url, json=body, params=params, timeout=self.timeout
            )
        except requests.Timeout as exc:
            raise TransientCrmError(
                f"Gainsight did not answer {method} {path} within {self.timeout}s"
            ) from exc
        except requests.RequestException as exc:
            raise TransientCrmError(
                f"Gainsight {method} {path} failed: {type(exc).__name__}: {exc}"
            ) from exc
        envelope = _json_or_none(response)
        code = str(envelope.get("errorCode") or "") if envelope else ""
        desc = str(envelope.get("errorDesc") or "") if envelope else ""
        status = response.status_code
        detail = desc or response.reason or "no detail"
        if status in (401, 403):
            raise PermanentCrmError(
                f"Gainsight refused the access key (HTTP {status}): {detail}; "
                "check GAINSIGHT_ACCESS_KEY",
                code=code,
                status=status,
            )
        if status == 429 or code == RATE_LIMIT_CODE:
            raise TransientCrmError(
                f"Gainsight rate limit reached: {detail}",
                code=code or RATE_LIMIT_CODE,
                status=status,
            )
        if status >= 500:
            raise TransientCrmError(
                f"Gainsight server error (HTTP {status}) on {method} {path}: {detail}",
                code=code,
                status=status,
            )
        if status == 400 or (200 <= status < 300 and envelope and envelope.get("result") is False):
            raise _WriteRejected(code or f"HTTP_{status}", detail)
        if not 200 <= status < 300:
            raise PermanentCrmError(
                f"Gainsight answered HTTP {status} to {method} {path}: {detail} "
                "(check GAINSIGHT_BASE_URL and the object name)",
                code=code,
                status=status,
            )
        if envelope is None or not isinstance(envelope.get("data"), dict):
            raise PermanentCrmError(
                f"{method} {path} did not answer a Gainsight envelope; check GAINSIGHT_BASE_URL",
                status=status,
            )
        return envelope["data"]


def _json_or_none(response: requests.Response) -> dict[str, Any] | None:
    """The JSON object of a response, or None when the body is not one (an HTML error page)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def chunked(items: Sequence[Any], size: int = MAX_RECORDS_PER_CALL) -> Iterator[Sequence[Any]]:
    """Slices of at most ``size`` items, in order."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
