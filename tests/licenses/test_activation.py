"""Cloud activation: a code binds one instance and hands it the subscription's stored license.

The happy path and the refusals go through the real HTTP stack (GitLab's exact body and
headers); the rules that need no HTTP call ``activation_activate`` directly.
"""

import datetime as dt
import json
import threading
import uuid

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from licenses import keyformat, services, signing
from licenses.choices import ActivationStatus, LicenseStatus
from licenses.models import Activation, ActivationCode, License
from provision.choices import (
    ActorKind,
    Deployment,
    LicensingMethod,
    ProvisioningStepKind,
    StepState,
    SubscriptionStatus,
)
from provision.exceptions import ApplicationError
from provision.models import AuditEvent, ProvisioningStep, Subscription
from tests.factories import CustomerFactory, subscription_factory
from tests.licenses.test_graphql import answer, newest_body, post
from usage.models import Instance

pytestmark = pytest.mark.django_db

NO_CLOUD = "without cloud compatible subscription"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


def make_code(subscription):
    _, code = services.activation_code_generate(
        actor=None, subscription=subscription, reason="Order closed"
    )
    return code


@pytest.fixture
def activation_code(subscription):
    return make_code(subscription)


def activate(code, instance_id=None, **kwargs):
    kwargs.setdefault("client_ip", "192.0.2.10")
    return services.activation_activate(
        activation_code=code,
        instance_identifier=str(instance_id or uuid.uuid4()),
        **kwargs,
    )


def refused(code, instance_id=None, **kwargs):
    with pytest.raises(ApplicationError) as caught:
        activate(code, instance_id, **kwargs)
    return caught.value.message


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- the happy path, over HTTP ------------------------------------------------------------------


def test_first_activation_binds_the_instance_and_returns_the_stored_key_byte_for_byte(
    client, subscription, activation_code
):
    instance_id, unique_id = uuid.uuid4(), uuid.uuid4()
    body = newest_body(
        activation_code,
        instance_id,
        uniqueInstanceId=str(unique_id),
        gitlabVersion="17.6.1-ee",
        hostname="gitlab.acme.test",
    )
    response = post(client, body)

    assert response.status_code == 200
    payload = answer(response)
    assert payload["errors"] == [] and payload["newSubscription"] is True
    license = License.objects.get()
    # Byte-identical to what is stored: the JSON string decodes to exactly License.key.
    assert json.loads(response.content)["data"]["cloudActivationActivate"]["licenseKey"] == (
        license.key
    )
    assert payload["licenseKey"].encode() == license.key.encode()
    decoded = keyformat.decode_license(
        payload["licenseKey"], [signing.load_public_key(license.signing_key.public_key_pem)]
    )
    assert decoded.restrictions["subscription_name"] == subscription.name
    assert decoded.restrictions["id"] == license.pk
    assert license.status == LicenseStatus.ACTIVE

    activation = Activation.objects.select_related("instance").get()
    assert activation.status == ActivationStatus.ACTIVE
    assert activation.license == license
    assert activation.activation_code.subscription == subscription
    assert (activation.gitlab_version, activation.hostname) == ("17.6.1-ee", "gitlab.acme.test")
    assert activation.automated is False
    assert activation.client_ip == "127.0.0.1"
    instance = activation.instance
    assert instance.instance_id == instance_id
    assert instance.unique_instance_id == str(unique_id)
    assert (instance.hostname, instance.version) == ("gitlab.acme.test", "17.6.1-ee")
    assert instance.customer == subscription.customer
    assert instance.subscription == subscription
    assert instance.last_seen_at is not None

    (event,) = events("licenses.activated")
    assert event.actor is None and event.actor_kind == ActorKind.INSTANCE
    assert event.source == "api"
    assert event.request_id == response["X-Request-ID"]
    assert event.target_id == str(activation.pk)
    assert event.customer == subscription.customer
    assert event.changes["instance"] == [None, str(instance_id)]
    assert event.changes["license_status"] == ["issued", "active"]
    assert event.metadata["key_sha256"] == license.key_sha256
    assert event.metadata["client_ip"] == "127.0.0.1"
    assert activation_code not in json.dumps(event.changes | event.metadata | {"r": event.reason})


