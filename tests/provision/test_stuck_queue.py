"""The stuck provisioning queue: per-step SLAs, which steps are stuck, their likely causes,
the filters, who may see the page and act on it, and its bounded query count."""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import uuid

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from licenses import services as license_services
from licenses.choices import ActivationCodeStatus, DeliveryStatus
from licenses.models import Activation, ActivationCode, LicenseDelivery
from licenses.signing import generate_private_key_pem
from provision import services, stuck
from provision import settings as project_settings
from provision.choices import (
    Channel,
    Deployment,
    LicensingMethod,
    ProvisioningStepKind,
    StepState,
    SubscriptionStatus,
)
from provision.models import ProvisioningStep, Subscription
from tests.factories import (
    ContactFactory,
    CustomerFactory,
    InstanceFactory,
    NamespaceFactory,
    PartnerFactory,
    UserFactory,
    subscription_factory,
)
from usage.choices import UsageFileImportStatus
from usage.models import UsageFileImport

pytestmark = pytest.mark.django_db

Kind = ProvisioningStepKind
SLAS = {"license_issued": 1, "delivered": 4, "activated": 72, "namespace_provisioned": 24,
        "first_usage": 48}  # fmt: skip


@pytest.fixture(autouse=True)
def _known_slas(settings):
    settings.PROVISIONING_STEP_SLA_HOURS = 24
    settings.PROVISIONING_STEP_SLA_HOURS_BY_STEP = dict(SLAS)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def _key_pem(tmp_path_factory):
    path = tmp_path_factory.mktemp("stuck-key") / "key.pem"
    path.write_bytes(generate_private_key_pem())
    return path


@pytest.fixture(autouse=True)
def signing_key(settings, _key_pem):
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(_key_pem)


def fix_url(action, pk) -> str:
    return reverse("provision:fix", kwargs={"action": action, "pk": pk})


def record_of(subscription):
    return subscription.provisioning_records.get()


def step_of(subscription, kind) -> ProvisioningStep:
    return record_of(subscription).steps.get(kind=kind)


def finish(subscription, *kinds, state=StepState.DONE):
    for kind in kinds:
        services.provisioning_step_set_state(
            actor=None, step=step_of(subscription, kind), state=state, reason="Test"
        )


def overdue(subscription, kind, hours=5.0) -> ProvisioningStep:
    """Make the step past due (tests may write rows directly; services never move due dates
    back)."""
    step = step_of(subscription, kind)
    ProvisioningStep.objects.filter(pk=step.pk).update(
        due_at=timezone.now() - dt.timedelta(hours=hours)
    )
    return step


def stuck_at(kind, subscription=None, *, hours=5.0, **factory_kwargs) -> Subscription:
    """A subscription whose order is held up at ``kind``: the steps before it done."""
    subscription = subscription or subscription_factory(**factory_kwargs)
    earlier = [
        s.kind
        for s in record_of(subscription).steps.order_by("position")
        if s.kind != Kind.SUBSCRIPTION_CREATED
    ]
    finish(subscription, *earlier[: earlier.index(kind)])
    overdue(subscription, kind, hours)
    return subscription


def rows_for(actor, **filters):
    steps, _ = stuck.stuck_queue(actor=actor, filters=filters)
    return stuck.stuck_queue_rows(actor=actor, steps=steps)


def cause_of(actor, subscription):
    (row,) = [r for r in rows_for(actor) if r.subscription.pk == subscription.pk]
    return row.cause


def online(**kwargs):
    return subscription_factory(**kwargs)


def offline(**kwargs):
    return subscription_factory(licensing_method=LicensingMethod.OFFLINE_CLOUD, **kwargs)


def legacy(**kwargs):
    return subscription_factory(licensing_method=LicensingMethod.LEGACY, **kwargs)


def saas(**kwargs):
    return subscription_factory(deployment=Deployment.GITLAB_COM, **kwargs)


def with_sold_to(**kwargs):
    customer = CustomerFactory(**kwargs)
    ContactFactory(customer=customer, email=f"buyer-{customer.pk}@example.test")
    return customer


def due_after_opening(record) -> dict:
    opened = record.steps.get(kind=Kind.SUBSCRIPTION_CREATED).completed_at
    return {s.kind: s.due_at - opened for s in record.steps.all()}


# --- SLAs per step --------------------------------------------------------------------------


