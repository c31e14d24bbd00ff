"""/api/licenses/ and /api/activations/: who may read, what is exposed, and revoking."""

import pytest

from licenses import services
from licenses.choices import LicenseKind, LicenseStatus
from licenses.models import Activation
from provision.models import AuditEvent
from tests.factories import ContactFactory, CustomerFactory, InstanceFactory, subscription_factory

pytestmark = pytest.mark.django_db

LIST_ENDPOINTS = ["/api/licenses/", "/api/activations/"]


def licensable_subscription(**customer_fields):
    customer = CustomerFactory(**customer_fields)
    ContactFactory(customer=customer)
    return subscription_factory(customer)


@pytest.fixture
def license(subscription):
    return services.license_issue(
        actor=None, subscription=subscription, kind=LicenseKind.OFFLINE_CLOUD, reason="Order"
    )


@pytest.fixture
def activation(subscription):
    license = services.license_issue(actor=None, subscription=subscription, reason="Order")
    code, _ = services.activation_code_generate(actor=None, subscription=subscription, reason="x")
    return Activation.objects.create(
        activation_code=code,
        license=license,
        instance=InstanceFactory(hostname="gitlab.acme.test"),
        gitlab_version="17.5.1-ee",
        hostname="gitlab.acme.test",
    )


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_anonymous_gets_the_json_error_shape(client, url):
    response = client.get(url)
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] in ("not_authenticated", "permission_denied")


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_users_without_a_role_are_refused(client_for, outsider, url, license):
    response = client_for(outsider).get(url)
    assert response.status_code == 403 and "error" in response.json()


def test_neither_the_list_nor_one_license_carries_the_key(
    client_for, account_manager, license, subscription
):
    client = client_for(account_manager)
    (row,) = client.get("/api/licenses/").json()["results"]
    assert "key" not in row and "attributes" not in row
    assert row["id"] == license.pk and row["subscription_name"] == subscription.name
    assert row["customer"] == subscription.customer_id and row["key_sha256"] == license.key_sha256

    response = client.get(f"/api/licenses/{license.pk}/")
    detail = response.json()
    assert "key" not in detail
    assert detail["key_sha256"] == license.key_sha256
    assert detail["attributes"] == license.attributes  # the decoded facts stay
    assert detail["signing_key"] == license.signing_key.fingerprint
    assert detail["superseded_by"] is None
    for body in (client.get("/api/licenses/").content, response.content):
        for line in license.key.splitlines():
            if len(line) > 16:
                assert line.encode() not in body


def test_unknown_license_is_a_json_404(client_for, support_agent):
    response = client_for(support_agent).get("/api/licenses/999999/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"kind": "offline_cloud"}, ["offline"]),
        ({"kind": "legacy"}, []),
        ({"status": "superseded"}, ["first"]),
        ({"q": "initech"}, ["initech"]),
        ({"q": "ops@initech.test"}, ["initech"]),
    ],
)
def test_filters_are_the_pages_filters(client_for, support_agent, subscription, params, expected):
    first = services.license_issue(actor=None, subscription=subscription, reason="x")
    offline = services.license_issue(
        actor=None, subscription=subscription, kind=LicenseKind.OFFLINE_CLOUD, reason="x"
    )
    other_customer = CustomerFactory(name="Initech")
    ContactFactory(customer=other_customer, email="ops@initech.test")
    initech = services.license_issue(
        actor=None, subscription=subscription_factory(other_customer), reason="x"
    )
    names = {first.pk: "first", offline.pk: "offline", initech.pk: "initech"}
    results = client_for(support_agent).get("/api/licenses/", params).json()["results"]
    assert sorted(names[row["id"]] for row in results) == sorted(expected)


def test_search_by_key_hash_and_by_subscription(client_for, support_agent, license, subscription):
    client = client_for(support_agent)
    by_hash = client.get("/api/licenses/", {"q": license.key_sha256.upper()}).json()
    assert [row["id"] for row in by_hash["results"]] == [license.pk]
    by_id = client.get("/api/licenses/", {"subscription_id": subscription.pk}).json()
    assert [row["id"] for row in by_id["results"]] == [license.pk]
    expiring = client.get("/api/licenses/", {"expires_before": "2000-01-01"}).json()
    assert expiring["count"] == 0