def test_first_activation_issues_the_license_when_none_exists_as_the_system(
    client, subscription, activation_code
):
    assert not License.objects.exists()
    post(client, newest_body(activation_code))

    license = License.objects.get()
    assert license.kind == "online_cloud" and license.issued_by is None
    (issued,) = events("licenses.license_issued")
    assert issued.actor_kind == ActorKind.SYSTEM


def test_an_issued_license_is_handed_out_not_issued_again(client, subscription, activation_code):
    issued = services.license_issue(actor=None, subscription=subscription, reason="Order")
    response = post(client, newest_body(activation_code))

    assert answer(response)["licenseKey"] == issued.key
    assert License.objects.count() == 1
    issued.refresh_from_db()
    assert issued.status == LicenseStatus.ACTIVE


def test_activation_closes_the_activated_provisioning_step_as_the_instance(
    client, subscription, activation_code
):
    step = ProvisioningStep.objects.get(
        record__subscription=subscription, kind=ProvisioningStepKind.ACTIVATED
    )
    assert step.state == StepState.PENDING

    post(client, newest_body(activation_code))

    step.refresh_from_db()
    assert step.state == StepState.DONE and step.completed_at is not None
    changed = [
        e
        for e in events("provision.provisioning_step_changed")
        if ProvisioningStepKind.ACTIVATED in e.changes
    ]
    assert len(changed) == 1
    assert changed[0].actor_kind == ActorKind.INSTANCE
    assert changed[0].changes[ProvisioningStepKind.ACTIVATED] == ["pending", "done"]


def test_a_repeat_from_the_same_instance_is_idempotent(client, subscription, activation_code):
    instance_id = uuid.uuid4()
    first = answer(post(client, newest_body(activation_code, instance_id)))
    seen = Instance.objects.get().last_seen_at
    second = answer(
        post(client, newest_body(activation_code, instance_id, hostname="gitlab2.acme.test"))
    )

    assert second["licenseKey"] == first["licenseKey"] == License.objects.get().key
    assert second["errors"] == []
    assert first["newSubscription"] is True and second["newSubscription"] is False
    assert Activation.objects.count() == 1
    assert len(events("licenses.activated")) == 1
    instance = Instance.objects.get()
    assert instance.last_seen_at > seen
    assert instance.hostname == "gitlab2.acme.test"  # what the instance says now


def test_a_repeat_after_a_reissue_delivers_the_new_key(
    subscription, activation_code, support_agent
):
    instance_id = uuid.uuid4()
    first = activate(activation_code, instance_id)
    new = services.license_issue(
        actor=support_agent, subscription=subscription, reason="Correct the licensee"
    )

    again = activate(activation_code, instance_id)

    assert again.license_key == new.key != first.license_key
    assert again.bound is False and again.activation.pk == first.activation.pk
    again.activation.refresh_from_db()
    assert again.activation.license == new
    new.refresh_from_db()
    assert new.status == LicenseStatus.ACTIVE
    (event,) = events("licenses.activation_refreshed")
    assert event.changes["license"] == [first.license.pk, new.pk]
    assert event.actor_kind == ActorKind.INSTANCE


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["A" * 24, "short", "", "a" * 25, "ÄÖÜ" * 8, " " * 24])
def test_a_wrong_code_is_an_invalid_activation_code_and_writes_nothing(client, subscription, code):
    make_code(subscription)
    response = post(client, newest_body(code))

    assert response.status_code == 200
    assert answer(response) == {
        "licenseKey": None,
        "futureSubscriptions": [],
        "newSubscription": None,
        "errors": ["invalid activation code"],
    }
    assert not Activation.objects.exists()
    assert not Instance.objects.exists()
    assert not License.objects.exists()


def test_a_replaced_code_is_invalid_and_the_new_one_works(client, subscription):
    old = make_code(subscription)
    new = make_code(subscription)  # a resend: the old code stops working

    assert answer(post(client, newest_body(old)))["errors"] == ["invalid activation code"]
    assert answer(post(client, newest_body(new)))["errors"] == []