def test_each_step_is_due_after_its_own_sla_counted_from_the_step_before():
    subscription = online(customer=with_sold_to())
    due = due_after_opening(record_of(subscription))
    hours = dt.timedelta(hours=1)
    assert due[Kind.LICENSE_ISSUED] == 1 * hours
    assert due[Kind.DELIVERED] == (1 + 4) * hours
    assert due[Kind.ACTIVATED] == (1 + 4 + 72) * hours
    assert due[Kind.FIRST_USAGE] == (1 + 4 + 72 + 48) * hours


def test_gitlab_com_orders_use_the_namespace_sla(settings):
    settings.PROVISIONING_STEP_SLA_HOURS_BY_STEP = {"namespace_provisioned": 6}
    due = due_after_opening(record_of(saas()))
    # first_usage is not in the mapping: it gets PROVISIONING_STEP_SLA_HOURS (24).
    assert due[Kind.NAMESPACE_PROVISIONED] == dt.timedelta(hours=6)
    assert due[Kind.FIRST_USAGE] == dt.timedelta(hours=6 + 24)


def test_an_empty_mapping_gives_every_step_the_general_sla(settings):
    settings.PROVISIONING_STEP_SLA_HOURS_BY_STEP = {}
    settings.PROVISIONING_STEP_SLA_HOURS = 10
    assert ProvisioningStep.sla(Kind.DELIVERED) == dt.timedelta(hours=10)
    assert ProvisioningStep.default_due_at(Kind.DELIVERED, start=timezone.now()) > timezone.now()


def test_fractional_hours_are_allowed(settings):
    settings.PROVISIONING_STEP_SLA_HOURS_BY_STEP = {"license_issued": 0.5}
    assert ProvisioningStep.sla(Kind.LICENSE_ISSUED) == dt.timedelta(minutes=30)


def test_default_due_at_refuses_what_is_not_a_step_kind():
    with pytest.raises(ValueError, match="not a provisioning step kind"):
        ProvisioningStep.default_due_at(timezone.now())


def test_completing_a_step_starts_the_clock_of_the_steps_after_it():
    subscription = online(customer=with_sold_to())
    finish(subscription, Kind.LICENSE_ISSUED)
    record = record_of(subscription)
    steps = {s.kind: s for s in record.steps.all()}
    issued_at = steps[Kind.LICENSE_ISSUED].completed_at
    assert steps[Kind.DELIVERED].due_at == issued_at + dt.timedelta(hours=4)
    assert steps[Kind.ACTIVATED].due_at == issued_at + dt.timedelta(hours=4 + 72)
    assert steps[Kind.FIRST_USAGE].due_at == issued_at + dt.timedelta(hours=4 + 72 + 48)


def test_a_late_step_gives_the_next_one_its_full_sla():
    subscription = online(customer=with_sold_to())
    overdue(subscription, Kind.LICENSE_ISSUED, hours=30)
    finish(subscription, Kind.LICENSE_ISSUED)
    delivered = step_of(subscription, Kind.DELIVERED)
    # Without the re-scheduling it would have been due 30 h ago + 4 h: already stuck.
    assert delivered.due_at > timezone.now() + dt.timedelta(hours=3)
    assert not delivered.is_stuck


