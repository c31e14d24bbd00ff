"""The CRM sync engine: what changed is noted, diffed against what each CRM last accepted, and
only that is sent; every run is a ``SyncRun`` and every rejected row a ``SyncRowError``.

How a run works (``crm_sync_run``):

1. It claims its target: one running run per target, enforced by a partial unique constraint;
   a running run silent for ``CRM_SYNC_STALE_AFTER_SECONDS`` (its worker was killed) is marked
   failed and taken over.
2. It walks its candidates in batches of ``CRM_SYNC_BATCH_CUSTOMERS``: every customer for a
   full run; for an incremental run the customers marked changed (``crm_mark_changed``), those
   whose last push failed and those never pushed. Cost is proportional to the candidates.
3. Per batch it computes the payloads (``crm_sync.selectors.crm_payloads``, from the usage
   rollups) and diffs each row (the account, each subscription) against the copy the target
   last **accepted** (``CrmRecordState.payload``). Only differing rows are sent: accounts
   first, then subscription usage records, through the target's client (Salesforce sObject
   Collections or Bulk API 2.0, Gainsight ≤ 50 a call), upserted by external id, so a replay
   never duplicates.
4. Per row result: an accepted row is merged into the stored copy; a rejected row becomes a
   ``SyncRowError`` with the target's code and message, and its customer stays "failed", to
   be sent again by the next run. The stored copy (and its hash) only ever holds what the
   target accepted, so nothing rejected is skipped later (Multiwoven #923). Each batch commits
   before the next one starts, with the run's counts and heartbeat.
5. A transient failure (timeout, 5xx, rate limit, row lock, session expired twice) stops the
   run as failed and retryable (the task retries with backoff); a permanent one (credentials,
   bad mapping, target not configured) stops it as failed with the reason. What the target had
   accepted before the failure is recorded either way.

Counts are per customer: ``sent`` (at least one row sent), ``created`` (its account row was
created), ``updated``, ``unchanged`` (nothing differed) and ``failed`` (a row was rejected).
"""

from __future__ import annotations

import logging
import time as monotonic_time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from crm_sync.choices import CrmTarget, RecordSyncStatus, SyncRunKind, SyncRunStatus, SyncTrigger
from crm_sync.clients.base import CrmError, OutgoingRecord, RowResult, TransientCrmError
from crm_sync.mapping import TargetMapping, target_mapping
from crm_sync.models import CrmRecordState, SyncRowError, SyncRun
from crm_sync.selectors import crm_payloads, payload_hash
from provision import permissions
from provision.audit import audit_record, require_reason
from provision.context import get_context
from provision.exceptions import ApplicationError

logger = logging.getLogger(__name__)

# Where the debounced change-triggered push of a target is noted as already queued.
PUSH_PENDING_KEY = "crm_sync:push_pending:{target}"
# A dry run reports at most this many rows it would send, with their fields before and after.
DRY_RUN_SAMPLE = 5


class SyncBusy(ApplicationError):
    """Another run of the same target is in progress."""

    def __init__(self, target: str, run_id: int | None):
        super().__init__(
            f"A {CrmTarget(target).label} sync is already running (run {run_id}); "
            "this one was not started.",
            code="sync_busy",
            extra={"run_id": run_id},
        )


def _client_for(target: str):
    if target == CrmTarget.SALESFORCE:
        from crm_sync.clients.salesforce import SalesforceClient

        return SalesforceClient.from_settings()
    from crm_sync.clients.gainsight import GainsightClient

    return GainsightClient.from_settings()


# --- noting changes ---------------------------------------------------------------------------


