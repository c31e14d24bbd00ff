"""CRM sync reliability with a real Celery worker process, the real broker and the fake Salesforce.

Each test sends ``crm_sync_target`` through the broker (filesystem transport locally, Redis in
CI) to a ``celery worker`` subprocess (tests/celery_worker.py) that boots Django against the test
database and reaches the fake Salesforce over HTTP on 127.0.0.1, configured only through its
environment. What is checked is what a CRM owner cares about after trouble:

* an outage mid-run: the same task retries by itself (backoff shortened to 1 s) and a later run
  sends the rest; every record arrives, and no key is in two accepted writes;
* an expired session: one new login and the run goes on (no login loop);
* a worker SIGKILLed mid-run: its run is marked failed for lack of heartbeat and taken over, and
  the next run completes what it had not sent;
* rows rejected inside a Bulk API 2.0 job: the run ends partial with one ``SyncRowError`` per
  rejected row, and the next run sends exactly those rows again.

"Accepted writes" are the fake's logged data calls answered 200/201 (a Collections call, a Bulk
upload); a call refused with 503 or 401 carried nothing the fake kept.
"""

import re
import signal
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from crm_sync.choices import CrmTarget, RecordSyncStatus, SyncRunKind, SyncRunStatus
from crm_sync.models import CrmRecordState, SyncRowError, SyncRun
from crm_sync.services import PUSH_PENDING_KEY
from crm_sync.tasks import crm_sync_target
from provision.celery import app as celery_app
from tests.celery_worker import Worker, require_broker
from tests.crm_sync.test_sync_engine import customer_with_usage

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ACCOUNT = "Account"
USAGE = "Provision_Subscription_Usage__c"
BATCH = 5  # customers per batch: 15 customers make three batches
TASK_TIMEOUT = 30
STALE_AFTER = 2  # seconds without a heartbeat before a run is taken over (the kill test)


def crm_env(fake, **overrides) -> dict[str, str]:
    """The worker's settings: password login to the fake, small batches, fast retries."""
    env = {
        "SALESFORCE_INSTANCE_URL": fake.url,
        "SALESFORCE_ALLOW_HTTP": "true",
        "SALESFORCE_ACCESS_TOKEN": "",
        "SALESFORCE_USERNAME": fake.username,
        "SALESFORCE_PASSWORD": fake.password,
        "SALESFORCE_SECURITY_TOKEN": fake.security_token,
        "SALESFORCE_CONSUMER_KEY": "",
        "SALESFORCE_PRIVATE_KEY": "",
        "SALESFORCE_PRIVATE_KEY_FILE": "",
        "SALESFORCE_DOMAIN": "login",
        "SALESFORCE_TIMEOUT_SECONDS": "10",
        "SALESFORCE_BULK_THRESHOLD": "2000",
        "SALESFORCE_BULK_WAIT_SECONDS": "0",
        "GAINSIGHT_BASE_URL": "",
        "CRM_SYNC_BATCH_CUSTOMERS": str(BATCH),
        "CRM_SYNC_RETRY_BACKOFF_SECONDS": "1",
    }
    env.update({name: str(value) for name, value in overrides.items()})
    return env


@pytest.fixture(autouse=True)
def _no_debounced_push_messages():
    """Writing usage asks for a debounced push (``crm_sync_request_push``) on the shared "crm"
    queue, which no worker here consumes and a demo worker might; noting the pushes as already
    queued keeps those messages off the broker."""
    keys = [PUSH_PENDING_KEY.format(target=target) for target in CrmTarget.values]
    cache.set_many(dict.fromkeys(keys, 1), timeout=None)
    yield
    cache.delete_many(keys)


@pytest.fixture(scope="module")
def worker(django_db_setup, _fake_salesforce_server, tmp_path_factory):
    """One worker with the default CRM settings for the module, always stopped at the end."""
    assert celery_app.conf.task_always_eager is False, "tasks must go through the broker here"
    require_broker()
    log = tmp_path_factory.mktemp("celery-crm") / "worker.log"
    with Worker(log, env=crm_env(_fake_salesforce_server)) as worker:
        yield worker


@pytest.fixture
def start_worker(fake_salesforce, tmp_path):
    """Start a worker with extra settings (``start_worker(SALESFORCE_BULK_THRESHOLD=3)``); every
    worker started is stopped at the end of the test (before the fake is reset)."""
    require_broker()
    started: list[Worker] = []

    def start(**settings) -> Worker:
        worker = Worker(
            tmp_path / f"worker-{len(started)}.log", env=crm_env(fake_salesforce, **settings)
        )
        started.append(worker)
        worker.start()
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