def test_a_failed_step_does_not_move_the_next_due_dates():
    subscription = online(customer=with_sold_to())
    before = step_of(subscription, Kind.ACTIVATED).due_at
    services.provisioning_step_set_state(
        actor=None,
        step=step_of(subscription, Kind.LICENSE_ISSUED),
        state=StepState.FAILED,
        error="boom",
        reason="Test",
    )
    assert step_of(subscription, Kind.ACTIVATED).due_at == before


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"licence_issued": 2}, "unknown step kind 'licence_issued'"),
        ({"delivered": 0}, "'delivered' must be a positive number of hours"),
        ({"delivered": -3}, "'delivered' must be a positive number of hours"),
        ({"delivered": "4"}, "got '4'"),
        ({"delivered": True}, "got True"),
        ({"delivered": float("inf")}, "at most 8760"),
        ({"delivered": float("nan")}, "positive number"),
    ],
)
def test_invalid_step_slas_are_refused_with_a_clear_error(value, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        project_settings._check_step_slas(value)


def test_valid_step_slas_pass_the_check():
    project_settings._check_step_slas(SLAS | {"activated": 0.25})


def test_the_documented_default_mapping_is_the_one_settings_use():
    base = django_settings.BASE_DIR
    env_line = re.search(
        r"^PROVISIONING_STEP_SLA_HOURS_BY_STEP=(.*)$",
        (base / ".env.example").read_text(),
        re.MULTILINE,
    )
    doc_row = re.search(
        r"^\| `PROVISIONING_STEP_SLA_HOURS_BY_STEP` \| `(\{.*?\})` \|",
        (base / "docs" / "configuration.md").read_text(),
        re.MULTILINE,
    )
    assert json.loads(env_line.group(1)) == json.loads(doc_row.group(1)) == SLAS
    if "PROVISIONING_STEP_SLA_HOURS_BY_STEP" not in os.environ:
        assert project_settings.PROVISIONING_STEP_SLA_HOURS_BY_STEP == SLAS


def _check_with(tmp_path, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update({"PROVISION_VAR_DIR": str(tmp_path / "var")}, **env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_invalid_sla_variable_stops_the_app_at_startup(tmp_path):
    result = _check_with(
        tmp_path, PROVISIONING_STEP_SLA_HOURS_BY_STEP='{"delivered": 4, "activation": 72}'
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "PROVISIONING_STEP_SLA_HOURS_BY_STEP: unknown step kind 'activation'" in last_line
    assert "activated" in last_line  # names the kinds it knows


def test_sla_variable_that_is_not_a_json_object_is_refused(tmp_path):
    result = _check_with(tmp_path, PROVISIONING_STEP_SLA_HOURS_BY_STEP="[4, 72]")
    assert result.returncode != 0
    assert "PROVISIONING_STEP_SLA_HOURS_BY_STEP must be a JSON object" in result.stderr


def test_a_valid_sla_variable_is_read(tmp_path):
    result = _check_with(
        tmp_path,
        PROVISIONING_STEP_SLA_HOURS_BY_STEP='{"delivered": 2.5}',
        DJANGO_SETTINGS_MODULE="provision.settings",
    )
    assert result.returncode == 0, result.stderr


# --- Which steps are in the queue -------------------------------------------------------------


def test_only_open_steps_past_due_are_listed_oldest_first(support_agent):
    customer = with_sold_to()
    newest = stuck_at(Kind.LICENSE_ISSUED, customer=customer, hours=2)
    oldest = stuck_at(Kind.DELIVERED, customer=customer, hours=50)
    failed = stuck_at(Kind.ACTIVATED, customer=customer, hours=10)
    services.provisioning_step_set_state(
        actor=None,
        step=step_of(failed, Kind.ACTIVATED),
        state=StepState.FAILED,
        error="Activation refused",
        reason="Test",
    )
    online(customer=customer)  # within its SLA
    finished = stuck_at(Kind.DELIVERED, customer=customer, hours=80)
    finish(finished, Kind.DELIVERED)  # was overdue, now done

    rows = rows_for(support_agent)
    assert [(r.subscription.pk, r.step.kind) for r in rows] == [
        (oldest.pk, Kind.DELIVERED),
        (failed.pk, Kind.ACTIVATED),
        (newest.pk, Kind.LICENSE_ISSUED),
    ]
    assert rows[1].step.state == StepState.FAILED


def test_a_failed_step_is_listed_at_once_even_within_its_sla(support_agent):
    subscription = online(customer=with_sold_to())
    finish(subscription, Kind.LICENSE_ISSUED)
    services.provisioning_step_set_state(
        actor=None,
        step=step_of(subscription, Kind.DELIVERED),
        state=StepState.FAILED,
        error="550 No such user",
        reason="Test",
    )
    assert step_of(subscription, Kind.DELIVERED).due_at > timezone.now()
    (row,) = rows_for(support_agent)
    assert (row.subscription.pk, row.step.kind) == (subscription.pk, Kind.DELIVERED)
    assert not row.is_past_due


def test_an_order_is_listed_once_at_the_step_that_holds_it_up(support_agent):
    subscription = online(customer=with_sold_to())
    overdue(subscription, Kind.LICENSE_ISSUED, hours=100)
    overdue(subscription, Kind.DELIVERED, hours=90)
    overdue(subscription, Kind.ACTIVATED, hours=20)
    rows = rows_for(support_agent)
    assert [r.step.kind for r in rows] == [Kind.LICENSE_ISSUED]


@pytest.mark.parametrize("status", [SubscriptionStatus.CANCELLED, SubscriptionStatus.EXPIRED])
def test_orders_of_closed_subscriptions_say_there_is_nothing_left_to_do(support_agent, status):
    subscription = stuck_at(Kind.LICENSE_ISSUED, customer=with_sold_to())
    Subscription.objects.filter(pk=subscription.pk).update(status=status)
    cause = cause_of(support_agent, subscription)
    assert (cause.code, cause.tone) == ("subscription_closed", "info")
    assert f"{subscription.name} is {status.label.lower()}" in cause.text


def test_outsiders_may_not_read_the_queue(outsider):
    with pytest.raises(PermissionDenied):
        stuck.stuck_queue(actor=outsider)
    with pytest.raises(PermissionDenied):
        stuck.stuck_queue_rows(actor=outsider, steps=[])


def test_a_row_knows_how_long_it_waited_and_how_far_past_its_sla(support_agent):
    subscription = online(customer=with_sold_to())
    finish(subscription, Kind.LICENSE_ISSUED)
    # As if the license had been issued 34 hours ago: delivery (SLA 4 h) is 30 h past due.
    issued_at = timezone.now() - dt.timedelta(hours=34)
    ProvisioningStep.objects.filter(pk=step_of(subscription, Kind.LICENSE_ISSUED).pk).update(
        completed_at=issued_at
    )
    ProvisioningStep.objects.filter(pk=step_of(subscription, Kind.DELIVERED).pk).update(
        due_at=issued_at + dt.timedelta(hours=4)
    )
    (row,) = rows_for(support_agent)
    assert row.pending_since == issued_at
    assert row.sla == dt.timedelta(hours=4) and row.sla_text == "4 h"
    assert row.overdue_by_text == "1 d 6 h"
    assert row.pending_for_text == "1 d 10 h"


def test_a_due_date_moved_back_makes_the_wait_at_least_sla_plus_overdue(support_agent):
    subscription = stuck_at(Kind.DELIVERED, customer=with_sold_to(), hours=30)
    (row,) = rows_for(support_agent)
    assert row.pending_since == step_of(subscription, Kind.DELIVERED).due_at - row.sla
    assert row.pending_for_text == "1 d 10 h" and row.overdue_by_text == "1 d 6 h"


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (dt.timedelta(days=3, hours=4, minutes=10), "3 d 4 h"),
        (dt.timedelta(days=2), "2 d"),
        (dt.timedelta(hours=5, minutes=12), "5 h 12 min"),
        (dt.timedelta(hours=4), "4 h"),
        (dt.timedelta(minutes=40), "40 min"),
        (dt.timedelta(seconds=-5), "0 min"),
    ],
)
def test_durations_read_like_a_person_would_say_them(delta, text):
    assert stuck.format_duration(delta) == text


# --- Likely causes ----------------------------------------------------------------------------


def test_license_not_issued_because_the_customer_has_no_sold_to_contact(support_agent):
    subscription = stuck_at(Kind.LICENSE_ISSUED)  # CustomerFactory adds no contact
    cause = cause_of(support_agent, subscription)
    assert cause.code == "no_sold_to_contact" and cause.tone == "danger"
    assert cause.fix_url == subscription.customer.get_absolute_url()


def test_license_not_issued_because_no_signing_key_is_configured(support_agent, settings):
    settings.LICENSE_PRIVATE_KEY_FILE = ""
    subscription = stuck_at(Kind.LICENSE_ISSUED, customer=with_sold_to())
    cause = cause_of(support_agent, subscription)
    assert cause.code == "no_signing_key"
    assert "No license signing key is configured" in cause.text


def test_license_not_issued_and_nothing_blocks_it(support_agent):
    subscription = stuck_at(Kind.LICENSE_ISSUED, customer=with_sold_to())
    cause = cause_of(support_agent, subscription)
    assert cause.code == "license_not_issued"
    assert cause.fix_url == reverse("licenses:license_issue", args=[subscription.pk])


def test_license_issued_but_its_step_left_open(support_agent):
    subscription = online(customer=with_sold_to())
    license = license_services.license_issue(actor=None, subscription=subscription, reason="T")
    step = step_of(subscription, Kind.LICENSE_ISSUED)
    ProvisioningStep.objects.filter(pk=step.pk).update(state=StepState.PENDING, completed_at=None)
    overdue(subscription, Kind.LICENSE_ISSUED)
    cause = cause_of(support_agent, subscription)
    assert (cause.code, cause.tone) == ("license_issued_step_open", "info")
    assert f"#{license.pk}" in cause.text


def _code(subscription, actor):
    code, _ = license_services.activation_code_generate(
        actor=actor, subscription=subscription, reason="Test"
    )
    return code


def _delivery(status, *, code=None, license=None, error=""):
    return LicenseDelivery.objects.create(
        activation_code=code,
        license=license,
        method="email",
        status=status,
        recipient_email="buyer@example.test",
        error=error,
    )


def test_delivery_failed_with_the_mail_servers_answer(support_agent):
    subscription = stuck_at(Kind.DELIVERED, customer=with_sold_to())
    code = _code(subscription, support_agent)
    _delivery(DeliveryStatus.SENT, code=code)
    later = _delivery(DeliveryStatus.FAILED, code=code, error="550 5.1.1 mailbox unavailable")
    LicenseDelivery.objects.filter(pk=later.pk).update(
        created_at=timezone.now() + dt.timedelta(seconds=1)
    )
    cause = cause_of(support_agent, subscription)
    assert cause.code == "delivery_failed" and cause.tone == "danger"
    assert "550 5.1.1 mailbox unavailable" in cause.text and "buyer@example.test" in cause.text
    assert cause.fix_url == fix_url("activation_code_resend", subscription.pk)


def test_delivery_only_queued(support_agent):
    subscription = stuck_at(Kind.DELIVERED, customer=with_sold_to())
    _delivery(DeliveryStatus.QUEUED, code=_code(subscription, support_agent))
    assert cause_of(support_agent, subscription).code == "delivery_queued"


def test_delivery_sent_but_its_step_left_open(support_agent):
    subscription = stuck_at(Kind.DELIVERED, customer=with_sold_to())
    _delivery(DeliveryStatus.SENT, code=_code(subscription, support_agent))
    assert cause_of(support_agent, subscription).code == "delivered_step_open"


def test_activation_code_never_sent(support_agent):
    customer = with_sold_to()
    subscription = stuck_at(Kind.DELIVERED, customer=customer)
    cause = cause_of(support_agent, subscription)
    assert cause.code == "code_never_sent"
    assert customer.contacts.get().email in cause.text


def test_partner_orders_name_the_partner_as_recipient(support_agent):
    partner = PartnerFactory(name="Reseller One", email="licenses@reseller.test")
    subscription = stuck_at(
        Kind.DELIVERED, customer=CustomerFactory(), channel=Channel.PARTNER, partner=partner
    )
    cause = cause_of(support_agent, subscription)
    assert cause.code == "code_never_sent" and "Reseller One" in cause.text


def test_nobody_to_deliver_to(support_agent):
    subscription = stuck_at(Kind.DELIVERED, customer=CustomerFactory())
    assert cause_of(support_agent, subscription).code == "no_recipient"


def test_offline_license_never_sent(support_agent):
    subscription = offline(customer=with_sold_to())
    license = license_services.license_issue(actor=None, subscription=subscription, reason="T")
    overdue(subscription, Kind.DELIVERED)
    cause = cause_of(support_agent, subscription)
    assert cause.code == "license_never_sent" and f"#{license.pk}" in cause.text
    assert cause.fix_url == fix_url("license_resend", license.pk)


def test_offline_license_delivery_failed_offers_to_resend_that_license(support_agent):
    subscription = offline(customer=with_sold_to())
    license = license_services.license_issue(actor=None, subscription=subscription, reason="T")
    _delivery(DeliveryStatus.FAILED, license=license, error="452 mailbox full")
    overdue(subscription, Kind.DELIVERED)
    cause = cause_of(support_agent, subscription)
    assert cause.code == "delivery_failed" and "452 mailbox full" in cause.text
    assert cause.fix_url == fix_url("license_resend", license.pk)


def test_offline_order_with_nothing_to_deliver(support_agent):
    subscription = stuck_at(Kind.DELIVERED, offline(customer=with_sold_to()))
    assert cause_of(support_agent, subscription).code == "nothing_to_deliver"


def test_no_activation_code_generated(support_agent):
    subscription = stuck_at(Kind.ACTIVATED, customer=with_sold_to())
    cause = cause_of(support_agent, subscription)
    assert cause.code == "no_activation_code" and cause.tone == "danger"


def test_activation_code_generated_days_ago_never_used(support_agent):
    subscription = stuck_at(Kind.ACTIVATED, customer=with_sold_to())
    code = _code(subscription, support_agent)
    ActivationCode.objects.filter(pk=code.pk).update(
        created_at=timezone.now() - dt.timedelta(days=4, hours=2)
    )
    cause = cause_of(support_agent, subscription)
    assert cause.code == "activation_code_unused"
    assert f"…{code.code_hint}" in cause.text and "4 d 2 h ago" in cause.text


def test_activation_code_replaced_and_no_newer_one(support_agent):
    subscription = stuck_at(Kind.ACTIVATED, customer=with_sold_to())
    code = _code(subscription, support_agent)
    ActivationCode.objects.filter(pk=code.pk).update(
        status=ActivationCodeStatus.REVOKED, replaced_at=timezone.now()
    )
    cause = cause_of(support_agent, subscription)
    assert cause.code == "activation_code_replaced" and "revoked" in cause.text


def _activate(subscription, code, *, status="active", last_sync_at=None, hostname=None):
    license = license_services.license_issue(actor=None, subscription=subscription, reason="T")
    instance = InstanceFactory(
        customer=subscription.customer,
        subscription=subscription,
        hostname=hostname or f"gitlab-{uuid.uuid4().hex[:6]}.example.test",
        last_sync_at=last_sync_at,
    )
    Activation.objects.create(
        activation_code=code,
        license=license,
        instance=instance,
        status=status,
        deactivated_at=timezone.now() if status == "deactivated" else None,
    )
    return instance


def test_activated_but_the_step_left_open(support_agent):
    subscription = stuck_at(Kind.ACTIVATED, customer=with_sold_to())
    _activate(subscription, _code(subscription, support_agent), hostname="gitlab.acme.test")
    # license_issue closed nothing here (its step was done); the activation step is still open.
    overdue(subscription, Kind.ACTIVATED)
    cause = cause_of(support_agent, subscription)
    assert cause.code == "activated_step_open" and "gitlab.acme.test" in cause.text


def test_activation_deactivated(support_agent):
    subscription = stuck_at(Kind.ACTIVATED, customer=with_sold_to())
    _activate(subscription, _code(subscription, support_agent), status="deactivated")
    assert cause_of(support_agent, subscription).code == "activation_deactivated"


def test_activation_code_released_for_another_instance(support_agent):
    subscription = stuck_at(Kind.ACTIVATED, customer=with_sold_to())
    code = _code(subscription, support_agent)
    ActivationCode.objects.filter(pk=code.pk).update(released_at=timezone.now())
    assert cause_of(support_agent, subscription).code == "activation_code_released"


@pytest.mark.parametrize(
    ("make", "kind", "code"),
    [
        (offline, Kind.ACTIVATED, "offline_not_confirmed"),
        (legacy, Kind.ACTIVATED, "legacy_not_reported"),
        (legacy, Kind.FIRST_USAGE, "legacy_not_reported"),
    ],
)
def test_steps_gitlab_cannot_report(support_agent, make, kind, code):
    subscription = stuck_at(kind, make(customer=with_sold_to()))
    cause = cause_of(support_agent, subscription)
    assert (cause.code, cause.tone) == (code, "info")


def test_no_namespace_associated(support_agent):
    subscription = stuck_at(Kind.NAMESPACE_PROVISIONED, saas(customer=with_sold_to()))
    cause = cause_of(support_agent, subscription)
    assert cause.code == "no_namespace" and subscription.name in cause.text


def test_namespace_linked_but_step_left_open(support_agent):
    subscription = stuck_at(Kind.NAMESPACE_PROVISIONED, saas(customer=with_sold_to()))
    NamespaceFactory(subscription=subscription, full_path="acme-group")
    cause = cause_of(support_agent, subscription)
    assert cause.code == "namespace_step_open" and "acme-group" in cause.text


def test_gitlab_com_namespace_linked_but_no_seat_figures(support_agent):
    subscription = stuck_at(Kind.FIRST_USAGE, saas(customer=with_sold_to()))
    NamespaceFactory(subscription=subscription, full_path="quiet-group")
    cause = cause_of(support_agent, subscription)
    assert cause.code == "no_namespace_figures" and "quiet-group" in cause.text


def test_gitlab_com_first_usage_without_a_namespace(support_agent):
    subscription = stuck_at(Kind.FIRST_USAGE, saas(customer=with_sold_to()))
    assert cause_of(support_agent, subscription).code == "no_namespace"


def test_instance_activated_but_no_seat_link_since(support_agent):
    subscription = stuck_at(Kind.FIRST_USAGE, customer=with_sold_to())
    _activate(subscription, _code(subscription, support_agent), hostname="gitlab.dark.test")
    cause = cause_of(support_agent, subscription)
    assert cause.code == "no_seat_link" and "gitlab.dark.test" in cause.text


def test_seat_link_received_but_step_left_open(support_agent):
    subscription = stuck_at(Kind.FIRST_USAGE, customer=with_sold_to())
    _activate(subscription, _code(subscription, support_agent), last_sync_at=timezone.now())
    assert cause_of(support_agent, subscription).code == "usage_step_open"


def test_first_usage_of_an_instance_that_never_activated(support_agent):
    subscription = stuck_at(Kind.FIRST_USAGE, customer=with_sold_to())
    assert cause_of(support_agent, subscription).code == "not_activated"


def _usage_file(subscription, status, reason=""):
    return UsageFileImport.objects.create(
        subscription=subscription,
        file_name="license_usage.csv",
        file_sha256="0" * 64,
        content="",
        status=status,
        rejection_reason=reason,
    )


def test_offline_customer_sent_no_usage_file(support_agent):
    subscription = stuck_at(Kind.FIRST_USAGE, offline(customer=with_sold_to()))
    cause = cause_of(support_agent, subscription)
    assert cause.code == "no_usage_file"
    assert cause.fix_url == reverse(
        "usage:customer_usage_file_upload", args=[subscription.customer_id]
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (UsageFileImportStatus.REJECTED, "usage_file_rejected"),
        (UsageFileImportStatus.PENDING, "usage_file_pending"),
        (UsageFileImportStatus.IMPORTED, "usage_step_open"),
    ],
)
def test_offline_usage_file_outcomes(support_agent, status, code):
    subscription = stuck_at(Kind.FIRST_USAGE, offline(customer=with_sold_to()))
    _usage_file(subscription, status, reason="The file is for another license")
    cause = cause_of(support_agent, subscription)
    assert cause.code == code
    if status == UsageFileImportStatus.REJECTED:
        assert "The file is for another license" in cause.text


# --- Filters ----------------------------------------------------------------------------------


@pytest.fixture
def mixed_queue(account_manager):
    other_owner = UserFactory(username="olga.owner", roles=["account_manager"])
    acme = with_sold_to(name="Acme Robotics", account_owner=account_manager)
    globex = with_sold_to(name="Globex", account_owner=other_owner)
    return {
        "license": stuck_at(Kind.LICENSE_ISSUED, customer=acme, hours=2),
        "activation": stuck_at(Kind.ACTIVATED, customer=acme, hours=24 * 10),
        "namespace": stuck_at(Kind.NAMESPACE_PROVISIONED, saas(customer=globex), hours=24 * 3),
        "usage": stuck_at(Kind.FIRST_USAGE, saas(customer=globex), hours=24 * 40),
    }


def _names(rows, queue):
    by_pk = {s.pk: name for name, s in queue.items()}
    return [by_pk[r.subscription.pk] for r in rows]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["usage", "activation", "namespace", "license"]),
        ({"kind": "activated"}, ["activation"]),
        ({"deployment": "gitlab_com"}, ["usage", "namespace"]),
        ({"overdue": "day"}, ["license"]),
        ({"overdue": "week"}, ["namespace"]),
        ({"overdue": "month"}, ["activation"]),
        ({"overdue": "older"}, ["usage"]),
        ({"q": "globex"}, ["usage", "namespace"]),
    ],
)
def test_the_queue_filters(support_agent, mixed_queue, filters, expected):
    assert _names(rows_for(support_agent, **filters), mixed_queue) == expected


