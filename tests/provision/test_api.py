import pytest
from django.urls import reverse

from provision.models import AuditEvent
from tests.factories import CustomerFactory, subscription_factory

pytestmark = pytest.mark.django_db

LIST_ENDPOINTS = [
    "/api/customers/",
    "/api/subscriptions/",
    "/api/provisioning-records/",
    "/api/audit-events/",
]


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_list_endpoints_refuse_anonymous_with_json_error(client, url):
    response = client.get(url)
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] in ("not_authenticated", "permission_denied")


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_list_endpoints_refuse_users_without_a_role(client_for, outsider, url):
    response = client_for(outsider).get(url)
    assert response.status_code == 403
    assert "error" in response.json()


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_list_endpoints_serve_every_staff_role(client_for, account_manager, subscription, url):
    response = client_for(account_manager).get(url)
    assert response.status_code == 200
    assert response.json()["count"] >= 1


def test_customer_filter_is_shared_with_the_staff_page(client_for, support_agent, customer):
    CustomerFactory(name="Initech")
    client = client_for(support_agent)
    api = client.get("/api/customers/", {"q": "buyer@acme.test"}).json()
    assert [c["name"] for c in api["results"]] == ["Acme Robotics"]
    page = client.get(reverse("provision:customer_list"), {"q": "buyer@acme.test"})
    assert [c.name for c in page.context["page_obj"]] == ["Acme Robotics"]


@pytest.mark.parametrize(
    "query",
    ["Acme", "A-S", "acme.test", "buyer@acme.test"],
)
def test_customer_search_finds_by_any_identifier(client_for, support_agent, customer, query):
    subscription = subscription_factory(customer)
    if query == "A-S":
        query = subscription.name.lower()
    results = client_for(support_agent).get("/api/customers/", {"q": query}).json()["results"]
    assert [c["id"] for c in results] == [customer.pk]


def test_customer_search_by_billing_account_and_salesforce_id(client_for, support_agent, customer):
    client = client_for(support_agent)
    for query in (customer.billing_account_number.lower(), customer.salesforce_account_id):
        results = client.get("/api/customers/", {"q": query}).json()["results"]
        assert [c["id"] for c in results] == [customer.pk]


def test_customer_list_query_count_does_not_grow(
    client_for, support_agent, django_assert_max_num_queries
):
    client = client_for(support_agent)
    for _ in range(3):
        subscription_factory(CustomerFactory())
    with django_assert_max_num_queries(6):
        small = client.get("/api/customers/")
    for _ in range(30):
        subscription_factory(CustomerFactory())
    with django_assert_max_num_queries(6):
        large = client.get("/api/customers/")
    assert small.json()["count"] == 3 and large.json()["count"] == 33


def test_subscription_list_query_count_does_not_grow(
    client_for, support_agent, django_assert_max_num_queries
):
    client = client_for(support_agent)
    for _ in range(25):
        subscription_factory()
    with django_assert_max_num_queries(6):
        response = client.get("/api/subscriptions/")
    assert response.json()["count"] == 25


def test_seats_endpoint_changes_seats_and_audits(client_for, support_agent, subscription):
    response = client_for(support_agent).post(
        f"/api/subscriptions/{subscription.pk}/seats/",
        {
            "seats": 60,
            "reason": "Add-on order",
            "reason_code": "order_correction",
            "ticket_url": "https://tickets.test/42",
        },
        content_type="application/json",
        HTTP_X_REQUEST_ID="req-from-client-1",
    )
    assert response.status_code == 200, response.content
    assert response.json()["seats"] == 60
    event = AuditEvent.objects.get(action="provision.subscription_seats_changed")
    assert event.source == "api" and event.request_id == "req-from-client-1"
    assert event.changes == {"seats": [50, 60]}
    assert event.reason_code == "order_correction"


def test_seats_endpoint_files_a_request_for_a_big_increase(
    client_for, support_agent, support_lead, subscription
):
    from provision.models import FixRequest
    from provision.services import fix_request_approve

    response = client_for(support_agent).post(
        f"/api/subscriptions/{subscription.pk}/seats/",
        {"seats": 80, "reason": "Expansion"},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["action"] == "seats_change" and body["state"] == "pending"
    assert "20%" in body["why_approval"]
    subscription.refresh_from_db()
    assert subscription.seats == 50
    fix_request_approve(
        actor=support_lead, fix_request=FixRequest.objects.get(pk=body["fix_request"]), note="ok"
    )
    subscription.refresh_from_db()
    assert subscription.seats == 80


def test_seats_endpoint_refuses_account_manager(client_for, account_manager, subscription):
    response = client_for(account_manager).post(
        f"/api/subscriptions/{subscription.pk}/seats/",
        {"seats": 80, "reason": "r"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    subscription.refresh_from_db()
    assert subscription.seats == 50


@pytest.mark.parametrize(
    "body",
    [
        {"seats": 80},
        {"seats": -1, "reason": "r"},
        {"seats": "many", "reason": "r"},
        {"reason": "r"},
        {"seats": 10**12, "reason": "r"},
        {"seats": 80, "reason": "r", "ticket_url": "not a url"},
    ],
)
def test_seats_endpoint_rejects_bad_input_with_json_400(
    client_for, support_agent, subscription, body
):
    response = client_for(support_agent).post(
        f"/api/subscriptions/{subscription.pk}/seats/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    subscription.refresh_from_db()
    assert subscription.seats == 50


def test_seats_endpoint_rejects_malformed_json(client_for, support_agent, subscription):
    response = client_for(support_agent).post(
        f"/api/subscriptions/{subscription.pk}/seats/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert "error" in response.json()


def test_seats_endpoint_business_refusal_is_409(client_for, support_agent, subscription):
    response = client_for(support_agent).post(
        f"/api/subscriptions/{subscription.pk}/seats/",
        {"seats": 50, "reason": "same"},
        content_type="application/json",
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_change"


def test_unknown_api_object_is_json_404(client_for, support_agent):
    response = client_for(support_agent).get("/api/customers/999999/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_audit_events_are_read_only_in_the_api(client_for, admin_user, subscription):
    client = client_for(admin_user)
    event = AuditEvent.objects.first()
    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)(
            f"/api/audit-events/{event.pk}/", {}, content_type="application/json"
        )
        assert response.status_code == 405
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_audit_events_filter_by_customer(client_for, support_agent, subscription):
    other = subscription_factory()
    results = (
        client_for(support_agent)
        .get("/api/audit-events/", {"customer_id": subscription.customer_id})
        .json()["results"]
    )
    assert results and {r["customer"] for r in results} == {subscription.customer_id}
    assert other.customer_id not in {r["customer"] for r in results}


def test_openapi_schema_is_generated(client_for, support_agent):
    response = client_for(support_agent).get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/customers/" in paths and "/api/subscriptions/{id}/seats/" in paths
