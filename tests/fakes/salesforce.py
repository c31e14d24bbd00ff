"""A fake Salesforce org over real HTTP, for tests and ``make demo``.

It is a threaded ``http.server`` on 127.0.0.1 (port 0 = any free port) that speaks the wire
shapes simple-salesforce and Provision's client use (docs: /work/shared/reference/crm-apis.md §2),
keeps what it receives, and fails on request.

What it serves
--------------
Logins (both count in ``fake.logins``):

* ``POST /services/oauth2/token``: ``grant_type=password`` (username + password, the password
  optionally followed by the security token) and ``grant_type=urn:ietf:params:oauth:grant-type:
  jwt-bearer``. A JWT assertion must carry ``iss`` (= the consumer key), ``sub`` (= the
  username) and ``aud``. Its RS256 signature is verified when the fake was given a public key
  (``trust_jwt_key(pem)``); without one the assertion is decoded without verification, so a
  demo can use any key pair. Answers ``{"access_token", "instance_url", ...}`` or 400
  ``{"error": "invalid_grant", ...}``.
* ``POST /services/Soap/u/{version}``: the SOAP partner ``login`` simple-salesforce sends for
  username + password + security token. The password element must equal password + token.
  Failures are HTTP 500 SOAP faults with ``sf:exceptionCode`` ``INVALID_LOGIN``.

Data calls under ``/services/data/v{NN.N}/`` all need ``Authorization: Bearer <token>`` (a token
from a login, or the configured ready ``access_token``); otherwise 401
``[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]`` (a JSON list, as
simple-salesforce expects). Every data answer carries ``Sforce-Limit-Info: api-usage=N/15000``.

* ``PATCH sobjects/{Obj}/{ExtField}/{value}``: single upsert; 201 created / 200 updated with
  ``{"id", "success", "errors", "created"}``.
* ``PATCH composite/sobjects/{Obj}/{ExtField}``: sObject Collections upsert, at most 200 records
  (else 400 ``EXCEEDED_ID_LIMIT``); 200 with one result per record in request order; per-record
  errors use ``statusCode``; ``allOrNone`` honoured.
* Bulk API 2.0 ingest (upsert only): ``POST jobs/ingest`` (200, state ``Open``) → ``PUT
  jobs/ingest/{id}/batches`` (``text/csv``, 201, one upload per job) → ``PATCH jobs/ingest/{id}``
  ``{"state": "UploadComplete"}`` (the rows are applied right then) → ``GET jobs/ingest/{id}``
  (``InProgress`` for ``bulk_polls_in_progress`` polls, then ``JobComplete``, or ``Failed``) →
  ``GET jobs/ingest/{id}/successfulResults/ | failedResults/ | unprocessedrecords/`` (matched
  case-insensitively). CSV is parsed by header name (column order does not matter); an empty
  cell leaves a field alone, ``#N/A`` sets it to null. Failed rows have ``sf__Error`` =
  ``CODE:message``.
* ``GET limits/``: ``DailyApiRequests`` ``{Max, Remaining}``.

Objects and external id fields must be known (``objects=``; default: ``Account`` keyed by
``Provision_Customer_Id__c`` and ``Provision_Subscription_Usage__c`` keyed by
``Provision_Subscription_Id__c``); anything else answers 404 ``NOT_FOUND``. Records are kept per
object, keyed by external id, with a Salesforce-looking ``Id`` (``001...`` for Account), and updates
merge into the stored fields.

Inspecting and failing, from Python (thread-safe) or over HTTP
---------------------------------------------------------------
Python: ``records(obj)``, ``requests(kind=None)``, ``count(kind)``, ``sent_keys(obj)``, ``logins``;
``fail_next(error, times=1, kind="any", after=0)`` with ``error`` one of ``server_unavailable``
(503; a plain-text 503 for logins), ``request_limit_exceeded`` (403 ``REQUEST_LIMIT_EXCEEDED``),
``unable_to_lock_row`` (400 ``UNABLE_TO_LOCK_ROW``, whole call), ``invalid_session`` (one 401
without revoking the token); ``slow(seconds, times=None, kind="any", after=0)``;
``expire_session()`` (every token issued so far, and the ready access token, answer 401 until a new
login); ``reject_all_tokens()`` (every data call answers 401, even after a fresh login);
``reject_rows({key: code}, message=..., times=None)`` (per-row rejection in single, collections
and bulk; ``UNABLE_TO_LOCK_ROW`` works per row too); ``fail_bulk_job(message, times=1)`` (the next
job ends ``Failed`` with nothing processed); ``set_api_usage(n)``; ``reset()``.
``kind`` is one of ``any``, ``login``, ``single``, ``collections``, ``bulk``, ``limits``.

HTTP control plane (no auth): ``POST /__fake__/faults`` with ``{"action": "<method name above>",
...keyword arguments}``, ``POST /__fake__/reset``, ``GET /__fake__/records/{Obj}`` and
``GET /__fake__/requests``.

Standalone: ``python -m tests.fakes.salesforce --port 8801`` prints its URL and credentials and
serves until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt

from tests.fakes._server import (
    FakeServer,
    Reply,
    argument_parser,
    json_reply,
    serve_forever_until_signal,
)

DEFAULT_OBJECTS = {
    "Account": "Provision_Customer_Id__c",
    "Provision_Subscription_Usage__c": "Provision_Subscription_Id__c",
}
DEFAULT_USERNAME = "provision-sync@example.com"
DEFAULT_PASSWORD = "fake-password"
DEFAULT_SECURITY_TOKEN = "fake-security-token"
DEFAULT_CONSUMER_KEY = "fake-consumer-key"
DEFAULT_ACCESS_TOKEN = "00D000000000001!fake-ready-session"
DAILY_API_LIMIT = 15000
COLLECTIONS_LIMIT = 200
BULK_NULL = "#N/A"
ORG_ID = "00D000000000001AAA"
USER_ID = "005000000000001AAA"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
KINDS = ("any", "login", "single", "collections", "bulk", "limits")
ERRORS = {
    # error name: (HTTP status, errorCode, message)
    "server_unavailable": (503, "SERVER_UNAVAILABLE", "Service temporarily unavailable"),
    "request_limit_exceeded": (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    "invalid_session": (401, "INVALID_SESSION_ID", "Session expired or invalid"),
    "unable_to_lock_row": (
        400,
        "UNABLE_TO_LOCK_ROW",
        "unable to obtain exclusive access to this record or 1 records: 001000000000001AAA",
    ),
}
_JSON = "application/json;charset=UTF-8"
_DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^"}
_DATA_PATH = re.compile(r"^/services/data/v(?P<version>\d+\.\d+)/(?P<rest>.*)$")
_SOAP_PATH = re.compile(r"^/services/Soap/u/(?P<version>\d+\.\d+)/?$")


@dataclass
class LoggedRequest:
    """One request the fake received (control-plane calls are not logged)."""

    method: str
    path: str
    kind: str
    object_name: str = ""
    record_count: int = 0
    keys: list[str] = field(default_factory=list)
    status: int | None = None


@dataclass(frozen=True)
class ObjectSpec:
    """An sObject the fake knows: its external id field and, optionally, its only valid fields."""

    name: str
    external_id_field: str
    id_prefix: str
    fields: frozenset[str] | None = None


@dataclass
class _Fault:
    """A whole-call failure or delay waiting for matching requests."""

    kind: str
    remaining: int | None  # None = every matching call until reset
    error: str = ""
    delay: float = 0.0
    after: int = 0  # matching calls to let through before the fault starts

    def take(self, kind: str) -> bool:
        """Count one ``kind`` call; True when this call is the fault's to fail or delay."""
        if self.remaining == 0 or self.kind not in ("any", kind):
            return False
        if self.after > 0:
            self.after -= 1
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


