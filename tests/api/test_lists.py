"""Every list endpoint: paginated, filtered by its page's FilterSet, a bounded number of queries
whatever the number of rows, and no secret (key material, activation codes, code hashes,
tokens) in any list or detail answer."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from licenses.models import ActivationCode, License
from provision.api.urls import router
from tests.api.conftest import api_client, token_for
from tests.api.data import add_customers
from usage.models import SubscriptionUsageDaily

pytestmark = pytest.mark.django_db

LIST_URLS = sorted(f"/api/{prefix}/" for prefix, _viewset, _basename in router.registry)


@pytest.fixture
def reader(db):
    # A lead: the cockpit shows an account manager their own book only.
    return api_client(token_for("svc-reader", "support_lead"))


@pytest.mark.parametrize("url", LIST_URLS)
def test_every_list_answers_in_the_same_few_queries_for_1_or_25_rows(
    url, reader, support_agent, django_assert_max_num_queries
):
    add_customers(1, support=support_agent)
    with django_assert_max_num_queries(8) as one:
        small = reader.get(url)
    assert small.status_code == 200, small.content
    add_customers(24, support=support_agent)
    with django_assert_max_num_queries(8) as many:
        large = reader.get(url)
    body = large.json()
    assert {"count", "next", "previous", "results"} <= set(body), "paginated"
    assert len(body["results"]) > len(small.json()["results"]), "the rows are really there"
    assert len(many.captured_queries) == len(one.captured_queries), [
        q["sql"] for q in many.captured_queries
    ]


@pytest.mark.parametrize("url", LIST_URLS)
def test_every_list_pages_through_its_rows(url, reader, support_agent):
    add_customers(2, support=support_agent)
    first = reader.get(url, {"page": 1}).json()
    past_the_end = reader.get(url, {"page": 999})
    assert past_the_end.status_code == 404
    assert past_the_end.json()["error"]["code"] == "not_found"
    assert first["previous"] is None


def test_no_answer_carries_a_secret(reader, support_agent):
    codes = add_customers(2, support=support_agent)
    token_for("svc-other", "support")
    secrets = list(codes)
    secrets += list(ActivationCode.objects.values_list("code_hash", flat=True))
    secrets += list(Token.objects.values_list("key", flat=True))
    for key in License.objects.values_list("key", flat=True):
        secrets += [line for line in key.splitlines() if len(line) > 16]
    assert len(secrets) > 10
    for url in LIST_URLS:
        listed = reader.get(url)
        bodies = [listed.content.decode()]
        for row in listed.json()["results"][:3]:
            if "id" in row:
                bodies.append(reader.get(f"{url}{row['id']}/").content.decode())
        for body in bodies:
            leaked = [secret[:8] for secret in secrets if secret in body]
            assert not leaked, f"{url} leaks {leaked}"


# --- Usage rollups ----------------------------------------------------------------------------


def test_usage_rollups_filter_by_subscription_customer_and_dates(reader, support_agent):
    add_customers(3, support=support_agent)
    rollup = SubscriptionUsageDaily.objects.select_related("subscription").first()
    subscription = rollup.subscription
    today = timezone.localdate()

    def ids(params):
        body = reader.get("/api/usage-rollups/", params).json()
        return {(row["subscription"], row["date"]) for row in body["results"]}

    assert len(ids({})) == 6
    assert ids({"subscription_id": subscription.pk}) == {
        (subscription.pk, today.isoformat()),
        (subscription.pk, (today - dt.timedelta(days=1)).isoformat()),
    }
    assert ids({"customer_id": subscription.customer_id}) == ids(
        {"subscription_id": subscription.pk}
    )
    assert ids({"since": today.isoformat()}) == {
        (row.subscription_id, today.isoformat())
        for row in SubscriptionUsageDaily.objects.filter(date=today)
    }
    assert len(ids({"until": (today - dt.timedelta(days=1)).isoformat()})) == 3
    invalid = reader.get("/api/usage-rollups/", {"since": "yesterday"})
    assert invalid.status_code == 400 and "since" in invalid.json()["error"]["fields"]


def test_usage_rollup_rows_carry_the_rollup_figures(reader, support_agent):
    add_customers(1, support=support_agent)
    row = reader.get("/api/usage-rollups/").json()["results"][0]
    stored = SubscriptionUsageDaily.objects.get(pk=row["id"])
    assert row["seats"] == stored.seats == 10
    assert row["billable_users"] == stored.billable_users == 40
    assert row["max_users"] == 45 and row["overage"] == 35
    assert row["utilization"] == str(stored.utilization)
    assert row["customer"] == stored.subscription.customer_id
    assert row["subscription_name"] == stored.subscription.name


@pytest.mark.parametrize("url", ["/api/usage-rollups/", "/api/fix-requests/"])
def test_new_lists_refuse_anonymous_and_outsiders(url, client, client_for, outsider):
    assert client.get(url).status_code in (401, 403)
    assert client_for(outsider).get(url).status_code == 403


@pytest.mark.parametrize("url", LIST_URLS)
def test_no_filter_value_breaks_a_list(url, reader, support_agent):
    """Whatever a caller puts in a filter (a NUL byte, which PostgreSQL refuses; a number
    beyond 64 bits, which SQLite cannot bind; a date that is none) is a 200 or a JSON 400."""
    add_customers(1, support=support_agent)
    viewset = {f"/api/{prefix}/": v for prefix, v, _ in router.registry}[url]
    names = list(viewset.filterset_class.base_filters) + ["page", "sort", "ordering"]
    for name in names:
        for value in ("a\x00b", "1e40", "-1", "9" * 30, "2024-13-45", "0"):
            response = reader.get(url, {name: value})
            assert response.status_code in (200, 400, 404), (name, value, response.content)
            if response.status_code != 200:
                assert "error" in response.json()


def test_a_big_list_counts_up_to_the_cap_and_still_pages_on(reader, support_agent, monkeypatch):
    from provision.api import pagination

    add_customers(4, support=support_agent)
    exact = reader.get("/api/customers/").json()
    assert (exact["count"], exact["count_capped"]) == (4, False)
    monkeypatch.setattr(pagination, "COUNT_CAP", 2)
    monkeypatch.setattr(pagination.ProvisionPagination, "page_size", 1)
    first = reader.get("/api/customers/").json()
    assert (first["count"], first["count_capped"]) == (2, True)
    names = [first["results"][0]["name"]]
    url = first["next"]
    while url:
        page = reader.get(url).json()
        names += [row["name"] for row in page["results"]]
        url = page["next"]
    assert names == [row["name"] for row in exact["results"]], "every row, past the cap too"
    past_the_end = reader.get("/api/customers/", {"page": 9}).json()
    assert past_the_end["results"] == [] and past_the_end["next"] is None
