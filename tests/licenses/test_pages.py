"""The license pages: who may open them, what they show, and what their forms change.

Revoke, re-issue, resend, the activation code and its release are support fixes (issue 6):
these tests drive them through the fix page (``provision:fix``: preview, then confirm with a
reason), and check that the old per-action addresses only redirect there."""

import re
import smtplib

import pytest
from django.core.mail.backends.base import BaseEmailBackend
from django.urls import reverse

from licenses import keyformat, services
from licenses.choices import (
    ActivationCodeStatus,
    DeliveryMethod,
    DeliveryStatus,
    LicenseKind,
    LicenseStatus,
)
from licenses.models import Activation, ActivationCode, License, LicenseDelivery
from licenses.signing import activation_code_hash
from provision import services as provision_services
from provision.choices import (
    Channel,
    FixRequestState,
    ProvisioningStepKind,
    ReasonCode,
    Role,
    StepState,
)
from provision.exceptions import ApplicationError
from provision.models import AuditEvent, FixRequest, ProvisioningStep
from tests.factories import (
    ContactFactory,
    CustomerFactory,
    InstanceFactory,
    PartnerFactory,
    UserFactory,
    subscription_factory,
)
from tests.fix_pages import fix_confirm, fix_preview, fix_url, run_fix
from tests.support import four_eyes

pytestmark = pytest.mark.django_db

CODE = re.compile(r'id="activation-code">([A-Za-z0-9]{24})<')


class FailingEmailBackend(BaseEmailBackend):
    """A mail server that hangs up: the outside system failing, not the code under test."""

    calls = 0

    def send_messages(self, email_messages):
        type(self).calls += 1
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


class RefusingEmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise smtplib.SMTPRecipientsRefused({"buyer@acme.test": (550, b"No such user")})


@pytest.fixture
def offline_license(support_agent, subscription):
    return services.license_issue(
        actor=support_agent,
        subscription=subscription,
        kind=LicenseKind.OFFLINE_CLOUD,
        reason="Offline customer",
    )


@pytest.fixture
def online_license(support_agent, subscription):
    return services.license_issue(actor=support_agent, subscription=subscription, reason="Order")


@pytest.fixture
def bound_code(support_agent, subscription, online_license):
    """The subscription's active code, redeemed by one instance."""
    code, _ = services.activation_code_generate(
        actor=support_agent, subscription=subscription, reason="Order"
    )
    instance = InstanceFactory(hostname="gitlab.acme.test", subscription=subscription)
    Activation.objects.create(
        activation_code=code,
        license=online_license,
        instance=instance,
        gitlab_version="17.5.1-ee",
        hostname="gitlab.acme.test",
    )
    return code


@pytest.fixture
def celery_eager():
    """Run tasks in process, as a worker would, so the e-mail they send can be checked."""
    from provision.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def last_event():
    return AuditEvent.objects.order_by("-id").first()


def licensable_subscription(**customer_fields):
    """A self-managed subscription whose customer has the sold-to contact a license needs."""
    customer = CustomerFactory(**customer_fields)
    ContactFactory(customer=customer)
    return subscription_factory(customer)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- Access ------------------------------------------------------------------------------------

VIEW_PAGES = [
    "license_list",
    "license_detail",
    "signing_key",
    "signing_key_download",
    "troubleshoot",
]
SUPPORT_PAGES = ["license_issue"]
POST_ONLY = ["license_download"]
# The old per-action pages: each address now only redirects to its support fix (issue 6).
MOVED = {
    "license_send": "license_resend",
    "license_reissue": "license_reissue",
    "license_revoke": "license_revoke",
    "activation_code_send": "activation_code_resend",
    "activation_code_release": "activation_code_release",
}
ALL_PAGES = VIEW_PAGES + SUPPORT_PAGES + list(MOVED)


def target_pk(name, license, subscription, code) -> int | None:
    if name in ("license_detail", "license_download", "license_send", "license_reissue"):
        return license.pk
    if name == "license_revoke":
        return license.pk
    if name in ("license_issue", "activation_code_send"):
        return subscription.pk
    if name == "activation_code_release":
        return code.pk
    return None


@pytest.fixture
def file_license(support_agent, subscription, bound_code):
    """The subscription's current license, a file (issued after the bound code's online one,
    which it supersedes), so that every license fix applies to it."""
    return services.license_issue(
        actor=support_agent,
        subscription=subscription,
        kind=LicenseKind.OFFLINE_CLOUD,
        reason="Moved offline",
    )


@pytest.fixture
def pk_of(file_license, subscription, bound_code):
    return lambda name: target_pk(name, file_license, subscription, bound_code)


@pytest.fixture
def urls(pk_of):
    def url(name):
        pk = pk_of(name)
        return reverse(f"licenses:{name}", args=[pk] if pk is not None else [])

    return url


@pytest.fixture
def fix_of(pk_of):
    """``fix_of(old page name)``: the URL of the fix page it moved to."""
    return lambda name: fix_url(MOVED[name], pk_of(name))


