"""License issuing, superseding, revoking, expiring; activation codes; signing keys."""

import datetime as dt
import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from licenses import keyformat, selectors, services, signing
from licenses.choices import ActivationCodeStatus, LicenseKind, LicenseStatus, SigningKeySource
from licenses.models import ActivationCode, License, SigningKey
from provision import services as provision_services
from provision.choices import (
    AddOnKind,
    Deployment,
    LicensingMethod,
    Plan,
    ProvisioningStepKind,
    StepState,
)
from provision.exceptions import ApplicationError
from provision.models import AuditEvent, ProvisioningStep
from provision.services import AddOnSpec
from tests.factories import ContactFactory, CustomerFactory, SeatReportFactory, subscription_factory
from tests.support import four_eyes

pytestmark = pytest.mark.django_db


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


def decode(license):
    return keyformat.decode_license(
        license.key, [signing.load_public_key(license.signing_key.public_key_pem)]
    )


def issue(actor, subscription, **kwargs):
    kwargs.setdefault("reason", "New order")
    return services.license_issue(actor=actor, subscription=subscription, **kwargs)


# --- license_issue ------------------------------------------------------------------------------


def test_license_issue_stores_the_exact_key_and_audits(support_agent, subscription):
    license = issue(
        support_agent, subscription, reason="Order closed", ticket_url="https://t.test/42"
    )

    stored = License.objects.get(pk=license.pk)
    assert stored.status == LicenseStatus.ISSUED
    assert stored.kind == LicenseKind.ONLINE_CLOUD  # the subscription's licensing method
    assert stored.key_sha256 == keyformat.key_sha256(stored.key)
    assert stored.key == license.key and stored.key.endswith("\n")
    decoded = decode(stored)
    assert decoded.attributes == stored.attributes
    assert decoded.kind == LicenseKind.ONLINE_CLOUD
    assert decoded.licensee == {
        "Name": subscription.customer.contacts.get().full_name,
        "Email": "buyer@acme.test",
        "Company": "Acme Robotics",
    }
    assert decoded.starts_on == subscription.term_start
    assert decoded.expires_on == subscription.term_end
    restrictions = decoded.restrictions
    assert restrictions["id"] == stored.pk
    assert restrictions["active_user_count"] == 50 == stored.user_count
    assert restrictions["plan"] == "premium" and restrictions["trial"] is False
    assert restrictions["subscription_name"] == subscription.name
    assert restrictions["subscription_id"] == str(subscription.pk)
    assert "previous_user_count" not in restrictions  # a new subscription, not a renewal
    attrs = decoded.attributes
    assert attrs["auto_renew_enabled"] is True and attrs["seat_reconciliation_enabled"] is True
    assert attrs["block_changes_at"] == (subscription.term_end + dt.timedelta(days=14)).isoformat()

    (event,) = events("licenses.license_issued")
    assert event.actor == support_agent and event.customer_id == subscription.customer_id
    assert event.target_id == str(stored.pk) and event.target_type == "licenses.license"
    assert event.reason == "Order closed" and event.ticket_url == "https://t.test/42"
    assert event.changes["status"] == [None, "issued"]
    assert event.changes["user_count"] == [None, 50]
    assert event.metadata["key_sha256"] == stored.key_sha256
    assert stored.key.strip()[:40] not in json.dumps(event.changes | event.metadata)

    step = ProvisioningStep.objects.get(
        record__subscription=subscription, kind=ProvisioningStepKind.LICENSE_ISSUED
    )
    assert step.state == StepState.DONE and step.completed_at is not None
    assert events("provision.provisioning_step_changed")[0].changes == {
        "license_issued": ["pending", "done"]
    }


def test_first_issue_registers_the_signing_key_once(support_agent, subscription, rsa_private_key):
    issue(support_agent, subscription)
    issue(support_agent, subscription)
    key = SigningKey.objects.get()
    assert key.is_active and key.fingerprint == keyformat.public_key_fingerprint(rsa_private_key)
    assert key.source == SigningKeySource.ENVIRONMENT  # a configured file, not the dev default
    assert len(events("licenses.signing_key_registered")) == 1
    assert License.objects.filter(signing_key=key).count() == 2