def test_filter_by_account_owner(support_agent, account_manager, mixed_queue):
    rows = rows_for(support_agent, account_owner_id=str(account_manager.pk))
    assert _names(rows, mixed_queue) == ["activation", "license"]


def test_filter_by_state(support_agent, mixed_queue):
    services.provisioning_step_set_state(
        actor=None,
        step=step_of(mixed_queue["license"], Kind.LICENSE_ISSUED),
        state=StepState.FAILED,
        error="No sold-to",
        reason="Test",
    )
    assert _names(rows_for(support_agent, state="failed"), mixed_queue) == ["license"]


def test_search_by_subscription_name(support_agent, mixed_queue):
    name = mixed_queue["namespace"].name
    assert _names(rows_for(support_agent, q=name.lower()), mixed_queue) == ["namespace"]


def test_search_by_billing_account_or_order_finds_the_customers_orders(support_agent, mixed_queue):
    acme = mixed_queue["license"].customer
    by_account = rows_for(support_agent, q=acme.billing_account_number.lower())
    assert _names(by_account, mixed_queue) == ["activation", "license"]
    order = record_of(mixed_queue["license"]).order_reference
    assert _names(rows_for(support_agent, q=order), mixed_queue) == ["activation", "license"]
    assert rows_for(support_agent, q="no such customer") == []