def crm_mark_changed(*, customer_ids, now: datetime | None = None) -> int:
    """Note that these customers' usage or licenses changed: their state in every target goes
    to pending, stamped with the time of this change (a run that read the payload before it
    leaves it pending). Idempotent; two statements per target. Returns the customers noted."""
    ids = sorted(set(customer_ids))
    if not ids:
        return 0
    now = now or timezone.now()
    for target in CrmTarget.values:
        CrmRecordState.objects.filter(target=target, customer_id__in=ids).update(
            status=RecordSyncStatus.PENDING, dirty_since=now
        )
        CrmRecordState.objects.bulk_create(
            [
                CrmRecordState(
                    target=target,
                    customer_id=pk,
                    status=RecordSyncStatus.PENDING,
                    dirty_since=now,
                )
                for pk in ids
            ],
            ignore_conflicts=True,
            batch_size=1000,
        )
    return len(ids)


def crm_sync_request_push(*, customer_ids) -> int:
    """Mark the customers changed and, once the caller's transaction commits, queue one
    incremental push per target ``CRM_PUSH_DEBOUNCE_SECONDS`` later: changes made in the
    meantime ride along. Called by the writers of usage rollups, licenses and seats."""
    noted = crm_mark_changed(customer_ids=customer_ids)
    if noted:
        transaction.on_commit(_queue_debounced_pushes)
    return noted


def _queue_debounced_pushes() -> None:
    from crm_sync.tasks import crm_sync_on_change

    delay = settings.CRM_PUSH_DEBOUNCE_SECONDS
    for target in CrmTarget.values:
        # One queued push per target at a time; the task removes the key when it starts. The
        # key outlives the delay so a lost message only delays the push to the next schedule.
        if cache.add(PUSH_PENDING_KEY.format(target=target), 1, timeout=delay + 900):
            try:
                crm_sync_on_change.apply_async(kwargs={"target": target}, countdown=delay)
            except Exception:  # the broker is down: the scheduled run will push it
                cache.delete(PUSH_PENDING_KEY.format(target=target))
                logger.exception("could not queue the CRM push for %s", target)


def crm_push_pending_clear(*, target: str) -> None:
    """The queued change-triggered push of ``target`` has started: later changes queue anew."""
    cache.delete(PUSH_PENDING_KEY.format(target=target))


def crm_customer_push(*, actor, customer, reason: str, ticket_url: str = "") -> None:
    """Staff "push now": mark one customer changed and queue an immediate push of just that
    customer to every target, audited. The push itself runs in the worker (its runs show in
    the sync runs list, scoped to the customer)."""
    from crm_sync.tasks import crm_sync_customer

    if not permissions.can_fix(actor):
        raise ApplicationError(
            "You do not have permission to push customers to the CRM.", code="forbidden"
        )
    reason = require_reason(reason)
    with transaction.atomic():
        crm_mark_changed(customer_ids=[customer.pk])
        audit_record(
            actor=actor,
            action="crm_sync.customer_push_requested",
            target=customer,
            customer=customer,
            reason=reason,
            ticket_url=ticket_url,
            metadata={"targets": list(CrmTarget.values)},
        )
        for target in CrmTarget.values:
            transaction.on_commit(
                lambda target=target: crm_sync_customer.delay(
                    target=target,
                    customer_id=customer.pk,
                    actor_id=actor.pk,
                    request_id=get_context().request_id,
                )
            )


# --- the run ------------------------------------------------------------------------------------


@dataclass
class SyncSummary:
    """What a run did, for the command, the task and the tests."""

    run_id: int | None
    target: str
    kind: str
    status: str
    dry_run: bool = False
    considered: int = 0
    sent: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    rows_sent: int = 0
    error: str = ""
    retryable: bool = False
    seconds: float = 0.0
    sample: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-friendly form (``crm_sync --json``)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _claim(*, target: str, kind: str, trigger: str, actor, customer, now: datetime) -> SyncRun:
    stale_before = now - timedelta(seconds=settings.CRM_SYNC_STALE_AFTER_SECONDS)
    with transaction.atomic():
        SyncRun.objects.filter(
            target=target, status=SyncRunStatus.RUNNING, heartbeat_at__lt=stale_before
        ).update(
            status=SyncRunStatus.FAILED,
            finished_at=now,
            error="Stopped: no heartbeat for "
            f"{settings.CRM_SYNC_STALE_AFTER_SECONDS} s (its worker was lost); taken over.",
        )
    try:
        with transaction.atomic():
            return SyncRun.objects.create(
                target=target,
                kind=kind,
                trigger=trigger,
                status=SyncRunStatus.RUNNING,
                triggered_by=actor,
                customer=customer,
                request_id=get_context().request_id,
                created_at=now,
                started_at=now,
                heartbeat_at=now,
            )
    except IntegrityError:
        running = (
            SyncRun.objects.filter(target=target, status=SyncRunStatus.RUNNING)
            .values_list("pk", flat=True)
            .first()
        )
        raise SyncBusy(target, running) from None