def test_a_seat_change_issues_a_license_that_supersedes_the_current_one(
    support_agent, subscription
):
    first = issue(support_agent, subscription)
    provision_services.subscription_seats_change(
        actor=support_agent, subscription=subscription, seats=60, reason="Bought 10 seats"
    )
    second = selectors.license_current(subscription).get()

    first.refresh_from_db()
    assert first.status == LicenseStatus.SUPERSEDED
    assert second.supersedes == first and second.status == LicenseStatus.ISSUED
    assert decode(second).user_count == 60 and decode(first).user_count == 50
    assert second.key != first.key
    assert list(selectors.license_current(subscription)) == [second]

    issued = events("licenses.license_issued")[-1]
    assert issued.changes["user_count"] == [50, 60]
    assert "plan" not in issued.changes  # only what changed
    assert issued.metadata["supersedes"] == first.pk
    assert issued.reason == "Seats changed from 50 to 60: Bought 10 seats"
    (superseded,) = events("licenses.license_superseded")
    assert superseded.target_id == str(first.pk)
    assert superseded.changes == {"status": ["issued", "superseded"]}
    assert superseded.metadata == {"superseded_by": second.pk}
    # The provisioning step was already done: no second step event.
    assert len(events("provision.provisioning_step_changed")) == 1


@pytest.mark.parametrize(
    ("kind", "cloud", "offline", "auto_renew"),
    [
        (LicenseKind.OFFLINE_CLOUD, True, True, False),
        (LicenseKind.LEGACY, False, False, False),
        (LicenseKind.ONLINE_CLOUD, True, False, True),
    ],
)
def test_kind_sets_the_cloud_flags(support_agent, customer, kind, cloud, offline, auto_renew):
    subscription = subscription_factory(customer, licensing_method=LicensingMethod.LEGACY)
    license = issue(support_agent, subscription, kind=kind)
    attrs = decode(license).attributes
    assert license.kind == kind
    assert attrs["cloud_licensing_enabled"] is cloud
    assert attrs["offline_cloud_licensing_enabled"] is offline
    assert attrs["auto_renew_enabled"] is auto_renew
    assert attrs["operational_metrics_enabled"] is (kind != LicenseKind.LEGACY)


def test_trial_subscription_gets_a_trial_license_of_its_base_plan(support_agent, customer):
    subscription = subscription_factory(customer, plan=Plan.ULTIMATE_TRIAL)
    restrictions = decode(issue(support_agent, subscription)).restrictions
    assert restrictions["plan"] == "ultimate" and restrictions["trial"] is True
    assert decode(License.objects.get()).attributes["auto_renew_enabled"] is False


def test_duo_add_ons_are_carried_as_add_on_products(support_agent, customer):
    today = timezone.localdate()
    subscription = subscription_factory(
        customer,
        plan=Plan.ULTIMATE,
        add_ons=[
            AddOnSpec(kind=AddOnKind.DUO_PRO, quantity=10),
            AddOnSpec(kind=AddOnKind.DUO_ENTERPRISE, quantity=5),
            AddOnSpec(kind=AddOnKind.COMPUTE_MINUTES, quantity=1000),
        ],
    )
    restrictions = decode(issue(support_agent, subscription, today=today)).restrictions
    products = restrictions["add_on_products"]
    assert set(products) == {"code_suggestions", "duo_enterprise"}  # no SaaS-only add-ons
    assert products["code_suggestions"] == [
        {
            "quantity": 10,
            "started_on": subscription.term_start.isoformat(),
            "expires_on": subscription.term_end.isoformat(),
            "purchase_xid": subscription.name,
            "trial": False,
        }
    ]
    assert restrictions["code_suggestions_seat_count"] == 10


