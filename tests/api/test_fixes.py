"""The support fixes through the API (``/api/fixes/{action}/{pk}/``, ``.../preview/``) and the
four-eyes requests (``/api/fix-requests/``): the same services as the console pages, so the
same previews, permissions, reasons, audit events and approvals. Driven with service-account
tokens on the console tests' small book (``tests/console/world.py``)."""

from __future__ import annotations

import re

import pytest
from rest_framework.authtoken.models import Token

from provision.choices import FixRequestState, ReasonCode
from provision.fixes import FIXES
from provision.models import AuditEvent, FixRequest, Subscription
from provision.services import subscription_seats_change
from tests.api.conftest import api_client, token_for
from tests.console.test_fixes import FOUR_EYES, LEAD_ONLY, _case
from tests.console.world import build_world

pytestmark = pytest.mark.django_db

REASON = {
    "reason_code": ReasonCode.CUSTOMER_REQUEST,
    "reason": "Customer asked on the ticket",
    "ticket_url": "https://support.test/tickets/4242",
}


@pytest.fixture
def world(db):
    return build_world()


@pytest.fixture
def agent():
    return api_client(token_for("svc-support", "support"))


@pytest.fixture
def lead():
    return api_client(token_for("svc-lead", "support_lead"))


@pytest.fixture
def second_lead():
    return api_client(token_for("svc-lead-2", "support_lead"))


@pytest.fixture
def manager():
    return api_client(token_for("svc-am", "account_manager"))


def account_of(client):
    key = client._credentials["HTTP_AUTHORIZATION"].split()[1]
    return Token.objects.get(key=key).user


def fix_url(key, target, preview=False):
    return f"/api/fixes/{key}/{target.pk}/" + ("preview/" if preview else "")