# --- The page ---------------------------------------------------------------------------------

URL = "/provisioning/stuck/"


def test_the_page_url():
    assert reverse("provision:stuck_queue") == URL


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(URL)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_outsiders_get_403(client_for, outsider):
    assert client_for(outsider).get(URL).status_code == 403


def test_account_managers_see_the_queue_without_fix_buttons(client_for, account_manager):
    subscription = stuck_at(Kind.DELIVERED, customer=with_sold_to(name="Initech"))
    response = client_for(account_manager).get(URL)
    body = response.content.decode()
    assert response.status_code == 200
    assert "Initech" in body and subscription.name in body and "code_never_sent" in body
    assert "past SLA" in body and "SLA 4 h" in body
    assert "Retry" not in body and "Mark done" not in body


def test_support_agents_get_retry_and_mark_done(client_for, support_agent):
    subscription = stuck_at(Kind.DELIVERED, customer=with_sold_to(name="Initech"))
    step = step_of(subscription, Kind.DELIVERED)
    body = client_for(support_agent).get(URL).content.decode()
    assert reverse("provision:fix", kwargs={"action": "step_retry", "pk": step.pk}) in body
    assert reverse("provision:fix", kwargs={"action": "step_mark_done", "pk": step.pk}) in body
    assert fix_url("activation_code_resend", subscription.pk) in body


