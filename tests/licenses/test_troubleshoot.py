"""license_troubleshoot: one verdict per thing a customer can paste, and the next safe step."""

import base64
import datetime as dt
import json
import uuid

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from licenses import keyformat, selectors, services
from licenses.choices import ActivationCodeStatus, LicenseKind
from licenses.models import Activation, ActivationCode
from licenses.selectors import license_troubleshoot
from provision.choices import SubscriptionStatus
from provision.models import Subscription
from tests.factories import ContactFactory, CustomerFactory, InstanceFactory, subscription_factory
from tests.support import four_eyes

pytestmark = pytest.mark.django_db


def diagnose(actor, text, **kwargs):
    return license_troubleshoot(actor=actor, text=text, **kwargs)


def issue(subscription, kind=None, **kwargs):
    return services.license_issue(
        actor=None, subscription=subscription, kind=kind, reason="Order", **kwargs
    )


def action_labels(verdict):
    return [action.label for action in verdict.actions]


def flip_one_byte(key: str) -> str:
    """Change one byte of the encrypted data, keeping the Base64 and the envelope valid."""
    envelope = json.loads(base64.b64decode(key))
    data = bytearray(base64.b64decode(envelope["data"]))
    data[5] ^= 0x01
    envelope["data"] = base64.b64encode(bytes(data)).decode()
    return keyformat.ruby_base64(json.dumps(envelope, separators=(",", ":")).encode())


# --- Who may ask -------------------------------------------------------------------------------


def test_outsiders_may_not_troubleshoot(outsider):
    with pytest.raises(PermissionDenied):
        diagnose(outsider, "anything")


def test_account_managers_see_the_verdict_but_not_the_fix(account_manager, subscription):
    license = issue(subscription, LicenseKind.OFFLINE_CLOUD)
    issue(subscription, LicenseKind.OFFLINE_CLOUD)  # supersedes it
    verdict = diagnose(account_manager, license.key)
    assert verdict.code == "license_superseded"
    download = next(a for a in verdict.actions if a.label == "Download the current license")
    assert download.allowed is False and download.requires == "a support role"


# --- Nothing useful ----------------------------------------------------------------------------


def test_empty_text(support_agent):
    verdict = diagnose(support_agent, "   \n")
    assert (verdict.code, verdict.input_kind) == ("empty", "empty")


@pytest.fixture
def registered_key(subscription):
    """A signing key is registered once Provision has issued a license."""
    return issue(subscription)


def test_unrecognised_text_explains_what_to_paste(support_agent, registered_key):
    verdict = diagnose(support_agent, "my license does not work!")
    assert verdict.code == "unrecognised"
    assert "24 letters and digits" in verdict.explanation


def test_unrecognised_text_before_any_license_was_issued(support_agent):
    assert diagnose(support_agent, "hello").code == "unrecognised"


def test_a_key_before_any_license_was_issued_is_not_ours(support_agent, other_rsa_private_key):
    attributes = keyformat.build_attributes(
        licensee_name="Jane Admin",
        licensee_email="jane@example.test",
        licensee_company="Example",
        starts_on=dt.date(2025, 1, 1),
        expires_on=dt.date(2026, 1, 1),
        kind="legacy",
        plan="premium",
        user_count=10,
    )
    foreign = keyformat.encode_license(attributes, other_rsa_private_key)
    verdict = diagnose(support_agent, foreign)
    assert verdict.code == "license_unknown_signer"
    assert "has not issued any license yet" in verdict.explanation


def test_a_code_with_a_character_missing_is_called_out(support_agent, registered_key):
    verdict = diagnose(support_agent, "a" * 23)
    assert verdict.code == "unrecognised"
    assert "this has 23" in verdict.explanation


# --- License keys ------------------------------------------------------------------------------


