"""The sync engine against the fake CRMs over real HTTP: what is sent, when, and what is kept."""

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from crm_sync import services
from crm_sync.choices import CrmTarget, RecordSyncStatus, SyncRunKind, SyncRunStatus
from crm_sync.models import CrmRecordState, SyncRowError, SyncRun
from crm_sync.selectors import crm_failing_targets, crm_payloads
from provision.models import AuditEvent
from tests.factories import (
    ContactFactory,
    CustomerFactory,
    InstanceFactory,
    SeatReportFactory,
    subscription_factory,
)
from tests.support import four_eyes
from usage.models import SeatReport
from usage.services import subscription_usage_rollup

pytestmark = pytest.mark.django_db

TODAY = timezone.localdate()


def customer_with_usage(*, seats=50, billable=40, peak=45, subscriptions=1):
    customer = CustomerFactory()
    for _ in range(subscriptions):
        subscription = subscription_factory(customer, seats=seats)
        report(subscription, billable=billable, peak=peak)
    return customer


def report(subscription, *, billable, peak, day=TODAY):
    instance = subscription.instances.first() or InstanceFactory(
        customer=subscription.customer, subscription=subscription
    )
    existing = SeatReport.objects.filter(
        subscription=subscription, instance=instance, report_date=day
    ).first()
    if existing is not None:  # a later report the same day replaces it, as Seat Link does
        existing.billable_users, existing.max_historical_users = billable, peak
        existing.received_at = timezone.now()
        existing.save()
    else:
        SeatReportFactory(
            subscription=subscription,
            instance=instance,
            report_date=day,
            billable_users=billable,
            max_historical_users=peak,
        )
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[day])


@pytest.fixture
def crm(request, salesforce_settings, gainsight_settings, fake_salesforce, fake_gainsight):
    """Both fakes configured; the test says which target it syncs through the param."""
    return request.param if hasattr(request, "param") else CrmTarget.SALESFORCE


def sent_account_keys(target, fake_salesforce, fake_gainsight) -> list[str]:
    """Every account key the fake received in a write, in order, repeats included."""
    if target == CrmTarget.SALESFORCE:
        return [
            key
            for entry in fake_salesforce.requests()
            if entry.object_name == "Account"
            for key in entry.keys
        ]
    return [
        key
        for call in fake_gainsight.log
        if call.object_name == "Company" and call.operation in ("insert", "update")
        for key in call.keys
    ]


BOTH = pytest.mark.parametrize("crm", [CrmTarget.SALESFORCE, CrmTarget.GAINSIGHT], indirect=True)


@BOTH
def test_first_full_sync_sends_everyone_once_then_nothing_then_only_the_changed(
    crm, fake_salesforce, fake_gainsight
):
    customers = [customer_with_usage(billable=10 + n) for n in range(5)]

    first = services.crm_sync_run(target=crm, kind=SyncRunKind.FULL)

    assert (first.status, first.considered, first.sent, first.created) == ("succeeded", 5, 5, 5)
    keys = sent_account_keys(crm, fake_salesforce, fake_gainsight)
    assert sorted(keys) == sorted(c.billing_account_number for c in customers)

    second = services.crm_sync_run(target=crm, kind=SyncRunKind.INCREMENTAL)
    assert (second.considered, second.sent, second.rows_sent) == (0, 0, 0)
    again = services.crm_sync_run(target=crm, kind=SyncRunKind.FULL)
    assert (again.considered, again.sent, again.unchanged) == (5, 0, 5)
    assert len(sent_account_keys(crm, fake_salesforce, fake_gainsight)) == 5

    changed = customers[2]
    report(changed.subscriptions.get(), billable=33, peak=47)
    services.crm_mark_changed(customer_ids=[changed.pk])
    third = services.crm_sync_run(target=crm, kind=SyncRunKind.INCREMENTAL)

    assert (third.considered, third.sent, third.updated) == (1, 1, 1)
    assert sent_account_keys(crm, fake_salesforce, fake_gainsight)[5:] == [
        changed.billing_account_number
    ]


