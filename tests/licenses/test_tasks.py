"""The periodic license jobs, run as Celery runs them (eager, through the task wrapper)."""

import datetime as dt

import pytest
from django.utils import timezone

from licenses import services, tasks
from licenses.choices import DeliveryStatus, LicenseKind, LicenseStatus
from licenses.models import LicenseDelivery
from provision.models import AuditEvent
from tests.factories import subscription_factory

pytestmark = pytest.mark.django_db


def test_licenses_expire_task_expires_past_licenses_once(customer):
    today = timezone.localdate()
    subscription = subscription_factory(
        customer, term_start=today - dt.timedelta(days=400), term_end=today - dt.timedelta(days=35)
    )
    license = services.license_issue(
        actor=None,
        subscription=subscription,
        kind=LicenseKind.OFFLINE_CLOUD,
        reason="Order",
        today=subscription.term_start,
    )
    assert tasks.licenses_expire.apply().get() == 1
    assert tasks.licenses_expire.apply().get() == 0
    license.refresh_from_db()
    assert license.status == LicenseStatus.EXPIRED
    assert AuditEvent.objects.filter(action="licenses.license_expired").count() == 1


@pytest.fixture
def eager_celery():
    """Run ``.delay()`` in-process so the re-sent e-mail lands in the test's outbox."""
    from provision.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


def test_stuck_license_emails_are_sent_again_but_fresh_ones_are_left(
    customer, eager_celery, mailoutbox
):
    subscription = subscription_factory(customer)
    license = services.license_issue(
        actor=None, subscription=subscription, kind=LicenseKind.OFFLINE_CLOUD, reason="Order"
    )
    old = LicenseDelivery.objects.create(
        license=license,
        method="email",
        recipient_email="buyer@acme.test",
        created_at=timezone.now() - dt.timedelta(hours=2),
    )
    fresh = LicenseDelivery.objects.create(
        license=license, method="email", recipient_email="buyer@acme.test"
    )
    assert tasks.license_deliveries_requeue.apply().get() == 1
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert old.status == DeliveryStatus.SENT and fresh.status == DeliveryStatus.QUEUED
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["buyer@acme.test"]
    assert tasks.license_deliveries_requeue.apply().get() == 0