def test_a_revoked_code_is_invalid(subscription, activation_code):
    ActivationCode.objects.update(status="revoked")
    assert refused(activation_code) == "invalid activation code"


def test_an_expired_subscription_says_the_license_expired(client, customer):
    today = timezone.localdate()
    subscription = subscription_factory(
        customer,
        term_start=today - dt.timedelta(days=400),
        term_end=today - dt.timedelta(days=35),
    )
    assert subscription.status == SubscriptionStatus.EXPIRED
    code = ActivationCode.objects.create(
        subscription=subscription,
        code_hash=signing.activation_code_hash("H" * 24),
        code_hint="HHHH",
    )
    assert code.pk

    response = post(client, newest_body("H" * 24))

    # Matched exactly by GitLab's admin UI: "Your subscription is expired".
    assert answer(response)["errors"] == ["This license has already expired."]
    assert answer(response)["licenseKey"] is None
    assert not Activation.objects.exists()


def test_a_subscription_past_its_end_expires_before_the_nightly_task_notices(
    subscription, activation_code
):
    Subscription.objects.filter(pk=subscription.pk).update(
        term_end=timezone.localdate(), status=SubscriptionStatus.ACTIVE
    )
    assert refused(activation_code) == "This license has already expired."


def _gitlab_com_subscription(customer):
    subscription = subscription_factory(customer, deployment=Deployment.GITLAB_COM)
    # activation_code_generate refuses GitLab.com subscriptions; a code may still exist from
    # before a deployment change, so the row is made directly.
    ActivationCode.objects.create(
        subscription=subscription,
        code_hash=signing.activation_code_hash("J" * 24),
        code_hint="JJJJ",
    )
    return "J" * 24


@pytest.mark.parametrize("case", ["gitlab_com", "legacy", "offline_cloud", "cancelled"])
def test_subscriptions_without_online_cloud_licensing_are_not_cloud_compatible(
    client, customer, case
):
    if case == "gitlab_com":
        code = _gitlab_com_subscription(customer)
    else:
        method = case if case != "cancelled" else LicensingMethod.ONLINE_CLOUD
        subscription = subscription_factory(customer, licensing_method=method)
        code = make_code(subscription)
        if case == "cancelled":
            Subscription.objects.filter(pk=subscription.pk).update(
                status=SubscriptionStatus.CANCELLED
            )

    response = post(client, newest_body(code))

    assert response.status_code == 200
    # Compared for equality by GitLab's UI: "Your subscription cannot be located".
    assert answer(response)["errors"] == [NO_CLOUD]
    assert not Activation.objects.exists() and not Instance.objects.exists()


def test_a_license_that_cannot_be_issued_is_a_clear_error_and_writes_nothing(client):
    customer = CustomerFactory()  # no sold-to contact: license_issue refuses
    subscription = subscription_factory(customer)
    code = make_code(subscription)

    response = post(client, newest_body(code))

    assert response.status_code == 200
    assert answer(response)["errors"] == [services.ACTIVATION_ERROR_LICENSE_UNAVAILABLE]
    assert customer.name not in response.content.decode()
    assert not License.objects.exists()
    assert not Activation.objects.exists() and not Instance.objects.exists()


def test_a_non_uuid_instance_identifier_is_refused_before_any_write(activation_code):
    assert refused(activation_code, "gitlab-1") == services.ACTIVATION_ERROR_INSTANCE_IDENTIFIER
    assert not Instance.objects.exists()


def test_what_an_instance_says_about_itself_is_cleaned_before_it_is_stored(activation_code):
    result = activate(
        activation_code,
        hostname="git\x00lab\ud800.example.com" + "x" * 300,
        gitlab_version="17.6.1-ee\x07" + "9" * 50,
        unique_instance_id="u" * 65,  # too long to be an identifier: not stored, not cut
        client_ip="not an address",
    )
    activation = Activation.objects.get(pk=result.activation.pk)
    assert activation.hostname.startswith("gitlab.example.com")
    assert len(activation.hostname) == 255
    assert activation.gitlab_version == ("17.6.1-ee" + "9" * 50)[:40]
    assert activation.client_ip is None
    assert Instance.objects.get().unique_instance_id == ""


