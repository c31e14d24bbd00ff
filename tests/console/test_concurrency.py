"""Two agents confirming fixes on the same subscription at the same moment, each in its own
connection and transaction as two gunicorn workers would: the target's row lock serialises
them, and the preview check refuses the one that confirmed a preview made stale by the other.

PostgreSQL only (CI runs it there): SQLite has no row locks, and its database-wide lock turns
the race into "database is locked" instead of the one production has. The sequential version
of the same conflict runs everywhere (tests/console/test_fixes.py).
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections

from provision import services
from provision.choices import ReasonCode, Role
from provision.fixes import FIXES
from provision.models import AuditEvent, Subscription
from tests.factories import ContactFactory, CustomerFactory, UserFactory, subscription_factory

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = 8


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite serialises the whole database")


def test_simultaneous_confirms_on_one_preview_apply_exactly_once():
    customer = CustomerFactory()
    ContactFactory(customer=customer)
    subscription = subscription_factory(customer, seats=50, deployment="gitlab_com")
    agents = [UserFactory(username=f"agent{i}", roles=[Role.SUPPORT]) for i in range(AGENTS)]
    fix = FIXES["seats_change"]
    # Every agent saw the same screen: 50 → 55, and confirms it; a different target each
    # (seats 51..58) so that each would be a real change if it ran on stale figures.
    seen = {
        agent.pk: fix.preview(subscription, {"seats": 51 + i}).digest()
        for i, agent in enumerate(agents)
    }
    barrier = threading.Barrier(AGENTS)

    def confirm(index_agent):
        index, agent = index_agent
        try:
            barrier.wait(timeout=30)
            services.fix_submit(
                actor=agent,
                action="seats_change",
                target_pk=subscription.pk,
                params={"seats": 51 + index},
                reason_code=ReasonCode.CUSTOMER_REQUEST,
                reason="Customer asked",
                seen_digest=seen[agent.pk],
            )
            return "applied"
        except services.FixConflict:
            return "conflict"
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=AGENTS) as pool:
        outcomes = list(pool.map(confirm, enumerate(agents)))

    assert sorted(outcomes) == ["applied"] + ["conflict"] * (AGENTS - 1), outcomes
    events = AuditEvent.objects.filter(action="provision.subscription_seats_changed")
    assert events.count() == 1
    (event,) = events
    # The one that ran changed from the 50 everybody saw; the others changed nothing.
    assert event.changes["seats"][0] == 50
    assert Subscription.objects.get(pk=subscription.pk).seats == event.changes["seats"][1]
