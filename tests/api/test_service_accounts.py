"""Service accounts: API tokens with a staff role (``service_account_create`` and its command).
A token with role X gets exactly what a person with role X gets."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from provision import permissions, services
from provision.choices import Role
from provision.exceptions import ApplicationError
from provision.models import AuditEvent
from tests.api.conftest import api_client, token_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def run_command(*args):
    out, err = StringIO(), StringIO()
    call_command("service_account_create", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_the_command_prints_a_working_token_once(subscription):
    token, note = run_command("--username", "renewals-board", "--role", "account_manager")
    assert len(token) == 40 and "shown this once" in note
    client = api_client(token)
    assert client.get("/api/customers/").status_code == 200
    account = get_user_model().objects.get(username="renewals-board")
    assert not account.has_usable_password()
    assert list(account.groups.values_list("name", flat=True)) == [Role.ACCOUNT_MANAGER]
    event = AuditEvent.objects.get(action="provision.service_account_token_created")
    assert event.source == "command" and event.actor is None
    assert token not in str(event.changes) and token not in str(event.metadata)
    assert event.changes == {"token": [None, f"…{token[-4:]}"], "role": [None, "account_manager"]}


def test_the_command_rotates_only_when_asked_and_may_change_the_role(subscription):
    first, _ = run_command("--username", "helpdesk-bot", "--role", "support")
    with pytest.raises(CommandError, match="already has a token"):
        run_command("--username", "helpdesk-bot", "--role", "support")
    second, _ = run_command("--username", "helpdesk-bot", "--role", "account_manager", "--rotate")
    assert second != first
    assert api_client(first).get("/api/customers/").status_code in (401, 403)
    account = get_user_model().objects.get(username="helpdesk-bot")
    assert permissions.roles_of(account) == {Role.ACCOUNT_MANAGER}
    event = AuditEvent.objects.filter(action="provision.service_account_token_created").latest("pk")
    assert event.changes["role"] == ["support", "account_manager"]
    assert event.metadata["rotated"] is True


def test_the_command_refuses_an_unknown_role():
    with pytest.raises(CommandError):
        run_command("--username", "x", "--role", "integration")


@pytest.mark.parametrize("persona", ["support_agent", "admin_user", "outsider"])
def test_a_persons_login_never_becomes_a_service_account(request, persona):
    user = request.getfixturevalue(persona)
    with pytest.raises(CommandError, match="person's login"):
        run_command("--username", user.username, "--role", "support")
    assert not AuditEvent.objects.filter(action="provision.service_account_token_created")


def test_an_integration_account_stays_one():
    from usage.services import integration_token_create

    integration_token_create(actor=None, username="gitlab-com", reason="Test")
    with pytest.raises(CommandError, match="not a service account"):
        run_command("--username", "gitlab-com", "--role", "support", "--rotate")


def test_only_admins_create_service_accounts(support_lead, admin_user):
    with pytest.raises(ApplicationError) as refused:
        services.service_account_create(
            actor=support_lead, username="x", role="support", reason="r"
        )
    assert refused.value.code == "forbidden"
    key, created = services.service_account_create(
        actor=admin_user, username="x", role="support", reason="For the helpdesk bot"
    )
    assert created and len(key) == 40
    event = AuditEvent.objects.get(action="provision.service_account_token_created")
    assert event.actor == admin_user and event.reason == "For the helpdesk bot"


def test_the_roles_are_the_staff_roles():
    assert set(services.SERVICE_ACCOUNT_ROLES) == permissions.STAFF_ROLES


def test_a_service_account_cannot_log_in_to_the_console(client, subscription):
    token_for("svc-support", "support")
    assert not client.login(username="svc-support", password="")
    assert client.get("/").status_code == 302


# --- A token gets what a person with the same role gets ------------------------------------------

READS = ["/api/customers/", "/api/subscriptions/", "/api/licenses/", "/api/usage-rollups/"]


@pytest.mark.parametrize("role", sorted(permissions.STAFF_ROLES))
def test_every_staff_role_token_reads_what_the_person_reads(role, client_for, subscription):
    person = UserFactory(username=f"person-{role}", roles=[role])
    token = api_client(token_for(f"svc-{role}", role))
    for url in READS:
        by_token, by_person = token.get(url), client_for(person).get(url)
        assert by_token.status_code == by_person.status_code == 200, url
        assert by_token.json() == by_person.json()


@pytest.mark.parametrize(
    "role, expected",
    [("account_manager", 403), ("support", 200), ("support_lead", 200), ("admin", 200)],
)
def test_write_endpoints_follow_the_tokens_role(role, expected, client_for, subscription):
    person = UserFactory(username=f"person-{role}", roles=[role])
    token = api_client(token_for(f"svc-{role}", role))
    body = {"seats": 52, "reason": "Add-on order"}
    url = f"/api/subscriptions/{subscription.pk}/seats/"
    response = token.post(url, body, format="json")
    assert response.status_code == expected, response.content
    if expected == 200:
        subscription.refresh_from_db()
        assert subscription.seats == 52
        event = AuditEvent.objects.get(action="provision.subscription_seats_changed")
        assert event.actor.username == f"svc-{role}" and event.source == "api"
        body["seats"] = 50
    person_response = client_for(person).post(url, body, content_type="application/json")
    assert person_response.status_code == expected


def test_an_account_manager_token_cannot_post_a_fix(subscription):
    client = api_client(token_for("svc-am", "account_manager"))
    response = client.post(
        f"/api/fixes/seats_change/{subscription.pk}/",
        {"params": {"seats": 52}, "reason": "r"},
        format="json",
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    subscription.refresh_from_db()
    assert subscription.seats == 50


def test_a_support_token_posts_a_fix(subscription):
    client = api_client(token_for("svc-support", "support"))
    response = client.post(
        f"/api/fixes/seats_change/{subscription.pk}/",
        {"params": {"seats": 52}, "reason": "Add-on order"},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["message"] == f"Seats on {subscription.name} changed from 50 to 52."


@pytest.mark.parametrize("url", READS + ["/api/fix-requests/", "/api/audit-events/"])
def test_an_integration_token_is_still_refused_on_staff_endpoints(url):
    from usage.services import integration_token_create

    key, _ = integration_token_create(actor=None, username="gitlab-com", reason="Test")
    response = api_client(key).get(url)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_a_wrong_token_is_refused():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    response = client.get("/api/customers/")
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] == "authentication_failed"
