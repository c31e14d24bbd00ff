"""Seat Links arriving at the same moment: each through its own database connection and
transaction, as gunicorn workers would run them. The upserts and conditional updates must give
one row per instance and day, one audit event per fact, and no failed request.

PostgreSQL only: SQLite serialises writers with a database-wide lock (concurrent writers get
"database is locked" after the timeout instead of row locks), so the race is not the one
production has. CI runs the suite on PostgreSQL (DATABASE_URL), where these tests run.
"""

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections
from django.test import Client

from licenses.choices import LicenseStatus
from licenses.models import License
from provision.choices import ProvisioningStepKind, StepState
from provision.models import AuditEvent, ProvisioningStep
from tests.factories import ContactFactory, CustomerFactory, subscription_factory
from tests.usage.test_seat_link import (  # noqa: F401 - fixtures
    URL,
    _signing_key_path,
    gitlab_headers,
    issue,
    seat_link_body,
    signing_key,
)
from usage.models import Instance, SeatReport, SubscriptionUsageDaily
from usage.services import subscription_usage_rollup_recent

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 20


@pytest.fixture(autouse=True)
def _postgresql_only(settings):
    if connection.vendor != "postgresql":
        pytest.skip(
            "SQLite serialises writers with one database lock; the row-level race this tests "
            "is PostgreSQL's (CI runs it there: DATABASE_URL=postgres://…)"
        )
    settings.SEAT_LINK_RATE_LIMIT_PER_IP = 0


@pytest.fixture
def license(db):
    customer = CustomerFactory()
    ContactFactory(customer=customer)
    return issue(subscription_factory(customer, seats=50))


def post_all(bodies: list[dict]) -> list[tuple[int, dict]]:
    """Post every body from its own thread (its own connection), all released at once."""
    barrier = threading.Barrier(len(bodies))

    def send(body):
        client = Client()
        try:
            barrier.wait(timeout=30)
            response = client.post(
                URL, json.dumps(body), content_type="application/json", headers=gitlab_headers()
            )
            return response.status_code, json.loads(response.content)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_twenty_identical_seat_links_at_once_make_one_row_and_twenty_successes(license):
    body = seat_link_body("newest", license.key, instance_id=str(uuid.uuid4()))

    results = post_all([body] * THREADS)

    assert [status for status, _ in results] == [200] * THREADS, results
    assert all("license" not in answer for _, answer in results)
    assert SeatReport.objects.count() == 1
    assert Instance.objects.count() == 1
    subscription_usage_rollup_recent()
    assert SubscriptionUsageDaily.objects.get().billable_users == 40
    # Each fact audited once, however many requests raced to it.
    assert AuditEvent.objects.filter(action="usage.instance_registered").count() == 1
    assert AuditEvent.objects.filter(action="licenses.license_first_synced").count() == 1
    assert (
        AuditEvent.objects.filter(
            action="provision.provisioning_step_changed", changes__first_usage=["pending", "done"]
        ).count()
        == 1
    )
    assert License.objects.get(pk=license.pk).status == LicenseStatus.ACTIVE
    assert (
        ProvisioningStep.objects.get(
            record__subscription=license.subscription, kind=ProvisioningStepKind.FIRST_USAGE
        ).state
        == StepState.DONE
    )


def test_twenty_instances_of_one_subscription_at_once_all_count_in_the_rollup(license):
    bodies = [
        seat_link_body("newest", license.key, instance_id=str(uuid.uuid4()), billable=n)
        for n in range(1, THREADS + 1)
    ]

    results = post_all(bodies)

    assert [status for status, _ in results] == [200] * THREADS, results
    assert SeatReport.objects.count() == THREADS
    assert Instance.objects.count() == THREADS
    # The minute rollup (Seat Link does not roll up inline) counts every instance's report.
    assert subscription_usage_rollup_recent()["days"] == 1
    daily = SubscriptionUsageDaily.objects.get()
    assert daily.billable_users == sum(range(1, THREADS + 1))
    assert AuditEvent.objects.filter(action="usage.instance_registered").count() == THREADS