@pytest.fixture
def unchanged(pk_of):
    """Call ``unchanged()`` at the end of a test: no audit event, fix request, license,
    activation code or delivery was added or changed since the test's fixtures were made."""

    def state():
        return (
            AuditEvent.objects.count(),
            FixRequest.objects.count(),
            list(License.objects.order_by("pk").values_list("pk", "status")),
            list(ActivationCode.objects.order_by("pk").values_list("pk", "status", "released_at")),
            LicenseDelivery.objects.count(),
        )

    before = state()

    def check():
        assert state() == before

    return check


@pytest.mark.parametrize("name", ALL_PAGES + POST_ONLY)
def test_anonymous_is_sent_to_login_and_changes_nothing(client, urls, unchanged, name):
    for response in (client.get(urls(name)), client.post(urls(name), {"reason": "x"})):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")
    unchanged()


@pytest.mark.parametrize("name", ALL_PAGES + POST_ONLY)
def test_user_without_role_gets_403_and_changes_nothing(
    client_for, outsider, urls, unchanged, name
):
    client = client_for(outsider)
    assert client.get(urls(name)).status_code == 403
    assert client.post(urls(name), {"reason": "x", "kind": "legacy"}).status_code == 403
    unchanged()


@pytest.mark.parametrize("name", VIEW_PAGES)
def test_every_staff_role_may_view(client_for, account_manager, urls, name):
    assert client_for(account_manager).get(urls(name)).status_code == 200


@pytest.mark.parametrize("name", SUPPORT_PAGES + POST_ONLY)
def test_account_manager_cannot_act(client_for, account_manager, urls, unchanged, name):
    client = client_for(account_manager)
    if name not in POST_ONLY:
        assert client.get(urls(name)).status_code == 403
    assert client.post(urls(name), {"reason": "x", "kind": "legacy"}).status_code == 403
    unchanged()


@pytest.mark.parametrize("name", sorted(MOVED))
def test_account_manager_follows_an_old_address_to_a_refusal(
    client_for, account_manager, urls, fix_of, unchanged, name
):
    client = client_for(account_manager)
    for response in (client.get(urls(name)), client.post(urls(name), {"reason": "x"})):
        assert (response.status_code, response["Location"]) == (302, fix_of(name))
    assert client.get(fix_of(name)).status_code == 403
    assert client.post(fix_of(name), {"step": "confirm", "reason": "x"}).status_code == 403
    unchanged()


def test_support_may_open_the_issue_page(client_for, support_agent, urls):
    assert client_for(support_agent).get(urls("license_issue")).status_code == 200


@pytest.mark.parametrize(
    "name", ["license_send", "license_reissue", "license_revoke", "activation_code_send"]
)
def test_support_may_open_the_license_fixes(client_for, support_agent, fix_of, name):
    """A revoke too: support may *request* one; a lead approves it (four-eyes)."""
    response = client_for(support_agent).get(fix_of(name))
    assert response.status_code == 200 and 'id="preview"' in response.content.decode()


def test_only_a_lead_may_release_a_code(client_for, support_agent, support_lead, fix_of):
    assert client_for(support_agent).get(fix_of("activation_code_release")).status_code == 403
    assert client_for(support_lead).get(fix_of("activation_code_release")).status_code == 200


# --- The old addresses only redirect ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MOVED))
def test_old_address_redirects_to_its_fix_page(client_for, support_lead, urls, fix_of, name):
    client = client_for(support_lead)
    for response in (client.get(urls(name)), client.post(urls(name), {"reason": "x"})):
        assert response.status_code == 302
        assert response["Location"] == fix_of(name)


@pytest.mark.parametrize("name", sorted(MOVED))
def test_a_post_to_an_old_address_changes_nothing(
    client_for, support_lead, urls, pk_of, fix_of, unchanged, name
):
    """Even a complete confirming POST (the digest of a real preview, a reason) is not acted
    on: it is redirected to the fix page, which a browser then opens with GET."""
    client = client_for(support_lead)
    _response, digest = fix_preview(client, MOVED[name], pk_of(name))
    assert digest
    data = {
        "step": "confirm",
        "preview_digest": digest,
        "reason_code": ReasonCode.CUSTOMER_REQUEST,
        "reason": "Posted to the old page",
        "ticket_url": "https://t.test/1",
    }
    response = client.post(urls(name), data)
    assert (response.status_code, response["Location"]) == (302, fix_of(name))
    unchanged()


# --- License detail: the action buttons ---------------------------------------------------------