def _candidate_batches(*, target: str, kind: str, customer, size: int) -> Iterator[list[int]]:
    """Customer ids to consider, ascending, in batches (keyset pagination: each batch is one
    indexed query, whatever the table size)."""
    from provision.models import Customer

    if customer is not None:
        yield [customer.pk]
        return
    queryset = Customer.objects.all()
    if kind == SyncRunKind.INCREMENTAL:
        states = CrmRecordState.objects.filter(target=target, customer_id=OuterRef("pk"))
        queryset = queryset.filter(
            Q(Exists(states.filter(status__in=[RecordSyncStatus.PENDING, RecordSyncStatus.FAILED])))
            | ~Exists(states)
        )
    last = 0
    while True:
        ids = list(queryset.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield ids
        last = ids[-1]


def _stored_rows(stored: dict | None) -> tuple[dict | None, dict]:
    if not stored:
        return None, {}
    return stored.get("account"), dict(stored.get("subscriptions") or {})


@dataclass
class _Outcome:
    """Per customer in a batch: what was sent, and what the target said."""

    customer_id: int
    new_payload: dict
    accepted_account: dict | None
    accepted_subscriptions: dict
    rows_sent: int = 0
    created: bool = False
    errors: list[RowResult] = field(default_factory=list)
    unanswered: bool = False  # a row was sent but the call failed before its answer


def crm_sync_run(
    *,
    target: str,
    kind: str = SyncRunKind.INCREMENTAL,
    trigger: str = SyncTrigger.SCHEDULE,
    actor=None,
    customer=None,
    dry_run: bool = False,
    client=None,
    progress: Callable[[SyncSummary], None] | None = None,
) -> SyncSummary:
    """Run one sync of ``target`` now (see the module docstring). Raises ``SyncBusy`` when
    another run of the target is in progress; CRM failures do not raise, they end the run
    as failed (``summary.retryable`` says whether retrying can help).

    ``client`` is for callers that hold one (the benchmark); otherwise it is built from
    settings. ``dry_run`` computes and diffs without claiming the target, sending or writing
    state, and records the run with what it would have sent."""
    if target not in CrmTarget.values:
        raise ApplicationError(
            f"Unknown CRM target {target!r}: use {' or '.join(CrmTarget.values)}.",
            code="invalid",
        )
    started = monotonic_time.monotonic()
    now = timezone.now()
    summary = SyncSummary(
        run_id=None, target=target, kind=kind, status=SyncRunStatus.RUNNING, dry_run=dry_run
    )
    run = None
    if not dry_run:
        run = _claim(
            target=target, kind=kind, trigger=trigger, actor=actor, customer=customer, now=now
        )
        summary.run_id = run.pk
    own_client = client is None
    try:
        mapping = target_mapping(target)
        if not dry_run and client is None:
            client = _client_for(target)
        for ids in _candidate_batches(
            target=target,
            kind=kind,
            customer=customer,
            size=settings.CRM_SYNC_BATCH_CUSTOMERS,
        ):
            _sync_batch(
                ids=ids, target=target, mapping=mapping, client=client, run=run, summary=summary
            )
            if run is not None:
                _save_progress(run, summary)
            if progress is not None:
                progress(summary)
        summary.status = SyncRunStatus.PARTIAL if summary.failed else SyncRunStatus.SUCCEEDED
    except CrmError as exc:
        summary.status = SyncRunStatus.FAILED
        summary.error = str(exc)
        summary.retryable = isinstance(exc, TransientCrmError)
    except ImproperlyConfigured as exc:
        summary.status = SyncRunStatus.FAILED
        summary.error = f"Configuration: {exc}"
    except Exception as exc:
        # Recorded on the run (a run never stays "running"), then re-raised for the worker.
        summary.status = SyncRunStatus.FAILED
        summary.error = f"Internal error: {type(exc).__name__}: {exc}"
        _finish(run, summary, started, trigger=trigger, actor=actor, customer=customer)
        raise
    finally:
        if own_client and client is not None:
            client.close()
    _finish(run, summary, started, trigger=trigger, actor=actor, customer=customer)
    if summary.status == SyncRunStatus.FAILED:
        logger.warning("CRM sync %s of %s failed: %s", summary.run_id, target, summary.error)
    return summary


def _save_progress(run: SyncRun, summary: SyncSummary) -> None:
    SyncRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now(),
        considered=summary.considered,
        sent=summary.sent,
        created=summary.created,
        updated=summary.updated,
        unchanged=summary.unchanged,
        failed=summary.failed,
    )