def test_renewal_license_carries_previous_users_and_the_true_up(support_agent, customer):
    """support-workflows §1.3: 10 seats, a peak of 15 users → previous 10, true-up 5."""
    today = timezone.localdate()
    old = subscription_factory(
        customer,
        seats=10,
        term_start=today - dt.timedelta(days=400),
        term_end=today - dt.timedelta(days=35),
    )
    old_license = issue(support_agent, old, today=today - dt.timedelta(days=300))
    SeatReportFactory(
        subscription=old,
        report_date=today - dt.timedelta(days=100),
        max_historical_users=15,
        billable_users=14,
    )
    SeatReportFactory(  # outside the old term: not part of its true-up
        subscription=old,
        report_date=today - dt.timedelta(days=500),
        max_historical_users=40,
        billable_users=40,
    )
    renewal = subscription_factory(
        customer,
        seats=12,
        renews=old,
        term_start=today - dt.timedelta(days=35),
        term_end=today + dt.timedelta(days=330),
    )
    license = issue(support_agent, renewal, kind=LicenseKind.LEGACY)

    restrictions = decode(license).restrictions
    assert restrictions["active_user_count"] == 12
    assert restrictions["previous_user_count"] == 10
    assert restrictions["trueup_quantity"] == 5
    assert restrictions["trueup_from"] == old_license.starts_on.isoformat()
    assert restrictions["trueup_to"] == old_license.expires_on.isoformat()
    assert (license.previous_user_count, license.trueup_quantity) == (10, 5)


def test_renewal_without_overage_has_a_zero_true_up(support_agent, customer):
    today = timezone.localdate()
    old = subscription_factory(
        customer,
        seats=20,
        term_start=today - dt.timedelta(days=400),
        term_end=today - dt.timedelta(days=35),
    )
    SeatReportFactory(
        subscription=old,
        report_date=today - dt.timedelta(days=100),
        max_historical_users=18,
        billable_users=17,
    )
    renewal = subscription_factory(customer, seats=20, renews=old)
    restrictions = decode(issue(support_agent, renewal)).restrictions
    assert restrictions["previous_user_count"] == 20  # no license of the old one: its seats
    assert restrictions["trueup_quantity"] == 0


def test_legacy_license_of_a_multi_year_term_covers_one_year_at_a_time(support_agent, customer):
    start = dt.date(2024, 3, 1)
    subscription = subscription_factory(
        customer,
        licensing_method=LicensingMethod.LEGACY,
        term_start=start,
        term_end=dt.date(2027, 3, 1),
        seats=30,
    )
    year_one = issue(support_agent, subscription, today=dt.date(2024, 6, 1))
    SeatReportFactory(
        subscription=subscription,
        report_date=dt.date(2024, 12, 1),
        max_historical_users=34,
        billable_users=33,
    )
    year_two = issue(support_agent, subscription, today=dt.date(2025, 6, 1))

    assert (year_one.starts_on, year_one.expires_on) == (start, dt.date(2025, 3, 1))
    assert (year_two.starts_on, year_two.expires_on) == (dt.date(2025, 3, 1), dt.date(2026, 3, 1))
    year_one.refresh_from_db()
    assert year_one.status == LicenseStatus.ISSUED  # next year's license stands beside it
    assert year_two.supersedes is None
    restrictions = decode(year_two).restrictions
    assert restrictions["previous_user_count"] == 30
    assert restrictions["trueup_quantity"] == 4
    # A cloud license covers the whole term.
    cloud = issue(support_agent, subscription, kind=LicenseKind.OFFLINE_CLOUD)
    assert (cloud.starts_on, cloud.expires_on) == (start, dt.date(2027, 3, 1))


def test_gitlab_com_subscriptions_get_no_license(support_agent, customer):
    subscription = subscription_factory(customer, deployment=Deployment.GITLAB_COM)
    with pytest.raises(ApplicationError) as caught:
        issue(support_agent, subscription)
    assert caught.value.code == "not_self_managed"
    assert not License.objects.exists()


def test_issue_without_a_sold_to_contact_is_refused_clearly(support_agent):
    customer = CustomerFactory(name="Initech")
    ContactFactory(customer=customer, role="technical")
    subscription = subscription_factory(customer)
    with pytest.raises(ApplicationError) as caught:
        issue(support_agent, subscription)
    assert caught.value.code == "no_sold_to_contact"
    assert "Initech has no sold-to contact" in caught.value.message
    assert not License.objects.exists()
    assert not events("licenses.license_issued")