def test_license_detail_shows_actions_by_role(
    client_for, account_manager, support_agent, support_lead, offline_license
):
    url = offline_license.get_absolute_url()
    manager_page = client_for(account_manager).get(url).content.decode()
    assert "Download license file" not in manager_page and 'id="revoke-license"' not in manager_page
    assert "data-fix=" not in manager_page
    support_page = client_for(support_agent).get(url).content.decode()
    assert "Download license file" in support_page
    for key in ("license_resend", "license_reissue", "license_revoke"):
        assert f'href="{fix_url(key, offline_license.pk)}"' in support_page, key
        assert f'data-fix="{key}"' in support_page, key
    for old in ("license_send", "license_reissue", "license_revoke"):
        assert reverse(f"licenses:{old}", args=[offline_license.pk]) not in support_page
    # Support may ask for a revoke; a lead approves it.
    revoke = re.search(r'<a [^>]*id="revoke-license"[^>]*>.*?</a>', support_page, re.S).group(0)
    assert "Revoke…" in revoke and "needs a lead's approval" in revoke
    assert 'id="revoke-license"' in client_for(support_lead).get(url).content.decode()


def test_a_revoked_license_offers_no_revoke(client_for, support_agent, offline_license):
    License.objects.filter(pk=offline_license.pk).update(status=LicenseStatus.REVOKED)
    page = client_for(support_agent).get(offline_license.get_absolute_url()).content.decode()
    assert 'id="revoke-license"' not in page and 'id="send-license"' not in page


def test_online_cloud_license_points_at_the_activation_code_fix(
    client_for, support_agent, online_license, subscription
):
    page = client_for(support_agent).get(online_license.get_absolute_url()).content.decode()
    assert f'href="{fix_url("activation_code_resend", subscription.pk)}"' in page
    assert 'id="send-license"' not in page


# --- License list -----------------------------------------------------------------------------


def test_license_list_filters_and_never_shows_keys(client_for, account_manager, offline_license):
    other = licensable_subscription(name="Initech")
    other_license = services.license_issue(actor=None, subscription=other, reason="Order")
    client = client_for(account_manager)
    page = client.get(reverse("licenses:license_list"))
    assert {lic.pk for lic in page.context["page_obj"]} == {offline_license.pk, other_license.pk}
    assert offline_license.key.splitlines()[0] not in page.content.decode()
    by_name = client.get(reverse("licenses:license_list"), {"q": other.name.lower()})
    assert [lic.pk for lic in by_name.context["page_obj"]] == [other_license.pk]
    by_kind = client.get(reverse("licenses:license_list"), {"kind": "offline_cloud"})
    assert [lic.pk for lic in by_kind.context["page_obj"]] == [offline_license.pk]


def test_license_list_query_count_does_not_grow(
    client_for, support_agent, django_assert_max_num_queries
):
    client = client_for(support_agent)
    for _ in range(3):
        services.license_issue(actor=None, subscription=licensable_subscription(), reason="x")
    with django_assert_max_num_queries(8) as small:
        client.get(reverse("licenses:license_list"))
    for _ in range(20):
        services.license_issue(actor=None, subscription=licensable_subscription(), reason="x")
    with django_assert_max_num_queries(8) as large:
        response = client.get(reverse("licenses:license_list"))
    assert response.context["page_obj"].paginator.count == 23
    assert len(large.captured_queries) == len(small.captured_queries)


# --- License detail ---------------------------------------------------------------------------


def test_license_detail_shows_attributes_chain_and_audit(client_for, support_agent, subscription):
    first = services.license_issue(actor=support_agent, subscription=subscription, reason="One")
    second = services.license_issue(actor=support_agent, subscription=subscription, reason="Two")
    response = client_for(support_agent).get(first.get_absolute_url())
    body = response.content.decode()
    assert response.context["chain"] == [first, second]
    assert f'href="{second.get_absolute_url()}"' in body  # superseded by, linked
    assert response.context["key_check"].decoded.attributes == first.attributes
    assert f"&quot;subscription_name&quot;: &quot;{subscription.name}&quot;" in body
    assert [e.action for e in response.context["events"]] == [
        "licenses.license_superseded",
        "licenses.license_issued",
    ]
    assert "Download license file" not in body  # online cloud: delivered by activation


def test_license_detail_query_count_is_bounded(
    client_for, support_agent, offline_license, django_assert_max_num_queries
):
    client = client_for(support_agent)
    for _ in range(5):
        services.license_download_record(actor=support_agent, license=offline_license)
    with django_assert_max_num_queries(16):
        assert client.get(offline_license.get_absolute_url()).status_code == 200


# --- Download ---------------------------------------------------------------------------------


def test_download_returns_the_exact_key_and_records_a_delivery(
    client_for, support_agent, offline_license, subscription
):
    client = client_for(support_agent)
    response = client.post(reverse("licenses:license_download", args=[offline_license.pk]))
    assert response.status_code == 200
    assert response.content == offline_license.key.encode("utf-8")
    filename = f"{subscription.name}_{offline_license.pk}.gitlab-license"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert "no-store" in response["Cache-Control"]
    delivery = LicenseDelivery.objects.get()
    assert (delivery.license, delivery.method, delivery.status) == (
        offline_license,
        DeliveryMethod.DOWNLOAD,
        DeliveryStatus.DOWNLOADED,
    )
    assert delivery.created_by == support_agent and delivery.downloaded_at is not None
    event = last_event()
    assert event.action == "licenses.license_downloaded"
    assert event.target_id == str(offline_license.pk)
    assert event.metadata["delivery_id"] == delivery.pk
    follow = client.get(offline_license.get_absolute_url())
    assert any(filename in m for m in messages_of(follow))
    assert follow.context["deliveries"] == [delivery]


