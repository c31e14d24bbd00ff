"""Salesforce client: upserts keyed by an external id field, over simple-salesforce.

Transport by size: up to ``SALESFORCE_BULK_THRESHOLD`` records go through sObject Collections
upsert (``PATCH composite/sobjects/{Obj}/{ExtField}``, 200 records a call, one API call each);
more go through one Bulk API 2.0 upsert job, whose per-row results are read back. Salesforce
advises bulkified REST below about 2,000 rows.

Authentication, the first complete one of (settings in provision/settings.py):

1. a ready session: ``SALESFORCE_ACCESS_TOKEN`` + ``SALESFORCE_INSTANCE_URL``;
2. the OAuth JWT bearer flow: ``SALESFORCE_USERNAME`` + ``SALESFORCE_CONSUMER_KEY`` +
   ``SALESFORCE_PRIVATE_KEY`` (PEM text) or ``SALESFORCE_PRIVATE_KEY_FILE``, at
   ``https://{SALESFORCE_DOMAIN}.salesforce.com``;
3. username + password (+ ``SALESFORCE_SECURITY_TOKEN``, which orgs with trusted IP ranges may
   leave empty) through the SOAP login at the same domain.

Why it does not use simple-salesforce's own session refresh: ``SFType`` calls recurse without
bound on a permanent 401 (simple-salesforce #804) and Bulk 2.0 never refreshes. So logins happen
here (``SalesforceLogin``), the ``Salesforce`` object is always built in direct-session mode
(which never refreshes by itself), only ``restful``/``limits``/``bulk2`` are used, and on
``INVALID_SESSION_ID`` this client logs in again exactly once per public call and retries that
sub-call once. A second refusal is a ``TransientCrmError``; no login loop. A ready session
(mode 1) cannot be renewed, so its expiry is a ``PermanentCrmError``.

HTTP: every request carries ``timeout=SALESFORCE_TIMEOUT_SECONDS`` (simple-salesforce sets none).
simple-salesforce forces ``https://``; with ``SALESFORCE_ALLOW_HTTP`` true and an ``http://``
instance URL (the test doubles only), the session rewrites ``https://<instance host>`` to
``http://<instance host>`` and sends the login host ``https://{domain}.salesforce.com`` to the
instance URL too, i.e. for test doubles the login goes to the instance URL. An ``http://``
instance URL without that setting is refused.

Values: in JSON (Collections) ``None`` is ``null`` and clears the field; in Bulk CSV every value
is a string, ``None`` is sent as ``#N/A`` (clears the field) because an empty cell means "leave
unchanged".
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import jwt
import requests
from django.conf import settings
from simple_salesforce import Salesforce, SalesforceLogin
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceOperationError,
)

from crm_sync.choices import CrmTarget
from crm_sync.clients.base import (
    CrmError,
    OutgoingRecord,
    PermanentCrmError,
    RowResult,
    TransientCrmError,
)

logger = logging.getLogger(__name__)

COLLECTIONS_CHUNK = 200
BULK_NULL = "#N/A"
DEFAULT_BULK_WAIT_SECONDS = 1.0
MIN_API_VERSION = 46.0  # sObject Collections upsert exists from 46.0 on
# Whole-call error codes that pass with time (Salesforce docs; lock arrives as a 400).
TRANSIENT_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "REQUEST_LIMIT_EXCEEDED",
        "SERVER_UNAVAILABLE",
        "CONCURRENT_REQUEST_LIMIT_EXCEEDED",
        "TooManyLockFailure",
    }
)
# Row-level codes worth sending again later rather than reporting as a rejection.
RETRYABLE_ROW_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "ALL_OR_NONE_OPERATION_ROLLED_BACK"})
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_API_VERSION = re.compile(r"^\d{2,3}\.\d$")

T = TypeVar("T")


@dataclass(frozen=True)
class SalesforceConfig:
    """Validated Salesforce settings; ``auth`` is ``session``, ``jwt`` or ``password``."""

    auth: str
    instance_url: str
    api_version: str
    timeout: float
    allow_http: bool
    bulk_threshold: int
    bulk_wait_seconds: float
    domain: str = "login"
    # Secrets stay out of repr() so a logged config leaks nothing.
    access_token: str = field(default="", repr=False)
    username: str = ""
    password: str = field(default="", repr=False)
    security_token: str = field(default="", repr=False)
    consumer_key: str = ""
    private_key: str = field(default="", repr=False)
    private_key_file: str = ""

    @classmethod
    def from_settings(cls) -> SalesforceConfig:
        """Read and check the ``SALESFORCE_*`` settings; PermanentCrmError names what is wrong."""
        values = {
            name: str(getattr(settings, f"SALESFORCE_{name.upper()}", "") or "").strip()
            for name in (
                "instance_url",
                "access_token",
                "username",
                "password",
                "security_token",
                "consumer_key",
                "private_key",
                "private_key_file",
            )
        }
        # A PEM pasted into one environment variable often arrives with literal "\n".
        values["private_key"] = values["private_key"].replace("\\n", "\n")
        domain = (str(settings.SALESFORCE_DOMAIN or "login").strip()).removesuffix(
            ".salesforce.com"
        )
        api_version = str(settings.SALESFORCE_API_VERSION).strip().removeprefix("v")
        if not _API_VERSION.match(api_version) or float(api_version) < MIN_API_VERSION:
            raise PermanentCrmError(
                f"SALESFORCE_API_VERSION must look like 59.0 and be {MIN_API_VERSION} or later "
                f"(sObject Collections upsert); got {api_version!r}",
                code="CONFIGURATION",
            )
        timeout = float(settings.SALESFORCE_TIMEOUT_SECONDS)
        if timeout <= 0:
            raise PermanentCrmError(
                "SALESFORCE_TIMEOUT_SECONDS must be positive", code="CONFIGURATION"
            )
        allow_http = bool(settings.SALESFORCE_ALLOW_HTTP)
        instance_url = values["instance_url"].rstrip("/")
        if instance_url:
            parts = urlsplit(instance_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise PermanentCrmError(
                    f"SALESFORCE_INSTANCE_URL {instance_url!r} is not an http(s) URL",
                    code="CONFIGURATION",
                )
            if parts.scheme == "http" and not allow_http:
                raise PermanentCrmError(
                    f"SALESFORCE_INSTANCE_URL {instance_url!r} uses plain http://; refused "
                    "(only test doubles may, with SALESFORCE_ALLOW_HTTP=true)",
                    code="CONFIGURATION",
                )
        auth = _choose_auth(values)
        key_file = values["private_key_file"]
        if auth == "jwt" and not values["private_key"] and not Path(key_file).is_file():
            raise PermanentCrmError(
                f"SALESFORCE_PRIVATE_KEY_FILE {values['private_key_file']!r} does not exist",
                code="CONFIGURATION",
            )
        return cls(
            auth=auth,
            instance_url=instance_url,
            api_version=api_version,
            timeout=timeout,
            allow_http=allow_http,
            bulk_threshold=int(settings.SALESFORCE_BULK_THRESHOLD),
            # Tests set it to 0 so Bulk jobs are polled at once.
            bulk_wait_seconds=float(settings.SALESFORCE_BULK_WAIT_SECONDS),
            domain=domain,
            **{name: value for name, value in values.items() if name != "instance_url"},
        )


def _choose_auth(values: Mapping[str, str]) -> str:
    """The first fully configured mode, or PermanentCrmError naming what each mode lacks."""
    needs = {
        "session": {
            "SALESFORCE_ACCESS_TOKEN": values["access_token"],
            "SALESFORCE_INSTANCE_URL": values["instance_url"],
        },
        "jwt": {
            "SALESFORCE_USERNAME": values["username"],
            "SALESFORCE_CONSUMER_KEY": values["consumer_key"],
            "SALESFORCE_PRIVATE_KEY or SALESFORCE_PRIVATE_KEY_FILE": values["private_key"]
            or values["private_key_file"],
        },
        "password": {
            "SALESFORCE_USERNAME": values["username"],
            "SALESFORCE_PASSWORD": values["password"],
        },
    }
    for mode, required in needs.items():
        if all(required.values()):
            return mode
    labels = {
        "session": "a ready session",
        "jwt": "JWT bearer",
        "password": "password login",
    }
    missing = "; ".join(
        f"{labels[mode]} needs {', '.join(name for name, value in required.items() if not value)}"
        for mode, required in needs.items()
    )
    raise PermanentCrmError(f"Salesforce is not configured: {missing}", code="NOT_CONFIGURED")


class SalesforceHttpSession(requests.Session):
    """A requests session that always sets a timeout and, for test doubles, maps https to http.

    ``rewrites`` maps ``https://host[:port]`` prefixes to the base URL to use instead; it is only
    filled when ``SALESFORCE_ALLOW_HTTP`` is true and the instance URL is ``http://``.
    """

    def __init__(self, *, timeout: float, rewrites: Mapping[str, str] | None = None):
        super().__init__()
        self.timeout = timeout
        self.rewrites = dict(rewrites or {})
        # (used, total) from the last Sforce-Limit-Info header Salesforce sent.
        self.api_usage: tuple[int, int] | None = None

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any):
        """Send with the default timeout and the test-double rewrite applied."""
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        response = super().request(method, self.rewrite(str(url)), *args, **kwargs)
        usage = re.search(r"api-usage=(\d+)/(\d+)", response.headers.get("Sforce-Limit-Info", ""))
        if usage:
            self.api_usage = (int(usage[1]), int(usage[2]))
        return response

    def rewrite(self, url: str) -> str:
        """``url`` with a rewritten scheme and host when it targets a mapped https origin."""
        parts = urlsplit(url)
        if parts.scheme != "https":
            return url
        target = self.rewrites.get(f"https://{parts.netloc.lower()}")
        if target is None:
            return url
        base = urlsplit(target)
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))


class _ReauthBudget:
    """One re-authentication per public call: the guard against login loops."""

    def __init__(self) -> None:
        self.used = False


class SalesforceClient:
    """Upserts records into Salesforce objects; implements ``CrmClient``."""

    target = CrmTarget.SALESFORCE.value

    def __init__(self, config: SalesforceConfig):
        """Prepare the HTTP session; nothing is sent until the first call."""
        self.config = config
        self.logins = 0  # logins performed, for tests and diagnostics
        self._session = SalesforceHttpSession(timeout=config.timeout, rewrites=self._rewrites())
        self._sf: Salesforce | None = None

    @classmethod
    def from_settings(cls) -> SalesforceClient:
        """A client configured from Django settings (raises PermanentCrmError if incomplete)."""
        return cls(SalesforceConfig.from_settings())

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections; the next call starts a new session."""
        self._session.close()
        self._sf = None

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """``(used, total)`` daily API requests from the last answer's Sforce-Limit-Info."""
        return self._session.api_usage

    # --- public calls ----------------------------------------------------------------------
    def upsert(
        self, *, object_name: str, external_id_field: str, records: Sequence[OutgoingRecord]
    ) -> list[RowResult]:
        """Create or update ``records`` keyed by ``external_id_field``; one result per record."""
        _check_api_name("object_name", object_name)
        _check_api_name("external_id_field", external_id_field)
        records = list(records)
        _check_records(records, external_id_field)
        if not records:
            return []
        if len(records) > self.config.bulk_threshold:
            return self._upsert_bulk(object_name, external_id_field, records)
        return self._upsert_collections(object_name, external_id_field, records)

    def limits(self) -> dict[str, int]:
        """Today's API allocation: ``{"Max": ..., "Remaining": ...}`` of DailyApiRequests."""
        answer = self._call(
            lambda sf: sf.limits(), budget=_ReauthBudget(), context="reading API limits"
        )
        try:
            daily = answer["DailyApiRequests"]
            return {"Max": int(daily["Max"]), "Remaining": int(daily["Remaining"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentCrmError(
                f"Salesforce limits answer has no DailyApiRequests: {answer!r:.200}",
                code="UNEXPECTED_ANSWER",
            ) from exc

    # --- Collections -----------------------------------------------------------------------
    def _upsert_collections(
        self, object_name: str, external_id_field: str, records: list[OutgoingRecord]
    ) -> list[RowResult]:
        path = f"composite/sobjects/{object_name}/{external_id_field}"
        budget = _ReauthBudget()
        results: list[RowResult] = []
        for start in range(0, len(records), COLLECTIONS_CHUNK):
            chunk = records[start : start + COLLECTIONS_CHUNK]
            body = {
                "allOrNone": False,
                "records": [
                    {
                        "attributes": {"type": object_name},
                        **{name: _json_value(value) for name, value in r.fields.items()},
                        external_id_field: r.key,
                    }
                    for r in chunk
                ],
            }
            try:
                answer = self._call(
                    lambda sf, body=body: sf.restful(path, method="PATCH", json=body),
                    budget=budget,
                    context=f"upserting {object_name} by {external_id_field}",
                )
                results.extend(_collection_results(chunk, answer))
            except CrmError as exc:
                exc.partial = list(results)
                raise
        return results

    # --- Bulk API 2.0 ------------------------------------------------------------------------
    def _upsert_bulk(
        self, object_name: str, external_id_field: str, records: list[OutgoingRecord]
    ) -> list[RowResult]:
        rows = [
            {
                **{name: _csv_value(value) for name, value in r.fields.items()},
                external_id_field: r.key,
            }
            for r in records
        ]
        context = f"Bulk upserting {object_name} by {external_id_field}"
        budget = _ReauthBudget()
        jobs = self._call(
            lambda sf: getattr(sf.bulk2, object_name).upsert(
                records=rows,
                external_id_field=external_id_field,
                wait=self.config.bulk_wait_seconds,
            ),
            budget=budget,
            context=context,
        )
        by_key: dict[str, RowResult] = {}
        for job in jobs:
            answers = self._call(
                lambda sf, job_id=job["job_id"]: _read_job_results(
                    getattr(sf.bulk2, object_name), job_id
                ),
                budget=budget,
                context=f"reading Bulk results of {object_name}",
            )
            by_key.update(_bulk_results(answers, external_id_field))
        return [
            by_key.get(r.key)
            or RowResult(
                key=r.key,
                ok=False,
                error_code="NO_RESULT",
                message="Salesforce reported no result for this record",
                retryable=True,
            )
            for r in records
        ]

    # --- sessions and errors -----------------------------------------------------------------
    def _rewrites(self) -> dict[str, str]:
        parts = urlsplit(self.config.instance_url)
        if not (self.config.allow_http and parts.scheme == "http"):
            return {}
        base = f"http://{parts.netloc.lower()}"
        return {
            f"https://{parts.netloc.lower()}": base,
            f"https://{self.config.domain.lower()}.salesforce.com": base,
        }

    def _connect(self) -> Salesforce:
        """Log in if the mode needs it and build a direct-session ``Salesforce`` object."""
        config = self.config
        if config.auth == "session":
            return Salesforce(
                session_id=config.access_token,
                instance_url=config.instance_url,
                version=config.api_version,
                session=self._session,
            )
        if config.auth == "jwt":
            key_source = (
                {"privatekey": config.private_key}
                if config.private_key
                else {"privatekey_file": config.private_key_file}
            )
            try:
                session_id, instance = SalesforceLogin(
                    session=self._session,
                    username=config.username,
                    consumer_key=config.consumer_key,
                    domain=config.domain,
                    sf_version=config.api_version,
                    **key_source,
                )
            except requests.RequestException:
                raise
            except (ValueError, TypeError, jwt.PyJWTError) as exc:
                raise PermanentCrmError(
                    "cannot sign the JWT assertion: SALESFORCE_PRIVATE_KEY(_FILE) is not a "
                    f"usable RSA private key ({exc.__class__.__name__})",
                    code="CONFIGURATION",
                ) from exc
        else:
            session_id, instance = SalesforceLogin(
                session=self._session,
                username=config.username,
                password=config.password,
                security_token=config.security_token,
                domain=config.domain,
                sf_version=config.api_version,
            )
        self.logins += 1
        if self._session.rewrites:
            # The org may name its own host; under the test-double rewrite it is plain http too.
            self._session.rewrites.setdefault(f"https://{instance.lower()}", f"http://{instance}")
        logger.info("Salesforce login (%s) succeeded; instance %s", config.auth, instance)
        return Salesforce(
            session_id=session_id,
            instance=instance,
            version=config.api_version,
            session=self._session,
        )

    def _call(self, operation: Callable[[Salesforce], T], *, budget: _ReauthBudget, context: str):
        """Run ``operation`` with a live session, re-authenticating once per ``budget``."""
        while True:
            try:
                if self._sf is None:
                    self._sf = self._connect()
                return operation(self._sf)
            except SalesforceExpiredSession as exc:
                self._sf = None
                if self.config.auth == "session":
                    raise PermanentCrmError(
                        "session token expired; set a new SALESFORCE_ACCESS_TOKEN or configure JWT",
                        code="INVALID_SESSION_ID",
                        status=401,
                    ) from exc
                if budget.used:
                    raise TransientCrmError(
                        f"Salesforce refused the session again right after logging in ({context})",
                        code="INVALID_SESSION_ID",
                        status=401,
                    ) from exc
                budget.used = True
                logger.info("Salesforce session expired while %s; logging in again", context)
            except CrmError:
                raise
            except (SalesforceError, SalesforceOperationError, requests.RequestException) as exc:
                raise _translate(exc, context) from exc


def _check_api_name(label: str, value: str) -> None:
    if not isinstance(value, str) or not _API_NAME.match(value):
        raise ValueError(f"{label} must be a Salesforce API name, got {value!r}")


def _check_records(records: list[OutgoingRecord], external_id_field: str) -> None:
    """Refuse input that would make results ambiguous, before anything is sent."""
    seen: set[str] = set()
    for record in records:
        if not isinstance(record.key, str) or not record.key:
            raise ValueError(f"every record needs a non-empty string key, got {record.key!r}")
        if record.key in seen:
            raise ValueError(f"key {record.key!r} appears twice in one upsert")
        seen.add(record.key)
        for name in record.fields:
            _check_api_name("field name", name)
            if name.lower() == external_id_field.lower() and record.fields[name] != record.key:
                raise ValueError(
                    f"record {record.key!r} sets {name} to {record.fields[name]!r}, "
                    "which differs from its key"
                )


def _json_value(value: Any) -> Any:
    """A value JSON can carry as Salesforce expects it (None stays null = clear the field)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _csv_value(value: Any) -> str:
    """A Bulk CSV cell: strings only, ``#N/A`` for None (an empty cell would mean unchanged)."""
    if value is None:
        return BULK_NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _collection_results(chunk: list[OutgoingRecord], answer: Any) -> list[RowResult]:
    if not isinstance(answer, list) or len(answer) != len(chunk):
        raise PermanentCrmError(
            f"Salesforce answered {answer!r:.200} to {len(chunk)} records; expected one result "
            "per record",
            code="UNEXPECTED_ANSWER",
        )
    results = []
    for record, item in zip(chunk, answer, strict=True):
        if item.get("success"):
            results.append(RowResult(key=record.key, ok=True, created=bool(item.get("created"))))
            continue
        errors = item.get("errors") or [{}]
        code = errors[0].get("statusCode") or errors[0].get("errorCode") or "UNKNOWN_ERROR"
        message = "; ".join(str(e.get("message", "")) for e in errors if e.get("message"))
        results.append(
            RowResult(
                key=record.key,
                ok=False,
                error_code=code,
                message=message,
                retryable=code in RETRYABLE_ROW_CODES,
            )
        )
    return results


def _read_job_results(bulk_object: Any, job_id: str) -> dict[str, list[dict[str, str]]]:
    """The three result sets of one ingest job, parsed by header."""

    def parse(text: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(text or "", newline="")))

    return {
        "successful": parse(bulk_object.get_successful_records(job_id)),
        "failed": parse(bulk_object.get_failed_records(job_id)),
        "unprocessed": parse(bulk_object.get_unprocessed_records(job_id)),
    }


def _bulk_results(
    answers: Mapping[str, list[dict[str, str]]], external_id_field: str
) -> dict[str, RowResult]:
    def key_of(row: Mapping[str, str]) -> str | None:
        for name, value in row.items():
            if name and name.lower() == external_id_field.lower():
                return value
        return None

    results: dict[str, RowResult] = {}
    for row in answers["successful"]:
        key = key_of(row)
        if key is not None:
            created = str(row.get("sf__Created", "")).lower() == "true"
            results[key] = RowResult(key=key, ok=True, created=created)
    for row in answers["failed"]:
        key = key_of(row)
        if key is not None:
            code, _, message = str(row.get("sf__Error", "")).partition(":")
            code = code.strip() or "UNKNOWN_ERROR"
            results[key] = RowResult(
                key=key,
                ok=False,
                error_code=code,
                message=message.strip(),
                retryable=code in RETRYABLE_ROW_CODES,
            )
    for row in answers["unprocessed"]:
        key = key_of(row)
        if key is not None:
            results[key] = RowResult(
                key=key,
                ok=False,
                error_code="UNPROCESSED",
                message="Salesforce did not process this record (job stopped)",
                retryable=True,
            )
    return results


def _first_error(content: Any) -> tuple[str, str]:
    """(errorCode, message) from a REST error body (a JSON list, sometimes a dict or text)."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        content = content[0]
    if isinstance(content, Mapping):
        code = content.get("errorCode") or content.get("statusCode") or ""
        return str(code), str(content.get("message", ""))
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return "", str(content or "")[:300]


def _translate(exc: Exception, context: str) -> CrmError:
    """Classify a failure by what Salesforce said (errorCode), not only by exception class."""
    if isinstance(exc, requests.Timeout):
        return TransientCrmError(
            f"Salesforce did not answer in time while {context}", code="TIMEOUT"
        )
    if isinstance(exc, requests.RequestException):
        return TransientCrmError(
            f"could not reach Salesforce while {context}: {exc}", code="CONNECTION_ERROR"
        )
    if isinstance(exc, SalesforceAuthenticationFailed):
        code = exc.code
        if (isinstance(code, int) and code >= 500) or str(code) in TRANSIENT_CODES:
            return TransientCrmError(
                f"Salesforce login unavailable ({code}) while {context}", code=str(code)
            )
        return PermanentCrmError(
            f"Salesforce authentication failed: {exc.auth_message or code}",
            code=str(code or "AUTHENTICATION_FAILED"),
        )
    if isinstance(exc, SalesforceError):
        code, message = _first_error(exc.content)
        status = exc.status
        text = f"Salesforce answered {status} while {context}: {message or code}"
        if code in TRANSIENT_CODES or status >= 500:
            return TransientCrmError(text, code=code or "SERVER_ERROR", status=status)
        if status == 404:
            text += " (check the object and external id field names in the mapping)"
        return PermanentCrmError(text, code=code or f"HTTP_{status}", status=status)
    # Bulk 2.0 job-level failures: the job id and any per-row detail are lost in the library.
    message = str(exc)
    if any(code in message for code in TRANSIENT_CODES):
        return TransientCrmError(f"Bulk job failed while {context}: {message}", code="BULK_JOB")
    return PermanentCrmError(f"Bulk job failed while {context}: {message}", code="BULK_JOB_FAILED")