def test_issue_requires_a_fixing_role_and_a_reason(account_manager, support_agent, subscription):
    with pytest.raises(ApplicationError) as caught:
        issue(account_manager, subscription)
    assert caught.value.code == "forbidden"
    with pytest.raises(ValidationError):
        issue(support_agent, subscription, reason=" ")
    with pytest.raises(ValidationError):
        issue(support_agent, subscription, kind="paper")
    assert not License.objects.exists()


def test_issue_without_a_signing_key_fails_loudly_before_writing(
    support_agent, subscription, settings, tmp_path
):
    settings.LICENSE_PRIVATE_KEY_FILE = str(tmp_path / "missing.pem")
    with pytest.raises(signing.SigningKeyNotConfigured, match="license_dev_key"):
        issue(support_agent, subscription)
    settings.IS_PRODUCTION = True
    settings.LICENSE_PRIVATE_KEY_FILE = ""
    with pytest.raises(signing.SigningKeyNotConfigured, match="LICENSE_PRIVATE_KEY"):
        issue(support_agent, subscription)
    assert not License.objects.exists() and not SigningKey.objects.exists()


def test_license_find_by_key_forgives_crlf(support_agent, subscription):
    license = issue(support_agent, subscription)
    assert selectors.license_find_by_key(license.key) == license
    assert selectors.license_find_by_key(license.key.replace("\n", "\r\n")) == license
    assert selectors.license_key_decode(license.key).license_id == license.pk


# --- signing keys -------------------------------------------------------------------------------


def test_rotating_the_key_retires_the_old_one_and_old_licenses_still_decode(
    support_agent, subscription, settings, other_key_file, signing_key_file
):
    old_license = issue(support_agent, subscription)
    settings.LICENSE_PRIVATE_KEY_FILE = str(other_key_file)
    new_license = issue(support_agent, subscription, reason="Rotated key")

    old_key, new_key = old_license.signing_key, new_license.signing_key
    old_key.refresh_from_db()
    assert new_key.is_active and not old_key.is_active and old_key.retired_at is not None
    assert [e.target_id for e in events("licenses.signing_key_retired")] == [str(old_key.pk)]
    assert events("licenses.signing_key_registered")[-1].metadata == {
        "retired": [old_key.fingerprint]
    }
    decoded = selectors.license_key_decode(old_license.key)
    assert decoded.signing_key_fingerprint == old_key.fingerprint
    assert selectors.license_key_decode(new_license.key).license_id == new_license.pk

    settings.LICENSE_PRIVATE_KEY_FILE = str(signing_key_file)  # and back again
    issue(support_agent, subscription, reason="Rolled back")
    old_key.refresh_from_db()
    assert old_key.is_active and SigningKey.objects.count() == 2


def test_active_signing_key_caches_the_parsed_key_per_configuration(
    settings, rsa_private_key, other_key_file
):
    first = signing.active_signing_key()
    again = signing.active_signing_key()
    assert again.private_key is first.private_key  # parsed once
    settings.LICENSE_PRIVATE_KEY_FILE = str(other_key_file)
    switched = signing.active_signing_key()
    assert switched.fingerprint != first.fingerprint


def test_pem_text_setting_wins_over_the_file_and_may_be_one_line(settings, other_key_file):
    pem = other_key_file.read_text()
    settings.LICENSE_PRIVATE_KEY = pem.replace("\n", "\\n")
    loaded = signing.configured_key()
    assert loaded.origin == "LICENSE_PRIVATE_KEY"
    assert loaded.fingerprint == keyformat.public_key_fingerprint(
        signing.parse_private_key(pem.encode(), origin="test")
    )