# --- one code, one instance ---------------------------------------------------------------------


def test_a_second_instance_is_refused_until_staff_release_the_code(
    client, subscription, activation_code, support_lead
):
    first_id, second_id, third_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = answer(post(client, newest_body(activation_code, first_id)))
    assert first["errors"] == []

    refused_answer = answer(post(client, newest_body(activation_code, second_id)))
    assert refused_answer["errors"] == [services.ACTIVATION_ERROR_CODE_IN_USE]
    assert refused_answer["licenseKey"] is None
    assert not Instance.objects.filter(instance_id=second_id).exists()

    code_row = ActivationCode.objects.get(status="active")
    services.activation_code_release(
        actor=support_lead,
        activation_code=code_row,
        reason="Customer moved to a new server",
        ticket_url="https://tickets.test/77",
    )
    (released,) = events("licenses.activation_code_released")
    assert released.actor == support_lead and released.ticket_url == "https://tickets.test/77"
    assert released.metadata["instance_id"] == str(first_id)

    second = answer(post(client, newest_body(activation_code, second_id)))
    assert second["errors"] == []
    assert second["licenseKey"] == first["licenseKey"]  # same subscription, same stored key
    assert second["newSubscription"] is False

    old, new = Activation.objects.order_by("activated_at", "pk")
    assert old.status == ActivationStatus.DEACTIVATED and old.deactivated_at is not None
    assert new.status == ActivationStatus.ACTIVE and new.instance.instance_id == second_id
    code_row.refresh_from_db()
    assert code_row.released_at is None  # the release is used up
    (deactivated,) = events("licenses.activation_deactivated")
    assert deactivated.target_id == str(old.pk)
    assert deactivated.actor_kind == ActorKind.INSTANCE

    # A third instance needs another release, and the first one has lost the code.
    for other in (third_id, first_id):
        again = answer(post(client, newest_body(activation_code, other)))
        assert again["errors"] == [services.ACTIVATION_ERROR_CODE_IN_USE]


def test_the_bound_instance_may_repeat_while_a_release_waits(
    subscription, activation_code, support_lead
):
    instance_id = uuid.uuid4()
    activate(activation_code, instance_id)
    code_row = ActivationCode.objects.get(status="active")
    services.activation_code_release(
        actor=support_lead, activation_code=code_row, reason="Moving servers"
    )

    again = activate(activation_code, instance_id)

    assert again.bound is False
    code_row.refresh_from_db()
    assert code_row.released_at is not None  # still waiting for the new instance


def test_release_needs_a_support_lead_and_a_reason(
    subscription, activation_code, account_manager, outsider, support_agent, support_lead
):
    activate(activation_code)
    code_row = ActivationCode.objects.get(status="active")
    for actor in (account_manager, outsider, support_agent):
        with pytest.raises(ApplicationError) as caught:
            services.activation_code_release(actor=actor, activation_code=code_row, reason="Please")
        assert caught.value.code == "forbidden"
    with pytest.raises(ValidationError):
        services.activation_code_release(actor=support_lead, activation_code=code_row, reason="")
    code_row.refresh_from_db()
    assert code_row.released_at is None
    assert not events("licenses.activation_code_released")


def test_release_refuses_an_unused_a_replaced_or_an_already_released_code(
    subscription, support_lead
):
    unused = make_code(subscription)
    with pytest.raises(ApplicationError, match="has not been used by any instance"):
        services.activation_code_release(
            actor=support_lead,
            activation_code=ActivationCode.objects.get(status="active"),
            reason="x",
        )
    activate(unused)
    bound = ActivationCode.objects.get(status="active")
    services.activation_code_release(actor=support_lead, activation_code=bound, reason="x")
    with pytest.raises(ApplicationError, match="already released"):
        services.activation_code_release(actor=support_lead, activation_code=bound, reason="x")
    make_code(subscription)  # replaces it
    with pytest.raises(ApplicationError, match="only the subscription's active code"):
        services.activation_code_release(actor=support_lead, activation_code=bound, reason="x")


