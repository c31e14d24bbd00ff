"""``POST /api/v1/seat_links``, GitLab EE's daily Seat Link (wire protocol §1): the endpoint,
the body read strictly (§1.3), and the parts of the answer that are pure computation (§1.4).
``usage.services.seat_link_ingest`` looks the license up and stores; nothing else here touches
the database.

Every generation of the body is accepted (``generation`` names which one a body looks like):

* ``12.9``: ``{date, license_key, max_historical_user_count, active_users}``;
* ``13.x``: the same plus ``timestamp``;
* ``14.x``: ``{gitlab_version, timestamp, license_key, max_historical_user_count,
  billable_users_count, hostname, instance_id}``;
* ``16.x``: plus ``add_on_metrics``;
* ``newest``: plus ``unique_instance_id``.

Strict means: a field of the wrong JSON type is refused rather than coerced (``"5"`` and ``5.0``
are not counts; Ruby's JSON never writes either), counts are whole numbers from 0 to 2³¹−1 (the
column), the timestamp is ISO 8601 with an offset (``Time#iso8601`` always writes one) and not
more than a day ahead, ``instance_id`` is a UUID (``application_settings.uuid``). Text an
instance says about itself (hostname, version) is cleaned of control characters and cut to
its column rather than refused: it is informative only. Fields this code does not know are
accepted and kept in the stored raw payload, because a newer GitLab adds fields before
Provision knows them (``add_on_metrics`` and ``unique_instance_id`` both arrived that way).

Two choices made for the older generations:

* ``billable_users_count`` (or 12.9–13.x's ``active_users``) is required. The very first 12.9
  release sent neither, but a report without the day's users would have to invent them, and
  such an instance cannot hold an online cloud license anyway (cloud licensing is 14.1+).
* Before 14.x there is no ``instance_id``: the report is recorded against one stand-in instance
  per subscription (a UUIDv5, never equal to a real, random, v4 id). Two such instances of one
  subscription therefore share a row per day, last report wins.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt

from licenses.graphql import client_address
from provision.exceptions import ApplicationError
from usage import services

logger = logging.getLogger(__name__)

# GitLab's body is a few KiB (the license key is most of it); this bounds what is read at all.
MAX_BODY_BYTES = 64 * 1024
# usage.SeatReport counts are PositiveIntegerField: PostgreSQL's integer.
MAX_COUNT = 2_147_483_647
MAX_LICENSE_KEY_CHARS = 32 * 1024
MAX_TIMESTAMP_CHARS = 64
# Instance-level add-on purchases: a handful today (code_suggestions, duo_enterprise, …).
MAX_ADD_ONS = 50
ADD_ON_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
# GitLab's deepest value is add_on_metrics[i].field (depth 3); unknown fields may nest a little.
MAX_NESTING = 16
HOSTNAME_MAX = 255  # usage.Instance.hostname
VERSION_MAX = 40  # usage.Instance.version
UNIQUE_INSTANCE_ID_MAX = 64  # usage.Instance.unique_instance_id
# The instance's clock may run ahead, and a body may be retried; a day covers both, no more.
FUTURE_TOLERANCE = timedelta(days=1)
# Reports dated before the license existed are refused, with this margin for the instance's
# historical data being a little older than the key (it is kept daily, before any license).
BEFORE_LICENSE_MARGIN = timedelta(days=30)
# The instance shows its "upcoming reconciliation" banner from this many days before the date
# (the §1.4 fixture: reconciliation 2024-05-01, alert from 2024-04-24).
RECONCILIATION_ALERT_DAYS = 7
# The stand-in instance of a subscription whose GitLab (before 14.x) sends no instance_id.
ANONYMOUS_INSTANCE_NAMESPACE = uuid.UUID("6f2c5d1e-8a4b-5c3d-9e7f-0a1b2c3d4e5f")
CANONICAL_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
USER_AGENT_VERSION = re.compile(r"GitLab/([0-9A-Za-z.+-]{1,40})")

# Where the stored raw payload records how the body arrived (generation, address, User-Agent).
RECEIPT_KEY = "_received"


class SeatLinkRefused(ApplicationError):
    """A Seat Link that is answered with a 4xx and stores nothing.

    ``status`` is the HTTP status; ``fields`` maps payload fields to what is wrong with them.
    GitLab logs the 422 body's ``errors`` (wire protocol §1.4) and retries the job, so the
    messages are written for the instance's administrator reading the Sidekiq log.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int = 422,
        fields: dict[str, list[str]] | None = None,
    ):
        super().__init__(message, code=code, extra={"fields": fields or {}})
        self.status = status
        self.fields = fields or {}

    def body(self) -> dict:
        """``{"success": false, "errors": [...], "error_attribute_map": {...}}``, the shape
        GitLab reads from a 422 (it keeps ``errors`` and ``error_attribute_map``), plus a stable
        ``reason`` code for support to search logs by."""
        errors = [
            f"{name}: {problem}" for name, problems in self.fields.items() for problem in problems
        ]
        body = {
            "success": False,
            "errors": errors or [self.message],
            "reason": self.code,
        }
        if self.fields:
            body["error_attribute_map"] = self.fields
        return body