def test_the_page_shows_age_sla_attempts_and_last_error(client_for, support_agent):
    subscription = stuck_at(Kind.LICENSE_ISSUED, customer=with_sold_to(), hours=50)
    services.provisioning_step_set_state(
        actor=None,
        step=step_of(subscription, Kind.LICENSE_ISSUED),
        state=StepState.FAILED,
        error="Signing service timed out",
        reason="Test",
    )
    body = client_for(support_agent).get(URL).content.decode()
    assert "2 d 2 h past SLA" in body or "2 d 1 h past SLA" in body
    assert "SLA 1 h" in body and "1 attempt" in body
    assert "Signing service timed out" in body


def test_the_page_filters_from_the_query_string(client_for, support_agent, mixed_queue):
    body = client_for(support_agent).get(URL, {"kind": "namespace_provisioned"}).content.decode()
    assert mixed_queue["namespace"].name in body
    assert mixed_queue["license"].name not in body


def test_the_account_owner_filter_keeps_its_choice(client_for, support_agent, account_manager):
    response = client_for(support_agent).get(URL, {"account_owner_id": account_manager.pk})
    assert f'<option value="{account_manager.pk}" selected>' in response.content.decode()


def test_the_page_shows_25_rows_oldest_first_and_pages_on(client_for, support_agent):
    customer = with_sold_to()
    subscriptions = [
        stuck_at(Kind.LICENSE_ISSUED, customer=customer, hours=100 - i) for i in range(27)
    ]
    client = client_for(support_agent)
    first = client.get(URL).content.decode()
    second = client.get(URL, {"page": 2}).content.decode()
    assert first.count('<tr data-step="') == 25 and second.count('<tr data-step="') == 2
    assert 'of <span class="fw-medium">27</span>' in first
    assert first.index(subscriptions[0].name) < first.index(subscriptions[24].name)
    assert subscriptions[26].name in second and subscriptions[26].name not in first