def test_revoke_through_the_api_waits_for_a_second_person(
    client_for, support_agent, support_lead, admin_user, license
):
    from provision.models import FixRequest
    from provision.services import fix_request_approve

    response = client_for(support_lead).post(
        f"/api/licenses/{license.pk}/revoke/",
        {"reason": "Chargeback", "ticket_url": "https://t.test/7", "reason_code": "security"},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["action"] == "license_revoke" and body["state"] == "pending"
    assert body["url"] == f"/approvals/{body['fix_request']}/"
    license.refresh_from_db()
    assert license.status == LicenseStatus.ISSUED  # nothing until another lead approves
    fix_request = FixRequest.objects.get(pk=body["fix_request"])
    fix_request_approve(actor=admin_user, fix_request=fix_request, note="Chargeback confirmed")
    license.refresh_from_db()
    assert license.status == LicenseStatus.REVOKED
    event = AuditEvent.objects.get(action="licenses.license_revoked")
    assert (event.actor, event.reason, event.reason_code) == (admin_user, "Chargeback", "security")
    assert event.metadata["requested_by"] == support_lead.username
    assert event.metadata["approved_by"] == admin_user.username


def test_account_managers_may_not_ask_to_revoke(client_for, account_manager, license):
    response = client_for(account_manager).post(
        f"/api/licenses/{license.pk}/revoke/", {"reason": "x"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    license.refresh_from_db()
    assert license.status == LicenseStatus.ISSUED


def test_revoke_needs_a_reason(client_for, support_lead, license):
    response = client_for(support_lead).post(
        f"/api/licenses/{license.pk}/revoke/", {}, content_type="application/json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and "reason" in error["fields"]
    license.refresh_from_db()
    assert license.status == LicenseStatus.ISSUED


def test_asking_twice_is_a_conflict(client_for, support_agent, license):
    client = client_for(support_agent)
    url = f"/api/licenses/{license.pk}/revoke/"
    assert client.post(url, {"reason": "x"}, content_type="application/json").status_code == 202
    response = client.post(url, {"reason": "x"}, content_type="application/json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "already_requested"


def test_activations_list_and_filters(client_for, account_manager, activation, subscription):
    client = client_for(account_manager)
    (row,) = client.get("/api/activations/").json()["results"]
    assert row["subscription_name"] == subscription.name
    assert row["code_hint"] == activation.activation_code.code_hint
    assert row["instance_uuid"] == str(activation.instance.instance_id)
    for params in (
        {"q": "gitlab.acme"},
        {"q": str(activation.instance.instance_id)},
        {"subscription_id": subscription.pk},
        {"status": "active"},
    ):
        assert client.get("/api/activations/", params).json()["count"] == 1, params
    assert client.get("/api/activations/", {"status": "deactivated"}).json()["count"] == 0


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_list_query_count_does_not_grow(
    client_for, support_agent, url, django_assert_max_num_queries
):
    client = client_for(support_agent)

    def add(n):
        for _ in range(n):
            subscription = licensable_subscription()
            license = services.license_issue(actor=None, subscription=subscription, reason="x")
            code, _ = services.activation_code_generate(
                actor=None, subscription=subscription, reason="x"
            )
            Activation.objects.create(
                activation_code=code, license=license, instance=InstanceFactory()
            )

    add(2)
    with django_assert_max_num_queries(6) as small:
        client.get(url)
    add(15)
    with django_assert_max_num_queries(6) as large:
        assert client.get(url).json()["count"] == 17
    assert len(large.captured_queries) == len(small.captured_queries)


def test_the_schema_documents_the_license_endpoints(client_for, support_agent):
    paths = client_for(support_agent).get("/api/schema/", {"format": "json"}).json()["paths"]
    assert {"/api/licenses/", "/api/licenses/{id}/", "/api/licenses/{id}/revoke/"} <= set(paths)
    assert "/api/activations/" in paths
