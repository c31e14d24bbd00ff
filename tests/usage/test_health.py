"""Instance health (last sync, missed days, gone dark) and quarterly reconciliation dates."""

import datetime as dt
import hashlib
import itertools

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from licenses.choices import LicenseKind, LicenseStatus, SigningKeySource
from licenses.models import License, SigningKey
from provision.choices import Channel, Deployment, LicensingMethod, Plan, SubscriptionStatus
from tests.factories import InstanceFactory, PartnerFactory, subscription_factory
from usage.selectors import (
    instance_health,
    instance_list,
    instances_gone_dark,
    next_reconciliation_date,
    subscription_reconciliation_dates,
)

pytestmark = pytest.mark.django_db

_keys = itertools.count()


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def license_row(subscription, *, kind=LicenseKind.ONLINE_CLOUD, status=LicenseStatus.ACTIVE):
    """A license row as issuing leaves it; the key text is irrelevant to health."""
    signing_key = SigningKey.objects.first() or SigningKey.objects.create(
        fingerprint="f" * 64, public_key_pem="-", source=SigningKeySource.GENERATED
    )
    key = f"test-key-{next(_keys)}"
    today = timezone.localdate()
    return License.objects.create(
        subscription=subscription,
        kind=kind,
        status=status,
        key=key,
        key_sha256=hashlib.sha256(key.encode()).hexdigest(),
        signing_key=signing_key,
        licensee_name="Buyer",
        licensee_email="buyer@acme.test",
        licensee_company="Acme",
        starts_on=subscription.term_start,
        expires_on=max(subscription.term_end, today + dt.timedelta(days=1)),
        plan=subscription.plan,
        user_count=subscription.seats,
    )


def ago(**delta):
    return timezone.now() - dt.timedelta(**delta)


@pytest.fixture
def cloud(subscription):
    license_row(subscription)
    return subscription


def instance(subscription, **fields):
    return InstanceFactory(customer=subscription.customer, subscription=subscription, **fields)


# --- Health -------------------------------------------------------------------------------------


def test_an_online_cloud_instance_silent_for_three_days_has_gone_dark(cloud):
    health = instance_health(instance(cloud, last_sync_at=ago(days=3, hours=1)))
    assert (health.missed_days, health.online_cloud, health.dark) == (3, True, True)


def test_two_missed_days_are_not_dark_yet(cloud):
    health = instance_health(instance(cloud, last_sync_at=ago(days=2, hours=23)))
    assert (health.missed_days, health.dark) == (2, False)


def test_an_instance_synced_today_missed_nothing(cloud):
    health = instance_health(instance(cloud, last_sync_at=ago(hours=5)))
    assert (health.missed_days, health.dark) == (0, False)


def test_a_never_synced_instance_counts_from_when_it_was_first_seen(cloud):
    health = instance_health(instance(cloud, last_sync_at=None, first_seen_at=ago(days=4)))
    assert (health.last_sync_at, health.missed_days, health.dark) == (None, 4, True)


@pytest.mark.parametrize(
    "kind, status",
    [
        (LicenseKind.OFFLINE_CLOUD, LicenseStatus.ACTIVE),
        (LicenseKind.LEGACY, LicenseStatus.ACTIVE),
        (LicenseKind.ONLINE_CLOUD, LicenseStatus.REVOKED),
        (LicenseKind.ONLINE_CLOUD, LicenseStatus.SUPERSEDED),
    ],
)
def test_only_an_active_online_cloud_license_is_expected_to_sync(subscription, kind, status):
    license_row(subscription, kind=kind, status=status)
    health = instance_health(instance(subscription, last_sync_at=ago(days=10)))
    assert (health.online_cloud, health.dark) == (False, False)


def test_an_expired_online_cloud_license_is_not_expected_to_sync(subscription):
    row = license_row(subscription)
    License.objects.filter(pk=row.pk).update(
        starts_on=timezone.localdate() - dt.timedelta(days=400),
        expires_on=timezone.localdate() - dt.timedelta(days=1),
    )
    assert not instance_health(instance(subscription, last_sync_at=ago(days=10))).dark


def test_an_air_gapped_instance_is_never_dark(cloud):
    assert not instance_health(instance(cloud, air_gapped=True, last_sync_at=ago(days=30))).dark


def test_the_dark_threshold_comes_from_settings(cloud, settings):
    silent = instance(cloud, last_sync_at=ago(days=4))
    settings.INSTANCE_DARK_AFTER_DAYS = 5
    assert not instance_health(silent).dark
    settings.INSTANCE_DARK_AFTER_DAYS = 4
    assert instance_health(silent).dark


def test_instances_gone_dark_lists_the_silent_cloud_instances_longest_first(
    cloud, support_agent, customer
):
    week = instance(cloud, hostname="week.acme.test", last_sync_at=ago(days=7))
    four = instance(cloud, hostname="four.acme.test", last_sync_at=ago(days=4))
    instance(cloud, hostname="fresh.acme.test", last_sync_at=ago(hours=3))
    instance(cloud, hostname="airgap.acme.test", air_gapped=True, last_sync_at=ago(days=9))
    legacy = subscription_factory(customer, licensing_method=LicensingMethod.LEGACY)
    license_row(legacy, kind=LicenseKind.LEGACY)
    instance(legacy, hostname="legacy.acme.test", last_sync_at=ago(days=20))
    assert list(instances_gone_dark(actor=support_agent)) == [week, four]