def test_unusable_keys_are_refused_with_a_message_that_does_not_echo_them(settings, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    settings.LICENSE_PRIVATE_KEY_FILE = str(bad)
    with pytest.raises(signing.SigningKeyNotConfigured) as caught:
        signing.configured_key()
    assert "c2VjcmV0" not in str(caught.value) and str(bad) in str(caught.value)


def test_dev_key_file_is_registered_as_generated(settings, tmp_path, signing_key_file):
    settings.VAR_DIR = tmp_path
    dev = tmp_path / signing.DEV_KEY_FILENAME
    dev.write_bytes(signing_key_file.read_bytes())
    settings.LICENSE_PRIVATE_KEY_FILE = str(dev)
    assert signing.active_signing_key().row.source == SigningKeySource.GENERATED


# --- activation codes ---------------------------------------------------------------------------


def _row_values(instance):
    return [str(getattr(instance, field.attname)) for field in instance._meta.concrete_fields]


def test_activation_code_is_returned_once_and_stored_only_as_a_keyed_hash(
    support_agent, subscription
):
    code_row, code = services.activation_code_generate(
        actor=support_agent, subscription=subscription, reason="Order closed"
    )
    assert re.fullmatch(r"[A-Za-z0-9]{24}", code)
    stored = ActivationCode.objects.get(pk=code_row.pk)
    assert stored.code_hash == services.activation_code_hash(code)
    assert stored.code_hint == code[-4:] and stored.status == ActivationCodeStatus.ACTIVE
    assert all(code not in value for value in _row_values(stored))
    for event in AuditEvent.objects.all():
        assert code not in json.dumps([_row_values(event), event.changes, event.metadata])
    (event,) = events("licenses.activation_code_generated")
    assert event.changes == {"code_hint": [None, code[-4:]]}
    assert event.actor == support_agent and event.customer_id == subscription.customer_id
    assert selectors.activation_code_find(code) == stored
    assert selectors.activation_code_find(f"  {code}\n") == stored  # pasted with whitespace


def test_generating_again_replaces_the_old_code(support_agent, subscription):
    old_row, old_code = services.activation_code_generate(
        actor=support_agent, subscription=subscription, reason="Order closed"
    )
    new_row, new_code = services.activation_code_generate(
        actor=support_agent, subscription=subscription, reason="Customer lost the e-mail"
    )
    old_row.refresh_from_db()
    assert old_row.status == ActivationCodeStatus.REPLACED and old_row.replaced_at is not None
    assert selectors.activation_code_find(old_code) is None
    assert selectors.activation_code_find(new_code) == new_row
    assert new_code != old_code
    event = events("licenses.activation_code_generated")[-1]
    assert event.changes == {"code_hint": [old_code[-4:], new_code[-4:]]}
    assert event.metadata == {"replaced": [old_row.pk]}


def test_activation_code_hash_is_keyed(settings):
    derived = services.activation_code_hash("ABCDEFGHIJKLMNOPQRSTUVWX")
    settings.ACTIVATION_CODE_HMAC_KEY = "a dedicated key"
    dedicated = services.activation_code_hash("ABCDEFGHIJKLMNOPQRSTUVWX")
    settings.SECRET_KEY = "another secret key entirely, for this test only"
    assert services.activation_code_hash("ABCDEFGHIJKLMNOPQRSTUVWX") == dedicated
    settings.ACTIVATION_CODE_HMAC_KEY = ""
    assert services.activation_code_hash("ABCDEFGHIJKLMNOPQRSTUVWX") not in (derived, dedicated)


def test_activation_codes_are_refused_for_gitlab_com_and_for_outsiders(
    support_agent, outsider, customer, subscription
):
    saas = subscription_factory(customer, deployment=Deployment.GITLAB_COM)
    with pytest.raises(ApplicationError) as caught:
        services.activation_code_generate(actor=support_agent, subscription=saas, reason="x")
    assert caught.value.code == "not_self_managed"
    with pytest.raises(ApplicationError) as caught:
        services.activation_code_generate(actor=outsider, subscription=subscription, reason="x")
    assert caught.value.code == "forbidden"
    assert not ActivationCode.objects.exists()


# --- revoke and expire --------------------------------------------------------------------------


def test_support_lead_revokes_a_license(support_lead, support_agent, subscription):
    license = issue(support_agent, subscription)
    with pytest.raises(ApplicationError) as caught:
        services.license_revoke(actor=support_agent, license=license, reason="Fraud")
    assert caught.value.code == "needs_approval"

    with pytest.raises(ApplicationError) as caught:
        services.license_revoke(actor=support_lead, license=license, reason="Alone")
    assert caught.value.code == "needs_approval"  # a lead alone is not enough: four-eyes
    with four_eyes("license_revoke", requested_by=support_agent, approved_by=support_lead):
        services.license_revoke(
            actor=support_lead, license=license, reason="Chargeback", ticket_url="https://t.test/9"
        )
    license.refresh_from_db()
    assert license.status == LicenseStatus.REVOKED and license.revoked_at is not None
    (event,) = events("licenses.license_revoked")
    assert event.changes == {"status": ["issued", "revoked"]}
    assert event.actor == support_lead and event.ticket_url == "https://t.test/9"
    with (
        pytest.raises(ApplicationError) as caught,
        four_eyes("license_revoke", requested_by=support_agent, approved_by=support_lead),
    ):
        services.license_revoke(actor=support_lead, license=license, reason="Again")
    assert caught.value.code == "no_change"


def test_licenses_past_their_expiry_date_are_marked_expired(support_agent, customer):
    today = timezone.localdate()
    ended = subscription_factory(
        customer, term_start=today - dt.timedelta(days=365), term_end=today
    )
    running = subscription_factory(customer)
    old = issue(support_agent, ended)
    current = issue(support_agent, running)

    assert services.licenses_mark_expired(today=today) == 1
    old.refresh_from_db()
    current.refresh_from_db()
    assert old.status == LicenseStatus.EXPIRED and current.status == LicenseStatus.ISSUED
    (event,) = events("licenses.license_expired")
    assert event.actor is None and event.actor_kind == "system"
    assert event.changes == {"status": ["issued", "expired"]}
    assert services.licenses_mark_expired(today=today) == 0  # idempotent


# --- concurrency --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_issues_for_one_subscription_supersede_in_a_chain(support_agent, subscription):
    """Two simultaneous issues: the subscription lock makes the second see the first's license,
    so each license is superseded once and exactly one stays current."""
    import threading

    from django.db import connection

    first = issue(support_agent, subscription)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker():
        try:
            barrier.wait(timeout=10)
            results.append(issue(support_agent, subscription, reason="Concurrent"))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    licenses = {lic.pk: lic for lic in License.objects.filter(subscription=subscription)}
    assert len(licenses) == 3
    current = [lic for lic in licenses.values() if lic.status == LicenseStatus.ISSUED]
    assert len(current) == 1
    chain = [current[0]]
    while chain[-1].supersedes_id:
        chain.append(licenses[chain[-1].supersedes_id])
    assert [lic.pk for lic in chain][-1] == first.pk and len(chain) == 3
    assert len(events("licenses.license_superseded")) == 2


def test_an_add_on_change_issues_a_new_license_with_the_add_on(support_agent, subscription):
    first = issue(support_agent, subscription)
    provision_services.subscription_add_on_set(
        actor=support_agent,
        subscription=subscription,
        kind="duo_pro",
        quantity=20,
        reason="Duo Pro order",
    )
    second = selectors.license_current(subscription).get()
    first.refresh_from_db()
    assert first.status == LicenseStatus.SUPERSEDED and second.supersedes == first
    assert second.add_ons != first.add_ons
    (duo_pro,) = decode(second).attributes["restrictions"]["add_on_products"]["code_suggestions"]
    assert duo_pro["quantity"] == 20
    assert "add_on_products" not in decode(first).attributes["restrictions"]
    change = events("provision.subscription_add_on_changed")[-1]
    assert change.changes == {"duo_pro": [0, 20]}


def test_an_add_on_set_to_zero_ends_it_and_keeps_history(support_agent, subscription):
    import datetime as dt

    today = subscription.term_start + dt.timedelta(days=10)
    provision_services.subscription_add_on_set(
        actor=support_agent,
        subscription=subscription,
        kind="duo_pro",
        quantity=20,
        reason="order",
        today=subscription.term_start,
    )
    provision_services.subscription_add_on_set(
        actor=support_agent,
        subscription=subscription,
        kind="duo_pro",
        quantity=0,
        reason="cancelled",
        today=today,
    )
    (only,) = subscription.add_ons.all()
    assert (only.quantity, only.starts_on, only.ends_on) == (20, subscription.term_start, today)


def test_seat_change_without_a_license_issues_none(support_agent, subscription):
    provision_services.subscription_seats_change(
        actor=support_agent, subscription=subscription, seats=60, reason="More seats"
    )
    assert not selectors.license_current(subscription).exists()