def sync(worker: Worker, kind: str = SyncRunKind.INCREMENTAL) -> str:
    """Send one Salesforce sync through the broker; the task's return value once it is done."""
    task_id = worker.send(crm_sync_target, target=CrmTarget.SALESFORCE, kind=kind)
    line = worker.wait_for_task(crm_sync_target, task_id, timeout=TASK_TIMEOUT)
    if line.group(1) != "succeeded":
        worker.fail(f"The sync task did not succeed: {line.group(0)}")
    result = re.search(r": '([^']*)'$", line.group(0))
    assert result, line.group(0)
    return result.group(1)


def accepted_keys(requests, object_name: str) -> list[str]:
    """External ids in writes the fake accepted, in order, repeats included."""
    return [
        key
        for entry in requests
        if entry.object_name == object_name and entry.status in (200, 201)
        for key in entry.keys
    ]


def customers_with_usage(count: int) -> tuple[list[str], list[str]]:
    """``count`` customers with one subscription and a usage report each: their account keys
    and subscription keys."""
    customers = [customer_with_usage(billable=10 + n) for n in range(count)]
    accounts = [c.billing_account_number for c in customers]
    subscriptions = [c.subscriptions.get().name for c in customers]
    return accounts, subscriptions


def assert_everything_arrived_once(fake, accounts, subscriptions):
    """Every record is in the fake, and no key was in two accepted writes."""
    assert sorted(fake.records(ACCOUNT)) == sorted(accounts)
    assert sorted(fake.records(USAGE)) == sorted(subscriptions)
    assert sorted(accepted_keys(fake.requests(), ACCOUNT)) == sorted(accounts)
    assert sorted(accepted_keys(fake.requests(), USAGE)) == sorted(subscriptions)
    assert set(
        CrmRecordState.objects.filter(target=CrmTarget.SALESFORCE).values_list("status", flat=True)
    ) == {RecordSyncStatus.SYNCED}
    assert CrmRecordState.objects.filter(target=CrmTarget.SALESFORCE).count() == len(accounts)


def test_an_outage_mid_run_is_retried_by_the_task_and_loses_and_repeats_nothing(
    worker, fake_salesforce
):
    accounts, subscriptions = customers_with_usage(3 * BATCH)
    # The first batch gets through (accounts, then subscriptions); then two calls in a row are
    # refused: the first run and its first retry fail, the second retry completes.
    fake_salesforce.fail_next("server_unavailable", times=2, kind="collections", after=2)

    task_id = worker.send(
        crm_sync_target, target=CrmTarget.SALESFORCE, kind=SyncRunKind.INCREMENTAL
    )
    outcome = worker.wait_for_task(crm_sync_target, task_id, timeout=TASK_TIMEOUT)

    assert outcome.group(1) == "succeeded" and outcome.group(0).endswith("'succeeded'")
    retries = re.findall(rf"\[{re.escape(task_id)}\] retry: Retry in", worker.log())
    assert len(retries) == 2, worker.log()[-3000:]
    first, second, last = SyncRun.objects.order_by("pk")
    for broken in (first, second):
        assert broken.status == SyncRunStatus.FAILED
        assert "SERVER_UNAVAILABLE" in broken.error or "503" in broken.error
    assert (first.considered, first.sent) == (2 * BATCH, BATCH)  # stopped in batch two
    assert (second.considered, second.sent) == (BATCH, 0)
    assert (last.status, last.considered, last.sent) == (
        SyncRunStatus.SUCCEEDED,
        2 * BATCH,
        2 * BATCH,
    )
    assert [r.status for r in fake_salesforce.requests("collections")] == [
        200,
        200,
        503,
        503,
        *[200] * 4,
    ]
    assert_everything_arrived_once(fake_salesforce, accounts, subscriptions)


def test_an_expired_session_mid_run_logs_in_once_more_and_the_run_goes_on(worker, fake_salesforce):
    accounts, subscriptions = customers_with_usage(3 * BATCH)
    # The session is refused on the second batch's first call.
    fake_salesforce.fail_next("invalid_session", kind="collections", after=2)

    assert sync(worker) == SyncRunStatus.SUCCEEDED

    run = SyncRun.objects.get()
    assert (run.status, run.sent, run.error) == (SyncRunStatus.SUCCEEDED, 3 * BATCH, "")
    # The first login and exactly one more: no login loop.
    assert fake_salesforce.logins == 2
    assert fake_salesforce.count("login") == 2
    assert [r.status for r in fake_salesforce.requests("collections")] == [
        200,
        200,
        401,  # the retry of the same call, after the new login, is accepted
        *[200] * 4,
    ]
    assert_everything_arrived_once(fake_salesforce, accounts, subscriptions)


