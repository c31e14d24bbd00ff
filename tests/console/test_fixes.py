"""Every support fix through its page: preview first, a reason required, one audit record of the
fix (its consequences carry the same reason code), refused to account managers, and the
four-eyes fixes only after a second person approves.

Driven through the real pages with the test client, on a small realistic book (``world.py``).
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from licenses.choices import LicenseStatus
from licenses.models import ActivationCode, License
from provision import services
from provision.choices import FixRequestState, ReasonCode
from provision.exceptions import ApplicationError
from provision.fixes import FIXES
from provision.models import AuditEvent, FixRequest, ProvisioningStep, Subscription
from tests.console.world import build_world

pytestmark = pytest.mark.django_db

DIGEST = re.compile(r'name="preview_digest" value="([0-9a-f]{64})"')


@pytest.fixture
def world(support_agent):
    return build_world()


def _case(world, key):
    """``(target, params, check)`` for each fix; ``check(world)`` says the change happened."""
    today = timezone.localdate()
    cases = {
        "seats_change": (world.offline, {"seats": 55}, lambda w: _seats(w.offline) == 55),
        "add_on_change": (
            world.offline,
            {"kind": "duo_pro", "quantity": 10},
            lambda w: w.offline.add_ons.filter(kind="duo_pro", quantity=10).exists(),
        ),
        "license_extend": (
            world.offline,
            {"expires_on": (world.offline.term_end + dt.timedelta(days=20)).isoformat()},
            lambda w: License.objects.filter(subscription=w.offline, trial=True).exists(),
        ),
        "activation_code_resend": (
            world.online,
            {},
            lambda w: ActivationCode.objects.filter(subscription=w.online).count() == 2,
        ),
        "convert_to_cloud": (
            world.offline,
            {},
            lambda w: Subscription.objects.get(pk=w.offline.pk).licensing_method == "online_cloud",
        ),
        "license_resend": (
            world.offline_license,
            {},
            lambda w: w.offline_license.deliveries.count() == 1,
        ),
        "license_reissue": (
            world.offline_license,
            {},
            lambda w: (
                License.objects.get(pk=w.offline_license.pk).status == LicenseStatus.SUPERSEDED
            ),
        ),
        "license_revoke": (
            world.offline_license,
            {},
            lambda w: License.objects.get(pk=w.offline_license.pk).status == LicenseStatus.REVOKED,
        ),
        "activation_code_release": (
            world.online_code,
            {},
            lambda w: ActivationCode.objects.get(pk=w.online_code.pk).released_at is not None,
        ),
        "namespace_associate": (
            world.free_namespace,
            {"subscription": world.saas.name},
            lambda w: _namespace(w.free_namespace).subscription_id == w.saas.pk,
        ),
        "namespace_force_associate": (
            world.occupied_namespace,
            {"subscription": world.saas.name},
            lambda w: _namespace(w.occupied_namespace).subscription_id == w.saas.pk,
        ),
        "namespace_disassociate": (
            world.saas_namespace,
            {},
            lambda w: _namespace(w.saas_namespace).subscription_id is None,
        ),
        "namespace_reset_max_seats": (
            world.saas_namespace,
            {"max_seats_used": 30, "approval_url": "https://sfdc.test/case/1"},
            lambda w: _namespace(w.saas_namespace).max_seats_used == 30,
        ),
        "step_retry": (
            world.delivered_step,
            {},
            lambda w: ProvisioningStep.objects.get(pk=w.delivered_step.pk).attempts == 1,
        ),
        "step_mark_done": (
            world.delivered_step,
            {"evidence": "Mailgun: delivered 2026-11-28 10:02 to buyer@acme.test"},
            lambda w: ProvisioningStep.objects.get(pk=w.delivered_step.pk).state == "done",
        ),
        "crm_push": (
            world.offline.customer,
            {},
            lambda w: AuditEvent.objects.filter(action="crm_sync.customer_push_requested").exists(),
        ),
    }
    assert today  # the cases above are relative to today
    return cases[key]


def _seats(subscription):
    return Subscription.objects.get(pk=subscription.pk).seats


def _namespace(namespace):
    namespace.refresh_from_db()
    return namespace


FOUR_EYES = {"license_revoke", "namespace_force_associate"}
LEAD_ONLY = {"activation_code_release", "namespace_reset_max_seats"}


def _url(key, target):
    return reverse("provision:fix", kwargs={"action": key, "pk": target.pk})


def _preview(client, key, target, params) -> tuple[str, str]:
    """Open the fix and get to its preview: ``(page html, preview digest)``."""
    if params:
        response = client.post(_url(key, target), {**params, "step": "preview"})
    else:
        response = client.get(_url(key, target))
    assert response.status_code == 200, response.content.decode()[:2000]
    html = response.content.decode()
    assert 'id="preview"' in html, html[:3000]
    found = DIGEST.search(html)
    assert found, "the preview page carries the digest of what it shows"
    return html, found.group(1)


def _confirm(client, key, target, params, digest, **reason):
    data = {
        **params,
        "step": "confirm",
        "preview_digest": digest,
        "reason_code": ReasonCode.CUSTOMER_REQUEST,
        "reason": "Customer asked on the ticket",
        "ticket_url": "https://support.test/tickets/4242",
        **reason,
    }
    return client.post(_url(key, target), data)


def test_every_fix_is_covered():
    assert set(FIXES) == {
        "seats_change",
        "add_on_change",
        "license_extend",
        "activation_code_resend",
        "convert_to_cloud",
        "license_resend",
        "license_reissue",
        "license_revoke",
        "activation_code_release",
        "namespace_associate",
        "namespace_force_associate",
        "namespace_disassociate",
        "namespace_reset_max_seats",
        "step_retry",
        "step_mark_done",
        "crm_push",
    }


@pytest.mark.parametrize("key", sorted(set(FIXES) - FOUR_EYES))
def test_fix_previews_then_runs_with_one_audit_record(key, world, support_agent, client_for):
    actor = world.lead if key in LEAD_ONLY else support_agent
    client = client_for(actor)
    target, params, done = _case(world, key)
    html, digest = _preview(client, key, target, params)
    assert not done(world), "a preview changes nothing"

    before = set(AuditEvent.objects.values_list("pk", flat=True))
    response = _confirm(client, key, target, params, digest)
    assert response.status_code in (200, 302), response.content.decode()[:2000]
    assert done(world)
    new = list(AuditEvent.objects.exclude(pk__in=before))
    fix = FIXES[key]
    own = [event for event in new if event.action == fix.audit_action]
    assert len(own) == 1, [e.action for e in new]
    event = own[0]
    assert event.reason_code == ReasonCode.CUSTOMER_REQUEST
    assert event.reason.endswith("Customer asked on the ticket")
    assert event.actor_id == actor.pk
    assert event.metadata["fix"] == key
    # Whatever the fix set off (licenses re-issued, deliveries queued) is tied to it.
    assert {e.reason_code for e in new} == {ReasonCode.CUSTOMER_REQUEST}
    assert len({e.request_id for e in new}) == 1


@pytest.mark.parametrize("key", sorted(FIXES))
def test_fix_needs_a_reason_and_changes_nothing_without_one(key, world, support_agent, client_for):
    actor = world.lead if key in LEAD_ONLY else support_agent
    client = client_for(actor)
    target, params, done = _case(world, key)
    _html, digest = _preview(client, key, target, params)
    events = AuditEvent.objects.count()
    response = _confirm(client, key, target, params, digest, reason="  ")
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert 'id="preview"' in response.content.decode(), "the preview stays on screen"
    assert not done(world)
    assert AuditEvent.objects.count() == events
    assert FixRequest.objects.count() == 0


@pytest.mark.parametrize("key", sorted(FIXES))
def test_account_manager_is_refused_every_fix(key, world, account_manager, client_for):
    client = client_for(account_manager)
    target, params, done = _case(world, key)
    events = AuditEvent.objects.count()
    assert client.get(_url(key, target)).status_code == 403
    response = _confirm(client, key, target, params, "0" * 64)
    assert response.status_code == 403
    assert not done(world)
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize("key", sorted(FIXES))
def test_anonymous_is_sent_to_login(key, world, client):
    target, _params, _done = _case(world, key)
    response = client.get(_url(key, target))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("key", sorted(LEAD_ONLY))
def test_lead_only_fixes_are_refused_to_agents(key, world, support_agent, client_for):
    target, _params, _done = _case(world, key)
    assert client_for(support_agent).get(_url(key, target)).status_code == 403


def test_unknown_fix_and_missing_target_are_404(world, support_agent, client_for):
    client = client_for(support_agent)
    assert client.get("/fixes/drop_database/1/").status_code == 404
    assert client.get(reverse("provision:fix", args=["seats_change", 999_999])).status_code == 404


def test_confirm_without_a_previewed_digest_only_previews(world, support_agent, client_for):
    """A POST that skips the preview (a crafted request) shows the preview and runs nothing."""
    client = client_for(support_agent)
    response = _confirm(client, "seats_change", world.offline, {"seats": 55}, "")
    assert response.status_code == 200
    assert 'id="preview"' in response.content.decode()
    assert _seats(world.offline) == 50


def test_fix_that_does_not_apply_says_why(world, support_agent, client_for):
    client = client_for(support_agent)
    response = client.get(_url("license_extend", world.saas))
    assert response.status_code == 200
    assert 'id="fix-unavailable"' in response.content.decode()
    assert "namespace" in response.content.decode()


def test_no_change_is_a_form_error_not_a_500(world, support_agent, client_for):
    response = client_for(support_agent).post(
        _url("seats_change", world.offline), {"seats": 50, "step": "preview"}
    )
    assert response.status_code == 200
    assert "already has 50 seats" in response.content.decode()


def test_bad_input_is_a_field_error(world, support_agent, client_for):
    response = client_for(support_agent).post(
        _url("seats_change", world.offline), {"seats": "-3", "step": "preview"}
    )
    assert response.status_code == 200
    assert "greater than or equal to 0" in response.content.decode()
    response = client_for(support_agent).post(
        _url("namespace_associate", world.free_namespace),
        {"subscription": "not a name", "step": "preview"},
    )
    assert "A subscription name looks like A-S00012345." in response.content.decode()


# --- Previews say exactly what will change -------------------------------------------------------


def test_seats_preview_lists_fields_licenses_and_emails(world, support_agent, client_for):
    html, _digest = _preview(
        client_for(support_agent), "seats_change", world.offline, {"seats": 55}
    )
    assert re.search(r"seats</th>\s*<td[^>]*>50</td>.*?<td[^>]*>55</td>", html, re.S)
    assert f"License #{world.offline_license.pk} (50 users) becomes superseded" in html
    assert "New offline cloud license for 55 users" in html


def test_resend_code_preview_names_the_recipient(world, support_agent, client_for):
    html, _digest = _preview(client_for(support_agent), "activation_code_resend", world.online, {})
    assert "The new activation code to owner@beta.test" in html
    assert f"…{world.online_code.code_hint}" in html


def test_new_activation_code_is_shown_once_and_not_cached(world, support_agent, client_for):
    client = client_for(support_agent)
    _html, digest = _preview(client, "activation_code_resend", world.online, {})
    response = _confirm(client, "activation_code_resend", world.online, {}, digest)
    assert response.status_code == 200
    assert re.search(r'id="activation-code">[A-Za-z0-9]{24}<', response.content.decode())
    assert "no-store" in response["Cache-Control"]


# --- Four-eyes ------------------------------------------------------------------------------------


def _request_fix(client, key, target, params):
    _html, digest = _preview(client, key, target, params)
    response = _confirm(client, key, target, params, digest)
    assert response.status_code == 302, response.content.decode()[:2000]
    return FixRequest.objects.get()


@pytest.mark.parametrize(
    "key, make_params",
    [
        ("license_revoke", lambda w: {}),
        ("namespace_force_associate", lambda w: {"subscription": w.saas.name}),
        ("seats_change", lambda w: {"seats": 61}),  # 50 → 61 is +22%
        (
            "license_extend",
            lambda w: {"expires_on": (w.offline.term_end + dt.timedelta(days=31)).isoformat()},
        ),
    ],
)
def test_four_eyes_fix_waits_for_a_lead_then_runs(
    key, make_params, world, support_agent, support_lead, client_for
):
    target, _params, done = _case(world, key)
    params = make_params(world)
    if key == "license_extend":
        done = lambda w: License.objects.filter(subscription=w.offline, trial=True).exists()  # noqa: E731
    if key == "seats_change":
        done = lambda w: _seats(w.offline) == 61  # noqa: E731
    agent = client_for(support_agent)
    html, _digest = _preview(agent, key, target, params)
    assert 'id="fix-needs-approval"' in html
    fix_request = _request_fix(agent, key, target, params)
    assert fix_request.state == FixRequestState.PENDING
    assert fix_request.requested_by == support_agent
    assert not done(world), "nothing changes before the approval"
    assert AuditEvent.objects.filter(action="provision.fix_requested").count() == 1

    lead = client_for(support_lead)
    page = lead.get(fix_request.get_absolute_url())
    assert 'id="approve-request"' in page.content.decode()
    response = lead.post(
        reverse("provision:fixrequest_approve", args=[fix_request.pk]),
        {"note": "Checked the approval on the opportunity"},
    )
    assert response.status_code == 302
    fix_request.refresh_from_db()
    assert fix_request.state == FixRequestState.DONE, fix_request.outcome
    assert fix_request.decided_by == support_lead
    assert done(world)
    event = AuditEvent.objects.get(action=FIXES[key].audit_action, metadata__fix=key)
    assert event.metadata["requested_by"] == support_agent.username
    assert event.metadata["approved_by"] == support_lead.username
    assert event.metadata["fix_request"] == fix_request.pk
    assert event.actor_id == support_lead.pk


def test_requester_cannot_approve_their_own_request(world, support_lead, client_for):
    lead = client_for(support_lead)
    fix_request = _request_fix(lead, "license_revoke", world.offline_license, {})
    page = lead.get(fix_request.get_absolute_url()).content.decode()
    assert 'id="approve-request"' not in page
    assert 'id="withdraw-request"' in page
    lead.post(reverse("provision:fixrequest_approve", args=[fix_request.pk]), {"note": "ok"})
    fix_request.refresh_from_db()
    assert fix_request.state == FixRequestState.PENDING
    assert License.objects.get(pk=world.offline_license.pk).status != LicenseStatus.REVOKED
    with pytest.raises(ApplicationError, match="another support lead"):
        services.fix_request_approve(actor=support_lead, fix_request=fix_request, note="me")


def test_agent_cannot_approve(world, support_agent, client_for):
    fix_request = _request_fix(client_for(world.lead), "license_revoke", world.offline_license, {})
    response = client_for(support_agent).post(
        reverse("provision:fixrequest_approve", args=[fix_request.pk]), {"note": "ok"}
    )
    assert response.status_code == 403
    fix_request.refresh_from_db()
    assert fix_request.state == FixRequestState.PENDING


def test_rejected_request_changes_nothing(world, support_agent, support_lead, client_for):
    fix_request = _request_fix(
        client_for(support_agent), "license_revoke", world.offline_license, {}
    )
    client_for(support_lead).post(
        reverse("provision:fixrequest_reject", args=[fix_request.pk]),
        {"note": "The customer paid; no revoke"},
    )
    fix_request.refresh_from_db()
    assert fix_request.state == FixRequestState.REJECTED
    assert fix_request.decision_note == "The customer paid; no revoke"
    assert License.objects.get(pk=world.offline_license.pk).status == LicenseStatus.ISSUED
    event = AuditEvent.objects.get(action="provision.fix_request_rejected")
    assert event.reason == "The customer paid; no revoke"


def test_requester_withdraws(world, support_agent, client_for):
    client = client_for(support_agent)
    fix_request = _request_fix(client, "license_revoke", world.offline_license, {})
    client.post(
        reverse("provision:fixrequest_withdraw", args=[fix_request.pk]), {"note": "Wrong license"}
    )
    fix_request.refresh_from_db()
    assert fix_request.state == FixRequestState.WITHDRAWN


def test_approval_is_refused_when_the_target_changed(
    world, support_agent, support_lead, client_for
):
    agent = client_for(support_agent)
    fix_request = _request_fix(agent, "seats_change", world.offline, {"seats": 70})
    # Meanwhile another agent makes a small change: the request no longer means what it said.
    _html, digest = _preview(agent, "seats_change", world.offline, {"seats": 52})
    _confirm(agent, "seats_change", world.offline, {"seats": 52}, digest)
    assert _seats(world.offline) == 52
    lead = client_for(support_lead)
    page = lead.get(fix_request.get_absolute_url()).content.decode()
    assert 'id="request-stale"' in page
    lead.post(reverse("provision:fixrequest_approve", args=[fix_request.pk]), {"note": "ok"})
    fix_request.refresh_from_db()
    assert fix_request.state == FixRequestState.PENDING
    assert _seats(world.offline) == 52


def test_risky_services_refuse_without_approval_from_any_entry_point(world, support_lead):
    """The four-eyes rules live in the services: a lead calling them directly is refused."""
    from licenses.services import license_revoke, license_temporary_extension
    from usage.services import namespace_associate

    with pytest.raises(ApplicationError, match="second person"):
        license_revoke(actor=support_lead, license=world.offline_license, reason="direct")
    with pytest.raises(ApplicationError, match="second person"):
        namespace_associate(
            actor=support_lead,
            namespace=world.occupied_namespace,
            subscription=world.saas,
            reason="direct",
            ticket_url="https://support.test/1",
            force=True,
        )
    with pytest.raises(ApplicationError, match="approval"):
        services.subscription_seats_change(
            actor=support_lead, subscription=world.offline, seats=100, reason="direct"
        )
    with pytest.raises(ApplicationError, match="approval"):
        license_temporary_extension(
            actor=support_lead,
            subscription=world.offline,
            expires_on=world.offline.term_end + dt.timedelta(days=45),
            reason="direct",
        )
    assert License.objects.get(pk=world.offline_license.pk).status == LicenseStatus.ISSUED
    assert _seats(world.offline) == 50


# --- Two agents at once ---------------------------------------------------------------------------


def test_second_agent_sees_a_conflict_and_nothing_is_lost(world, support_agent, client_for):
    from tests.factories import UserFactory

    other = UserFactory(username="sue.support", roles=["support"])
    first, second = client_for(support_agent), None
    _html, first_digest = _preview(first, "seats_change", world.offline, {"seats": 55})
    from django.test import Client

    second = Client()
    second.force_login(other)
    _html, second_digest = _preview(second, "seats_change", world.offline, {"seats": 58})

    assert (
        _confirm(first, "seats_change", world.offline, {"seats": 55}, first_digest).status_code
        == 302
    )
    response = _confirm(second, "seats_change", world.offline, {"seats": 58}, second_digest)
    assert response.status_code == 409
    html = response.content.decode()
    assert "Somebody changed this" in html
    # The new preview starts from the first agent's 55.
    assert re.search(r"seats</th>\s*<td[^>]*>55</td>.*?<td[^>]*>58</td>", html, re.S)
    assert _seats(world.offline) == 55
    assert AuditEvent.objects.filter(action="provision.subscription_seats_changed").count() == 1
    # Confirming the new preview works.
    new_digest = DIGEST.search(html).group(1)
    assert (
        _confirm(second, "seats_change", world.offline, {"seats": 58}, new_digest).status_code
        == 302
    )
    assert _seats(world.offline) == 58


def test_approvals_list_shows_pending_first(world, support_agent, support_lead, client_for):
    _request_fix(client_for(support_agent), "license_revoke", world.offline_license, {})
    page = client_for(support_lead).get(reverse("provision:fixrequest_list") + "?state=pending")
    assert page.status_code == 200
    assert "data-fix-request=" in page.content.decode()
    assert client_for(support_lead).get(reverse("provision:fixrequest_list")).status_code == 200


# --- Roles on the approvals pages ----------------------------------------------------------------


def test_approvals_pages_roles(world, support_agent, account_manager, outsider, client, client_for):
    fix_request = _request_fix(
        client_for(support_agent), "license_revoke", world.offline_license, {}
    )
    list_url = reverse("provision:fixrequest_list")
    detail_url = fix_request.get_absolute_url()
    approve_url = reverse("provision:fixrequest_approve", args=[fix_request.pk])
    client.logout()
    assert client.get(list_url).status_code == 302  # anonymous: to the login page
    assert client.post(approve_url, {"note": "x"}).status_code == 302
    assert client_for(outsider).get(list_url).status_code == 403
    manager = client_for(account_manager)
    assert manager.get(list_url).status_code == 200  # account managers read
    page = manager.get(detail_url).content.decode()
    assert 'id="approve-request"' not in page and 'id="withdraw-request"' not in page
    assert manager.post(approve_url, {"note": "x"}).status_code == 403
    assert (
        manager.post(
            reverse("provision:fixrequest_reject", args=[fix_request.pk]), {"note": "x"}
        ).status_code
        == 403
    )
    fix_request.refresh_from_db()
    assert fix_request.state == FixRequestState.PENDING


def test_a_lead_sees_the_pending_count_in_the_navigation(
    world, support_agent, support_lead, client_for
):
    _request_fix(client_for(support_agent), "license_revoke", world.offline_license, {})
    page = client_for(support_lead).get(reverse("provision:home")).content.decode()
    assert re.search(r'id="pending-approvals"[^>]*>1<', page)
    page = client_for(support_agent).get(reverse("provision:home")).content.decode()
    assert 'id="pending-approvals"' not in page


def test_retry_restarts_the_sla_of_the_step_and_of_those_behind_it(
    world, support_agent, client_for
):
    client = client_for(support_agent)
    step = world.delivered_step
    html, digest = _preview(client, "step_retry", step, {})
    assert "(new SLA)" in html
    assert "License #" in html and "buyer@acme.test" in html  # what is sent, and to whom
    _confirm(client, "step_retry", step, {}, digest)
    step.refresh_from_db()
    activated = ProvisioningStep.objects.get(record=step.record, kind="activated")
    assert step.due_at > timezone.now()
    assert activated.due_at == ProvisioningStep.default_due_at("activated", start=step.due_at)
    assert world.offline_license.deliveries.count() == 1
