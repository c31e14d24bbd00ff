"""Rows for the API tests: customers with one of everything the API lists."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from crm_sync.choices import CrmTarget, SyncRunKind, SyncRunStatus, SyncTrigger
from crm_sync.models import CrmRecordState, SyncRun
from licenses import services as license_services
from licenses.models import Activation
from provision import services
from tests.factories import (
    ContactFactory,
    CustomerFactory,
    InstanceFactory,
    NamespaceFactory,
    SeatReportFactory,
    subscription_factory,
)
from usage import services as usage_services


def add_customers(count: int, *, support) -> list[str]:
    """``count`` customers with one of everything the API lists; returns the plaintext
    activation codes (secrets that must never come back)."""
    codes = []
    today = timezone.localdate()
    for _ in range(count):
        customer = CustomerFactory()
        ContactFactory(customer=customer)
        subscription = subscription_factory(customer, seats=10)
        license = license_services.license_issue(actor=None, subscription=subscription, reason="x")
        code, plaintext = license_services.activation_code_generate(
            actor=None, subscription=subscription, reason="x"
        )
        codes.append(plaintext)
        instance = InstanceFactory(customer=customer, subscription=subscription)
        Activation.objects.create(activation_code=code, license=license, instance=instance)
        NamespaceFactory(subscription=subscription)
        for days_ago in (0, 1):
            SeatReportFactory(
                subscription=subscription,
                instance=instance,
                report_date=today - dt.timedelta(days=days_ago),
            )
        usage_services.subscription_usage_rollup(
            subscription_id=subscription.pk, dates=[today, today - dt.timedelta(days=1)]
        )
        CrmRecordState.objects.update_or_create(
            target=CrmTarget.SALESFORCE,
            customer=customer,
            defaults={"external_id": "001", "payload": {"a": 1}},
        )
        SyncRun.objects.create(
            target=CrmTarget.SALESFORCE,
            kind=SyncRunKind.INCREMENTAL,
            trigger=SyncTrigger.ON_CHANGE,
            status=SyncRunStatus.SUCCEEDED,
            customer=customer,
        )
        services.fix_submit(
            actor=support,
            action="seats_change",
            target_pk=subscription.pk,
            params={"seats": 100},
            reason_code="customer_request",
            reason="Expansion",
        )
    return codes