def preview(client, key, target, params):
    response = client.post(fix_url(key, target, True), {"params": params}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def apply(client, key, target, params, **extra):
    body = {"params": params, **REASON, **extra}
    return client.post(fix_url(key, target), body, format="json")


@pytest.mark.parametrize("key", sorted(set(FIXES) - FOUR_EYES))
def test_every_fix_previews_then_runs_with_one_audit_record(key, world, agent, lead):
    client = lead if key in LEAD_ONLY else agent
    target, params, done = _case(world, key)
    shown = preview(client, key, target, params)
    assert shown["action"] == key and shown["target_id"] == str(target.pk)
    assert re.fullmatch(r"[0-9a-f]{64}", shown["preview_digest"])
    assert shown["approval"] == ""
    assert not done(world), "a preview changes nothing"

    before = set(AuditEvent.objects.values_list("pk", flat=True))
    response = apply(client, key, target, params, preview_digest=shown["preview_digest"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["action"] == key and body["message"] and body["url"].startswith("/")
    assert done(world)
    new = list(AuditEvent.objects.exclude(pk__in=before))
    own = [event for event in new if event.action == FIXES[key].audit_action]
    assert len(own) == 1, [e.action for e in new]
    event = own[0]
    assert event.actor == account_of(client)
    assert event.source == "api"
    assert event.reason_code == ReasonCode.CUSTOMER_REQUEST
    assert event.metadata["fix"] == key


@pytest.mark.parametrize("key", sorted(FOUR_EYES))
def test_four_eyes_fixes_file_a_request_a_second_lead_approves(
    key, world, agent, lead, second_lead
):
    target, params, done = _case(world, key)
    shown = preview(agent, key, target, params)
    assert shown["approval"], "the preview says a second person must approve"
    response = apply(agent, key, target, params, preview_digest=shown["preview_digest"])
    assert response.status_code == 202, response.content
    filed = response.json()
    assert filed["action"] == key and filed["state"] == "pending"
    assert not done(world)

    detail = lead.get(f"/api/fix-requests/{filed['fix_request']}/").json()
    assert detail["preview"] == shown["preview"] and detail["params"] == params
    assert detail["requested_by"] == "svc-support"
    approved = lead.post(
        f"/api/fix-requests/{filed['fix_request']}/approve/", {"note": "Checked"}, format="json"
    )
    assert approved.status_code == 200, approved.content
    body = approved.json()
    assert body["fix_request"]["state"] == FixRequestState.DONE
    assert body["fix_request"]["decided_by"] == "svc-lead" and body["message"]
    assert done(world)
    event = AuditEvent.objects.filter(action=FIXES[key].audit_action).latest("pk")
    assert event.metadata["requested_by"] == "svc-support"
    assert event.metadata["approved_by"] == "svc-lead"


def test_a_big_seat_increase_is_202_and_the_requester_cannot_approve_it(world, lead):
    response = apply(lead, "seats_change", world.offline, {"seats": 80})
    assert response.status_code == 202
    request_id = response.json()["fix_request"]
    refused = lead.post(f"/api/fix-requests/{request_id}/approve/", {}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "four_eyes"
    assert Subscription.objects.get(pk=world.offline.pk).seats == 50


@pytest.mark.parametrize("key", sorted(FIXES))
def test_an_account_manager_token_is_refused_every_fix(key, world, manager):
    target, params, done = _case(world, key)
    events = AuditEvent.objects.count()
    for url in (fix_url(key, target, True), fix_url(key, target)):
        response = manager.post(url, {"params": params, **REASON}, format="json")
        assert response.status_code == 403, response.content
        assert response.json()["error"]["code"] == "forbidden"
    assert not done(world)
    assert AuditEvent.objects.count() == events
    assert not FixRequest.objects.exists()


@pytest.mark.parametrize("key", sorted(LEAD_ONLY))
def test_lead_only_fixes_are_refused_to_a_support_token(key, world, agent):
    target, params, done = _case(world, key)
    assert apply(agent, key, target, params).status_code == 403
    assert not done(world)


def test_integration_and_anonymous_callers_are_refused(world, client):
    from usage.services import integration_token_create

    key, _ = integration_token_create(actor=None, username="gitlab-com", reason="Test")
    machine = api_client(key)
    url = fix_url("seats_change", world.offline)
    body = {"params": {"seats": 55}, **REASON}
    assert machine.post(url, body, format="json").status_code == 403
    assert client.post(url, body, content_type="application/json").status_code in (401, 403)
    assert Subscription.objects.get(pk=world.offline.pk).seats == 50


def test_unknown_fix_or_target_is_a_json_404(world, agent):
    for url in (
        "/api/fixes/drop_database/1/",
        f"/api/fixes/seats_change/{world.offline.pk + 10_000}/",
        "/api/fixes/seats_change/abc/",
        "/api/fixes/seats_change/99999999999999999999999/preview/",
    ):
        response = agent.post(url, {"params": {"seats": 5}, **REASON}, format="json")
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "key, params, field",
    [
        ("seats_change", {"seats": -3}, "seats"),
        ("seats_change", {"seats": "many"}, "seats"),
        ("seats_change", {}, "seats"),
        ("seats_change", {"seats": [55]}, "seats"),
        ("namespace_associate", {"subscription": "not a name"}, "subscription"),
        ("license_extend", {"expires_on": 20300101}, "expires_on"),
        ("step_mark_done", {"evidence": "nul\x00byte"}, "evidence"),
    ],
)
def test_the_fixs_own_form_validates_params_as_a_json_400(world, agent, key, params, field):
    target = {
        "seats_change": world.offline,
        "namespace_associate": world.free_namespace,
        "license_extend": world.offline,
        "step_mark_done": world.delivered_step,
    }[key]
    events = AuditEvent.objects.count()
    for url in (fix_url(key, target, True), fix_url(key, target)):
        response = agent.post(url, {"params": params, **REASON}, format="json")
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "invalid" and field in error["fields"]["params"]
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_fix_needs_a_reason(world, agent, reason):
    body = {"params": {"seats": 55}, "reason_code": "customer_request"}
    if reason is not None:
        body["reason"] = reason
    response = agent.post(fix_url("seats_change", world.offline), body, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()["error"]["fields"]
    assert Subscription.objects.get(pk=world.offline.pk).seats == 50


def test_business_refusals_are_409(world, agent):
    same = agent.post(
        fix_url("seats_change", world.offline, True), {"params": {"seats": 50}}, format="json"
    )
    assert same.status_code == 409 and same.json()["error"]["code"] == "no_change"
    saas = agent.post(
        fix_url("license_extend", world.saas, True),
        {"params": {"expires_on": "2030-01-01"}},
        format="json",
    )
    assert saas.status_code == 409 and saas.json()["error"]["code"] == "not_applicable"


def test_a_stale_preview_is_a_409_with_the_new_preview(world, agent, support_agent):
    shown = preview(agent, "seats_change", world.offline, {"seats": 55})
    subscription_seats_change(
        actor=support_agent, subscription=world.offline, seats=52, reason="Meanwhile"
    )
    response = apply(
        agent, "seats_change", world.offline, {"seats": 55}, preview_digest=shown["preview_digest"]
    )
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert error["preview"]["changes"][0][1:] == ["52", "55"]
    assert Subscription.objects.get(pk=world.offline.pk).seats == 52
    again = apply(
        agent, "seats_change", world.offline, {"seats": 55}, preview_digest=error["preview_digest"]
    )
    assert again.status_code == 200
    assert Subscription.objects.get(pk=world.offline.pk).seats == 55


def test_a_new_activation_code_is_emailed_never_returned(world, agent):
    response = apply(agent, "activation_code_resend", world.online, {})
    assert response.status_code == 200
    assert set(response.json()) == {"action", "target_type", "target_id", "message", "url"}
    assert not re.search(r"\b[A-Za-z0-9]{24}\b", response.content.decode())


# --- Four-eyes requests -------------------------------------------------------------------------


@pytest.fixture
def filed(world, agent):
    response = apply(agent, "license_revoke", world.offline_license, {})
    assert response.status_code == 202
    return FixRequest.objects.get(pk=response.json()["fix_request"])


def test_fix_requests_list_uses_the_pages_filters(filed, manager):
    pending = manager.get("/api/fix-requests/", {"state": "pending"}).json()
    assert [row["id"] for row in pending["results"]] == [filed.pk]
    assert manager.get("/api/fix-requests/", {"state": "done"}).json()["count"] == 0
    by_customer = manager.get("/api/fix-requests/", {"customer_id": filed.customer_id}).json()
    assert by_customer["count"] == 1


def test_a_lead_rejects_with_a_reason(filed, lead):
    url = f"/api/fix-requests/{filed.pk}/reject/"
    assert lead.post(url, {}, format="json").status_code == 400
    response = lead.post(url, {"reason": "Not a chargeback"}, format="json")
    assert response.status_code == 200
    assert response.json()["state"] == FixRequestState.REJECTED
    assert AuditEvent.objects.filter(action="provision.fix_request_rejected").count() == 1
    again = lead.post(url, {"reason": "twice"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_pending"


def test_only_the_requester_withdraws(filed, agent, lead):
    url = f"/api/fix-requests/{filed.pk}/withdraw/"
    refused = lead.post(url, {"reason": "Not mine"}, format="json")
    assert refused.status_code == 403
    response = agent.post(url, {"reason": "Asked by mistake"}, format="json")
    assert response.status_code == 200
    assert response.json()["state"] == FixRequestState.WITHDRAWN


@pytest.mark.parametrize("verb", ["approve", "reject"])
def test_agents_and_account_managers_cannot_decide(filed, agent, manager, verb):
    for client in (agent, manager):
        response = client.post(
            f"/api/fix-requests/{filed.pk}/{verb}/", {"reason": "x"}, format="json"
        )
        assert response.status_code == 403
    filed.refresh_from_db()
    assert filed.state == FixRequestState.PENDING


def test_approving_after_the_target_changed_is_a_409(world, agent, lead, support_agent):
    response = apply(agent, "seats_change", world.offline, {"seats": 80})
    assert response.status_code == 202
    request_id = response.json()["fix_request"]
    subscription_seats_change(
        actor=support_agent, subscription=world.offline, seats=52, reason="Meanwhile"
    )
    refused = lead.post(f"/api/fix-requests/{request_id}/approve/", {}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "conflict"
    assert FixRequest.objects.get(pk=request_id).state == FixRequestState.PENDING
    assert Subscription.objects.get(pk=world.offline.pk).seats == 52


def test_the_schema_documents_the_fix_endpoints(client_for, support_agent):
    schema = client_for(support_agent).get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert {
        "/api/fixes/{action}/{id}/",
        "/api/fixes/{action}/{id}/preview/",
        "/api/fix-requests/",
        "/api/fix-requests/{id}/approve/",
        "/api/fix-requests/{id}/reject/",
        "/api/fix-requests/{id}/withdraw/",
    } <= set(paths)
    apply_op = paths["/api/fixes/{action}/{id}/"]["post"]
    (action,) = [p for p in apply_op["parameters"] if p["name"] == "action"]
    assert set(action["schema"]["enum"]) == set(FIXES)
    assert {"200", "202", "400", "403", "404", "409"} <= set(apply_op["responses"])
    described = schema["components"]["schemas"]["FixInput"]["properties"]["params"]
    for key in FIXES:
        assert f"**{key}**" in described["description"]


@pytest.mark.parametrize("key", sorted(FIXES))
def test_the_documented_params_are_the_fixs_form_fields(key, world):
    from provision.api.serializers import FIX_PARAMS

    target, _params, _done = _case(world, key)
    fields = set(FIXES[key].params_form_class(target).base_fields)
    assert set(FIX_PARAMS.get(key, {})) == fields
