import datetime as dt

import pytest
from django.utils import timezone

from provision.choices import Deployment
from tests.factories import (
    InstanceFactory,
    NamespaceFactory,
    SeatReportFactory,
    subscription_factory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def usage_data(subscription):
    fresh = InstanceFactory(
        customer=subscription.customer, subscription=subscription, hostname="gitlab.acme.test"
    )
    stale = InstanceFactory(
        customer=subscription.customer,
        subscription=subscription,
        hostname="old.acme.test",
        last_sync_at=timezone.now() - dt.timedelta(days=5),
    )
    today = timezone.localdate()
    for days_ago in range(3):
        SeatReportFactory(
            subscription=subscription,
            instance=fresh,
            report_date=today - dt.timedelta(days=days_ago),
        )
    return fresh, stale


@pytest.mark.parametrize(
    "url",
    [
        "/api/instances/",
        "/api/namespaces/",
        "/api/seat-reports/",
        "/api/crm/sync-runs/",
        "/api/crm/record-states/",
    ],
)
def test_usage_and_crm_endpoints_need_a_staff_role(client, client_for, outsider, url):
    assert client.get(url).status_code in (401, 403)
    assert client_for(outsider).get(url).status_code == 403


def test_instances_filter_stale_and_search(client_for, account_manager, usage_data):
    fresh, stale = usage_data
    client = client_for(account_manager)
    stale_ids = [
        i["id"] for i in client.get("/api/instances/", {"stale": "true"}).json()["results"]
    ]
    assert stale_ids == [stale.pk]
    found = client.get("/api/instances/", {"q": str(fresh.instance_id)}).json()["results"]
    assert [i["hostname"] for i in found] == ["gitlab.acme.test"]


def test_seat_reports_filter_by_date_range(client_for, support_agent, usage_data):
    since = (timezone.localdate() - dt.timedelta(days=1)).isoformat()
    results = (
        client_for(support_agent).get("/api/seat-reports/", {"since": since}).json()["results"]
    )
    assert len(results) == 2


def test_namespaces_filter_by_customer_and_path(client_for, support_agent, customer):
    subscription = subscription_factory(customer, deployment=Deployment.GITLAB_COM)
    linked = NamespaceFactory(full_path="acme-robotics", subscription=subscription)
    NamespaceFactory(full_path="someone-else")
    client = client_for(support_agent)
    by_customer = client.get("/api/namespaces/", {"customer_id": customer.pk}).json()["results"]
    assert [n["id"] for n in by_customer] == [linked.pk]
    by_id = client.get("/api/namespaces/", {"q": str(linked.gitlab_namespace_id)}).json()
    assert by_id["count"] == 1


def test_instance_list_query_count_is_bounded(
    client_for, support_agent, subscription, django_assert_max_num_queries
):
    client = client_for(support_agent)
    for _ in range(20):
        InstanceFactory(customer=subscription.customer, subscription=subscription)
    with django_assert_max_num_queries(5):
        response = client.get("/api/instances/")
    assert response.json()["count"] == 20