def test_current_license_is_valid(support_agent, subscription):
    license = issue(subscription, LicenseKind.LEGACY)
    verdict = diagnose(support_agent, license.key)
    assert verdict.code == "license_valid" and verdict.tone == "success"
    assert verdict.title == f"Valid until {license.expires_on:%Y-%m-%d}"
    assert (verdict.customer, verdict.subscription, verdict.license) == (
        subscription.customer,
        subscription,
        license,
    )
    assert verdict.decoded.attributes == license.attributes
    assert verdict.input_summary.startswith(f"{len(license.key.strip()):,} characters")


def test_crlf_and_boundary_lines_still_identify_the_license(support_agent, subscription):
    license = issue(subscription, LicenseKind.LEGACY)
    pasted = license.key.replace("\n", "\r\n")
    assert diagnose(support_agent, pasted).code == "license_valid"


def test_future_dated_license(support_agent, customer):
    today = timezone.localdate()
    subscription = subscription_factory(
        customer,
        term_start=today + dt.timedelta(days=10),
        term_end=today + dt.timedelta(days=375),
    )
    assert subscription.status == SubscriptionStatus.PENDING
    license = issue(subscription)
    verdict = diagnose(support_agent, license.key)
    assert verdict.code == "license_valid" and verdict.tone == "info"
    assert "future dated" in verdict.title


def test_expired_license_points_at_the_renewal(support_agent, customer):
    today = timezone.localdate()
    old = subscription_factory(
        customer,
        term_start=today - dt.timedelta(days=400),
        term_end=today - dt.timedelta(days=35),
    )
    old_license = issue(old, LicenseKind.OFFLINE_CLOUD, today=today - dt.timedelta(days=100))
    services.licenses_mark_expired()
    renewal = subscription_factory(customer, renews=old)
    renewal_license = issue(renewal, LicenseKind.OFFLINE_CLOUD)

    verdict = diagnose(support_agent, old_license.key)
    assert verdict.code == "license_expired"
    assert verdict.title == f"Expired on {old_license.expires_on:%Y-%m-%d}"
    assert f"renewed as {renewal.name}" in verdict.explanation
    assert verdict.current_license == renewal_license
    (action,) = verdict.actions
    assert action.label == "Download the current license"
    assert action.url == reverse("licenses:license_detail", args=[renewal_license.pk]) + "#actions"


def test_expired_license_without_a_renewal(support_agent, customer):
    today = timezone.localdate()
    old = subscription_factory(
        customer,
        term_start=today - dt.timedelta(days=400),
        term_end=today - dt.timedelta(days=35),
    )
    license = issue(old, LicenseKind.LEGACY, today=today - dt.timedelta(days=100))
    # Not yet marked expired by the nightly job: the date alone decides.
    verdict = diagnose(support_agent, license.key)
    assert verdict.code == "license_expired"
    assert "has not been renewed" in verdict.explanation
    assert action_labels(verdict) == ["Open the subscription"]


def test_superseded_license_names_and_links_the_newest(support_agent, subscription):
    first = issue(subscription, LicenseKind.OFFLINE_CLOUD)
    second = issue(subscription, LicenseKind.OFFLINE_CLOUD)
    third = issue(subscription, LicenseKind.OFFLINE_CLOUD)
    verdict = diagnose(support_agent, first.key)
    assert verdict.code == "license_superseded"
    assert verdict.title == f"Superseded by license #{second.pk}"
    assert f"the newest is #{third.pk}" in verdict.explanation
    assert verdict.current_license == third
    assert action_labels(verdict) == [f"Open license #{third.pk}", "Download the current license"]


def test_superseded_online_license_suggests_resending_the_code(support_agent, subscription):
    first = issue(subscription)
    issue(subscription)
    verdict = diagnose(support_agent, first.key)
    assert verdict.code == "license_superseded"
    assert "next Seat Link" in verdict.explanation
    assert "Resend activation code" in action_labels(verdict)