def test_online_cloud_license_cannot_be_downloaded(client_for, support_agent, online_license):
    client = client_for(support_agent)
    response = client.post(
        reverse("licenses:license_download", args=[online_license.pk]), follow=True
    )
    assert response.redirect_chain[-1][0] == online_license.get_absolute_url()
    assert any("activation code" in m for m in messages_of(response))
    assert not LicenseDelivery.objects.exists()


def test_a_superseded_license_is_not_handed_out(client_for, support_agent, offline_license):
    services.license_issue(
        actor=support_agent,
        subscription=offline_license.subscription,
        kind=LicenseKind.OFFLINE_CLOUD,
        reason="Seats corrected",
    )
    response = client_for(support_agent).post(
        reverse("licenses:license_download", args=[offline_license.pk]), follow=True
    )
    assert any("superseded" in m for m in messages_of(response))
    assert not LicenseDelivery.objects.exists()


# --- Revoke, re-issue, issue ------------------------------------------------------------------


def test_a_lead_revoke_waits_for_another_lead_then_runs(client_for, support_lead, offline_license):
    """Four-eyes: a lead's own revoke only files a request; a second lead's approval runs it."""
    response = run_fix(
        client_for(support_lead),
        "license_revoke",
        offline_license.pk,
        reason="Chargeback",
        reason_code=ReasonCode.SECURITY,
        ticket_url="https://t.test/9",
    )
    fix_request = FixRequest.objects.get()
    assert (response.status_code, response["Location"]) == (302, fix_request.get_absolute_url())
    assert fix_request.state == FixRequestState.PENDING
    assert fix_request.requested_by == support_lead
    assert License.objects.get(pk=offline_license.pk).status == LicenseStatus.ISSUED
    assert not AuditEvent.objects.filter(action="licenses.license_revoked").exists()
    # Not even the service itself, called directly by that lead, revokes without approval.
    with pytest.raises(ApplicationError, match="second person"):
        services.license_revoke(actor=support_lead, license=offline_license, reason="direct")
    with pytest.raises(ApplicationError, match="another support lead"):
        provision_services.fix_request_approve(
            actor=support_lead, fix_request=fix_request, note="Me again"
        )
    assert License.objects.get(pk=offline_license.pk).status == LicenseStatus.ISSUED

    second_lead = UserFactory(username="lou.lead", roles=[Role.SUPPORT_LEAD])
    result = provision_services.fix_request_approve(
        actor=second_lead, fix_request=fix_request, note="Chargeback confirmed"
    )
    assert result.message == f"License {offline_license.pk} revoked."
    offline_license.refresh_from_db()
    assert offline_license.status == LicenseStatus.REVOKED
    fix_request.refresh_from_db()
    assert (fix_request.state, fix_request.decided_by) == (FixRequestState.DONE, second_lead)
    event = AuditEvent.objects.get(action="licenses.license_revoked")
    assert event.reason.endswith("Chargeback") and event.ticket_url == "https://t.test/9"
    assert event.reason_code == ReasonCode.SECURITY
    assert event.actor == second_lead
    assert event.metadata["requested_by"] == support_lead.username
    assert event.metadata["approved_by"] == second_lead.username


def test_support_requests_a_revoke_and_nothing_changes_until_approved(
    client_for, support_agent, support_lead, offline_license
):
    run_fix(client_for(support_agent), "license_revoke", offline_license.pk, reason="Fraud")
    fix_request = FixRequest.objects.get()
    assert fix_request.requested_by == support_agent
    assert License.objects.get(pk=offline_license.pk).status == LicenseStatus.ISSUED
    provision_services.fix_request_approve(actor=support_lead, fix_request=fix_request, note="ok")
    assert License.objects.get(pk=offline_license.pk).status == LicenseStatus.REVOKED


def test_revoke_without_a_reason_changes_nothing(client_for, support_lead, offline_license):
    events = AuditEvent.objects.count()
    response = run_fix(client_for(support_lead), "license_revoke", offline_license.pk, reason="  ")
    assert response.status_code == 200
    assert response.context["reason_form"].errors["reason"]
    assert 'id="preview"' in response.content.decode()
    offline_license.refresh_from_db()
    assert offline_license.status == LicenseStatus.ISSUED
    assert AuditEvent.objects.count() == events
    assert not FixRequest.objects.exists()


def test_a_revoked_license_cannot_be_revoked_again(
    client_for, support_agent, support_lead, offline_license
):
    with four_eyes("license_revoke", requested_by=support_agent, approved_by=support_lead):
        services.license_revoke(actor=support_lead, license=offline_license, reason="Chargeback")
    response, digest = fix_preview(client_for(support_lead), "license_revoke", offline_license.pk)
    body = response.content.decode()
    assert response.status_code == 200 and not digest
    assert 'id="fix-unavailable"' in body and "already revoked" in body
    assert not FixRequest.objects.exists()


