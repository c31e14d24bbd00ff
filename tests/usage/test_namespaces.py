"""GitLab.com namespace services: associate (and Force Associate), Clear Subscription, the seat
figures GitLab.com pushes (seats owed, the day's report, the rollup) and Reset max seats."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from provision.choices import (
    ActorKind,
    Deployment,
    Plan,
    ProvisioningStepKind,
    StepState,
    SubscriptionStatus,
)
from provision.exceptions import ApplicationError
from provision.models import AuditEvent, Subscription
from tests.factories import NamespaceFactory, subscription_factory
from tests.support import four_eyes
from usage import services
from usage.choices import SeatReportSource
from usage.models import SeatReport, SubscriptionUsageDaily

pytestmark = pytest.mark.django_db

TICKET = "https://gitlab.zendesk.com/agent/tickets/123456"
APPROVAL = "https://gitlab.my.salesforce.com/500ABC"


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def step_state(subscription, kind):
    return subscription.provisioning_records.get().steps.get(kind=kind).state


@pytest.fixture
def saas(customer):
    """A GitLab.com Premium subscription for 50 seats."""
    return subscription_factory(customer, deployment=Deployment.GITLAB_COM, seats=50)


@pytest.fixture
def namespace(db):
    return NamespaceFactory(full_path="acme-robotics", gitlab_namespace_id=4242)


@pytest.fixture
def linked(support_agent, namespace, saas):
    return services.namespace_associate(
        actor=support_agent, namespace=namespace, subscription=saas, reason="New order"
    )


def push(namespace, *, seats_in_use, max_seats_used, as_of=None, **extra):
    return services.namespace_seats_update(
        namespace=namespace,
        seats_in_use=seats_in_use,
        max_seats_used=max_seats_used,
        as_of=as_of or timezone.now(),
        **extra,
    )


# --- Associate ----------------------------------------------------------------------------------


def test_associate_links_the_namespace_audits_and_closes_the_provisioning_step(
    support_agent, namespace, saas
):
    assert step_state(saas, ProvisioningStepKind.NAMESPACE_PROVISIONED) == StepState.PENDING
    services.namespace_associate(
        actor=support_agent,
        namespace=namespace,
        subscription=saas,
        reason="Customer linked the wrong group",
        ticket_url=TICKET,
    )
    namespace.refresh_from_db()
    assert namespace.subscription == saas
    (event,) = events("usage.namespace_associated")
    assert event.actor == support_agent
    assert event.customer_id == saas.customer_id
    assert event.changes["subscription"] == [None, saas.name]
    assert event.ticket_url == TICKET
    assert event.metadata["forced"] is False
    assert step_state(saas, ProvisioningStepKind.NAMESPACE_PROVISIONED) == StepState.DONE


def test_associate_computes_seats_owed_from_the_new_subscription(support_agent, saas):
    namespace = NamespaceFactory(seats_in_use=48, max_seats_used=58)
    services.namespace_associate(
        actor=support_agent, namespace=namespace, subscription=saas, reason="New order"
    )
    namespace.refresh_from_db()
    assert namespace.seats_owed == 8


def test_associate_refuses_a_self_managed_subscription(support_agent, namespace, subscription):
    with pytest.raises(ApplicationError) as refused:
        services.namespace_associate(
            actor=support_agent, namespace=namespace, subscription=subscription, reason="r"
        )
    assert refused.value.code == "not_gitlab_com"
    namespace.refresh_from_db()
    assert namespace.subscription is None
    assert not events("usage.namespace_associated")


def test_associate_refuses_a_closed_subscription(support_agent, namespace, saas):
    Subscription.objects.filter(pk=saas.pk).update(status=SubscriptionStatus.CANCELLED)
    with pytest.raises(ApplicationError) as refused:
        services.namespace_associate(
            actor=support_agent, namespace=namespace, subscription=saas, reason="r"
        )
    assert refused.value.code == "subscription_closed"


def test_associate_requires_a_reason(support_agent, namespace, saas):
    with pytest.raises(ValidationError):
        services.namespace_associate(
            actor=support_agent, namespace=namespace, subscription=saas, reason="  "
        )
    namespace.refresh_from_db()
    assert namespace.subscription is None


@pytest.mark.parametrize("persona", ["account_manager", "outsider"])
def test_associate_needs_a_support_role(request, persona, namespace, saas):
    with pytest.raises(ApplicationError) as refused:
        services.namespace_associate(
            actor=request.getfixturevalue(persona),
            namespace=namespace,
            subscription=saas,
            reason="r",
        )
    assert refused.value.code == "forbidden"


def test_associate_to_the_same_subscription_again_is_refused(support_agent, linked, saas):
    with pytest.raises(ApplicationError) as refused:
        services.namespace_associate(
            actor=support_agent, namespace=linked, subscription=saas, reason="again"
        )
    assert refused.value.code == "no_change"


def test_a_namespace_of_another_active_subscription_needs_force_and_a_lead(
    support_agent, support_lead, linked, customer
):
    """The footgun: linking an occupied group silently takes it from another paying customer."""
    other = subscription_factory(deployment=Deployment.GITLAB_COM, seats=10)
    with pytest.raises(ApplicationError) as occupied:
        services.namespace_associate(
            actor=support_lead, namespace=linked, subscription=other, reason="r"
        )
    assert occupied.value.code == "namespace_occupied"
    with pytest.raises(ApplicationError) as needs_lead:
        services.namespace_associate(
            actor=support_agent,
            namespace=linked,
            subscription=other,
            reason="r",
            ticket_url=TICKET,
            force=True,
        )
    assert needs_lead.value.code == "needs_approval"
    with (
        pytest.raises(ValidationError) as no_ticket,
        four_eyes(
            "namespace_force_associate", requested_by=support_agent, approved_by=support_lead
        ),
    ):
        services.namespace_associate(
            actor=support_lead, namespace=linked, subscription=other, reason="r", force=True
        )
    assert "ticket_url" in no_ticket.value.message_dict
    linked.refresh_from_db()
    assert linked.subscription.customer == customer

    with pytest.raises(ApplicationError) as needs_second_person:
        services.namespace_associate(
            actor=support_lead,
            namespace=linked,
            subscription=other,
            reason="Alone",
            ticket_url=TICKET,
            force=True,
        )
    assert needs_second_person.value.code == "needs_approval"  # four-eyes, even for a lead
    with four_eyes(
        "namespace_force_associate", requested_by=support_agent, approved_by=support_lead
    ):
        services.namespace_associate(
            actor=support_lead,
            namespace=linked,
            subscription=other,
            reason="Owner confirmed in writing",
            ticket_url=TICKET,
            force=True,
        )
    linked.refresh_from_db()
    assert linked.subscription == other
    event = events("usage.namespace_associated")[-1]
    assert event.metadata["forced"] is True
    assert event.customer_id == other.customer_id
    assert event.metadata["previous_customer_id"] == customer.pk


def test_a_namespace_of_an_expired_subscription_is_free_to_link(support_agent, linked, saas):
    Subscription.objects.filter(pk=saas.pk).update(status=SubscriptionStatus.EXPIRED)
    renewal = subscription_factory(saas.customer, deployment=Deployment.GITLAB_COM, seats=60)
    services.namespace_associate(
        actor=support_agent, namespace=linked, subscription=renewal, reason="Renewal"
    )
    linked.refresh_from_db()
    assert linked.subscription == renewal
    assert events("usage.namespace_associated")[-1].metadata["forced"] is False


def test_linking_a_subscription_to_another_group_unlinks_its_previous_group(
    support_agent, linked, saas
):
    """Change linked group: one subscription, one top-level group."""
    new_group = NamespaceFactory(full_path="acme-new")
    services.namespace_associate(
        actor=support_agent, namespace=new_group, subscription=saas, reason="Moved group"
    )
    linked.refresh_from_db()
    new_group.refresh_from_db()
    assert linked.subscription is None
    assert new_group.subscription == saas
    (unlinked,) = events("usage.namespace_disassociated")
    assert unlinked.target_id == str(linked.pk)
    assert unlinked.changes["subscription"] == [saas.name, None]


# --- Clear Subscription -------------------------------------------------------------------------


def test_disassociate_unlinks_and_audits(support_agent, linked, saas):
    services.namespace_disassociate(
        actor=support_agent, namespace=linked, reason="Clear Subscription", ticket_url=TICKET
    )
    linked.refresh_from_db()
    assert linked.subscription is None and linked.seats_owed == 0
    (event,) = events("usage.namespace_disassociated")
    assert event.changes["subscription"] == [saas.name, None]
    assert event.customer_id == saas.customer_id


def test_disassociate_an_unlinked_namespace_is_refused(support_agent, namespace):
    with pytest.raises(ApplicationError) as refused:
        services.namespace_disassociate(actor=support_agent, namespace=namespace, reason="r")
    assert refused.value.code == "no_change"


def test_disassociate_needs_a_support_role(account_manager, linked):
    with pytest.raises(ApplicationError) as refused:
        services.namespace_disassociate(actor=account_manager, namespace=linked, reason="r")
    assert refused.value.code == "forbidden"
    linked.refresh_from_db()
    assert linked.subscription is not None


# --- Seat figures from GitLab.com ---------------------------------------------------------------


def test_seat_figures_set_seats_owed_write_the_days_report_and_roll_up(linked, saas):
    as_of = timezone.now()
    result = push(linked, seats_in_use=52, max_seats_used=57, billable_members=51, as_of=as_of)
    assert result.status == "updated"
    linked.refresh_from_db()
    assert (linked.seats_in_use, linked.max_seats_used, linked.seats_owed) == (52, 57, 7)
    assert linked.max_seats_used_changed_at == as_of
    assert linked.last_refreshed_at == as_of

    report = SeatReport.objects.get(namespace=linked)
    assert report.source == SeatReportSource.SAAS
    assert report.subscription == saas
    assert (report.billable_users, report.max_historical_users) == (51, 57)
    assert report.report_date == timezone.localdate(as_of)

    daily = SubscriptionUsageDaily.objects.get(subscription=saas, date=report.report_date)
    assert (daily.seats, daily.billable_users, daily.max_users, daily.overage) == (50, 51, 57, 7)
    assert step_state(saas, ProvisioningStepKind.FIRST_USAGE) == StepState.DONE
    assert events("provision.provisioning_step_changed")[-1].actor_kind == ActorKind.SYSTEM


def test_billable_users_default_to_seats_in_use(linked):
    push(linked, seats_in_use=30, max_seats_used=30)
    assert SeatReport.objects.get(namespace=linked).billable_users == 30


def test_seats_owed_is_zero_under_the_seat_count_and_on_trials(support_agent, customer):
    trial = subscription_factory(
        customer, deployment=Deployment.GITLAB_COM, plan=Plan.ULTIMATE_TRIAL, seats=5
    )
    namespace = NamespaceFactory()
    services.namespace_associate(
        actor=support_agent, namespace=namespace, subscription=trial, reason="Trial"
    )
    push(namespace, seats_in_use=40, max_seats_used=40)
    namespace.refresh_from_db()
    assert namespace.seats_owed == 0
    push(namespace, seats_in_use=4, max_seats_used=40, as_of=timezone.now())
    namespace.refresh_from_db()
    assert namespace.seats_owed == 0


def test_resending_the_same_figures_changes_nothing(linked):
    as_of = timezone.now()
    push(linked, seats_in_use=52, max_seats_used=57, as_of=as_of)
    report = SeatReport.objects.get(namespace=linked)
    again = push(linked, seats_in_use=52, max_seats_used=57, as_of=as_of)
    assert again.status == "unchanged"
    assert SeatReport.objects.filter(namespace=linked).count() == 1
    assert SeatReport.objects.get(namespace=linked).received_at == report.received_at


def test_a_later_push_the_same_day_replaces_the_days_report(linked):
    first = timezone.now() - dt.timedelta(minutes=30)
    push(linked, seats_in_use=52, max_seats_used=57, as_of=first)
    push(linked, seats_in_use=55, max_seats_used=60, as_of=first + dt.timedelta(minutes=20))
    report = SeatReport.objects.get(namespace=linked)
    assert (report.billable_users, report.max_historical_users) == (55, 60)
    daily = SubscriptionUsageDaily.objects.get(subscription=linked.subscription)
    assert (daily.billable_users, daily.max_users) == (55, 60)


def test_figures_older_than_the_last_refresh_are_ignored(linked):
    now = timezone.now()
    push(linked, seats_in_use=55, max_seats_used=60, as_of=now)
    late = push(linked, seats_in_use=10, max_seats_used=10, as_of=now - dt.timedelta(hours=6))
    assert late.status == "stale"
    linked.refresh_from_db()
    assert (linked.seats_in_use, linked.max_seats_used) == (55, 60)


def test_an_unlinked_namespace_keeps_its_figures_but_gets_no_report(namespace):
    assert push(namespace, seats_in_use=3, max_seats_used=4).status == "updated"
    namespace.refresh_from_db()
    assert (namespace.seats_in_use, namespace.max_seats_used, namespace.seats_owed) == (3, 4, 0)
    assert not SeatReport.objects.exists()


def test_max_seats_used_is_never_below_seats_in_use(linked):
    push(linked, seats_in_use=70, max_seats_used=65)
    linked.refresh_from_db()
    assert linked.max_seats_used == 70 and linked.seats_owed == 20


def test_a_renamed_group_takes_the_new_path_and_is_audited(linked):
    push(linked, seats_in_use=1, max_seats_used=1, full_path="acme-robotics-inc")
    linked.refresh_from_db()
    assert linked.full_path == "acme-robotics-inc"
    (event,) = events("usage.namespace_renamed")
    assert event.changes == {"full_path": ["acme-robotics", "acme-robotics-inc"]}
    assert event.actor_kind == ActorKind.SYSTEM


def test_negative_figures_are_refused(linked):
    with pytest.raises(ValidationError):
        push(linked, seats_in_use=-1, max_seats_used=3)


# --- Reset max seats ----------------------------------------------------------------------------


@pytest.fixture
def over(linked):
    """Linked to 50 seats; 48 in use now, 62 at the peak: 12 seats owed."""
    push(linked, seats_in_use=48, max_seats_used=62, as_of=timezone.now() - dt.timedelta(hours=1))
    linked.refresh_from_db()
    assert linked.seats_owed == 12
    return linked


def test_reset_max_seats_needs_a_support_lead(support_agent, over):
    with pytest.raises(ApplicationError) as refused:
        services.namespace_max_seats_reset(
            actor=support_agent, namespace=over, reason="QSR dispute", approval_url=APPROVAL
        )
    assert refused.value.code == "needs_approval"
    over.refresh_from_db()
    assert over.max_seats_used == 62


def test_reset_max_seats_needs_the_approval_link(support_lead, over):
    with pytest.raises(ValidationError) as refused:
        services.namespace_max_seats_reset(
            actor=support_lead, namespace=over, reason="QSR dispute", approval_url=""
        )
    assert "approval_url" in refused.value.message_dict


def test_reset_max_seats_to_seats_in_use_waives_the_overage_and_audits_before_after(
    support_lead, over
):
    services.namespace_max_seats_reset(
        actor=support_lead,
        namespace=over,
        reason="VP approved waiver on the opportunity",
        approval_url=APPROVAL,
        ticket_url=TICKET,
    )
    over.refresh_from_db()
    assert (over.max_seats_used, over.seats_owed) == (48, 0)
    (event,) = events("usage.namespace_max_seats_reset")
    assert event.changes == {"max_seats_used": [62, 48], "seats_owed": [12, 0]}
    assert event.metadata["approval_url"] == APPROVAL
    assert event.actor == support_lead
    assert event.customer_id == over.subscription.customer_id


def test_reset_max_seats_to_a_value_waives_only_part(support_lead, over):
    services.namespace_max_seats_reset(
        actor=support_lead,
        namespace=over,
        reason="Waive 7 of 12",
        approval_url=APPROVAL,
        max_seats_used=55,
    )
    over.refresh_from_db()
    assert (over.max_seats_used, over.seats_owed) == (55, 5)


@pytest.mark.parametrize("value", [47, 63])
def test_reset_max_seats_stays_between_seats_in_use_and_the_current_max(support_lead, over, value):
    with pytest.raises(ValidationError):
        services.namespace_max_seats_reset(
            actor=support_lead,
            namespace=over,
            reason="r",
            approval_url=APPROVAL,
            max_seats_used=value,
        )


def test_a_reset_survives_the_next_push_of_the_old_maximum_but_not_a_new_peak(support_lead, over):
    services.namespace_max_seats_reset(
        actor=support_lead, namespace=over, reason="Waiver", approval_url=APPROVAL
    )
    # GitLab.com still reports its old maximum: the waiver holds, usage can still raise it.
    push(over, seats_in_use=49, max_seats_used=62)
    over.refresh_from_db()
    assert (over.max_seats_used, over.seats_owed) == (49, 0)
    # A push counted before the reset is stale.
    stale = push(
        over, seats_in_use=60, max_seats_used=62, as_of=timezone.now() - dt.timedelta(days=1)
    )
    assert stale.status == "stale"
    # GitLab.com sees a new peak: that is followed.
    push(over, seats_in_use=50, max_seats_used=66)
    over.refresh_from_db()
    assert (over.max_seats_used, over.seats_owed) == (66, 16)