def test_revoked_license(support_lead, support_agent, subscription):
    license = issue(subscription, LicenseKind.LEGACY)
    with four_eyes("license_revoke", requested_by=support_agent, approved_by=support_lead):
        services.license_revoke(actor=support_lead, license=license, reason="Chargeback")
    verdict = diagnose(support_lead, license.key)
    assert verdict.code == "license_revoked" and verdict.tone == "danger"
    assert "revoked on" in verdict.explanation
    # No current license: issuing one is a decision for a person, not a suggestion.
    assert action_labels(verdict) == ["Open the revoked license"]
    replacement = issue(subscription, LicenseKind.LEGACY)
    verdict = diagnose(support_lead, license.key)
    assert verdict.current_license == replacement
    assert action_labels(verdict) == ["Open the revoked license", "Download the current license"]


def test_altered_key_is_tampered_with_the_decoders_reason(support_agent, subscription):
    license = issue(subscription, LicenseKind.LEGACY)
    verdict = diagnose(support_agent, flip_one_byte(license.key))
    assert verdict.code == "license_tampered"
    assert verdict.decoder_reason in {"integrity_check_failed", "aes_padding_invalid"}
    assert keyformat.REASONS[verdict.decoder_reason] in verdict.explanation
    assert verdict.license is None


def test_truncated_key_is_tampered_not_unrecognised(support_agent, subscription):
    license = issue(subscription, LicenseKind.LEGACY)
    verdict = diagnose(support_agent, license.key[: len(license.key) // 2])
    assert verdict.code == "license_tampered"


def test_key_signed_by_another_key(support_agent, subscription, other_rsa_private_key):
    license = issue(subscription, LicenseKind.LEGACY)
    foreign = keyformat.encode_license(license.attributes, other_rsa_private_key)
    verdict = diagnose(support_agent, foreign)
    assert verdict.code == "license_unknown_signer"
    assert "GitLab Inc." in verdict.explanation


def test_key_that_decodes_but_was_never_issued(support_agent, subscription, rsa_private_key):
    license = issue(subscription, LicenseKind.OFFLINE_CLOUD)
    attributes = dict(license.attributes)
    attributes["restrictions"] = {**attributes["restrictions"], "active_user_count": 5000}
    forged = keyformat.encode_license(attributes, rsa_private_key)
    verdict = diagnose(support_agent, forged)
    assert verdict.code == "license_not_issued" and verdict.tone == "danger"
    assert verdict.subscription == subscription  # the name it claims, for the real license
    assert verdict.license is None
    assert ("SHA-256", keyformat.key_sha256(forged)) in verdict.facts
    assert action_labels(verdict) == ["Download the current license"]


# --- Activation codes --------------------------------------------------------------------------


def generate(subscription):
    return services.activation_code_generate(actor=None, subscription=subscription, reason="x")


def test_unknown_code(support_agent):
    verdict = diagnose(support_agent, "A1b2C3d4E5f6G7h8I9j0K1l2")
    assert verdict.code == "code_unknown"
    assert verdict.input_summary == "…K1l2"


def test_active_unused_code(support_agent, subscription):
    license = issue(subscription)
    code_row, code = generate(subscription)
    verdict = diagnose(support_agent, code)
    assert verdict.code == "code_active" and verdict.activation_code == code_row
    assert verdict.current_license == license
    assert code not in repr(verdict) and verdict.input_summary == f"…{code[-4:]}"


def test_active_code_without_a_cloud_license_will_not_activate(support_agent, subscription):
    _, code = generate(subscription)
    verdict = diagnose(support_agent, code)
    assert verdict.code == "code_active_no_license"
    assert "no current online cloud license" in verdict.title
    assert action_labels(verdict) == ["Issue a license"]


def test_replaced_code(support_agent, subscription):
    _, old = generate(subscription)
    newer, _ = generate(subscription)
    verdict = diagnose(support_agent, old)
    assert verdict.code == "code_replaced"
    assert f"…{newer.code_hint}" in verdict.explanation
    (action,) = verdict.actions
    assert action.label == "Resend activation code" and action.allowed
    assert action.url == reverse("provision:fix", args=["activation_code_resend", subscription.pk])


def test_revoked_code(support_agent, subscription):
    code_row, code = generate(subscription)
    # No service revokes codes yet; the status exists for the day one does.
    ActivationCode.objects.filter(pk=code_row.pk).update(status=ActivationCodeStatus.REVOKED)
    verdict = diagnose(support_agent, code)
    assert verdict.code == "code_revoked"
    assert "No code is active" in verdict.explanation
    assert action_labels(verdict) == ["Resend activation code"]


def test_active_code_of_an_expired_subscription_will_not_activate(support_agent, subscription):
    issue(subscription)
    _, code = generate(subscription)
    Subscription.objects.filter(pk=subscription.pk).update(status=SubscriptionStatus.EXPIRED)
    verdict = diagnose(support_agent, code)
    assert verdict.code == "code_active_no_license"
    assert f"{subscription.name} is expired" in verdict.title
    assert action_labels(verdict) == ["Open the subscription"]


def test_code_already_used_by_an_instance_offers_release_to_a_lead(
    support_agent, support_lead, subscription
):
    license = issue(subscription)
    code_row, code = generate(subscription)
    instance = InstanceFactory(hostname="old-gitlab.acme.test")
    Activation.objects.create(
        activation_code=code_row, license=license, instance=instance, gitlab_version="17.4.0-ee"
    )
    verdict = diagnose(support_agent, code)
    assert verdict.code == "code_in_use"
    assert verdict.title == "Already used by instance old-gitlab.acme.test"
    assert str(instance.instance_id) in verdict.explanation
    release = verdict.actions[0]
    assert release.label == "Release the code" and release.allowed is False
    assert release.requires == "a support lead"
    assert diagnose(support_lead, code).actions[0].allowed is True

    services.activation_code_release(
        actor=support_lead, activation_code=code_row, reason="New server"
    )
    released = diagnose(support_agent, code)
    assert released.code == "code_in_use" and "takes it over" in released.explanation
    assert "Release the code" not in action_labels(released)


# --- Instance ids ------------------------------------------------------------------------------


def test_unknown_instance(support_agent):
    verdict = diagnose(support_agent, str(uuid.uuid4()).upper())
    assert verdict.code == "instance_unknown"
    assert "CUSTOMER_PORTAL_URL" in verdict.explanation


def test_syncing_instance(support_agent, subscription):
    license = issue(subscription)
    code_row, _ = generate(subscription)
    instance = InstanceFactory(subscription=subscription, customer=subscription.customer)
    Activation.objects.create(activation_code=code_row, license=license, instance=instance)
    verdict = diagnose(support_agent, str(instance.instance_id))
    assert verdict.code == "instance_syncing" and verdict.tone == "success"
    assert verdict.subscription == subscription and verdict.license == license
    assert any(label == "Activation" for label, _ in verdict.facts)


def test_stale_instance(support_agent, subscription):
    instance = InstanceFactory(
        subscription=subscription, last_sync_at=timezone.now() - dt.timedelta(days=3)
    )
    verdict = diagnose(support_agent, instance.instance_id.hex)  # without dashes
    assert verdict.code == "instance_stale"
    assert verdict.customer == subscription.customer


def test_instance_that_never_synced(support_agent):
    instance = InstanceFactory(last_sync_at=None)
    verdict = diagnose(support_agent, str(instance.instance_id))
    assert verdict.code == "instance_stale" and verdict.title == "Never sent Seat Link"


def test_air_gapped_instance(support_agent, subscription):
    instance = InstanceFactory(subscription=subscription, air_gapped=True, last_sync_at=None)
    assert diagnose(support_agent, str(instance.instance_id)).code == "instance_air_gapped"


# --- Bounded work ------------------------------------------------------------------------------


def test_a_diagnosis_takes_a_handful_of_queries(support_agent, django_assert_max_num_queries):
    customer = CustomerFactory()
    ContactFactory(customer=customer)
    subscription = subscription_factory(customer)
    licenses = [issue(subscription, LicenseKind.OFFLINE_CLOUD) for _ in range(6)]
    selectors.signing_keys_for_decoding()  # parse and cache the public key once
    with django_assert_max_num_queries(14):
        verdict = diagnose(support_agent, licenses[0].key)
    assert verdict.code == "license_superseded"