@BOTH
def test_the_crm_receives_the_rollup_figures_under_the_mapped_field_names(
    crm, fake_salesforce, fake_gainsight
):
    customer = customer_with_usage(seats=50, billable=40, peak=60, subscriptions=2)

    services.crm_sync_run(target=crm, kind=SyncRunKind.FULL)

    if crm == CrmTarget.SALESFORCE:
        account = fake_salesforce.records("Account")[customer.billing_account_number]
        suffix = "__c"
        usage = fake_salesforce.records("Provision_Subscription_Usage__c")
    else:
        account = fake_gainsight.record("Company", customer.billing_account_number)
        suffix = "__gc"
        usage = {
            row["Provision_Subscription_Id__gc"]: row
            for row in fake_gainsight.records("Provision_Subscription_Usage__gc")
        }
    # Two subscriptions of 50 seats, each 40 billable and 60 at peak: 20 seats owed in all.
    assert account[f"Provision_Seats_Purchased{suffix}"] == 100
    assert account[f"Provision_Billable_Users{suffix}"] == 80
    assert account[f"Provision_Max_Users{suffix}"] == 120
    assert account[f"Provision_Overage_Seats{suffix}"] == 20
    assert account[f"Provision_Utilization_Pct{suffix}"] == 80.0
    assert account["Name"] == customer.name
    assert len(usage) == 2
    for subscription in customer.subscriptions.all():
        row = usage[subscription.name]
        assert row[f"Provision_Customer_Id{suffix}"] == customer.billing_account_number
        assert row[f"Provision_Overage_Seats{suffix}"] == 10
        assert row[f"Provision_Usage_Date{suffix}"] == TODAY.isoformat()


def test_payload_figures_are_hand_computed_from_the_rollups(settings):
    settings.PROVISION_PUBLIC_URL = "https://provision.example.com"
    customer = CustomerFactory()
    big = subscription_factory(customer, seats=100)
    small = subscription_factory(customer, seats=10)
    report(big, billable=50, peak=70, day=TODAY - dt.timedelta(days=1))
    report(big, billable=60, peak=75)  # the latest day wins
    report(small, billable=12, peak=15)

    payload = crm_payloads(customer_ids=[customer.pk])[customer.pk]

    account = payload["account"]
    assert account["seats"] == 110
    assert account["billable_users"] == 72
    assert account["max_users"] == 90
    assert account["seats_owed"] == 5  # only the small one is over: 15 - 10
    assert account["utilization_pct"] == 65.5  # 72 / 110
    assert account["plan"] == big.plan
    assert account["subscription_count"] == 2
    assert account["console_url"] == f"https://provision.example.com/customers/{customer.pk}/"
    rows = {row["subscription_key"]: row for row in payload["subscriptions"]}
    assert rows[small.name]["utilization_pct"] == 120.0
    assert rows[big.name]["usage_date"] == TODAY.isoformat()


def test_a_rejected_row_is_recorded_and_sent_again_until_accepted(
    salesforce_settings, fake_salesforce
):
    good, bad = customer_with_usage(), customer_with_usage()
    fake_salesforce.reject_rows(
        {bad.billing_account_number: "FIELD_CUSTOM_VALIDATION_EXCEPTION"},
        message="Seats must be positive",
        times=1,
    )

    first = services.crm_sync_run(target=CrmTarget.SALESFORCE, kind=SyncRunKind.FULL)

    assert (first.status, first.sent, first.failed) == (SyncRunStatus.PARTIAL, 2, 1)
    error = SyncRowError.objects.get()
    assert (error.customer_id, error.error_code) == (bad.pk, "FIELD_CUSTOM_VALIDATION_EXCEPTION")
    assert "Seats must be positive" in error.message
    state = CrmRecordState.objects.get(target=CrmTarget.SALESFORCE, customer=bad)
    assert state.status == RecordSyncStatus.FAILED and state.attempts == 1
    assert "Seats must be positive" in state.last_error

    second = services.crm_sync_run(target=CrmTarget.SALESFORCE)

    # Only the rejected customer's account row again (its subscription row was accepted).
    assert (second.considered, second.sent, second.rows_sent, second.failed) == (1, 1, 1, 0)
    assert (
        sent_account_keys(CrmTarget.SALESFORCE, fake_salesforce, None).count(
            good.billing_account_number
        )
        == 1
    )
    state.refresh_from_db()
    assert (state.status, state.attempts, state.last_error) == (RecordSyncStatus.SYNCED, 0, "")


def test_an_outage_mid_run_loses_nothing_and_sends_nothing_twice(
    salesforce_settings, fake_salesforce, settings
):
    settings.CRM_SYNC_BATCH_CUSTOMERS = 2
    customers = [customer_with_usage(billable=n + 1) for n in range(6)]
    # Two batches get through (2 calls each: accounts, subscriptions), then Salesforce is down.
    fake_salesforce.fail_next("server_unavailable", times=None, kind="collections", after=4)

    broken = services.crm_sync_run(target=CrmTarget.SALESFORCE, kind=SyncRunKind.FULL)

    assert broken.status == SyncRunStatus.FAILED and broken.retryable
    assert "503" in broken.error or "SERVER_UNAVAILABLE" in broken.error
    assert broken.sent == 4
    fake_salesforce.reset()
    later = services.crm_sync_run(target=CrmTarget.SALESFORCE)

    assert later.status == SyncRunStatus.SUCCEEDED
    assert later.sent == 2
    received = sent_account_keys(CrmTarget.SALESFORCE, fake_salesforce, None)
    assert sorted(received) == sorted(c.billing_account_number for c in customers[4:])
    assert CrmRecordState.objects.filter(status=RecordSyncStatus.SYNCED).count() == 6


