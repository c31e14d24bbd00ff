import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.utils import DatabaseError, IntegrityError

from provision import services
from provision.choices import (
    ActorKind,
    Deployment,
    LicensingMethod,
    ProvisioningStepKind,
    StepState,
    SubscriptionStatus,
)
from provision.context import reset_context, set_context
from provision.exceptions import ApplicationError
from provision.models import AuditEvent, Customer, SeatLedgerEntry, Subscription
from tests.factories import InstanceFactory, SeatReportFactory, subscription_factory

pytestmark = pytest.mark.django_db


def last_event():
    return AuditEvent.objects.order_by("-id").first()


def test_customer_create_saves_customer_and_audits(support_agent):
    token = set_context(request_id="req-abc12345", source="ui")
    try:
        customer = services.customer_create(
            actor=support_agent,
            billing_account_number="A00000042",
            name="Globex",
            email_domains=["Globex.test", "globex.test"],
            reason="New order",
            ticket_url="https://t.test/1",
        )
    finally:
        reset_context(token)
    assert Customer.objects.get(pk=customer.pk).email_domains == ["globex.test"]
    event = last_event()
    assert event.action == "provision.customer_created"
    assert event.actor == support_agent and event.actor_text == "sam.support"
    assert event.actor_kind == ActorKind.STAFF
    assert event.customer_id == customer.pk
    assert event.request_id == "req-abc12345" and event.source == "ui"
    assert event.reason == "New order" and event.ticket_url == "https://t.test/1"


def test_customer_update_records_old_and_new_values(support_agent, customer):
    services.customer_update(
        actor=support_agent, customer=customer, data={"name": "Acme Robotics AG"}, reason="Renamed"
    )
    customer.refresh_from_db()
    assert customer.name == "Acme Robotics AG"
    assert last_event().changes == {"name": ["Acme Robotics", "Acme Robotics AG"]}


def test_customer_update_requires_reason(support_agent, customer):
    with pytest.raises(ValidationError):
        services.customer_update(
            actor=support_agent, customer=customer, data={"name": "X"}, reason="  "
        )
    customer.refresh_from_db()
    assert customer.name == "Acme Robotics"


def test_customer_update_refused_for_account_manager(account_manager, customer):
    with pytest.raises(ApplicationError):
        services.customer_update(
            actor=account_manager, customer=customer, data={"name": "X"}, reason="r"
        )
    assert not AuditEvent.objects.filter(action="provision.customer_updated").exists()


def test_customer_update_without_change_writes_nothing(support_agent, customer):
    before = AuditEvent.objects.count()
    services.customer_update(
        actor=support_agent, customer=customer, data={"name": customer.name}, reason="noop"
    )
    assert AuditEvent.objects.count() == before


def test_customer_update_rejects_bad_salesforce_id_and_keeps_data(support_agent, customer):
    with pytest.raises(ValidationError):
        services.customer_update(
            actor=support_agent,
            customer=customer,
            data={"salesforce_account_id": "short"},
            reason="r",
        )
    customer.refresh_from_db()
    assert customer.salesforce_account_id != "short"


def test_subscription_create_opens_provisioning_record_and_ledger(support_agent, customer):
    subscription = subscription_factory(customer, actor=support_agent, seats=25)
    assert subscription.licensing_method == LicensingMethod.ONLINE_CLOUD
    assert subscription.status == SubscriptionStatus.ACTIVE
    record = subscription.provisioning_records.get()
    states = dict(record.steps.values_list("kind", "state"))
    assert states[ProvisioningStepKind.SUBSCRIPTION_CREATED] == StepState.DONE
    assert states[ProvisioningStepKind.LICENSE_ISSUED] == StepState.PENDING
    assert SeatLedgerEntry.objects.get(subscription=subscription).seats == 25
    assert last_event().action == "provision.subscription_created"


def test_gitlab_com_subscription_has_namespace_steps_and_no_license_method(customer):
    subscription = subscription_factory(customer, deployment=Deployment.GITLAB_COM)
    assert subscription.licensing_method == ""
    kinds = list(subscription.provisioning_records.get().steps.values_list("kind", flat=True))
    assert ProvisioningStepKind.NAMESPACE_PROVISIONED in kinds
    assert ProvisioningStepKind.LICENSE_ISSUED not in kinds


def test_subscription_create_rejects_term_ending_before_start(customer):
    import datetime as dt

    with pytest.raises(ValidationError):
        subscription_factory(customer, term_start=dt.date(2026, 5, 1), term_end=dt.date(2026, 4, 1))
    assert not Subscription.objects.exists()


def test_seats_change_updates_ledger_and_audits(support_agent, subscription):
    services.subscription_seats_change(
        actor=support_agent, subscription=subscription, seats=60, reason="Bought 10 more"
    )
    subscription.refresh_from_db()
    assert subscription.seats == 60
    entry = subscription.seat_ledger.first()
    assert (entry.previous_seats, entry.seats) == (50, 60)
    event = last_event()
    assert event.action == "provision.subscription_seats_changed"
    assert event.changes == {"seats": [50, 60]}
    assert entry.audit_event == event


