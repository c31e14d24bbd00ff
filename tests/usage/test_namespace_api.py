"""The GitLab.com seat-usage batch endpoint (integration tokens only), the namespace operation
endpoints (support roles) and the integration_token_create command."""

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from provision.choices import Deployment, Role
from provision.models import AuditEvent
from tests.factories import NamespaceFactory, UserFactory, subscription_factory
from usage import services
from usage.models import Namespace, SeatReport, SubscriptionUsageDaily

pytestmark = pytest.mark.django_db

URL = "/api/namespaces/seat-usage/"
TICKET = "https://gitlab.zendesk.com/agent/tickets/123456"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def token():
    key, _ = services.integration_token_create(
        actor=None, username="gitlab-com-sync", reason="Test integration"
    )
    return key


@pytest.fixture
def machine(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def saas(customer):
    return subscription_factory(customer, deployment=Deployment.GITLAB_COM, seats=50)


@pytest.fixture
def linked(saas, support_agent):
    namespace = NamespaceFactory(full_path="acme-robotics", gitlab_namespace_id=4242)
    return services.namespace_associate(
        actor=support_agent, namespace=namespace, subscription=saas, reason="New order"
    )


def item(namespace_id, seats_in_use=52, max_seats_used=57, **extra):
    return {
        "namespace_id": namespace_id,
        "seats_in_use": seats_in_use,
        "max_seats_used": max_seats_used,
        **extra,
    }


# --- Who may push -------------------------------------------------------------------------------


def test_seat_usage_without_a_token_is_401_json(linked):
    response = APIClient().post(URL, [item(4242)], format="json")
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"
    assert not SeatReport.objects.exists()


def test_seat_usage_with_a_wrong_token_is_401(linked):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert client.post(URL, [item(4242)], format="json").status_code == 401


@pytest.mark.parametrize("persona", ["support_agent", "support_lead", "admin_user", "outsider"])
def test_a_staff_session_without_the_integration_role_is_403(request, persona, linked):
    client = APIClient()
    client.force_authenticate(None)
    client.force_login(request.getfixturevalue(persona))
    response = client.post(URL, [item(4242)], format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not SeatReport.objects.exists()


@pytest.mark.parametrize("url", ["/api/customers/", "/api/namespaces/", "/api/instances/"])
def test_an_integration_token_cannot_read_staff_endpoints(machine, url):
    response = machine.get(url)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_an_integration_account_cannot_open_staff_pages(client, token):
    from rest_framework.authtoken.models import Token

    user = Token.objects.get(key=token).user
    client.force_login(user)
    assert client.get(reverse("provision:home")).status_code == 403
    assert client.get(reverse("provision:customer_list")).status_code == 403


def test_an_integration_account_in_a_staff_group_by_mistake_still_reads_nothing(machine, token):
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    user = Token.objects.get(key=token).user
    user.groups.add(Group.objects.get_or_create(name=Role.SUPPORT)[0])
    assert machine.get("/api/customers/").status_code == 403


# --- The batch ----------------------------------------------------------------------------------


def test_seat_usage_updates_known_namespaces_and_reports_unknown_ones(machine, linked, saas):
    as_of = timezone.now().replace(microsecond=0)
    response = machine.post(
        URL,
        [
            item(4242, billable_members=51, as_of=as_of.isoformat(), full_path="acme-robotics"),
            item(777_777, seats_in_use=1, max_seats_used=1),
        ],
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["counts"] == {"updated": 1, "unknown": 1}
    known, unknown = body["results"]
    assert known == {
        "namespace_id": 4242,
        "status": "updated",
        "seats_in_use": 52,
        "max_seats_used": 57,
        "seats_owed": 7,
        "subscription": saas.name,
    }
    assert unknown["status"] == "unknown" and unknown["namespace_id"] == 777_777
    assert not Namespace.objects.filter(gitlab_namespace_id=777_777).exists()
    report = SeatReport.objects.get(namespace=linked)
    assert report.billable_users == 51
    assert SubscriptionUsageDaily.objects.get(subscription=saas).overage == 7


def test_resending_a_batch_is_idempotent(machine, linked):
    batch = [item(4242, as_of=timezone.now().isoformat())]
    first = machine.post(URL, batch, format="json").json()
    second = machine.post(URL, batch, format="json").json()
    assert first["counts"] == {"updated": 1}
    assert second["counts"] == {"unchanged": 1}
    assert second["results"][0]["seats_owed"] == first["results"][0]["seats_owed"] == 7
    assert SeatReport.objects.filter(namespace=linked).count() == 1
    assert SubscriptionUsageDaily.objects.count() == 1


def test_an_older_push_is_reported_stale(machine, linked):
    now = timezone.now()
    machine.post(URL, [item(4242, as_of=now.isoformat())], format="json")
    older = (now - dt.timedelta(hours=3)).isoformat()
    body = machine.post(URL, [item(4242, 1, 1, as_of=older)], format="json").json()
    assert body["results"][0]["status"] == "stale"
    linked.refresh_from_db()
    assert linked.seats_in_use == 52


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param([item(4242), item(4243, seats_in_use=-1)], id="negative-count"),
        pytest.param([item(4242), {"namespace_id": 4243}], id="missing-figures"),
        pytest.param([item(4242), item("abc")], id="id-not-a-number"),
        pytest.param([item(4242), item(4242, 1, 1)], id="duplicate-namespace"),
        pytest.param(
            [item(4242, as_of=(timezone.now() + dt.timedelta(days=2)).isoformat())],
            id="dated-in-the-future",
        ),
        pytest.param([item(4242, as_of="yesterday")], id="bad-date"),
        pytest.param([], id="empty"),
        pytest.param(item(4242), id="not-a-list"),
    ],
)
def test_an_invalid_batch_is_400_json_and_writes_nothing(machine, linked, payload):
    response = machine.post(URL, payload, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "fields" in response.json()["error"]
    linked.refresh_from_db()
    assert linked.seats_in_use == 0
    assert not SeatReport.objects.exists()


def test_the_field_errors_point_at_the_bad_item(machine, linked):
    response = machine.post(URL, [item(4242), item(4243, seats_in_use=-1)], format="json")
    fields = response.json()["error"]["fields"]
    # Keyed by the item's position; valid items are not listed.
    assert list(fields) == ["1"]
    assert "seats_in_use" in fields["1"]


def test_a_batch_over_1000_namespaces_is_refused(machine):
    response = machine.post(URL, [item(n) for n in range(1, 1002)], format="json")
    assert response.status_code == 400


def test_a_full_batch_of_1000_is_accepted(machine, linked):
    batch = [item(4242)] + [item(n, 1, 1) for n in range(1, 1000)]
    response = machine.post(URL, batch, format="json")
    assert response.status_code == 200
    assert response.json()["counts"] == {"updated": 1, "unknown": 999}


def test_get_is_not_allowed_on_seat_usage(machine):
    assert machine.get(URL).status_code == 405


# --- Namespace operations -----------------------------------------------------------------------


@pytest.fixture
def free_namespace(db):
    return NamespaceFactory(full_path="acme-free", gitlab_namespace_id=5151)


def test_associate_by_subscription_name(client_for, support_agent, free_namespace, saas):
    response = client_for(support_agent).post(
        f"/api/namespaces/{free_namespace.pk}/associate/",
        {"subscription_name": saas.name, "reason": "New order", "ticket_url": TICKET},
        content_type="application/json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["subscription"] == saas.pk
    assert AuditEvent.objects.filter(action="usage.namespace_associated").count() == 1


def test_associate_by_subscription_id(client_for, support_agent, free_namespace, saas):
    response = client_for(support_agent).post(
        f"/api/namespaces/{free_namespace.pk}/associate/",
        {"subscription_id": saas.pk, "reason": "New order"},
        content_type="application/json",
    )
    assert response.status_code == 200
    free_namespace.refresh_from_db()
    assert free_namespace.subscription == saas


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "r"},
        {"subscription_id": 1, "subscription_name": "A-S00000001", "reason": "r"},
        {"subscription_name": "A-S99999999", "reason": "r"},
        {"subscription_name": "A-S99999999"},
    ],
)
def test_associate_input_errors_are_400(client_for, support_agent, free_namespace, body):
    response = client_for(support_agent).post(
        f"/api/namespaces/{free_namespace.pk}/associate/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_associate_for_account_managers_is_403_and_for_anonymous_401_or_403(
    client, client_for, account_manager, free_namespace, saas
):
    body = {"subscription_id": saas.pk, "reason": "r"}
    url = f"/api/namespaces/{free_namespace.pk}/associate/"
    assert client.post(url, body, content_type="application/json").status_code in (401, 403)
    response = client_for(account_manager).post(url, body, content_type="application/json")
    assert response.status_code == 403
    free_namespace.refresh_from_db()
    assert free_namespace.subscription is None