def test_a_second_revoke_request_is_refused_while_one_waits(
    client_for, support_agent, offline_license
):
    client = client_for(support_agent)
    run_fix(client, "license_revoke", offline_license.pk, reason="Fraud")
    response = run_fix(client, "license_revoke", offline_license.pk, reason="Fraud again")
    assert response.status_code == 200
    assert "already waiting for a lead" in response.content.decode()
    assert FixRequest.objects.count() == 1


def test_support_reissues_and_the_new_license_supersedes(
    client_for, support_agent, offline_license
):
    client = client_for(support_agent)
    response = run_fix(
        client, "license_reissue", offline_license.pk, reason="Customer lost the file"
    )
    new = License.objects.get(supersedes=offline_license)
    offline_license.refresh_from_db()
    assert offline_license.status == LicenseStatus.SUPERSEDED
    assert new.kind == LicenseKind.OFFLINE_CLOUD and new.status == LicenseStatus.ISSUED
    assert (response.status_code, response["Location"]) == (302, new.get_absolute_url())
    issued = AuditEvent.objects.get(action="licenses.license_issued", target_id=str(new.pk))
    assert issued.reason.endswith("Customer lost the file") and issued.actor == support_agent
    assert issued.metadata["fix"] == "license_reissue"
    page = client.get(response["Location"])
    assert f"License {new.pk} issued; it supersedes license {offline_license.pk}." in messages_of(
        page
    )


def test_reissue_page_previews_what_changes(client_for, support_agent, offline_license):
    subscription = offline_license.subscription
    provision_services.subscription_seats_change(
        actor=support_agent, subscription=subscription, seats=55, reason="Bought 5"
    )
    current = License.objects.get(subscription=subscription, status=LicenseStatus.ISSUED)
    response, digest = fix_preview(client_for(support_agent), "license_reissue", current.pk)
    body = response.content.decode()
    assert digest
    assert "New offline cloud license for 55 users" in body
    assert f"License #{current.pk} becomes superseded" in body
    assert License.objects.count() == 2  # the preview issued nothing


def test_reissue_without_a_reason_changes_nothing(client_for, support_agent, offline_license):
    response = run_fix(client_for(support_agent), "license_reissue", offline_license.pk, reason="")
    assert response.context["reason_form"].errors["reason"]
    assert License.objects.count() == 1


def test_issue_page_defaults_to_the_licensing_method(client_for, support_agent, subscription):
    response = client_for(support_agent).get(
        reverse("licenses:license_issue", args=[subscription.pk])
    )
    assert response.context["form"]["kind"].value() == subscription.licensing_method
    assert response.context["preview"]["seats"] == subscription.seats


def test_support_issues_a_legacy_license_from_the_subscription(
    client_for, support_agent, subscription
):
    response = client_for(support_agent).post(
        reverse("licenses:license_issue", args=[subscription.pk]),
        {"kind": "legacy", "reason": "Air-gapped site", "ticket_url": "https://t.test/1"},
        follow=True,
    )
    license = License.objects.get()
    assert license.kind == LicenseKind.LEGACY and license.subscription == subscription
    assert response.redirect_chain[-1][0] == license.get_absolute_url()
    event = AuditEvent.objects.get(action="licenses.license_issued")
    assert event.reason == "Air-gapped site" and event.ticket_url == "https://t.test/1"
    assert f"Legacy license {license.pk} issued for {subscription.name}." in messages_of(response)


def test_issue_with_an_invalid_kind_changes_nothing(client_for, support_agent, subscription):
    response = client_for(support_agent).post(
        reverse("licenses:license_issue", args=[subscription.pk]),
        {"kind": "forever", "reason": "x"},
    )
    assert response.context["form"].errors["kind"]
    assert not License.objects.exists()


def test_issue_refusal_for_gitlab_com_is_shown_on_the_form(client_for, support_agent, customer):
    saas = subscription_factory(customer, deployment="gitlab_com")
    response = client_for(support_agent).post(
        reverse("licenses:license_issue", args=[saas.pk]), {"kind": "legacy", "reason": "x"}
    )
    assert "GitLab.com subscription" in str(response.context["form"].non_field_errors())
    assert not License.objects.exists()


# --- Subscription page ------------------------------------------------------------------------


def test_subscription_page_shows_licenses_and_the_activation_code(
    client_for,
    support_agent,
    support_lead,
    account_manager,
    subscription,
    bound_code,
    online_license,
):
    url = subscription.get_absolute_url()
    body = client_for(support_agent).get(url).content.decode()
    assert 'id="licenses"' in body and f'href="{online_license.get_absolute_url()}"' in body
    assert 'id="issue-license"' in body and 'id="send-activation-code"' in body
    send = re.search(r'<a [^>]*id="send-activation-code"[^>]*>', body).group(0)
    assert f'href="{fix_url("activation_code_resend", subscription.pk)}"' in send
    assert 'data-fix="activation_code_resend"' in send
    assert f"…{bound_code.code_hint}" in body and "gitlab.acme.test" in body
    assert 'id="release-code"' not in body  # support is not a lead
    lead = client_for(support_lead).get(url).content.decode()
    release = re.search(r'<a [^>]*id="release-code"[^>]*>', lead).group(0)
    assert f'href="{fix_url("activation_code_release", bound_code.pk)}"' in release
    assert 'data-fix="activation_code_release"' in release
    manager = client_for(account_manager).get(url).content.decode()
    assert 'id="licenses"' in manager and 'id="issue-license"' not in manager
    assert 'id="send-activation-code"' not in manager and "data-fix=" not in manager


