"""A real Celery worker against the test database and the configured broker.

Everything else runs tasks in-process; this is the one place that proves the whole path: the
message leaves through the broker the settings name (kombu's filesystem transport locally, Redis
in CI), a separate worker process picks it up, boots Django against the same test database,
runs the service and stamps its audit event with the task's request id.
"""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from provision.celery import app as celery_app
from provision.choices import AuditSource, SubscriptionStatus
from provision.models import AuditEvent, Subscription
from provision.tasks import subscriptions_expire
from tests.celery_worker import Worker, require_broker
from tests.factories import subscription_factory

pytestmark = pytest.mark.integration

TASK_NAME = "provision.tasks.subscriptions_expire"


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    """One worker for the module (it takes seconds to start and stop), always stopped at the end.

    Between tests it sits idle with no transaction open, so the flush that follows each
    transactional test is not blocked by it.
    """
    assert celery_app.conf.task_always_eager is False, "tasks must go through the broker here"
    require_broker()
    worker = Worker(tmp_path_factory.mktemp("celery") / "worker.log")
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def ended_subscription(transactional_db):
    """Sold a year ago and recorded while active; its term ended last month."""
    term_start = timezone.localdate() - timedelta(days=400)
    subscription = subscription_factory(
        term_start=term_start,
        term_end=term_start + timedelta(days=365),
        today=term_start + timedelta(days=1),
    )
    assert subscription.status == SubscriptionStatus.ACTIVE
    return subscription


def _expiry_events(subscription):
    return AuditEvent.objects.filter(
        action="provision.subscription_expired",
        target_type="provision.subscription",
        target_id=str(subscription.pk),
    )


def test_provision_tasks_route_to_the_default_queue_the_workers_consume():
    route = celery_app.amqp.router.route({}, TASK_NAME)
    assert route["queue"].name == "default"


def test_worker_expires_an_ended_subscription_and_audits_it_as_a_task(worker, ended_subscription):
    request_id = f"itest-{uuid.uuid4().hex}"

    outcome = worker.run(subscriptions_expire, request_id=request_id)

    assert "'expired': 1" in outcome
    ended_subscription.refresh_from_db()
    assert ended_subscription.status == SubscriptionStatus.EXPIRED
    event = _expiry_events(ended_subscription).get()
    assert event.source == AuditSource.TASK
    assert event.request_id == request_id
    assert event.actor is None and event.actor_kind == "system"
    assert event.changes == {"status": [SubscriptionStatus.ACTIVE, SubscriptionStatus.EXPIRED]}


def test_worker_running_the_expiry_twice_changes_and_audits_once(worker, ended_subscription):
    first = worker.run(subscriptions_expire)
    second = worker.run(subscriptions_expire)

    assert "'expired': 1" in first
    assert "'expired': 0" in second
    ended_subscription.refresh_from_db()
    assert ended_subscription.status == SubscriptionStatus.EXPIRED
    event = _expiry_events(ended_subscription).get()
    # Without a request id from a caller the task's own id links the event to the worker log.
    assert event.request_id.startswith("task-")
    assert event.source == AuditSource.TASK
    assert Subscription.objects.filter(status=SubscriptionStatus.EXPIRED).count() == 1