def test_a_change_noted_while_a_run_sends_stays_pending_for_the_next_run(
    salesforce_settings, fake_salesforce
):
    customer = customer_with_usage()
    # Noted "after" the run read its payloads (a change landing mid-run).
    services.crm_mark_changed(
        customer_ids=[customer.pk], now=timezone.now() + dt.timedelta(minutes=5)
    )

    services.crm_sync_run(target=CrmTarget.SALESFORCE)

    state = CrmRecordState.objects.get(target=CrmTarget.SALESFORCE, customer=customer)
    assert state.status == RecordSyncStatus.PENDING
    # The next run finds nothing different and settles it without sending.
    nothing = services.crm_sync_run(target=CrmTarget.SALESFORCE)
    assert (nothing.considered, nothing.sent, nothing.unchanged) == (1, 0, 1)


def test_a_dry_run_sends_nothing_and_says_what_it_would(salesforce_settings, fake_salesforce):
    customer = customer_with_usage()

    summary = services.crm_sync_run(target=CrmTarget.SALESFORCE, dry_run=True)

    assert (summary.sent, summary.rows_sent, summary.dry_run) == (1, 2, True)
    assert summary.sample[0]["customer_key"] == customer.billing_account_number
    assert summary.sample[0]["account"]["billable_users"] == [None, 40]
    assert fake_salesforce.requests() == []
    # Still pending (the rollup marked the customer), nothing recorded as accepted.
    states = CrmRecordState.objects.filter(target=CrmTarget.SALESFORCE)
    assert [(s.status, s.payload) for s in states] == [(RecordSyncStatus.PENDING, {})]
    assert SyncRun.objects.get().dry_run


def test_one_run_per_target_and_a_silent_run_is_taken_over(salesforce_settings, settings):
    now = timezone.now()
    running = SyncRun.objects.create(
        target=CrmTarget.SALESFORCE,
        kind=SyncRunKind.FULL,
        trigger="schedule",
        status=SyncRunStatus.RUNNING,
        started_at=now,
        heartbeat_at=now,
    )
    with pytest.raises(services.SyncBusy):
        services.crm_sync_run(target=CrmTarget.SALESFORCE)
    # Gainsight is another target: not blocked.
    SyncRun.objects.filter(pk=running.pk).update(
        heartbeat_at=now - dt.timedelta(seconds=settings.CRM_SYNC_STALE_AFTER_SECONDS + 1)
    )

    summary = services.crm_sync_run(target=CrmTarget.SALESFORCE)

    assert summary.status == SyncRunStatus.SUCCEEDED
    running.refresh_from_db()
    assert running.status == SyncRunStatus.FAILED and "heartbeat" in running.error


def test_a_target_that_is_not_configured_fails_with_a_clear_error(settings):
    settings.SALESFORCE_INSTANCE_URL = ""
    settings.SALESFORCE_USERNAME = ""
    settings.SALESFORCE_ACCESS_TOKEN = ""
    CustomerFactory()

    summary = services.crm_sync_run(target=CrmTarget.SALESFORCE)

    assert summary.status == SyncRunStatus.FAILED and not summary.retryable
    assert "not configured" in summary.error
    assert SyncRun.objects.get().status == SyncRunStatus.FAILED


def test_three_failed_runs_in_a_row_raise_the_banner(settings):
    settings.GAINSIGHT_BASE_URL = ""
    for _ in range(2):
        services.crm_sync_run(target=CrmTarget.GAINSIGHT)
    assert crm_failing_targets() == []
    services.crm_sync_run(target=CrmTarget.GAINSIGHT)

    [failing] = crm_failing_targets()
    assert failing["target"] == CrmTarget.GAINSIGHT and "not configured" in failing["error"]


def test_the_field_mapping_is_changed_in_settings(salesforce_settings, fake_salesforce, settings):
    settings.CRM_FIELD_MAPPING = {
        "salesforce": {
            "account": {"fields": {"seats_owed": "Overage__c", "console_url": None}},
        }
    }
    customer = customer_with_usage(seats=10, peak=12, billable=9)

    services.crm_sync_run(target=CrmTarget.SALESFORCE)

    account = fake_salesforce.records("Account")[customer.billing_account_number]
    assert account["Overage__c"] == 2
    assert "Provision_Overage_Seats__c" not in account
    assert "Provision_Console_Url__c" not in account