def test_gitlab_com_subscription_page_has_no_license_cards(client_for, support_agent, customer):
    saas = subscription_factory(customer, deployment="gitlab_com")
    body = client_for(support_agent).get(saas.get_absolute_url()).content.decode()
    assert 'id="licenses"' not in body and 'id="activation-code"' not in body


# --- Activation code: generate, send, show once ------------------------------------------------


# Tests that watch e-mail go out commit for real: the mail is sent from transaction.on_commit,
# straight after the fix's transaction, before the page that shows the code is rendered.
committing = pytest.mark.django_db(transaction=True)


def _send_code(client, subscription, **reason):
    """The "Resend activation code" fix, previewed and confirmed."""
    return run_fix(
        client,
        "activation_code_resend",
        subscription.pk,
        reason_code=ReasonCode.DELIVERY_PROBLEM,
        **{"reason": "Customer never got it", **reason},
    )


def test_the_e_mail_waits_for_the_commit(
    support_agent, subscription, online_license, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        _, code, delivery = services.activation_code_send(
            actor=support_agent, subscription=subscription, reason="Resend"
        )
    # Nothing is sent while the transaction could still roll back.
    assert not mailoutbox and delivery.status == DeliveryStatus.QUEUED
    (callback,) = callbacks
    callback()
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SENT and code in mailoutbox[0].body


def test_the_preview_names_the_recipient_and_generates_nothing(
    client_for, support_agent, subscription, mailoutbox
):
    response, digest = fix_preview(
        client_for(support_agent), "activation_code_resend", subscription.pk
    )
    assert digest and "The new activation code to buyer@acme.test" in response.content.decode()
    assert not ActivationCode.objects.exists() and not mailoutbox


@committing
def test_sending_a_code_shows_it_once_and_mails_it_to_the_sold_to(
    client_for, support_agent, subscription, online_license, mailoutbox
):
    old, _ = services.activation_code_generate(
        actor=support_agent, subscription=subscription, reason="Order"
    )
    response = _send_code(client_for(support_agent), subscription)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    (code,) = CODE.findall(response.content.decode())

    new = ActivationCode.objects.get(status=ActivationCodeStatus.ACTIVE)
    assert new.code_hash == activation_code_hash(code) and new.code_hint == code[-4:]
    old.refresh_from_db()
    assert old.status == ActivationCodeStatus.REPLACED  # the old code stops working

    (message,) = mailoutbox
    assert message.to == ["buyer@acme.test"]
    assert code in message.body and code not in message.subject
    assert subscription.name in message.subject
    delivery = LicenseDelivery.objects.get()
    assert (delivery.activation_code, delivery.method, delivery.status) == (
        new,
        DeliveryMethod.EMAIL,
        DeliveryStatus.SENT,
    )
    assert delivery.message_id == message.extra_headers["Message-ID"]
    assert delivery.recipient_contact.email == "buyer@acme.test"
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-4:] == [
        "licenses.activation_code_generated",
        "licenses.delivery_queued",
        "licenses.delivery_sent",
        "provision.provisioning_step_changed",
    ]
    generated = AuditEvent.objects.get(
        action="licenses.activation_code_generated", target_id=str(new.pk)
    )
    assert generated.metadata["fix"] == "activation_code_resend"
    assert generated.reason_code == ReasonCode.DELIVERY_PROBLEM
    assert f"New activation code …{code[-4:]} e-mailed to buyer@acme.test." in messages_of(response)
    # The delivered step of the order is closed by the e-mail.
    step = ProvisioningStep.objects.get(
        record__subscription=subscription, kind=ProvisioningStepKind.DELIVERED
    )
    assert step.state == StepState.DONE


@committing
def test_the_plaintext_code_is_stored_nowhere(
    client_for, support_agent, subscription, online_license
):
    client = client_for(support_agent)
    response = _send_code(client, subscription)
    (code,) = CODE.findall(response.content.decode())
    from django.db import connection

    with connection.cursor() as cursor:
        for model in (ActivationCode, LicenseDelivery, AuditEvent, FixRequest):
            cursor.execute(f"SELECT * FROM {model._meta.db_table}")  # noqa: S608 - fixed names
            assert code not in repr(cursor.fetchall()), model.__name__
        cursor.execute("SELECT session_data FROM django_session")
        assert code not in repr(cursor.fetchall())
    # Never shown again.
    assert code not in client.get(subscription.get_absolute_url()).content.decode()