@dataclass(frozen=True)
class SeatLinkPayload:
    """One Seat Link body, checked. Optional fields the body did not send are ``None``."""

    license_key: str
    report_date: date
    timestamp: datetime | None
    billable_users: int
    max_historical_users: int
    instance_uuid: uuid.UUID | None
    unique_instance_id: str | None
    hostname: str | None
    gitlab_version: str | None
    add_on_metrics: list[dict] | None
    generation: str
    raw: dict = field(repr=False)


# --- reading a body -----------------------------------------------------------------------------


def decode_body(body: bytes) -> Any:
    """JSON text → Python, refusing what is not strict JSON (``NaN``, ``Infinity``)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SeatLinkRefused(
            "The body is not UTF-8 text.", code="bad_encoding", status=400
        ) from None
    if not text.strip():
        raise SeatLinkRefused(
            "The body is empty: send the Seat Link as JSON.", code="empty_body", status=400
        )
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        # ValueError covers malformed JSON, the constants and integers over Python's digit limit.
        raise SeatLinkRefused("The body is not valid JSON.", code="bad_json", status=400) from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def generation_of(payload: dict) -> str:
    """Which GitLab generation a body looks like (for logs and the stored receipt)."""
    if "unique_instance_id" in payload:
        return "newest"
    if "add_on_metrics" in payload:
        return "16.x"
    if {"gitlab_version", "instance_id", "billable_users_count", "hostname"} & payload.keys():
        return "14.x"
    if "timestamp" in payload:
        return "13.x"
    return "12.9"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def clean_text(value: str) -> str:
    """Text safe to store and show: control characters and lone surrogates dropped
    (PostgreSQL refuses NUL, and neither encodes), surrounding space stripped."""
    if value.isprintable():  # the usual case: no control character, no surrogate
        return value.strip()
    return "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Cs")).strip()


def _nesting_ok(value: Any) -> bool:
    """True when no array or object nests deeper than MAX_NESTING (iteratively)."""
    stack = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            children = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > MAX_NESTING:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _storable(value: Any) -> Any:
    """A copy of a JSON value that PostgreSQL's jsonb accepts: strings (keys too) without NUL
    or lone surrogates. Depth is already bounded by ``_nesting_ok``."""
    if isinstance(value, str):
        if value.isascii() and "\x00" not in value:  # the usual case
            return value
        return "".join(ch for ch in value if ch != "\x00" and unicodedata.category(ch) != "Cs")
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


class _Problems:
    def __init__(self):
        self.fields: dict[str, list[str]] = {}

    def add(self, name: str, problem: str) -> None:
        self.fields.setdefault(name, []).append(problem)


def _count(payload: dict, name: str, problems: _Problems, *, required: bool) -> int | None:
    if name not in payload or payload[name] is None:
        if required:
            problems.add(name, "is required (a whole number of users, 0 or more)")
        return None
    value = payload[name]
    if not _is_count(value):
        if isinstance(value, int) and not isinstance(value, bool):
            problems.add(name, f"must be between 0 and {MAX_COUNT}")
        else:
            problems.add(name, f"must be a whole number, not {_json_type(value)}")
        return None
    return value


def _optional_text(payload: dict, name: str, problems: _Problems, max_length: int) -> str | None:
    if name not in payload or payload[name] is None:
        return None
    value = payload[name]
    if not isinstance(value, str):
        problems.add(name, f"must be a string, not {_json_type(value)}")
        return None
    return clean_text(value)[:max_length]


def _timestamp(payload: dict, problems: _Problems, now: datetime) -> datetime | None:
    if "timestamp" not in payload or payload["timestamp"] is None:
        return None
    value = payload["timestamp"]
    if not isinstance(value, str):
        problems.add("timestamp", f"must be an ISO 8601 string, not {_json_type(value)}")
        return None
    if len(value) > MAX_TIMESTAMP_CHARS or not ISO_DATE.match(value):
        problems.add("timestamp", "must be an ISO 8601 date and time, e.g. 2025-01-21T12:00:11Z")
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        problems.add("timestamp", "must be an ISO 8601 date and time, e.g. 2025-01-21T12:00:11Z")
        return None
    if parsed.tzinfo is None or len(value) <= 10:
        problems.add("timestamp", "must include the time and a UTC offset (Z or +hh:mm)")
        return None
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable UTC
        problems.add("timestamp", "is not a time GitLab could have sent")
        return None
    if parsed > now + FUTURE_TOLERANCE:
        problems.add("timestamp", "is more than a day in the future: check the instance's clock")
        return None
    return parsed


def _date(payload: dict, problems: _Problems, today: date) -> date | None:
    if "date" not in payload or payload["date"] is None:
        return None
    value = payload["date"]
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        problems.add("date", "must be a YYYY-MM-DD string")
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        problems.add("date", "is not a calendar date")
        return None
    if parsed > today + FUTURE_TOLERANCE:
        problems.add("date", "is more than a day in the future: check the instance's clock")
        return None
    return parsed


def _instance_uuid(payload: dict, problems: _Problems) -> uuid.UUID | None:
    if "instance_id" not in payload or payload["instance_id"] is None:
        return None
    value = payload["instance_id"]
    if not isinstance(value, str) or not CANONICAL_UUID.fullmatch(value.strip()):
        problems.add("instance_id", "must be the instance's UUID (Admin › Subscription)")
        return None
    return uuid.UUID(value.strip())


def _unique_instance_id(payload: dict, problems: _Problems) -> str | None:
    if "unique_instance_id" not in payload or payload["unique_instance_id"] is None:
        return None
    value = payload["unique_instance_id"]
    if not isinstance(value, str):
        problems.add("unique_instance_id", f"must be a string, not {_json_type(value)}")
        return None
    cleaned = clean_text(value)
    # An identifier is kept whole or not at all: a cut one would name a different instance.
    if len(cleaned) > UNIQUE_INSTANCE_ID_MAX:
        problems.add("unique_instance_id", f"must be at most {UNIQUE_INSTANCE_ID_MAX} characters")
        return None
    return cleaned


def _add_on_metrics(payload: dict, problems: _Problems) -> list[dict] | None:
    if "add_on_metrics" not in payload or payload["add_on_metrics"] is None:
        return None
    value = payload["add_on_metrics"]
    if not isinstance(value, list):
        problems.add("add_on_metrics", f"must be an array, not {_json_type(value)}")
        return None
    if len(value) > MAX_ADD_ONS:
        problems.add("add_on_metrics", f"may list at most {MAX_ADD_ONS} add-ons")
        return None
    metrics = []
    for position, entry in enumerate(value):
        name = f"add_on_metrics[{position}]"
        if not isinstance(entry, dict):
            problems.add(name, f"must be an object, not {_json_type(entry)}")
            continue
        add_on_type = entry.get("add_on_type")
        if not isinstance(add_on_type, str) or not ADD_ON_TYPE.fullmatch(add_on_type):
            problems.add(f"{name}.add_on_type", "must be an add-on name such as duo_enterprise")
            add_on_type = None
        counts = {}
        for key in ("purchased_seats", "assigned_seats"):
            counts[key] = _count(entry, key, _Prefixed(problems, name), required=True)
        if add_on_type is not None and None not in counts.values():
            # Only the three fields GitLab defines; anything else stays in the raw payload.
            metrics.append({"add_on_type": add_on_type, **counts})
    return metrics


class _Prefixed(_Problems):
    """Problems of a nested object, reported under ``parent.field``."""

    def __init__(self, parent: _Problems, prefix: str):
        self.parent = parent
        self.prefix = prefix

    def add(self, name: str, problem: str) -> None:
        self.parent.add(f"{self.prefix}.{name}", problem)


def parse_payload(
    payload: Any, *, now: datetime, user_agent: str = "", client_ip: str | None = None
) -> SeatLinkPayload:
    """Check a decoded body; raise ``SeatLinkRefused`` (400 for a body that is not a JSON
    object, 422 listing every field problem) or return what to store."""
    if not isinstance(payload, dict):
        raise SeatLinkRefused(
            f"The body must be a JSON object, not {_json_type(payload)}.",
            code="not_an_object",
            status=400,
        )
    if not _nesting_ok(payload):
        raise SeatLinkRefused(
            f"The body nests deeper than {MAX_NESTING} levels.", code="too_deep", status=400
        )
    today = now.astimezone(UTC).date()
    problems = _Problems()

    license_key = payload.get("license_key")
    if license_key is None:
        problems.add("license_key", "is required: the instance's license key, as issued")
    elif not isinstance(license_key, str):
        problems.add("license_key", f"must be a string, not {_json_type(license_key)}")
        license_key = None
    elif not license_key.strip():
        problems.add("license_key", "is empty")
        license_key = None
    elif len(license_key) > MAX_LICENSE_KEY_CHARS:
        problems.add("license_key", "is far longer than any license key")
        license_key = None

    timestamp = _timestamp(payload, problems, now)
    report_day = _date(payload, problems, today)
    if (
        timestamp is None
        and report_day is None
        and not {"timestamp", "date"} & problems.fields.keys()
    ):
        problems.add("timestamp", "is required (ISO 8601 time of the reported counts)")

    max_historical = _count(payload, "max_historical_user_count", problems, required=True)
    if "billable_users_count" in payload or "active_users" not in payload:
        billable = _count(payload, "billable_users_count", problems, required=True)
        if "active_users" in payload:  # checked too, though billable_users_count wins
            _count(payload, "active_users", problems, required=False)
    else:
        billable = _count(payload, "active_users", problems, required=True)

    instance_uuid = _instance_uuid(payload, problems)
    unique_instance_id = _unique_instance_id(payload, problems)
    hostname = _optional_text(payload, "hostname", problems, HOSTNAME_MAX)
    gitlab_version = _optional_text(payload, "gitlab_version", problems, VERSION_MAX)
    add_on_metrics = _add_on_metrics(payload, problems)

    if problems.fields:
        raise SeatLinkRefused(
            "The Seat Link body has invalid fields.", code="invalid_payload", fields=problems.fields
        )
    if gitlab_version is None:
        # Before 14.x the body has no version, but the client's User-Agent says it.
        match = USER_AGENT_VERSION.fullmatch((user_agent or "").strip())
        if match:
            gitlab_version = match.group(1)
    report_date = timestamp.date() if timestamp is not None else report_day

    generation = generation_of(payload)
    # The stored copy: everything GitLab sent except the key itself (kilobytes per row and
    # a bearer credential: its SHA-256 identifies it), plus how it arrived.
    raw = _storable({name: value for name, value in payload.items() if name != "license_key"})
    raw[RECEIPT_KEY] = {
        "generation": generation,
        "client_ip": client_ip_or_none(client_ip),
        "user_agent": clean_text(user_agent or "")[:200],
    }
    return SeatLinkPayload(
        license_key=license_key,
        report_date=report_date,
        timestamp=timestamp,
        billable_users=billable,
        max_historical_users=max_historical,
        instance_uuid=instance_uuid,
        unique_instance_id=unique_instance_id,
        hostname=hostname,
        gitlab_version=clean_text(gitlab_version)[:VERSION_MAX] if gitlab_version else None,
        add_on_metrics=add_on_metrics,
        generation=generation,
        raw=raw,
    )


def client_ip_or_none(value: Any) -> str | None:
    """A valid IP address in its canonical form, or None."""
    try:
        return str(ipaddress.ip_address(str(value).strip())) if value else None
    except ValueError:
        return None


def anonymous_instance_uuid(subscription_id: int) -> uuid.UUID:
    """The stand-in instance id for a subscription's instance that sends no ``instance_id``."""
    return uuid.uuid5(ANONYMOUS_INSTANCE_NAMESPACE, f"subscription:{subscription_id}")