@pytest.mark.django_db(transaction=True)
def test_racing_instances_cannot_both_bind_one_code(customer):
    subscription = subscription_factory(customer)
    services.license_issue(actor=None, subscription=subscription, reason="Order")
    code = make_code(subscription)
    contenders = 6
    barrier = threading.Barrier(contenders)
    outcomes = []

    def contend():
        try:
            barrier.wait(timeout=10)
            result = activate(code)
            outcomes.append(("bound", result.instance.instance_id))
        except ApplicationError as exc:
            outcomes.append(("refused", exc.message))
        finally:
            connection.close()

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    bound = [o for o in outcomes if o[0] == "bound"]
    assert len(outcomes) == contenders
    assert len(bound) == 1, outcomes
    assert all(
        o == ("refused", services.ACTIVATION_ERROR_CODE_IN_USE) for o in outcomes if o not in bound
    )
    assert Activation.objects.filter(status=ActivationStatus.ACTIVE).count() == 1
    assert len(events("licenses.activated")) == 1


# --- future subscriptions and newSubscription -------------------------------------------------


def test_future_subscriptions_list_a_renewal_that_starts_later(client, customer, subscription):
    code = make_code(subscription)
    renewal = subscription_factory(
        customer,
        renews=subscription,
        plan="ultimate",
        seats=75,
        term_start=subscription.term_end,
        term_end=subscription.term_end + dt.timedelta(days=365),
    )
    contact = customer.contacts.get()

    payload = answer(post(client, newest_body(code)))

    assert payload["errors"] == []
    assert payload["futureSubscriptions"] == [
        {
            "cloudLicenseEnabled": True,
            "offlineCloudLicenseEnabled": False,
            "plan": "ultimate",
            "company": customer.name,
            "email": contact.email,
            "name": contact.full_name,
            "startsAt": renewal.term_start.isoformat(),
            "expiresAt": renewal.term_end.isoformat(),
            "usersInLicenseCount": 75,
        }
    ]


def test_future_subscriptions_come_from_the_renewals_license_and_skip_cancelled_ones(
    customer, subscription
):
    code = make_code(subscription)
    renewal = subscription_factory(
        customer,
        renews=subscription,
        licensing_method=LicensingMethod.OFFLINE_CLOUD,
        seats=60,
        term_start=subscription.term_end,
        term_end=subscription.term_end + dt.timedelta(days=365),
    )
    license = services.license_issue(actor=None, subscription=renewal, reason="Renewal")
    cancelled_next = subscription_factory(
        customer,
        renews=renewal,
        term_start=renewal.term_end,
        term_end=renewal.term_end + dt.timedelta(days=365),
    )
    Subscription.objects.filter(pk=cancelled_next.pk).update(status=SubscriptionStatus.CANCELLED)

    result = activate(code)

    assert result.future_subscriptions == [
        {
            "cloudLicenseEnabled": True,
            "offlineCloudLicenseEnabled": True,
            "plan": "premium",
            "name": license.licensee_name,
            "company": license.licensee_company,
            "email": license.licensee_email,
            "startsAt": license.starts_on.isoformat(),
            "expiresAt": license.expires_on.isoformat(),
            "usersInLicenseCount": 60,
        }
    ]


def test_new_subscription_is_true_only_on_the_subscriptions_very_first_activation(
    subscription, support_agent
):
    first_code = make_code(subscription)
    assert activate(first_code).new_subscription is True
    # A new code (a resend) on another instance: the subscription was activated before.
    second_code = make_code(subscription)
    assert activate(second_code).new_subscription is False


def test_a_subscription_whose_term_has_not_started_activates_with_its_license(customer):
    today = timezone.localdate()
    subscription = subscription_factory(
        customer, term_start=today + dt.timedelta(days=10), term_end=today + dt.timedelta(days=375)
    )
    assert subscription.status == SubscriptionStatus.PENDING
    result = activate(make_code(subscription))
    assert result.license.starts_on == subscription.term_start
    assert result.future_subscriptions == []  # the license itself is handed out, not listed