@committing
def test_a_partner_channel_code_goes_to_the_partner(
    client_for, support_agent, customer, mailoutbox
):
    partner = PartnerFactory(name="Channel GmbH", email="licenses@channel.test")
    subscription = subscription_factory(customer, channel=Channel.PARTNER, partner=partner)
    services.license_issue(actor=support_agent, subscription=subscription, reason="Order")
    response = _send_code(client_for(support_agent), subscription)
    (code,) = CODE.findall(response.content.decode())
    (message,) = mailoutbox
    assert message.to == ["licenses@channel.test"]
    assert "your customer Acme Robotics" in message.body and code in message.body
    delivery = LicenseDelivery.objects.get()
    assert (delivery.method, delivery.partner, delivery.status) == (
        DeliveryMethod.PARTNER,
        partner,
        DeliveryStatus.SENT,
    )


@committing
def test_a_failed_e_mail_is_recorded_and_the_code_is_still_shown(
    client_for, support_agent, subscription, settings
):
    settings.EMAIL_BACKEND = "tests.licenses.test_pages.RefusingEmailBackend"
    response = _send_code(client_for(support_agent), subscription)
    (code,) = CODE.findall(response.content.decode())
    delivery = LicenseDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert "refused" in delivery.error and code not in delivery.error
    assert last_event().action == "licenses.delivery_failed"


@committing
def test_the_code_page_says_when_the_e_mail_failed(
    client_for, support_agent, subscription, settings
):
    settings.EMAIL_BACKEND = "tests.licenses.test_pages.RefusingEmailBackend"
    response = _send_code(client_for(support_agent), subscription)
    assert LicenseDelivery.objects.get().status == DeliveryStatus.FAILED
    card = re.search(r'id="delivery".*?</div>\s*</div>\s*</div>', response.content.decode(), re.S)
    assert "Failed" in card.group(0) and "The code itself is valid" in card.group(0)


def test_sending_a_code_without_a_reason_generates_nothing(
    client_for, support_agent, subscription, mailoutbox
):
    response = _send_code(client_for(support_agent), subscription, reason="")
    assert response.context["reason_form"].errors["reason"]
    assert not ActivationCode.objects.exists() and not mailoutbox


def test_no_sold_to_contact_means_no_new_code(client_for, support_agent, mailoutbox):
    subscription = subscription_factory(CustomerFactory())
    response, digest = fix_preview(
        client_for(support_agent), "activation_code_resend", subscription.pk
    )
    assert not digest, "nothing to confirm"
    assert "no sold-to contact" in str(response.context["params_form"].non_field_errors())
    assert not ActivationCode.objects.exists() and not mailoutbox


# --- License file by e-mail --------------------------------------------------------------------


@committing
def test_support_e_mails_a_license_file(
    client_for, support_agent, offline_license, subscription, celery_eager, mailoutbox
):
    client = client_for(support_agent)
    response, digest = fix_preview(client, "license_resend", offline_license.pk)
    filename = f"{subscription.name}_{offline_license.pk}.gitlab-license"
    assert f"{filename} to buyer@acme.test" in response.content.decode()
    response = fix_confirm(
        client,
        "license_resend",
        offline_license.pk,
        digest,
        reason_code=ReasonCode.DELIVERY_PROBLEM,
        reason="Resend to the sold-to",
    )
    assert response.status_code == 302
    assert response["Location"] == f"{offline_license.get_absolute_url()}#deliveries"
    (message,) = mailoutbox
    assert message.to == ["buyer@acme.test"]
    ((attachment_name, content, _),) = message.attachments
    assert attachment_name == filename
    assert content == offline_license.key
    assert offline_license.key.splitlines()[0] not in message.body
    delivery = LicenseDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SENT and delivery.license == offline_license
    assert delivery.message_id == message.extra_headers["Message-ID"]
    queued = AuditEvent.objects.get(action="licenses.delivery_queued")
    assert queued.reason.endswith("Resend to the sold-to") and queued.actor == support_agent
    assert queued.metadata["fix"] == "license_resend"
    sent = AuditEvent.objects.get(action="licenses.delivery_sent")
    assert sent.target_id == str(offline_license.pk) and sent.actor is None
    page = client.get(response["Location"])
    assert f"License file {filename} e-mailed to buyer@acme.test." in messages_of(page)
    assert page.context["deliveries"] == [delivery]