@dataclass
class _RowFault:
    """A per-record rejection for one external id value."""

    code: str
    message: str
    remaining: int | None


@dataclass
class _Job:
    """One Bulk API 2.0 ingest job."""

    id: str
    spec: ObjectSpec
    api_version: str
    line_ending: str
    delimiter_name: str
    state: str = "Open"
    created: str = field(default_factory=lambda: _now())
    csv_text: str | None = None
    final_state: str = ""
    polls_left: int = 0
    error_message: str = ""
    columns: list[str] = field(default_factory=list)
    successful: list[list[str]] = field(default_factory=list)
    failed: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)


class FakeSalesforce(FakeServer):
    """A Salesforce org in a thread: start it, point a client at ``url``, inspect, make it fail."""

    name = "Salesforce"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        objects: Mapping[str, str | tuple[str, Iterable[str]]] | None = None,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        security_token: str = DEFAULT_SECURITY_TOKEN,
        consumer_key: str = DEFAULT_CONSUMER_KEY,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        jwt_public_key: str | bytes | None = None,
        bulk_polls_in_progress: int = 1,
    ):
        """Configure the org. ``objects`` maps object name to its external id field, or to
        ``(external_id_field, allowed_fields)`` to reject unknown fields."""
        super().__init__(host=host, port=port)
        self.username = username
        self.password = password
        self.security_token = security_token
        self.consumer_key = consumer_key
        self.access_token = access_token
        self.bulk_polls_in_progress = bulk_polls_in_progress
        self._initial_objects = dict(objects if objects is not None else DEFAULT_OBJECTS)
        self._initial_jwt_key = jwt_public_key
        self._ids = itertools.count(1)
        self.reset()

    def provision_settings(self) -> dict[str, Any]:
        """Provision's settings that point its Salesforce client at this running fake: its URL
        over plain HTTP, a password + security token login, a short timeout, and Bulk jobs
        polled at once (the fake finishes them within a poll or two)."""
        return {
            "SALESFORCE_INSTANCE_URL": self.url,
            "SALESFORCE_ALLOW_HTTP": True,
            "SALESFORCE_ACCESS_TOKEN": "",
            "SALESFORCE_USERNAME": self.username,
            "SALESFORCE_PASSWORD": self.password,
            "SALESFORCE_SECURITY_TOKEN": self.security_token,
            "SALESFORCE_CONSUMER_KEY": "",
            "SALESFORCE_PRIVATE_KEY": "",
            "SALESFORCE_PRIVATE_KEY_FILE": "",
            "SALESFORCE_DOMAIN": "login",
            "SALESFORCE_TIMEOUT_SECONDS": 5,
            "SALESFORCE_BULK_WAIT_SECONDS": 0,
        }

    # --- state --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget records, jobs, requests, faults and issued tokens; back to the start config.

        A request still in flight (one held in slow mode) is answered 503 without touching the
        new state, so it cannot log in, store or count in the next test."""
        with self._lock:
            self._invalidate_calls_in_flight()
            self._objects: dict[str, ObjectSpec] = {}
            for name, spec in self._initial_objects.items():
                if isinstance(spec, str):
                    self.add_object(name, spec)
                else:
                    self.add_object(name, spec[0], fields=spec[1])
            self._records: dict[str, dict[str, dict[str, Any]]] = {}
            self._jobs: dict[str, _Job] = {}
            self._log: list[LoggedRequest] = []
            self._faults: list[_Fault] = []
            self._row_faults: dict[str, _RowFault] = {}
            self._bulk_failures: list[_Fault] = []
            self._tokens: set[str] = {self.access_token} if self.access_token else set()
            self._reject_all_tokens = False
            self._jwt_key = self._initial_jwt_key
            self._api_used = 0
            self.logins = 0

    # --- configuration and faults (the control plane calls these too) -------------------
    def add_object(
        self, name: str, external_id_field: str, *, fields: Iterable[str] | None = None
    ) -> None:
        """Make an sObject known, keyed by ``external_id_field``."""
        with self._lock:
            prefix = {"Account": "001", "Contact": "003"}.get(name, f"a0{len(self._objects)}")
            allowed = None
            if fields is not None:
                allowed = frozenset(f.lower() for f in [*fields, external_id_field, "Id"])
            self._objects[name.lower()] = ObjectSpec(name, external_id_field, prefix, allowed)

    def trust_jwt_key(self, public_key_pem: str | bytes | None) -> None:
        """Verify JWT assertions with this RS256 public key (None = decode without verifying)."""
        with self._lock:
            self._jwt_key = public_key_pem

    def fail_next(
        self, error: str, *, times: int | None = 1, kind: str = "any", after: int = 0
    ) -> None:
        """Answer ``times`` calls of ``kind`` (None = all) with ``error`` (see ``ERRORS``),
        starting after ``after`` matching calls went through."""
        if error not in ERRORS:
            raise ValueError(f"unknown error {error!r}; one of {sorted(ERRORS)}")
        self._add_fault(_Fault(kind=kind, remaining=times, error=error, after=after))

    def slow(
        self, seconds: float, *, times: int | None = None, kind: str = "any", after: int = 0
    ) -> None:
        """Sleep ``seconds`` before answering ``times`` calls of ``kind`` (None = all)."""
        self._add_fault(_Fault(kind=kind, remaining=times, delay=float(seconds), after=after))

    def _add_fault(self, fault: _Fault) -> None:
        if fault.kind not in KINDS:
            raise ValueError(f"unknown kind {fault.kind!r}; one of {KINDS}")
        with self._lock:
            self._faults.append(fault)

    def expire_session(self) -> None:
        """Invalidate every token issued so far (and the ready access token)."""
        with self._lock:
            self._tokens.clear()

    def reject_all_tokens(self, enabled: bool = True) -> None:
        """Answer 401 to every data call, even with a token from a fresh login."""
        with self._lock:
            self._reject_all_tokens = enabled

    def reject_rows(
        self,
        codes: Mapping[str, str],
        *,
        message: str = "",
        times: int | None = None,
    ) -> None:
        """Reject these external ids with ``code`` per row, ``times`` times each (None = always)."""
        with self._lock:
            for key, code in codes.items():
                text = message or f"{code.replace('_', ' ').lower()} for {key}"
                self._row_faults[str(key)] = _RowFault(code, text, times)

    def fail_bulk_job(
        self, message: str = "InvalidBatch : Failed to process query", *, times: int = 1
    ) -> None:
        """Make the next ``times`` Bulk jobs end Failed with ``message`` and nothing processed."""
        with self._lock:
            self._bulk_failures.append(_Fault(kind="bulk", remaining=times, error=message))

    def set_api_usage(self, used: int) -> None:
        """Pretend ``used`` API calls were already made today (for limit alerts)."""
        with self._lock:
            self._api_used = int(used)

    # --- inspection --------------------------------------------------------------------------
    def records(self, object_name: str) -> dict[str, dict[str, Any]]:
        """The stored records of ``object_name`` keyed by external id (copies)."""
        with self._lock:
            spec = self._objects.get(object_name.lower())
            stored = self._records.get(spec.name if spec else object_name, {})
            return {key: dict(record) for key, record in stored.items()}

    def requests(self, kind: str | None = None) -> list[LoggedRequest]:
        """Requests received so far, oldest first, optionally only one ``kind``."""
        with self._lock:
            return [r for r in self._log if kind in (None, "any", r.kind)]

    def count(self, kind: str) -> int:
        """How many requests of ``kind`` arrived."""
        return len(self.requests(kind))

    def sent_keys(self, object_name: str | None = None) -> list[str]:
        """Every external id sent in a data-carrying call, in arrival order, repeats included."""
        return [
            key for r in self.requests() if object_name in (None, r.object_name) for key in r.keys
        ]

    # --- request handling --------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one HTTP request (called from the listener's threads)."""
        path = urlsplit(raw_path).path
        if path.startswith("/__fake__/"):
            return self._control(method, path, body)
        kind = _kind_of(path)
        with self._lock:
            entry = LoggedRequest(method=method, path=path, kind=kind)
            self._log.append(entry)
            delay = sum(f.delay for f in self._faults if f.delay and f.take(kind))
            admission = self._admit()
        if delay:
            admission.wait(delay)
        with self._lock:
            if self._reset_since(admission):
                # Reset while this request waited: answer it without touching the new state.
                entry.status = 503
                return _error(503, "SERVER_UNAVAILABLE", "The fake was reset during this call")
            response = self._answer(kind, method, path, headers, body, entry)
            entry.status = response.status
            if kind != "login":
                self._api_used += 1
                response.headers["Sforce-Limit-Info"] = (
                    f"api-usage={self._api_used}/{DAILY_API_LIMIT}"
                )
            return response

    def _reply_to_a_bug(self) -> Reply:
        """A bug in the fake answers as Salesforce does when it breaks."""
        return _error(500, "UNKNOWN_EXCEPTION", "An unexpected error occurred (fake)")

    def _answer(self, kind, method, path, headers, body, entry) -> Reply:
        if kind == "login":
            fault = self._take_fault(kind)
            if fault is not None:
                status = ERRORS[fault.error][0]
                return Reply(status, b"Service Unavailable", "text/plain")
            if path == "/services/oauth2/token" and method == "POST":
                return self._oauth_token(body)
            if _SOAP_PATH.match(path) and method == "POST":
                return self._soap_login(path, body)
            return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
        match = _DATA_PATH.match(path)
        if match is None:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        if not self._authorised(headers):
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        fault = self._take_fault(kind)
        if fault is not None:
            return _error(*ERRORS[fault.error])
        version, rest = match["version"], match["rest"].rstrip("/")
        parts = [unquote(p) for p in rest.split("/")]
        if kind == "single" and len(parts) == 4:
            return self._single_upsert(method, parts[1], parts[2], parts[3], body, entry)
        if kind == "collections" and len(parts) == 4:
            return self._collections_upsert(method, version, parts[2], parts[3], body, entry)
        if kind == "bulk":
            return self._bulk(method, version, parts[2:], headers, body, entry)
        if kind == "limits" and method == "GET":
            return self._limits()
        return _error(404, "NOT_FOUND", "The requested resource does not exist")

    def _take_fault(self, kind: str) -> _Fault | None:
        # Every error fault counts the call (so ``after`` means "after N calls of this kind"),
        # but only the first one due answers it.
        chosen = None
        for fault in self._faults:
            if fault.error and chosen is None:
                if fault.take(kind):
                    chosen = fault
            elif fault.error and fault.after > 0 and fault.kind in ("any", kind):
                fault.after -= 1
        return chosen

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        value = headers.get("Authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() not in ("bearer", "oauth"):
            return False
        return not self._reject_all_tokens and token.strip() in self._tokens

    def _issue_token(self) -> str:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(24)}"
        self._tokens.add(token)
        self.logins += 1
        return token

    # --- logins ------------------------------------------------------------------------------
    def _oauth_token(self, body: bytes) -> Reply:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8")).items()}
        grant = form.get("grant_type", "")
        if grant == "password":
            ok = form.get("username") == self.username and form.get("password") in (
                self.password,
                self.password + self.security_token,
            )
            if not ok:
                return _oauth_error("invalid_grant", "authentication failure")
        elif grant == JWT_GRANT:
            problem = self._check_assertion(form.get("assertion", ""))
            if problem:
                return _oauth_error("invalid_grant", problem)
        else:
            return _oauth_error("unsupported_grant_type", f"grant type {grant!r} not supported")
        token = self._issue_token()
        answer = {
            "access_token": token,
            "instance_url": self.url,
            "id": f"{self.url}/id/{ORG_ID}/{USER_ID}",
            "token_type": "Bearer",
            "issued_at": str(int(datetime.now(UTC).timestamp() * 1000)),
            "signature": secrets.token_urlsafe(16),
        }
        return _json(200, answer)

    def _check_assertion(self, assertion: str) -> str:
        try:
            if self._jwt_key:
                claims = jwt.decode(
                    assertion,
                    self._jwt_key,
                    algorithms=["RS256"],
                    options={"verify_aud": False, "verify_exp": False},
                )
            else:
                claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            return f"invalid assertion: {exc}"
        missing = [c for c in ("iss", "sub", "aud") if not claims.get(c)]
        if missing:
            return f"assertion lacks {', '.join(missing)}"
        if claims["iss"] != self.consumer_key:
            return "client identifier invalid"
        if claims["sub"] != self.username:
            return "user hasn't approved this consumer"
        return ""

    def _soap_login(self, path: str, body: bytes) -> Reply:
        text = body.decode("utf-8")
        username = _xml_element(text, "username")
        password = _xml_element(text, "password")
        if username != self.username or password != self.password + self.security_token:
            return _soap_fault(
                "INVALID_LOGIN",
                "Invalid username, password, security token; or user locked out.",
            )
        version = _SOAP_PATH.match(path)["version"]
        token = html.escape(self._issue_token())
        envelope = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
            ' xmlns="urn:partner.soap.sforce.com">'
            "<soapenv:Body><loginResponse><result>"
            f"<metadataServerUrl>{self.url}/services/Soap/m/{version}/{ORG_ID[:15]}"
            "</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
            f"<serverUrl>{self.url}/services/Soap/u/{version}/{ORG_ID[:15]}</serverUrl>"
            f"<sessionId>{token}</sessionId><userId>{USER_ID}</userId>"
            f"<userInfo><organizationId>{ORG_ID}</organizationId>"
            f"<userName>{html.escape(self.username)}</userName></userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Reply(200, envelope.encode("utf-8"), "text/xml;charset=UTF-8")

    # --- REST upserts ------------------------------------------------------------------------
    def _spec(self, object_name: str, external_id_field: str | None = None) -> ObjectSpec | None:
        spec = self._objects.get(object_name.lower())
        if spec is None:
            return None
        if external_id_field is not None and external_id_field.lower() != (
            spec.external_id_field.lower()
        ):
            return None
        return spec

    def _unknown_field(self, spec: ObjectSpec, names: Iterable[str]) -> str:
        if spec.fields is None:
            return ""
        allowed = spec.fields | {"attributes"}
        return next((n for n in names if n.lower() not in allowed), "")

    def _row_fault(self, key: str) -> _RowFault | None:
        fault = self._row_faults.get(key)
        if fault is None or fault.remaining == 0:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
        return fault

    def _store(self, spec: ObjectSpec, key: str, values: Mapping[str, Any]) -> tuple[str, bool]:
        stored = self._records.setdefault(spec.name, {})
        record = stored.get(key)
        created = record is None
        if record is None:
            record = {
                "Id": f"{spec.id_prefix}{next(self._ids):012d}AAA",
                spec.external_id_field: key,
            }
            stored[key] = record
        for name, value in values.items():
            if name.lower() not in ("attributes", "id", spec.external_id_field.lower()):
                record[name] = value
        return record["Id"], created

    def _single_upsert(self, method, object_name, ext_field, key, body, entry) -> Reply:
        if method != "PATCH":
            return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
        spec = self._spec(object_name, ext_field)
        if spec is None:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        entry.object_name, entry.record_count, entry.keys = spec.name, 1, [key]
        values = _json_body(body)
        if not isinstance(values, dict):
            return _error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        unknown = self._unknown_field(spec, values)
        if unknown:
            return _error(400, "INVALID_FIELD", f"No such column '{unknown}' on sobject")
        fault = self._row_fault(key)
        if fault is not None:
            return _error(400, fault.code, fault.message)
        record_id, created = self._store(spec, key, values)
        answer = {"id": record_id, "success": True, "errors": [], "created": created}
        return _json(201 if created else 200, answer)

    def _collections_upsert(self, method, version, object_name, ext_field, body, entry):
        if method != "PATCH":
            return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
        spec = self._spec(object_name, ext_field)
        if spec is None or float(version) < 46.0:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        payload = _json_body(body)
        records = payload.get("records") if isinstance(payload, dict) else None
        if not isinstance(records, list):
            return _error(400, "JSON_PARSER_ERROR", "Expected {allOrNone, records: [...]}")
        entry.object_name, entry.record_count = spec.name, len(records)
        entry.keys = [
            str(r.get(spec.external_id_field, "")) for r in records if isinstance(r, dict)
        ]
        if len(records) > COLLECTIONS_LIMIT:
            return _error(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {COLLECTIONS_LIMIT} records "
                "into this call",
            )
        for record in records:
            unknown = self._unknown_field(spec, record) if isinstance(record, dict) else ""
            if unknown:
                return _error(400, "INVALID_FIELD", f"No such column '{unknown}' on sobject")
        checked = [self._check_collection_record(spec, r) for r in records]
        if payload.get("allOrNone") and any(problem for problem, _ in checked):
            results = [
                {"success": False, "errors": [problem or _rolled_back()]} for problem, _ in checked
            ]
            return _json(200, results)
        results = []
        for problem, record in checked:
            if problem:
                results.append({"success": False, "errors": [problem]})
                continue
            key = str(record[spec.external_id_field])
            record_id, created = self._store(spec, key, record)
            results.append({"id": record_id, "success": True, "errors": [], "created": created})
        return _json(200, results)

    def _check_collection_record(self, spec: ObjectSpec, record: Any):
        if not isinstance(record, dict):
            return _row_error("JSON_PARSER_ERROR", "Each record must be a JSON object"), record
        record_type = (record.get("attributes") or {}).get("type", "")
        if record_type.lower() != spec.name.lower():
            return _row_error("INVALID_TYPE", f"Record type must be {spec.name}"), record
        key = record.get(spec.external_id_field)
        if key in (None, ""):
            message = f"Required fields are missing: [{spec.external_id_field}]"
            return _row_error("REQUIRED_FIELD_MISSING", message, [spec.external_id_field]), record
        fault = self._row_fault(str(key))
        if fault is not None:
            return _row_error(fault.code, fault.message), record
        return None, record

    # --- Bulk API 2.0 ------------------------------------------------------------------------
    def _bulk(self, method, version, parts, headers, body, entry) -> Reply:
        # parts: [] | [job_id] | [job_id, "batches"] | [job_id, "<results>"]
        if not parts or parts == [""]:
            if method != "POST":
                return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
            return self._bulk_create(version, body, entry)
        job = self._jobs.get(parts[0])
        if job is None:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        entry.object_name = job.spec.name
        if len(parts) == 1:
            if method == "GET":
                return _json(200, self._job_json(job, poll=True))
            if method == "PATCH":
                return self._bulk_set_state(job, body)
            if method == "DELETE":
                del self._jobs[job.id]
                return Reply(204, content_type=_JSON)
        elif len(parts) == 2 and parts[1].lower() == "batches" and method == "PUT":
            return self._bulk_upload(job, body, entry)
        elif len(parts) == 2 and method == "GET":
            results = {
                "successfulresults": (["sf__Id", "sf__Created"], job.successful),
                "failedresults": (["sf__Id", "sf__Error"], job.failed),
                "unprocessedrecords": ([], job.unprocessed),
            }.get(parts[1].lower())
            if results is not None:
                if job.state not in ("JobComplete", "Failed", "Aborted"):
                    return _error(400, "INVALIDJOBSTATE", f"Job {job.id} is still {job.state}")
                return self._csv(job, *results)
        return _error(404, "NOT_FOUND", "The requested resource does not exist")

    def _bulk_create(self, version, body, entry) -> Reply:
        payload = _json_body(body)
        if not isinstance(payload, dict):
            return _error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        entry.object_name = str(payload.get("object", ""))
        if payload.get("operation") != "upsert":
            return _error(400, "INVALIDJOB", "This fake supports operation 'upsert' only")
        if payload.get("contentType", "CSV") != "CSV":
            return _error(400, "INVALIDJOB", "contentType must be CSV")
        spec = self._spec(entry.object_name, str(payload.get("externalIdFieldName", "")))
        if spec is None:
            return _error(404, "NOT_FOUND", "The requested resource does not exist")
        delimiter = str(payload.get("columnDelimiter") or "COMMA")
        if delimiter not in _DELIMITERS:
            return _error(400, "INVALIDJOB", f"Unknown columnDelimiter {delimiter}")
        job = _Job(
            id=f"750{next(self._ids):012d}AAA",
            spec=spec,
            api_version=version,
            line_ending=str(payload.get("lineEnding") or "LF"),
            delimiter_name=delimiter,
        )
        self._jobs[job.id] = job
        return _json(200, self._job_json(job))

    def _bulk_upload(self, job: _Job, body: bytes, entry: LoggedRequest) -> Reply:
        if job.state != "Open" or job.csv_text is not None:
            return _error(400, "INVALIDJOBSTATE", f"Job {job.id} does not accept more data")
        job.csv_text = body.decode("utf-8-sig")
        rows = self._parse_csv(job)
        if rows is not None:
            columns, data = rows
            entry.record_count = len(data)
            ext = _find_column(columns, job.spec.external_id_field)
            if ext is not None:
                entry.keys = [row[ext] for row in data if len(row) > ext]
        return Reply(201, content_type="text/plain")

    def _bulk_set_state(self, job: _Job, body: bytes) -> Reply:
        payload = _json_body(body)
        state = payload.get("state") if isinstance(payload, dict) else None
        if state == "Aborted" and job.state in ("Open", "UploadComplete", "InProgress"):
            job.state, job.final_state = "Aborted", ""
        elif state == "UploadComplete" and job.state == "Open":
            job.state = "UploadComplete"
            job.polls_left = self.bulk_polls_in_progress
            self._process(job)
        else:
            return _error(400, "INVALIDJOBSTATE", f"Cannot change job from {job.state} to {state}")
        return _json(200, self._job_json(job))

    def _parse_csv(self, job: _Job) -> tuple[list[str], list[list[str]]] | None:
        if not job.csv_text:
            return None
        reader = csv.reader(io.StringIO(job.csv_text, newline=""), delimiter=_delimiter(job))
        rows = [row for row in reader if row]
        if not rows:
            return None
        return rows[0], rows[1:]

    def _process(self, job: _Job) -> None:
        """Apply the uploaded rows now; polls then report InProgress before the final state."""
        parsed = self._parse_csv(job)
        failure = next((f for f in self._bulk_failures if f.take("bulk")), None)
        if parsed is None:
            job.final_state, job.error_message = "Failed", "InvalidBatch : No data found"
            return
        columns, rows = parsed
        job.columns = columns
        if failure is not None:
            job.final_state, job.error_message = "Failed", failure.error
            job.unprocessed = rows
            return
        ext = _find_column(columns, job.spec.external_id_field)
        unknown = self._unknown_field(job.spec, columns)
        if ext is None or unknown:
            missing = unknown or job.spec.external_id_field
            job.final_state = "Failed"
            job.error_message = f"InvalidBatch : Field name not found : {missing}"
            job.unprocessed = rows
            return
        for row in rows:
            key = row[ext] if len(row) > ext else ""
            if len(row) != len(columns):
                job.failed.append(["", "INVALID_FIELD:Wrong number of columns", *row])
                continue
            if not key:
                message = f"Required fields are missing: [{job.spec.external_id_field}]"
                job.failed.append(["", f"REQUIRED_FIELD_MISSING:{message}", *row])
                continue
            fault = self._row_fault(key)
            if fault is not None:
                job.failed.append(["", f"{fault.code}:{fault.message}", *row])
                continue
            # Bulk semantics: an empty cell leaves the field alone, #N/A clears it.
            values = {
                name: (None if cell == BULK_NULL else cell)
                for name, cell in zip(columns, row, strict=True)
                if cell != ""
            }
            record_id, created = self._store(job.spec, key, values)
            job.successful.append([record_id, "true" if created else "false", *row])
        job.final_state = "JobComplete"

    def _job_json(self, job: _Job, *, poll: bool = False) -> dict[str, Any]:
        if poll and job.state in ("UploadComplete", "InProgress"):
            if job.polls_left > 0:
                job.polls_left -= 1
                job.state = "InProgress"
            else:
                job.state = job.final_state or "JobComplete"
        answer = {
            "id": job.id,
            "operation": "upsert",
            "object": job.spec.name,
            "createdById": USER_ID,
            "createdDate": job.created,
            "systemModstamp": _now(),
            "state": job.state,
            "externalIdFieldName": job.spec.external_id_field,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(job.api_version),
            "contentUrl": f"services/data/v{job.api_version}/jobs/ingest/{job.id}/batches",
            "lineEnding": job.line_ending,
            "columnDelimiter": job.delimiter_name,
        }
        if poll:
            done = job.state in ("JobComplete", "Failed")
            answer.update(
                {
                    "jobType": "V2Ingest",
                    "numberRecordsProcessed": (len(job.successful) + len(job.failed))
                    if done
                    else 0,
                    "numberRecordsFailed": len(job.failed) if done else 0,
                    "retries": 0,
                    "totalProcessingTime": 0,
                    "apiActiveProcessingTime": 0,
                    "apexProcessingTime": 0,
                }
            )
            if job.state == "Failed":
                answer["errorMessage"] = job.error_message
        return answer

    def _csv(self, job: _Job, prefix: list[str], rows: list[list[str]]) -> Reply:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*prefix, *job.columns])
        writer.writerows(rows)
        return Reply(200, buffer.getvalue().encode("utf-8"), "text/csv")

    def _limits(self) -> Reply:
        used = self._api_used + 1  # this call counts too
        remaining = max(DAILY_API_LIMIT - used, 0)
        return _json(
            200,
            {
                "DailyApiRequests": {"Max": DAILY_API_LIMIT, "Remaining": remaining},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000 - len(self._jobs)},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            },
        )

    # --- control plane -----------------------------------------------------------------------
    def _control_actions(self) -> dict[str, Callable[..., None]]:
        return {
            "fail_next": self.fail_next,
            "slow": self.slow,
            "expire_session": self.expire_session,
            "reject_all_tokens": self.reject_all_tokens,
            "reject_rows": self.reject_rows,
            "fail_bulk_job": self.fail_bulk_job,
            "set_api_usage": self.set_api_usage,
            "add_object": self.add_object,
            "trust_jwt_key": self.trust_jwt_key,
        }

    def _control(self, method: str, path: str, body: bytes) -> Reply:
        if method == "POST" and path == "/__fake__/reset":
            self.reset()
            return _json(200, {"ok": True})
        if method == "POST" and path == "/__fake__/faults":
            payload = _json_body(body)
            if not isinstance(payload, dict) or "action" not in payload:
                return _json(400, {"error": 'expected {"action": ..., ...arguments}'})
            action = self._control_actions().get(payload.pop("action"))
            if action is None:
                return _json(400, {"error": f"actions: {sorted(self._control_actions())}"})
            try:
                action(**payload)
            except (TypeError, ValueError) as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, {"ok": True})
        if method == "GET" and path.startswith("/__fake__/records/"):
            return _json(200, self.records(unquote(path.removeprefix("/__fake__/records/"))))
        if method == "GET" and path == "/__fake__/requests":
            return _json(200, [asdict(r) for r in self.requests()])
        return _json(404, {"error": "unknown control endpoint"})