def test_a_mapping_that_drops_the_external_id_stops_the_run(salesforce_settings, settings):
    settings.CRM_FIELD_MAPPING = {"salesforce": {"account": {"fields": {"customer_key": None}}}}
    CustomerFactory()

    summary = services.crm_sync_run(target=CrmTarget.SALESFORCE)

    assert summary.status == SyncRunStatus.FAILED
    assert "customer_key" in summary.error and "external id" in summary.error


def test_push_now_is_audited_refused_to_account_managers_and_needs_a_reason(
    support_agent, account_manager, django_capture_on_commit_callbacks
):
    customer = customer_with_usage()
    from provision.exceptions import ApplicationError

    with pytest.raises(ApplicationError):
        services.crm_customer_push(actor=account_manager, customer=customer, reason="x")
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.crm_customer_push(actor=support_agent, customer=customer, reason=" ")
    assert not AuditEvent.objects.filter(action="crm_sync.customer_push_requested").exists()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.crm_customer_push(
            actor=support_agent, customer=customer, reason="AM says SFDC is stale"
        )

    event = AuditEvent.objects.get(action="crm_sync.customer_push_requested")
    assert (event.actor, event.customer, event.reason) == (
        support_agent,
        customer,
        "AM says SFDC is stale",
    )
    assert len(callbacks) == 2  # one push task per target, queued after the commit
    assert set(
        CrmRecordState.objects.filter(customer=customer).values_list("status", flat=True)
    ) == {RecordSyncStatus.PENDING}


def test_the_command_prints_the_summary_and_fails_with_one_line(
    salesforce_settings, fake_salesforce, settings
):
    customer_with_usage()
    out = StringIO()

    call_command("crm_sync", "--target", "salesforce", "--full", "--json", stdout=out)

    result = json.loads(out.getvalue())
    assert (result["status"], result["sent"], result["kind"]) == ("succeeded", 1, "full")

    text = StringIO()
    call_command("crm_sync", "--target", "salesforce", stdout=text, stderr=StringIO())
    assert "0 sent" in text.getvalue()

    settings.SALESFORCE_INSTANCE_URL = "http://127.0.0.1:9"
    settings.SALESFORCE_ALLOW_HTTP = False
    with pytest.raises(CommandError) as failure:
        call_command("crm_sync", "--target", "salesforce", "--full", stdout=StringIO())
    assert "\n" not in str(failure.value) and "Salesforce sync failed" in str(failure.value)


def test_usage_seat_and_license_changes_queue_the_customer_for_the_next_push(
    salesforce_settings,
    fake_salesforce,
    support_lead,
    support_agent,
    django_capture_on_commit_callbacks,
    settings,
    tmp_path,
):
    from licenses.signing import generate_private_key_pem

    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(generate_private_key_pem())
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(key_file)
    from licenses import services as license_services
    from provision import services as provision_services

    customer = customer_with_usage(seats=50)
    ContactFactory(customer=customer)  # a license names the sold-to contact
    subscription = customer.subscriptions.get()
    services.crm_sync_run(target=CrmTarget.SALESFORCE, kind=SyncRunKind.FULL)
    state = CrmRecordState.objects.get(target=CrmTarget.SALESFORCE, customer=customer)
    assert state.status == RecordSyncStatus.SYNCED

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        provision_services.subscription_seats_change(
            actor=support_lead, subscription=subscription, seats=60, reason="Upsell"
        )
        license = license_services.license_issue(
            actor=support_lead, subscription=subscription, reason="New key"
        )
        with four_eyes("license_revoke", requested_by=support_agent, approved_by=support_lead):
            license_services.license_revoke(actor=support_lead, license=license, reason="Leaked")

    state.refresh_from_db()
    assert state.status == RecordSyncStatus.PENDING and state.dirty_since is not None
    assert callbacks, "a debounced push is queued after the commit"
    summary = services.crm_sync_run(target=CrmTarget.SALESFORCE)
    assert (summary.considered, summary.sent) == (1, 1)
    usage = fake_salesforce.records("Provision_Subscription_Usage__c")[subscription.name]
    assert usage["Provision_License_Status__c"] == "revoked"

    # A new day of usage: the rollup marks the customer too.
    report(subscription, billable=55, peak=58, day=TODAY + dt.timedelta(days=1))
    state.refresh_from_db()
    assert state.status == RecordSyncStatus.PENDING


def test_payloads_take_a_fixed_number_of_queries(django_assert_num_queries):
    customers = [customer_with_usage(subscriptions=2) for _ in range(4)]

    # Customers; subscriptions with their latest rollup; instances; namespaces; licenses.
    with django_assert_num_queries(5):
        payloads = crm_payloads(customer_ids=[c.pk for c in customers])

    assert {len(p["subscriptions"]) for p in payloads.values()} == {2}
