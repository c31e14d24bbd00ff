"""A realistic customer for the screenshot tests (and for looking at the console by hand).

Domain state is written through the services, so the audit trail, the seat ledger and the
provisioning records are the ones real use produces. Instances and seat reports have no
service yet (the usage app brings them), so they are plain rows from the factories.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from django.utils import timezone

from provision import services
from provision.choices import (
    AddOnKind,
    Channel,
    ContactRole,
    Deployment,
    Plan,
    ProvisioningStepKind,
    Role,
    StepState,
)
from provision.context import reset_context, set_context
from provision.models import Customer, ProvisioningStep, Subscription
from tests.factories import CustomerFactory, InstanceFactory, NamespaceFactory, UserFactory
from usage.choices import SeatReportSource
from usage.models import SeatReport
from usage.services import subscription_usage_rollup

PASSWORD = "correct horse battery"


@dataclass
class Seeded:
    support: object
    manager: object
    lead: object
    customer: Customer
    self_managed: Subscription
    saas: Subscription
    expired: Subscription


def _step(subscription: Subscription, kind: str) -> ProvisioningStep:
    return subscription.provisioning_records.get().steps.get(kind=kind)


def _seat_reports(subscription, *, instance=None, namespace=None, start, growth, days=120):
    """``days`` daily reports ending today: a steady climb with weekday noise."""
    rng = random.Random(subscription.pk)
    today = timezone.localdate()
    peak = 0
    rows = []
    for offset in range(days, 0, -1):
        day = today - dt.timedelta(days=offset - 1)
        trend = start + growth * (days - offset) / days
        weekend_dip = 0.93 if day.weekday() >= 5 else 1.0
        billable = max(0, int(trend * weekend_dip + rng.randint(-3, 3)))
        peak = max(peak, billable + rng.randint(0, 4))
        rows.append(
            SeatReport(
                subscription=subscription,
                instance=instance,
                namespace=namespace,
                report_date=day,
                billable_users=billable,
                max_historical_users=peak,
                source=SeatReportSource.SAAS if namespace else SeatReportSource.SEAT_LINK,
            )
        )
    SeatReport.objects.bulk_create(rows)
    # The charts read the daily rollup, as they do after real Seat Links.
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[r.report_date for r in rows])


def seed_customer(*, extra_customers: int = 14) -> Seeded:
    """One customer with three subscriptions, two instances, a namespace, notes and history."""
    token = set_context(request_id="seed-e2e-0001", source="command")
    try:
        return _seed(extra_customers)
    finally:
        reset_context(token)


def _seed(extra_customers: int) -> Seeded:
    support = UserFactory(
        username="sam.support", first_name="Sam", last_name="Rivera", roles=[Role.SUPPORT]
    )
    manager = UserFactory(
        username="alex.am", first_name="Alex", last_name="Morgan", roles=[Role.ACCOUNT_MANAGER]
    )
    csm = UserFactory(
        username="jo.csm", first_name="Jo", last_name="Whitfield", roles=[Role.ACCOUNT_MANAGER]
    )
    lead = UserFactory(
        username="lee.lead", first_name="Lee", last_name="Okafor", roles=[Role.SUPPORT_LEAD]
    )
    today = timezone.localdate()

    customer = services.customer_create(
        actor=support,
        billing_account_number="A00012345",
        name="Northwind Robotics GmbH",
        email_domains=["northwind-robotics.test", "northwind.test"],
        salesforce_account_id="0015g00000NwRbtAAF",
        gainsight_company_id="1P02NWR9K3",
        account_owner=manager,
        csm=None,
        country="de",
        reason="New sales-assisted order from Salesforce opportunity",
        ticket_url="https://tickets.example.test/L-R/4101",
    )
    services.contact_create(
        actor=support,
        customer=customer,
        role=ContactRole.SOLD_TO,
        first_name="Greta",
        last_name="Hoffmann",
        email="greta.hoffmann@northwind-robotics.test",
        phone="+49 89 1234 5678",
        reason="Sold-to from the order form",
    )
    services.contact_create(
        actor=support,
        customer=customer,
        role=ContactRole.TECHNICAL,
        first_name="Piotr",
        last_name="Nowak",
        email="piotr.nowak@northwind-robotics.test",
        reason="Admin of the self-managed instance",
    )

    self_managed = services.subscription_create(
        actor=support,
        customer=customer,
        name="A-S00012345",
        plan=Plan.ULTIMATE,
        deployment=Deployment.SELF_MANAGED,
        term_start=today - dt.timedelta(days=150),
        term_end=today + dt.timedelta(days=215),
        seats=250,
        channel=Channel.SALES_ASSISTED,
        add_ons=[services.AddOnSpec(kind=AddOnKind.DUO_PRO, quantity=50)],
        reason="Order ORD-2025-0815 booked",
        ticket_url="https://tickets.example.test/L-R/4102",
    )
    saas = services.subscription_create(
        actor=support,
        customer=customer,
        name="A-S00012346",
        plan=Plan.PREMIUM,
        deployment=Deployment.GITLAB_COM,
        term_start=today - dt.timedelta(days=130),
        term_end=today + dt.timedelta(days=235),
        seats=80,
        channel=Channel.WEB_DIRECT,
        reason="Web order for the design team",
    )
    expired = services.subscription_create(
        actor=support,
        customer=customer,
        name="A-S00009876",
        plan=Plan.PREMIUM,
        deployment=Deployment.SELF_MANAGED,
        term_start=today - dt.timedelta(days=515),
        term_end=today - dt.timedelta(days=150),
        seats=180,
        channel=Channel.SALES_ASSISTED,
        reason="Imported from the previous billing system",
    )

    # Provisioning: the self-managed order went through; the SaaS one is stuck on its namespace.
    for kind in (
        ProvisioningStepKind.LICENSE_ISSUED,
        ProvisioningStepKind.DELIVERED,
        ProvisioningStepKind.ACTIVATED,
        ProvisioningStepKind.FIRST_USAGE,
    ):
        services.provisioning_step_set_state(
            actor=None, step=_step(self_managed, kind), state=StepState.DONE, reason="Order flow"
        )
    for kind in (
        ProvisioningStepKind.LICENSE_ISSUED,
        ProvisioningStepKind.DELIVERED,
        ProvisioningStepKind.ACTIVATED,
        ProvisioningStepKind.FIRST_USAGE,
    ):
        services.provisioning_step_set_state(
            actor=None, step=_step(expired, kind), state=StepState.DONE, reason="Order flow"
        )
    services.provisioning_step_set_state(
        actor=None,
        step=_step(saas, ProvisioningStepKind.NAMESPACE_PROVISIONED),
        state=StepState.FAILED,
        error="Namespace northwind-design is owned by another subscription",
        reason="GitLab.com provisioning call",
    )
    # Back-date the still-pending step past its SLA so the record counts as stuck (time travel,
    # not a domain write: no service moves a due date).
    ProvisioningStep.objects.filter(
        record__subscription=saas, kind=ProvisioningStepKind.FIRST_USAGE
    ).update(due_at=timezone.now() - dt.timedelta(days=3))

    # Usage: two instances (one has stopped syncing) and a GitLab.com namespace.
    primary = InstanceFactory(
        customer=customer,
        subscription=self_managed,
        hostname="gitlab.northwind-robotics.test",
        version="17.6.2-ee",
        last_sync_at=timezone.now() - dt.timedelta(hours=5),
    )
    staging = InstanceFactory(
        customer=customer,
        subscription=self_managed,
        hostname="gitlab-staging.northwind-robotics.test",
        version="17.4.0-ee",
        last_sync_at=timezone.now() - dt.timedelta(days=4),
    )
    _seat_reports(self_managed, instance=primary, start=205, growth=62)
    _seat_reports(self_managed, instance=staging, start=4, growth=2, days=116)
    namespace = NamespaceFactory(
        full_path="northwind-design",
        name="Northwind Design",
        subscription=saas,
        seats_in_use=71,
        max_seats_used=77,
        seats_owed=0,
        last_refreshed_at=timezone.now() - dt.timedelta(hours=2),
    )
    _seat_reports(saas, namespace=namespace, start=58, growth=13)

    # History a support agent would leave.
    services.subscription_seats_change(
        actor=support,
        subscription=self_managed,
        seats=275,
        reason="Customer bought 25 more seats ahead of the true-up",
        ticket_url="https://tickets.example.test/L-R/4188",
    )
    services.customer_update(
        actor=support,
        customer=customer,
        data={"csm": csm},
        reason="CSM assigned after onboarding call",
        ticket_url="https://tickets.example.test/L-R/4190",
    )
    services.note_add(
        actor=manager,
        customer=customer,
        body="QBR on the 14th: they plan to roll GitLab out to the Munich plant (≈60 more users).",
    )
    services.note_add(
        actor=support,
        customer=customer,
        body="Staging instance stopped syncing after their proxy change; Piotr is on it.",
    )

    owners = [manager, csm, None]
    for index in range(extra_customers):
        other = CustomerFactory(
            name=f"{_COMPANIES[index % len(_COMPANIES)]}",
            account_owner=owners[index % len(owners)],
            csm=owners[(index + 1) % len(owners)],
        )
        if index % 3 != 2:
            services.subscription_create(
                actor=support,
                customer=other,
                name=f"A-S{20_000_000 + index:08d}",
                plan=Plan.PREMIUM if index % 2 else Plan.ULTIMATE,
                deployment=Deployment.SELF_MANAGED if index % 2 else Deployment.GITLAB_COM,
                term_start=today - dt.timedelta(days=40 + index),
                term_end=today + dt.timedelta(days=300 - index),
                seats=25 + 15 * index,
                reason="Seeded order",
            )
    return Seeded(
        support=support,
        manager=manager,
        lead=lead,
        customer=customer,
        self_managed=Subscription.objects.get(pk=self_managed.pk),
        saas=saas,
        expired=expired,
    )


_COMPANIES = [
    "Acme Robotics",
    "Blue Harbor Logistics",
    "Cobalt Health Systems",
    "Delta Freight AG",
    "Evergreen Analytics",
    "Fjord Maritime AS",
    "Granite Bank plc",
    "Helios Energy",
    "Iris Biotech",
    "Juniper Retail Group",
    "Kestrel Aerospace",
    "Lumen Media",
    "Meridian Insurance",
    "Nimbus Games",
]