def _kind_of(path: str) -> str:
    if path == "/services/oauth2/token" or path.startswith("/services/Soap/u/"):
        return "login"
    match = _DATA_PATH.match(path)
    rest = match["rest"].lower() if match else ""
    if rest.startswith("sobjects/"):
        return "single"
    if rest.startswith("composite/sobjects/"):
        return "collections"
    if rest.startswith("jobs/ingest"):
        return "bulk"
    if rest.rstrip("/") == "limits":
        return "limits"
    return "other"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _json(status: int, payload: Any) -> Reply:
    return json_reply(status, payload, content_type=_JSON)


def _error(status: int, code: str, message: str) -> Reply:
    """Salesforce's REST error envelope: always a JSON list."""
    return _json(status, [{"message": message, "errorCode": code, "fields": []}])


def _row_error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields or []}


def _rolled_back() -> dict[str, Any]:
    return _row_error(
        "ALL_OR_NONE_OPERATION_ROLLED_BACK", "Record rolled back because not all records were valid"
    )


def _oauth_error(error: str, description: str) -> Reply:
    return _json(400, {"error": error, "error_description": description})


def _soap_fault(code: str, message: str) -> Reply:
    envelope = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:sf="urn:fault.partner.soap.sforce.com"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {message}</faultstring>"
        '<detail><sf:LoginFault xsi:type="sf:LoginFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{message}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Reply(500, envelope.encode("utf-8"), "text/xml;charset=UTF-8")