def test_a_license_file_mail_retries_a_hung_up_server_then_records_the_failure(
    support_agent, offline_license, settings, celery_eager, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "tests.licenses.test_pages.FailingEmailBackend"
    FailingEmailBackend.calls = 0
    with django_capture_on_commit_callbacks(execute=True):
        services.license_send(actor=support_agent, license=offline_license, reason="Resend")
    delivery = LicenseDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert "SMTPServerDisconnected" in delivery.error
    assert FailingEmailBackend.calls == 4  # the first try and three retries


def test_a_failed_license_file_mail_from_the_fix_page_is_a_failed_delivery(
    client_for,
    support_agent,
    offline_license,
    settings,
    celery_eager,
    django_capture_on_commit_callbacks,
):
    settings.EMAIL_BACKEND = "tests.licenses.test_pages.RefusingEmailBackend"
    with django_capture_on_commit_callbacks(execute=True):
        response = run_fix(client_for(support_agent), "license_resend", offline_license.pk)
    assert response.status_code == 302
    delivery = LicenseDelivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED and "refused" in delivery.error
    assert last_event().action == "licenses.delivery_failed"


def test_an_online_cloud_license_is_not_e_mailed(client_for, support_agent, online_license):
    client = client_for(support_agent)
    response, digest = fix_preview(client, "license_resend", online_license.pk)
    body = response.content.decode()
    assert not digest and 'id="fix-unavailable"' in body and "activation code" in body
    # A crafted confirm is refused the same way.
    response = fix_confirm(client, "license_resend", online_license.pk, "0" * 64)
    assert 'id="fix-unavailable"' in response.content.decode()
    assert not LicenseDelivery.objects.exists()


# --- Release ----------------------------------------------------------------------------------


def test_lead_releases_a_bound_code(client_for, support_lead, bound_code, subscription):
    client = client_for(support_lead)
    response, _digest = fix_preview(client, "activation_code_release", bound_code.pk)
    assert "gitlab.acme.test" in response.content.decode()
    response = run_fix(
        client,
        "activation_code_release",
        bound_code.pk,
        reason_code=ReasonCode.ACTIVATION_PROBLEM,
        reason="Customer moved to new hardware",
    )
    bound_code.refresh_from_db()
    assert bound_code.released_at is not None
    event = last_event()
    assert event.action == "licenses.activation_code_released" and event.actor == support_lead
    assert event.reason.endswith("Customer moved to new hardware")
    assert response["Location"] == subscription.customer.get_absolute_url()
    page = client.get(response["Location"])
    assert any("released" in m for m in messages_of(page))


def test_release_without_a_reason_changes_nothing(client_for, support_lead, bound_code):
    response = run_fix(
        client_for(support_lead), "activation_code_release", bound_code.pk, reason=""
    )
    assert response.context["reason_form"].errors["reason"]
    bound_code.refresh_from_db()
    assert bound_code.released_at is None


# --- Signing key and troubleshooting ------------------------------------------------------------


def test_signing_key_page_and_pem_download(client_for, account_manager, rsa_private_key):
    client = client_for(account_manager)
    fingerprint = keyformat.public_key_fingerprint(rsa_private_key)
    body = client.get(reverse("licenses:signing_key")).content.decode()
    assert fingerprint in body
    assert "GITLAB_LICENSE_MODE" in body and ".test_license_encryption_key.pub" in body
    assert "CUSTOMER_PORTAL_URL" in body and "http://testserver" in body
    response = client.get(reverse("licenses:signing_key_download"))
    assert response["Content-Disposition"] == 'attachment; filename="provision-license.pub"'
    assert response.content.decode() == keyformat.public_key_pem(rsa_private_key)


def test_signing_key_page_without_a_key_says_how_to_configure_it(
    client_for, support_agent, settings, tmp_path
):
    settings.LICENSE_PRIVATE_KEY_FILE = str(tmp_path / "missing.pem")
    client = client_for(support_agent)
    assert "does not exist" in client.get(reverse("licenses:signing_key")).content.decode()
    assert client.get(reverse("licenses:signing_key_download")).status_code == 404


def test_troubleshoot_page_diagnoses_without_echoing_a_code(
    client_for, account_manager, support_agent, subscription, online_license
):
    _, code = services.activation_code_generate(
        actor=support_agent, subscription=subscription, reason="Order"
    )
    response = client_for(account_manager).post(reverse("licenses:troubleshoot"), {"text": code})
    body = response.content.decode()
    assert response.context["verdict"].code == "code_active"
    assert 'data-verdict="code_active"' in body
    assert code not in body and f"…{code[-4:]}" in body
    assert "no-store" in response["Cache-Control"]
    assert f'href="{subscription.get_absolute_url()}"' in body


def test_troubleshoot_page_links_the_newer_license(client_for, support_agent, offline_license):
    newer = services.license_issue(
        actor=support_agent,
        subscription=offline_license.subscription,
        kind=LicenseKind.OFFLINE_CLOUD,
        reason="Seats corrected",
    )
    response = client_for(support_agent).post(
        reverse("licenses:troubleshoot"), {"text": offline_license.key}
    )
    body = response.content.decode()
    assert response.context["verdict"].code == "license_superseded"
    assert f"Superseded by license #{newer.pk}" in body
    assert "Download the current license" in body
    assert offline_license.key.splitlines()[0] not in body  # the key is not echoed either


def test_troubleshoot_requires_text(client_for, support_agent):
    response = client_for(support_agent).post(reverse("licenses:troubleshoot"), {"text": " "})
    assert response.context["form"].errors["text"] and response.context["verdict"] is None