def test_instances_gone_dark_needs_a_staff_role(outsider):
    with pytest.raises(PermissionDenied):
        instances_gone_dark(actor=outsider)


def test_the_instance_api_shows_health_with_a_fixed_number_of_queries(
    client_for, support_agent, cloud, django_assert_max_num_queries
):
    instance(cloud, last_sync_at=ago(days=5))
    for _ in range(15):
        instance(cloud)
    client = client_for(support_agent)
    with django_assert_max_num_queries(5):
        response = client.get("/api/instances/")
    rows = response.json()["results"]
    assert len(rows) == 16
    dark = [row for row in rows if row["health"]["dark"]]
    assert len(dark) == 1
    assert dark[0]["health"]["missed_days"] == 5
    assert set(dark[0]["health"]) == {"last_sync_at", "missed_days", "online_cloud", "dark"}


def test_instance_list_selector_annotates_the_license_check(cloud, support_agent):
    instance(cloud)
    queryset, _ = instance_list(actor=support_agent)
    assert queryset.get().has_online_cloud_license is True


# --- Quarterly reconciliation dates -------------------------------------------------------------


def qsr_subscription(customer, **overrides):
    values = {
        "deployment": Deployment.GITLAB_COM,
        "term_start": dt.date(2026, 1, 31),
        "term_end": dt.date(2027, 1, 31),
    }
    values.update(overrides)
    return subscription_factory(customer, **values)


def test_reconciliation_is_quarterly_from_the_term_start_without_the_last_quarter(customer):
    subscription = qsr_subscription(customer)
    # 31 January + 3 months is the last day of April; the fourth quarter is never reconciled.
    assert subscription_reconciliation_dates(subscription=subscription) == [
        dt.date(2026, 4, 30),
        dt.date(2026, 7, 31),
        dt.date(2026, 10, 31),
    ]


def test_a_self_managed_online_cloud_subscription_is_reconciled_too(customer):
    subscription = qsr_subscription(
        customer,
        deployment=Deployment.SELF_MANAGED,
        term_start=dt.date(2026, 3, 1),
        term_end=dt.date(2027, 3, 1),
    )
    assert subscription_reconciliation_dates(subscription=subscription) == [
        dt.date(2026, 6, 1),
        dt.date(2026, 9, 1),
        dt.date(2026, 12, 1),
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"plan": Plan.ULTIMATE_TRIAL}, id="trial"),
        pytest.param({"quarterly_reconciliation": False}, id="switched-off"),
        pytest.param({"term_end": dt.date(2029, 1, 31)}, id="multi-year"),
        pytest.param({"term_end": dt.date(2026, 9, 30)}, id="odd-length"),
        pytest.param(
            {
                "deployment": Deployment.SELF_MANAGED,
                "licensing_method": LicensingMethod.OFFLINE_CLOUD,
            },
            id="offline-license",
        ),
        pytest.param(
            {"deployment": Deployment.SELF_MANAGED, "licensing_method": LicensingMethod.LEGACY},
            id="legacy-license",
        ),
    ],
)
def test_subscriptions_outside_qsr_have_no_reconciliation_dates(customer, overrides):
    subscription = qsr_subscription(customer, **overrides)
    assert subscription_reconciliation_dates(subscription=subscription) == []


def test_reseller_purchases_have_no_reconciliation_dates(customer):
    subscription = qsr_subscription(customer, channel=Channel.PARTNER, partner=PartnerFactory())
    assert subscription_reconciliation_dates(subscription=subscription) == []


@pytest.mark.parametrize(
    "today, expected",
    [
        (dt.date(2026, 2, 15), dt.date(2026, 4, 30)),
        (dt.date(2026, 4, 30), dt.date(2026, 4, 30)),
        (dt.date(2026, 5, 1), dt.date(2026, 7, 31)),
        (dt.date(2026, 11, 1), None),
    ],
)
def test_next_reconciliation_date(customer, today, expected):
    subscription = qsr_subscription(customer)
    assert next_reconciliation_date(subscription=subscription, today=today) == expected


def test_a_cancelled_subscription_has_no_next_reconciliation(customer):
    subscription = qsr_subscription(customer)
    subscription.status = SubscriptionStatus.CANCELLED
    assert next_reconciliation_date(subscription=subscription, today=dt.date(2026, 2, 1)) is None


def test_the_instance_list_filters_on_gone_dark(client_for, account_manager, cloud):
    dark = instance(cloud, hostname="dark.acme.test", last_sync_at=ago(days=6))
    instance(cloud, hostname="fine.acme.test", last_sync_at=ago(hours=2))
    client = client_for(account_manager)
    found = client.get("/api/instances/", {"dark": "true"}).json()["results"]
    assert [row["id"] for row in found] == [dark.pk]
    others = client.get("/api/instances/", {"dark": "false"}).json()["results"]
    assert [row["hostname"] for row in others] == ["fine.acme.test"]