def _finish(run, summary: SyncSummary, started: float, *, trigger, actor, customer) -> None:
    summary.seconds = round(monotonic_time.monotonic() - started, 3)
    now = timezone.now()
    values = {
        "status": summary.status,
        "finished_at": now,
        "heartbeat_at": now,
        "considered": summary.considered,
        "sent": summary.sent,
        "created": summary.created,
        "updated": summary.updated,
        "unchanged": summary.unchanged,
        "failed": summary.failed,
        "error": summary.error[:4000],
    }
    if run is not None:
        SyncRun.objects.filter(pk=run.pk).update(**values)
        return
    # A dry run is recorded once, finished.
    run = SyncRun.objects.create(
        target=summary.target,
        kind=summary.kind,
        trigger=trigger,
        triggered_by=actor,
        customer=customer,
        dry_run=True,
        request_id=get_context().request_id,
        started_at=now - timedelta(seconds=summary.seconds),
        **values,
    )
    summary.run_id = run.pk


def _sync_batch(*, ids, target, mapping: TargetMapping, client, run, summary: SyncSummary):
    read_at = timezone.now()
    payloads = crm_payloads(customer_ids=ids)
    states = {
        state.customer_id: state
        for state in CrmRecordState.objects.filter(target=target, customer_id__in=ids)
    }
    outcomes: dict[int, _Outcome] = {}
    accounts: list[OutgoingRecord] = []
    subscriptions: list[OutgoingRecord] = []
    owner: dict[tuple[str, str], int] = {}
    unchanged: list[int] = []
    for customer_id in ids:
        payload = payloads.get(customer_id)
        if payload is None:  # deleted meanwhile
            continue
        summary.considered += 1
        new_subscriptions = {row["subscription_key"]: row for row in payload["subscriptions"]}
        new_payload = {"account": payload["account"], "subscriptions": new_subscriptions}
        state = states.get(customer_id)
        stored_account, stored_subscriptions = _stored_rows(state.payload if state else None)
        # Only what the customer still has is kept: a subscription that ended is not sent
        # again (the CRM keeps its last record), nor remembered.
        outcome = _Outcome(
            customer_id=customer_id,
            new_payload=new_payload,
            accepted_account=stored_account,
            accepted_subscriptions={
                key: row for key, row in stored_subscriptions.items() if key in new_subscriptions
            },
        )
        if stored_account != payload["account"]:
            accounts.append(
                OutgoingRecord(
                    key=payload["account"]["customer_key"],
                    fields=mapping.account.target_fields(payload["account"]),
                )
            )
            owner[("account", payload["account"]["customer_key"])] = customer_id
            outcome.rows_sent += 1
        for key, row in new_subscriptions.items():
            if stored_subscriptions.get(key) != row:
                subscriptions.append(
                    OutgoingRecord(key=key, fields=mapping.subscription.target_fields(row))
                )
                owner[("subscription", key)] = customer_id
                outcome.rows_sent += 1
        if outcome.rows_sent == 0:
            unchanged.append(customer_id)
            if state is not None and state.status == RecordSyncStatus.SYNCED:
                continue
        outcomes[customer_id] = outcome

    if summary.dry_run:
        for outcome in outcomes.values():
            if outcome.rows_sent:
                summary.sent += 1
                summary.rows_sent += outcome.rows_sent
                if len(summary.sample) < DRY_RUN_SAMPLE:
                    summary.sample.append(_dry_run_sample(outcome))
        summary.unchanged += len(unchanged)
        return

    failure: CrmError | None = None
    for kind, records, record_mapping in (
        ("account", accounts, mapping.account),
        ("subscription", subscriptions, mapping.subscription),
    ):
        if not records or failure is not None:
            for record in records:
                outcomes[owner[(kind, record.key)]].unanswered = True
            continue
        try:
            results = client.upsert(
                object_name=record_mapping.object_name,
                external_id_field=record_mapping.external_id_field,
                records=records,
            )
        except CrmError as exc:
            failure = exc
            results = list(exc.partial)
            answered = {result.key for result in results}
            for record in records:
                if record.key not in answered:
                    outcomes[owner[(kind, record.key)]].unanswered = True
        summary.rows_sent += len(results)
        for result in results:
            outcome = outcomes[owner[(kind, result.key)]]
            if not result.ok:
                outcome.errors.append(result)
            elif kind == "account":
                outcome.accepted_account = outcome.new_payload["account"]
                outcome.created = result.created
            else:
                outcome.accepted_subscriptions[result.key] = outcome.new_payload["subscriptions"][
                    result.key
                ]

    _record_batch(
        target=target,
        states=states,
        run=run,
        outcomes=outcomes,
        unchanged=unchanged,
        read_at=read_at,
        summary=summary,
    )
    if failure is not None:
        raise failure