def test_a_worker_killed_mid_run_is_taken_over_and_the_next_run_completes(
    start_worker, fake_salesforce
):
    accounts, subscriptions = customers_with_usage(3 * BATCH)
    # The second batch's first call hangs (longer than the test), so the run is caught mid-way.
    fake_salesforce.slow(120, times=1, kind="collections", after=2)
    doomed = start_worker(CRM_SYNC_STALE_AFTER_SECONDS=STALE_AFTER, SALESFORCE_TIMEOUT_SECONDS=120)
    doomed.send(crm_sync_target, target=CrmTarget.SALESFORCE, kind=SyncRunKind.INCREMENTAL)
    killed = doomed.wait_until(
        lambda: SyncRun.objects.filter(status=SyncRunStatus.RUNNING, considered__gt=0).first(),
        TASK_TIMEOUT,
        "the run to record its first batch",
    )
    doomed.wait_until(
        lambda: fake_salesforce.count("collections") == 3,
        TASK_TIMEOUT,
        "the second batch's call to reach the fake",
    )

    doomed.kill()

    assert doomed.process.returncode == -signal.SIGKILL
    killed.refresh_from_db()
    assert (killed.status, killed.considered, killed.sent) == (
        SyncRunStatus.RUNNING,
        BATCH,
        BATCH,
    )
    successor = start_worker(CRM_SYNC_STALE_AFTER_SECONDS=STALE_AFTER)
    # A run is taken over only once silent for CRM_SYNC_STALE_AFTER_SECONDS; before that the
    # scheduled task would rightly answer "busy".
    successor.wait_until(
        lambda: SyncRun.objects.filter(
            pk=killed.pk,
            heartbeat_at__lt=timezone.now() - timedelta(seconds=STALE_AFTER + 0.5),
        ).exists(),
        TASK_TIMEOUT,
        "the killed run's heartbeat to go stale",
    )

    assert sync(successor) == SyncRunStatus.SUCCEEDED

    killed.refresh_from_db()
    assert killed.status == SyncRunStatus.FAILED
    assert "no heartbeat" in killed.error and "taken over" in killed.error
    latest = SyncRun.objects.exclude(pk=killed.pk).get()
    # Only what the killed run had not recorded as accepted is sent again.
    assert (latest.status, latest.considered, latest.sent) == (
        SyncRunStatus.SUCCEEDED,
        2 * BATCH,
        2 * BATCH,
    )
    assert_everything_arrived_once(fake_salesforce, accounts, subscriptions)


def test_rows_rejected_in_a_bulk_job_are_recorded_and_only_they_are_sent_again(
    start_worker, fake_salesforce
):
    bulk_worker = start_worker(SALESFORCE_BULK_THRESHOLD=3)  # 5 rows an object: Bulk API 2.0
    accounts, subscriptions = customers_with_usage(2 * BATCH)
    rejected = {
        accounts[0]: "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        accounts[3]: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        accounts[6]: "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        accounts[8]: "STRING_TOO_LONG",
        subscriptions[4]: "INVALID_FIELD_FOR_INSERT_UPDATE",
    }
    fake_salesforce.reject_rows(rejected, times=1)

    assert sync(bulk_worker, kind=SyncRunKind.FULL) == SyncRunStatus.PARTIAL

    first = SyncRun.objects.get()
    assert (first.status, first.considered, first.failed) == (SyncRunStatus.PARTIAL, 10, 5)
    uploads = [r for r in fake_salesforce.requests("bulk") if r.method == "PUT"]
    assert [(r.object_name, r.record_count) for r in uploads] == [
        (ACCOUNT, 5),
        (USAGE, 5),
        (ACCOUNT, 5),
        (USAGE, 5),
    ]
    errors = SyncRowError.objects.filter(run=first)
    assert sorted(errors.values_list("external_id", "error_code")) == sorted(rejected.items())
    assert all(error.message for error in errors)
    assert sorted(fake_salesforce.records(ACCOUNT)) == sorted(set(accounts) - set(rejected))
    before_retry = len(fake_salesforce.requests())

    assert sync(bulk_worker) == SyncRunStatus.SUCCEEDED

    retry = fake_salesforce.requests()[before_retry:]
    # The four rejected accounts again (still more than the threshold: Bulk), the one rejected
    # subscription (Collections), and nothing that had been accepted.
    assert sorted(accepted_keys(retry, ACCOUNT)) == sorted(
        key for key in rejected if key in accounts
    )
    assert accepted_keys(retry, USAGE) == [subscriptions[4]]
    assert [r.record_count for r in retry if r.kind == "bulk" and r.method == "PUT"] == [4]
    second = SyncRun.objects.exclude(pk=first.pk).get()
    assert (second.status, second.considered, second.sent, second.failed) == (
        SyncRunStatus.SUCCEEDED,
        5,
        5,
        0,
    )
    assert SyncRowError.objects.filter(run=second).count() == 0
    assert sorted(fake_salesforce.records(ACCOUNT)) == sorted(accounts)
    assert sorted(fake_salesforce.records(USAGE)) == sorted(subscriptions)
    assert set(
        CrmRecordState.objects.filter(target=CrmTarget.SALESFORCE).values_list("status", flat=True)
    ) == {RecordSyncStatus.SYNCED}