def test_an_empty_queue_says_nothing_is_stuck(client_for, support_agent):
    body = client_for(support_agent).get(URL).content.decode()
    assert "Nothing is stuck" in body


def test_home_and_navigation_link_to_the_queue(client_for, support_agent):
    body = client_for(support_agent).get(reverse("provision:home")).content.decode()
    assert body.count(f'href="{URL}"') >= 2  # the navigation bar and the stuck list


def _page_queries(client, **params) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(URL, params)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def _every_kind_of_row(n: int):
    """``n`` stuck orders cycling through every step kind and licensing method."""
    makers = [
        lambda: stuck_at(Kind.LICENSE_ISSUED, customer=with_sold_to()),
        lambda: stuck_at(Kind.DELIVERED, customer=with_sold_to()),
        lambda: stuck_at(Kind.ACTIVATED, customer=with_sold_to()),
        lambda: stuck_at(Kind.FIRST_USAGE, customer=with_sold_to()),
        lambda: stuck_at(Kind.FIRST_USAGE, offline(customer=with_sold_to())),
        lambda: stuck_at(Kind.NAMESPACE_PROVISIONED, saas(customer=with_sold_to())),
        lambda: stuck_at(Kind.FIRST_USAGE, saas(customer=with_sold_to())),
    ]
    for i in range(n):
        makers[i % len(makers)]()


def test_query_count_does_not_grow_with_the_rows(client_for, support_agent):
    client = client_for(support_agent)
    _every_kind_of_row(7)
    seven = _page_queries(client)
    _every_kind_of_row(13)
    twenty = _page_queries(client)
    assert seven == twenty
    assert twenty <= 15, twenty


def test_query_count_with_one_row_and_twenty_of_the_same_kind(client_for, support_agent):
    client = client_for(support_agent)
    stuck_at(Kind.DELIVERED, customer=with_sold_to())
    one = _page_queries(client)
    for _ in range(19):
        stuck_at(Kind.DELIVERED, customer=with_sold_to())
    assert _page_queries(client) == one