def test_seats_below_peak_usage_needs_support_lead(support_agent, support_lead, subscription):
    instance = InstanceFactory(customer=subscription.customer)
    SeatReportFactory(subscription=subscription, instance=instance, max_historical_users=45)
    with pytest.raises(ApplicationError) as refused:
        services.subscription_seats_change(
            actor=support_agent, subscription=subscription, seats=40, reason="Customer asked"
        )
    assert refused.value.code == "needs_approval"
    subscription.refresh_from_db()
    assert subscription.seats == 50
    services.subscription_seats_change(
        actor=support_lead, subscription=subscription, seats=40, reason="Waiver approved in SFDC"
    )
    subscription.refresh_from_db()
    assert subscription.seats == 40


def test_seats_change_to_same_value_is_refused(support_agent, subscription):
    with pytest.raises(ApplicationError):
        services.subscription_seats_change(
            actor=support_agent, subscription=subscription, seats=50, reason="r"
        )


def test_subscriptions_expire_transitions_once_and_audits_as_system(subscription):
    import datetime as dt

    later = subscription.term_end + dt.timedelta(days=1)
    assert services.subscriptions_expire(today=later) == {"activated": 0, "expired": 1}
    assert services.subscriptions_expire(today=later) == {"activated": 0, "expired": 0}
    subscription.refresh_from_db()
    assert subscription.status == SubscriptionStatus.EXPIRED
    event = last_event()
    assert event.actor is None and event.actor_kind == ActorKind.SYSTEM
    assert event.changes == {"status": ["active", "expired"]}


def test_provisioning_step_failure_then_done_completes_record(support_agent, customer):
    subscription = subscription_factory(customer, deployment=Deployment.GITLAB_COM)
    record = subscription.provisioning_records.get()
    namespace_step = record.steps.get(kind=ProvisioningStepKind.NAMESPACE_PROVISIONED)
    services.provisioning_step_set_state(
        actor=support_agent,
        step=namespace_step,
        state=StepState.FAILED,
        error="Namespace not found",
        reason="GitLab.com API said 404",
    )
    namespace_step.refresh_from_db()
    assert namespace_step.state == StepState.FAILED and namespace_step.attempts == 1
    for step in record.steps.exclude(state=StepState.DONE):
        services.provisioning_step_set_state(
            actor=support_agent, step=step, state=StepState.DONE, reason="Fixed"
        )
    record.refresh_from_db()
    assert record.completed_at is not None
    assert last_event().action == "provision.provisioning_step_changed"


def test_note_add_by_account_manager(account_manager, customer):
    note = services.note_add(actor=account_manager, customer=customer, body="QBR next week")
    assert note.author_text == "alex.am"
    assert last_event().action == "provision.note_added"


def test_note_add_refused_for_outsider(outsider, customer):
    with pytest.raises(ApplicationError):
        services.note_add(actor=outsider, customer=customer, body="hi")


def test_audit_event_cannot_be_updated_or_deleted_through_the_orm(support_agent, customer):
    services.customer_update(actor=support_agent, customer=customer, data={"name": "Z"}, reason="r")
    event = last_event()
    event.reason = "tampered"
    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).update(reason="tampered")
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(pk=event.pk).delete()


def test_audit_event_update_refused_by_database(support_agent, customer):
    services.customer_update(actor=support_agent, customer=customer, data={"name": "Z"}, reason="r")
    event = last_event()
    table = AuditEvent._meta.db_table
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET reason = 'tampered' WHERE id = %s", [event.pk])  # noqa: S608
    assert AuditEvent.objects.get(pk=event.pk).reason == "r"


@pytest.mark.django_db(transaction=True)
def test_audit_record_outside_a_transaction_is_refused():
    from provision.audit import audit_record
    from tests.factories import CustomerFactory

    customer = CustomerFactory()

    with pytest.raises(RuntimeError):
        audit_record(actor=None, action="x.y", target=customer, customer=customer)


def test_subscription_seats_check_constraint_in_database(subscription):
    with pytest.raises(IntegrityError), transaction.atomic():
        Subscription.objects.filter(pk=subscription.pk).update(seats=-1)


def test_provisioning_steps_complete_closes_open_steps_of_a_kind_once(support_agent, customer):
    subscription = subscription_factory(customer)
    record = subscription.provisioning_records.get()
    delivered = record.steps.get(kind=ProvisioningStepKind.DELIVERED)
    services.provisioning_step_set_state(
        actor=support_agent, step=delivered, state=StepState.FAILED, error="bounce", reason="r"
    )
    closed = services.provisioning_steps_complete(
        actor=None,
        subscription_id=subscription.pk,
        kind=ProvisioningStepKind.DELIVERED,
        reason="Re-sent",
    )
    again = services.provisioning_steps_complete(
        actor=None,
        subscription_id=subscription.pk,
        kind=ProvisioningStepKind.DELIVERED,
        reason="Re-sent",
    )
    delivered.refresh_from_db()
    assert (closed, again) == (1, 0)
    assert delivered.state == StepState.DONE and delivered.last_error == ""
    assert last_event().changes == {"delivered": ["failed", "done"]}