def _dry_run_sample(outcome: _Outcome) -> dict:
    before_account = outcome.accepted_account or {}
    after_account = outcome.new_payload["account"]
    changed = {
        name: [before_account.get(name), value]
        for name, value in after_account.items()
        if before_account.get(name) != value
    }
    return {
        "customer_key": after_account["customer_key"],
        "account": changed,
        "subscriptions": sorted(
            key
            for key, row in outcome.new_payload["subscriptions"].items()
            if outcome.accepted_subscriptions.get(key) != row
        ),
    }


def _record_batch(
    *, target, states, run, outcomes, unchanged, read_at, summary: SyncSummary
) -> None:
    """Write what the target accepted and rejected in this batch, in one transaction.

    ``states`` are the rows read before sending; only this run changes them meanwhile (one
    run per target), except ``crm_mark_changed``, whose two fields are not written here."""
    now = timezone.now()
    rows = []
    errors = []
    synced_ids = []
    for customer_id, outcome in outcomes.items():
        accepted = {
            "account": outcome.accepted_account,
            "subscriptions": outcome.accepted_subscriptions,
        }
        complete = not outcome.errors and not outcome.unanswered
        previous = states.get(customer_id)
        attempts = previous.attempts if previous else 0
        if outcome.rows_sent == 0 or complete:
            status, last_error, attempts = RecordSyncStatus.SYNCED, "", 0
        elif outcome.errors:
            status = RecordSyncStatus.FAILED
            last_error = "; ".join(
                f"{error.error_code}: {error.message}" for error in outcome.errors
            )[:2000]
            attempts += 1
        else:  # the call failed before the target answered for this customer
            status = RecordSyncStatus.PENDING
            last_error = previous.last_error if previous else ""
        if status == RecordSyncStatus.SYNCED:
            synced_ids.append(customer_id)
        rows.append(
            CrmRecordState(
                target=target,
                customer_id=customer_id,
                external_id=outcome.new_payload["account"]["customer_key"],
                payload=accepted,
                payload_hash=payload_hash(accepted) if accepted["account"] else "",
                status=status,
                last_pushed_at=now
                if outcome.rows_sent and not outcome.unanswered
                else (previous.last_pushed_at if previous else None),
                last_error=last_error,
                attempts=attempts,
                dirty_since=previous.dirty_since if previous else None,
            )
        )
        for error in outcome.errors:
            errors.append(
                SyncRowError(
                    run=run,
                    customer_id=customer_id,
                    external_id=error.key[:64],
                    error_code=(error.error_code or "REJECTED")[:100],
                    message=error.message or "Rejected without a message.",
                    created_at=now,
                )
            )
        if outcome.rows_sent and not outcome.unanswered:
            if outcome.errors:
                summary.failed += 1
            elif outcome.created:
                summary.created += 1
            else:
                summary.updated += 1
            summary.sent += 1
    summary.unchanged += len(unchanged)
    with transaction.atomic():
        if rows:
            _state_upsert(rows, now=now)
        if errors:
            SyncRowError.objects.bulk_create(errors, batch_size=500)
        if synced_ids:
            # A change noted after this batch read its payloads is not in what was sent.
            synced = CrmRecordState.objects.filter(target=target, customer_id__in=synced_ids)
            synced.filter(dirty_since__gt=read_at).update(status=RecordSyncStatus.PENDING)
            synced.filter(dirty_since__lte=read_at).update(dirty_since=None)