def _xml_element(text: str, name: str) -> str | None:
    # A regex, not an XML parser: the login body is tiny and this avoids parsing untrusted XML.
    match = re.search(rf"<(?:\w+:)?{name}>(.*?)</(?:\w+:)?{name}>", text, re.S)
    return html.unescape(match[1]) if match else None


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError:
        return None


def _delimiter(job: _Job) -> str:
    return _DELIMITERS[job.delimiter_name]


def _find_column(columns: list[str], name: str) -> int | None:
    lowered = [c.lower() for c in columns]
    return lowered.index(name.lower()) if name.lower() in lowered else None


def main(argv: list[str] | None = None) -> int:
    """Run the fake until SIGTERM or Ctrl-C, printing its URL and credentials first."""
    parser = argument_parser("Fake Salesforce org for Provision's demo/tests")
    args = parser.parse_args(argv)
    return serve_forever_until_signal(FakeSalesforce(host=args.host, port=args.port), _banner)


def _banner(fake: FakeSalesforce) -> str:
    return (
        f"Fake Salesforce listening on {fake.url}\n"
        f"  username={fake.username} password={fake.password} "
        f"security_token={fake.security_token} consumer_key={fake.consumer_key} "
        f"access_token={fake.access_token}"
    )


if __name__ == "__main__":
    sys.exit(main())