def test_force_associate_files_a_four_eyes_request_that_a_lead_approves(
    client_for, support_agent, support_lead, linked
):
    from provision.models import FixRequest
    from provision.services import fix_request_approve

    other = subscription_factory(deployment=Deployment.GITLAB_COM)
    body = {"subscription_id": other.pk, "reason": "r", "ticket_url": TICKET, "force": True}
    url = f"/api/namespaces/{linked.pk}/associate/"
    unforced = client_for(support_lead).post(
        url, {**body, "force": False}, content_type="application/json"
    )
    assert unforced.status_code == 409
    assert unforced.json()["error"]["code"] == "namespace_occupied"
    assert unforced.json()["error"]["linked_subscription"] == linked.subscription.name
    no_ticket = client_for(support_agent).post(
        url, {**body, "ticket_url": ""}, content_type="application/json"
    )
    assert no_ticket.status_code == 400
    filed = client_for(support_agent).post(url, body, content_type="application/json")
    assert filed.status_code == 202, filed.content
    assert filed.json()["state"] == "pending"
    linked.refresh_from_db()
    assert linked.subscription != other  # nothing moves before the approval
    again = client_for(support_agent).post(url, body, content_type="application/json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_requested"
    fix_request_approve(
        actor=support_lead,
        fix_request=FixRequest.objects.get(pk=filed.json()["fix_request"]),
        note="Owner confirmed",
    )
    linked.refresh_from_db()
    assert linked.subscription == other


def test_disassociate_endpoint(client_for, support_agent, account_manager, linked):
    url = f"/api/namespaces/{linked.pk}/disassociate/"
    body = {"reason": "Clear Subscription", "ticket_url": TICKET}
    assert (
        client_for(account_manager).post(url, body, content_type="application/json").status_code
        == 403
    )
    response = client_for(support_agent).post(url, body, content_type="application/json")
    assert response.status_code == 200
    assert response.json()["subscription"] is None
    assert (
        client_for(support_agent).post(url, {}, content_type="application/json").status_code == 400
    )


def test_reset_max_seats_endpoint_is_for_leads(client_for, support_agent, support_lead, linked):
    services.namespace_seats_update(
        namespace=linked, seats_in_use=48, max_seats_used=62, as_of=timezone.now()
    )
    url = f"/api/namespaces/{linked.pk}/reset-max-seats/"
    body = {"reason": "Waiver", "approval_url": "https://gitlab.my.salesforce.com/500ABC"}
    assert (
        client_for(support_agent).post(url, body, content_type="application/json").status_code
        == 403
    )
    missing = client_for(support_lead).post(url, {"reason": "r"}, content_type="application/json")
    assert missing.status_code == 400
    assert "approval_url" in missing.json()["error"]["fields"]
    response = client_for(support_lead).post(url, body, content_type="application/json")
    assert response.status_code == 200
    assert (response.json()["max_seats_used"], response.json()["seats_owed"]) == (48, 0)


def test_namespace_operations_on_a_missing_namespace_are_404(client_for, support_lead):
    response = client_for(support_lead).post(
        "/api/namespaces/999999/disassociate/", {"reason": "r"}, content_type="application/json"
    )
    assert response.status_code == 404


# --- integration_token_create -------------------------------------------------------------------


def run_command(*args):
    out, err = StringIO(), StringIO()
    call_command("integration_token_create", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_the_token_command_prints_a_working_token_once(linked):
    token, note = run_command("--username", "gitlab-com-seat-sync")
    assert len(token) == 40
    assert "shown this once" in note
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post(URL, [item(4242)], format="json").status_code == 200

    from django.contrib.auth import get_user_model

    account = get_user_model().objects.get(username="gitlab-com-seat-sync")
    assert not account.has_usable_password()
    assert list(account.groups.values_list("name", flat=True)) == [Role.INTEGRATION]
    event = AuditEvent.objects.get(action="usage.integration_token_created")
    assert event.source == "command"
    assert token not in str(event.changes) and event.changes["token"][1] == f"…{token[-4:]}"


def test_the_token_command_refuses_to_replace_a_token_without_rotate():
    first, _ = run_command("--username", "gitlab-com-seat-sync")
    with pytest.raises(CommandError, match="already has a token"):
        run_command("--username", "gitlab-com-seat-sync")
    second, _ = run_command("--username", "gitlab-com-seat-sync", "--rotate")
    assert second != first
    old = APIClient()
    old.credentials(HTTP_AUTHORIZATION=f"Token {first}")
    assert old.post(URL, [item(1)], format="json").status_code == 401


def test_the_token_command_never_turns_a_staff_login_into_an_integration_account(support_agent):
    with pytest.raises(CommandError, match="staff login"):
        run_command("--username", support_agent.username)
    assert not support_agent.groups.filter(name=Role.INTEGRATION).exists()


def test_the_token_command_refuses_an_ordinary_user():
    UserFactory(username="someone", roles=[])
    with pytest.raises(CommandError, match="not an integration account"):
        run_command("--username", "someone")


def test_only_admins_create_integration_tokens_through_the_service(support_lead):
    from provision.exceptions import ApplicationError

    with pytest.raises(ApplicationError) as refused:
        services.integration_token_create(actor=support_lead, username="x", reason="r")
    assert refused.value.code == "forbidden"


def test_the_namespace_list_filters_on_seats_owed(client_for, account_manager, linked):
    services.namespace_seats_update(
        namespace=linked, seats_in_use=48, max_seats_used=62, as_of=timezone.now()
    )
    NamespaceFactory(full_path="paid-up")
    client = client_for(account_manager)
    owing = client.get("/api/namespaces/", {"owes_seats": "true"}).json()["results"]
    assert [(row["full_path"], row["seats_owed"]) for row in owing] == [("acme-robotics", 12)]
    assert client.get("/api/namespaces/", {"owes_seats": "false"}).json()["count"] == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_batch_sent_ten_times_at_once_writes_one_report(support_agent):
    """Each request on its own connection, as gunicorn workers run them. PostgreSQL only:
    SQLite serialises writers with one lock, so it has no row-level race to test."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("the row-level race is PostgreSQL's (CI runs it there)")
    saas = subscription_factory(deployment=Deployment.GITLAB_COM, seats=50)
    namespace = NamespaceFactory(gitlab_namespace_id=4242)
    services.namespace_associate(
        actor=support_agent, namespace=namespace, subscription=saas, reason="New order"
    )
    key, _ = services.integration_token_create(actor=None, username="sync", reason="Test")
    batch = [item(4242, as_of=timezone.now().isoformat())]
    barrier = threading.Barrier(10)

    def send(_):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        try:
            barrier.wait(timeout=30)
            response = client.post(URL, batch, format="json")
            return response.status_code, response.json()["results"][0]["status"]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(send, range(10)))

    assert sorted(results) == [(200, "unchanged")] * 9 + [(200, "updated")]
    assert SeatReport.objects.filter(namespace=namespace).count() == 1
    assert SubscriptionUsageDaily.objects.get(subscription=saas).overage == 7
    assert (
        AuditEvent.objects.filter(
            action="provision.provisioning_step_changed", changes__first_usage=["pending", "done"]
        ).count()
        == 1
    )