# --- pieces of the answer -----------------------------------------------------------------------


def future_subscription_entries(entries: list[dict]) -> list[dict]:
    """Future terms as GitLab stores them (snake_case, wire protocol §2.3), each with
    ``offline_cloud_licensing`` too: the instance's ``SubscriptionFutureEntry.type`` resolver
    reads that key, not ``offline_cloud_license_enabled``, so without it an offline future
    term would show as online."""
    return [
        {**entry, "offline_cloud_licensing": bool(entry.get("offline_cloud_license_enabled"))}
        for entry in entries
    ]


# --- the endpoint -------------------------------------------------------------------------------

RATE_WINDOW_SECONDS = 60
TOO_MANY = "Too many Seat Link requests from this address. Please retry in a minute."


def _json(body: dict, status: int = 200, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    # An answer can carry a license key (a bearer credential): never kept by a cache between.
    add_never_cache_headers(response)
    return response


def _address_bucket(address: str | None) -> str:
    """One IPv4 address, or one IPv6 /64 (what a single site is usually given)."""
    if address is None:
        return "unknown"
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _over_limit(address: str | None, limit: int) -> int | None:
    """Count this request against ``limit`` per minute for its address; when over, the seconds
    until the window ends (for Retry-After), else None. 0 = no limit.

    The same fixed window in the Django cache as the activation endpoint's
    (``licenses.graphql``): ``add`` then ``incr``, atomic in Redis and in the in-process cache.
    A cache outage lets Seat Links through rather than refusing them all (and is logged).
    """
    if limit <= 0:
        return None
    now = time.time()
    window = int(now // RATE_WINDOW_SECONDS)
    cache_key = f"usage:seat-link-requests:{_address_bucket(address)}:{window}"
    try:
        cache.add(cache_key, 0, timeout=RATE_WINDOW_SECONDS * 2)
        try:
            count = cache.incr(cache_key)
        except ValueError:  # the entry expired between add and incr
            cache.set(cache_key, 1, timeout=RATE_WINDOW_SECONDS * 2)
            count = 1
    except Exception:  # noqa: BLE001 - a cache outage must not stop Seat Link
        logger.warning("Seat Link rate limit unavailable: cache error", exc_info=True)
        return None
    if count <= limit:
        return None
    return max(1, int(RATE_WINDOW_SECONDS - now % RATE_WINDOW_SECONDS))


def _refusal(status: int, message: str, code: str, headers: dict | None = None) -> JsonResponse:
    return _json(SeatLinkRefused(message, code=code, status=status).body(), status, headers)


@csrf_exempt
def seat_link_endpoint(request):
    """``POST /api/v1/seat_links`` (no trailing slash: GitLab builds the URL itself, §1.2).

    No session, no CSRF, no credentials: GitLab sends none on this call, and the license key
    in the body is what identifies the instance. Refusals are 4xx with a JSON body (422 for
    one GitLab can read: ``errors``), never a 5xx, and store nothing; GitLab retries any
    non-2xx, so the per-address limit answers 429 with Retry-After before any work.
    """
    if request.method != "POST":
        return _refusal(
            405,
            f"{request.method} is not supported here: POST the Seat Link as JSON.",
            "method_not_allowed",
            headers={"Allow": "POST"},
        )
    if request.content_type != "application/json":
        return _refusal(415, "Send the Seat Link as Content-Type: application/json.", "media_type")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_large = f"The body is larger than {MAX_BODY_BYTES} bytes."
    if declared > MAX_BODY_BYTES:
        return _refusal(413, too_large, "too_large")

    address = client_address(request)
    retry_after = _over_limit(address, settings.SEAT_LINK_RATE_LIMIT_PER_IP)
    if retry_after is not None:
        return _refusal(429, TOO_MANY, "rate_limited", headers={"Retry-After": str(retry_after)})

    body = request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return _refusal(413, too_large, "too_large")
    user_agent = request.headers.get("User-Agent", "")
    try:
        payload = decode_body(body)
        result = services.seat_link_ingest(
            payload=payload, client_ip=address, user_agent=user_agent
        )
    except SeatLinkRefused as exc:
        logger.info(
            "Seat Link refused: status=%s reason=%s client_ip=%s user_agent=%r fields=%s",
            exc.status,
            exc.code,
            address,
            user_agent[:80],
            ",".join(exc.fields),
        )
        return _json(exc.body(), status=exc.status)
    return _json(result.response_body())