_STATE_FIELDS = (
    "external_id",
    "payload",
    "payload_hash",
    "status",
    "last_pushed_at",
    "last_error",
    "attempts",
)


def _state_upsert(rows: list[CrmRecordState], *, now: datetime) -> None:
    """Upsert a batch's ``CrmRecordState`` rows (all but ``dirty_since``, which is
    ``crm_mark_changed``'s and cleared separately).

    On PostgreSQL the batch travels as one JSON document expanded by ``jsonb_to_recordset``:
    the ORM's multi-row upsert has the driver quote each row's JSON payload on its own, which
    was a quarter of a 200,000-customer full sync (docs/benchmarks.md, "CRM sync"). Elsewhere
    (SQLite: tests, the demo) the ORM's upsert."""
    from django.db import connection

    if connection.vendor != "postgresql":
        CrmRecordState.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["target", "customer"],
            update_fields=[*_STATE_FIELDS, "updated_at"],
            batch_size=500,
        )
        return
    import json

    document = json.dumps(
        [
            {
                "target": row.target,
                "customer_id": row.customer_id,
                "external_id": row.external_id,
                "payload": row.payload,
                "payload_hash": row.payload_hash,
                "status": row.status,
                "last_pushed_at": row.last_pushed_at.isoformat() if row.last_pushed_at else None,
                "last_error": row.last_error,
                "attempts": row.attempts,
            }
            for row in rows
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(_STATE_UPSERT_SQL, [now, document])


_STATE_UPSERT_SQL = """
INSERT INTO crm_sync_crmrecordstate
    (target, customer_id, external_id, payload, payload_hash, status, last_pushed_at,
     last_error, attempts, dirty_since, updated_at)
SELECT r.target, r.customer_id, r.external_id, r.payload, r.payload_hash, r.status,
       r.last_pushed_at, r.last_error, r.attempts, NULL, %s
FROM jsonb_to_recordset(%s::jsonb) AS r(
    target text, customer_id bigint, external_id text, payload jsonb, payload_hash text,
    status text, last_pushed_at timestamptz, last_error text, attempts integer)
ON CONFLICT (target, customer_id) DO UPDATE SET
    external_id = EXCLUDED.external_id,
    payload = EXCLUDED.payload,
    payload_hash = EXCLUDED.payload_hash,
    status = EXCLUDED.status,
    last_pushed_at = EXCLUDED.last_pushed_at,
    last_error = EXCLUDED.last_error,
    attempts = EXCLUDED.attempts,
    updated_at = EXCLUDED.updated_at
"""
