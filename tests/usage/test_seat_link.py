"""POST /api/v1/seat_links as GitLab EE sends it: every generation of the body is stored, a
second report the same day updates the day's row (customers-gitlab-com#3163), the answer
carries the license only when it changed, byte for byte, plus future terms and quarterly
reconciliation dates, and hostile bodies get a 4xx JSON answer and store nothing.

The bodies are ``Gitlab::SeatLinkData#as_json`` across versions (wire protocol §1.3), sent
the way ``SubscriptionPortal::Clients::Rest#create_seat_link`` sends them (§1.2).
"""

import calendar
import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import resolve, reverse
from django.utils import timezone
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from licenses import services as license_services
from licenses.choices import LicenseStatus
from licenses.models import License
from licenses.signing import generate_private_key_pem
from provision import services as provision_services
from provision.choices import Plan, ProvisioningStepKind, StepState
from provision.models import AuditEvent, ProvisioningStep
from tests.factories import (
    ContactFactory,
    CustomerFactory,
    InstanceFactory,
    subscription_factory,
)
from usage import seat_link
from usage.models import Instance, SeatReport, SubscriptionUsageDaily
from usage.services import SEAT_LINK_SUPERSEDED_GRACE, subscription_usage_rollup_recent

pytestmark = pytest.mark.django_db

URL = "/api/v1/seat_links"
GENERATIONS = ("12.9", "13.x", "14.x", "16.x", "newest")
VERSIONS = {
    "12.9": "12.9.2-ee",
    "13.x": "13.12.15-ee",
    "14.x": "14.10.5-ee",
    "16.x": "16.11.2-ee",
    "newest": "17.6.1-ee",
}


@pytest.fixture(scope="module")
def _signing_key_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("seat-link-key") / "signing-key.pem"
    path.write_bytes(generate_private_key_pem())
    return path


@pytest.fixture(autouse=True)
def signing_key(settings, _signing_key_path):
    """Licenses are issued with one key per module; rate limits start from zero (the counters
    live in the cache, which outlives a test's transaction)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(_signing_key_path)
    cache.clear()
    yield _signing_key_path
    cache.clear()


def issue(subscription, **kwargs) -> License:
    return license_services.license_issue(
        actor=None, subscription=subscription, reason="Order closed", **kwargs
    )


@pytest.fixture
def license(subscription) -> License:
    return issue(subscription)


def iso(moment: datetime) -> str:
    """``Time#iso8601`` of a UTC time: seconds and a ``Z``."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def seat_link_body(
    generation: str,
    key: str,
    *,
    instance_id: str | None = None,
    billable: int = 40,
    max_users: int = 45,
    moment: datetime | None = None,
    **overrides,
) -> dict:
    """The body one GitLab generation posts (wire protocol §1.3), keys in its order."""
    moment = moment or timezone.now()
    yesterday = (moment.astimezone(UTC).date() - timedelta(days=1)).isoformat()
    instance_id = instance_id or str(uuid.uuid4())
    if generation == "12.9":
        body = {
            "date": yesterday,
            "license_key": key,
            "max_historical_user_count": max_users,
            "active_users": billable,
        }
    elif generation == "13.x":
        body = {
            "timestamp": iso(moment),
            "date": yesterday,
            "license_key": key,
            "max_historical_user_count": max_users,
            "active_users": billable,
        }
    else:
        body = {
            "gitlab_version": VERSIONS[generation],
            "timestamp": iso(moment),
            "license_key": key,
            "max_historical_user_count": max_users,
            "billable_users_count": billable,
            "hostname": "gitlab.acme.test",
            "instance_id": instance_id,
        }
        if generation == "newest":
            body["unique_instance_id"] = "0b6cbd3b-6f5c-4d50-8f8e-5b4c5d1c9b0a"
        if generation in ("16.x", "newest"):
            body["add_on_metrics"] = [
                {"add_on_type": "duo_enterprise", "purchased_seats": 10, "assigned_seats": 3}
            ]
    body.update(overrides)
    return body


def gitlab_headers(generation: str = "newest") -> dict:
    # json_headers (wire protocol §1.2); the test client adds Content-Type itself.
    return {"User-Agent": f"GitLab/{VERSIONS[generation]}", "Accept": "application/json"}


def post(client, body, *, raw=False, content_type="application/json", generation="newest"):
    data = body if raw else json.dumps(body)
    return client.post(
        URL,
        data,
        content_type=content_type,
        headers=gitlab_headers(generation),
        CONTENT_TYPE=content_type,  # the test client drops it for an empty body; GitLab doesn't
    )


def stored_nothing():
    return not SeatReport.objects.exists() and not Instance.objects.exists()


# --- every generation -----------------------------------------------------------------------


@pytest.mark.parametrize("generation", GENERATIONS)
def test_every_generation_of_the_body_is_accepted_and_stored(client, license, generation):
    instance_id = str(uuid.uuid4())
    body = seat_link_body(generation, license.key, instance_id=instance_id, billable=41)

    response = post(client, body, generation=generation)

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert "no-store" in response["Cache-Control"]
    answer = response.json()
    assert answer["success"] is True
    assert "license" not in answer  # the key sent is the current one
    report = SeatReport.objects.select_related("instance").get()
    assert report.subscription_id == license.subscription_id
    assert (report.billable_users, report.max_historical_users) == (41, 45)
    assert report.source == "seat_link"
    today = timezone.now().astimezone(UTC).date()
    assert report.report_date == (today - timedelta(days=1) if generation == "12.9" else today)
    instance = report.instance
    assert instance.subscription_id == license.subscription_id
    assert instance.customer_id == license.subscription.customer_id
    assert instance.last_sync_at is not None
    # Before 14.x the version comes from the User-Agent header.
    assert instance.version == VERSIONS[generation]
    if generation in ("12.9", "13.x"):
        # No instance id before 14.x: the subscription's stand-in instance.
        assert instance.instance_id == seat_link.anonymous_instance_uuid(license.subscription_id)
        assert instance.hostname == ""
    else:
        assert str(instance.instance_id) == instance_id
        assert instance.hostname == "gitlab.acme.test"
    if generation in ("16.x", "newest"):
        assert report.add_on_metrics == [
            {"add_on_type": "duo_enterprise", "purchased_seats": 10, "assigned_seats": 3}
        ]
    else:
        assert report.add_on_metrics == []
    assert instance.unique_instance_id == (
        "0b6cbd3b-6f5c-4d50-8f8e-5b4c5d1c9b0a" if generation == "newest" else ""
    )
    # The raw payload is kept, without the key (a credential, and kilobytes a row).
    assert "license_key" not in report.raw_payload
    assert report.raw_payload["max_historical_user_count"] == 45
    assert report.raw_payload["_received"]["generation"] == generation
    assert report.raw_payload["_received"]["user_agent"] == f"GitLab/{VERSIONS[generation]}"


def test_the_support_sample_body_is_stored_verbatim_except_the_key(client, license):
    # [HB]'s captured body, with a real key and instance id and today's timestamp.
    instance_id = "aaaaaaaa-0000-0000-aaaa-aaaaaaaaaaaa"
    body = json.loads(
        '{"gitlab_version":"17.6.1-ee","timestamp":"TS","license_key":"KEY",'
        '"max_historical_user_count":2,"billable_users_count":2,"hostname":"gitlab.example.com",'
        '"instance_id":"IID","add_on_metrics":[{"add_on_type":"duo_enterprise",'
        '"purchased_seats":10,"assigned_seats":3}]}'.replace("TS", iso(timezone.now()))
        .replace("IID", instance_id)
        .replace("KEY", json.dumps(license.key)[1:-1])
    )

    response = post(client, body)

    assert response.status_code == 200
    report = SeatReport.objects.get()
    expected = {k: v for k, v in body.items() if k != "license_key"}
    assert {k: v for k, v in report.raw_payload.items() if k != "_received"} == expected
    assert str(report.instance.instance_id) == instance_id


def test_the_report_date_is_the_timestamps_utc_date(client, license):
    # The spec fixture's form: a +02:00 offset. 01:20 at +02:00 is 23:20 UTC the day before.
    today = timezone.now().astimezone(UTC).date()
    moment = f"{today.isoformat()}T01:20:12+02:00"

    response = post(client, seat_link_body("14.x", license.key, timestamp=moment))

    assert response.status_code == 200, response.content
    assert SeatReport.objects.get().report_date == today - timedelta(days=1)


def test_a_crlf_copy_of_the_key_is_recognised_and_not_replaced(client, license):
    mangled = license.key.replace("\n", "\r\n") + "\r\n\r\n"

    response = post(client, seat_link_body("newest", mangled))

    assert response.status_code == 200, response.content
    assert "license" not in response.json()


# --- one row per instance and day (customers-gitlab-com#3163) --------------------------------


def test_a_second_report_the_same_day_updates_the_same_row_and_answers_200(client, license):
    instance_id = str(uuid.uuid4())
    now = timezone.now()
    first = seat_link_body("newest", license.key, instance_id=instance_id, billable=40, moment=now)
    # A manual sync later the same day: a different timestamp, new counts.
    second = seat_link_body(
        "newest",
        license.key,
        instance_id=instance_id,
        billable=44,
        max_users=50,
        moment=now + timedelta(seconds=5),
    )

    assert post(client, first).status_code == 200
    received_first = SeatReport.objects.get().received_at
    response = post(client, second)

    assert response.status_code == 200, response.content
    report = SeatReport.objects.get()
    assert (report.billable_users, report.max_historical_users) == (44, 50)
    assert report.raw_payload["timestamp"] == second["timestamp"]
    assert report.received_at > received_first
    assert Instance.objects.count() == 1
    # Seat Link does not roll up inline; the minute task does, from the updated row.
    assert not SubscriptionUsageDaily.objects.filter(subscription=license.subscription).exists()
    subscription_usage_rollup_recent()
    daily = SubscriptionUsageDaily.objects.get(subscription=license.subscription)
    assert (daily.billable_users, daily.max_users) == (44, 50)


def test_the_next_day_adds_a_row(client, license):
    instance_id = str(uuid.uuid4())
    now = timezone.now()
    for moment in (now - timedelta(days=1), now):
        body = seat_link_body("newest", license.key, instance_id=instance_id, moment=moment)
        assert post(client, body).status_code == 200

    assert SeatReport.objects.count() == 2
    assert Instance.objects.count() == 1


def test_a_report_does_not_erase_what_an_older_body_cannot_say(client, license):
    instance_id = str(uuid.uuid4())
    post(client, seat_link_body("newest", license.key, instance_id=instance_id))
    # The same instance's 13.x-shaped retry (no hostname) must not blank the hostname.
    body = seat_link_body("newest", license.key, instance_id=instance_id)
    del body["hostname"]

    assert post(client, body).status_code == 200

    assert Instance.objects.get().hostname == "gitlab.acme.test"


# --- the license in the answer ---------------------------------------------------------------


def test_an_unchanged_license_is_not_sent_back_and_becomes_active(client, license):
    assert license.status == LicenseStatus.ISSUED

    response = post(client, seat_link_body("newest", license.key))

    assert response.status_code == 200
    assert "license" not in response.json()
    license.refresh_from_db()
    assert license.status == LicenseStatus.ACTIVE
    event = AuditEvent.objects.get(action="licenses.license_first_synced")
    assert event.changes == {"status": ["issued", "active"]}
    assert event.actor_kind == "instance" and event.actor_id is None


def test_after_a_seat_change_the_old_key_gets_the_new_key_byte_for_byte(
    client, license, subscription
):
    instance_id = str(uuid.uuid4())
    post(client, seat_link_body("newest", license.key, instance_id=instance_id))
    provision_services.subscription_seats_change(
        actor=None, subscription=subscription, seats=75, reason="Customer bought 25 seats"
    )
    new = License.objects.get(subscription=subscription, status=LicenseStatus.ISSUED)
    assert new.user_count == 75

    response = post(client, seat_link_body("newest", license.key, instance_id=instance_id))

    assert response.status_code == 200, response.content
    sent = response.json()["license"]
    assert sent == new.key  # the stored string, not a re-encryption
    assert sent.encode() == new.key.encode()
    license.refresh_from_db()
    assert license.status == LicenseStatus.SUPERSEDED
    # The next sync carries the new key: nothing to send, and it is now active.
    again = post(client, seat_link_body("newest", new.key, instance_id=instance_id))
    assert again.status_code == 200
    assert "license" not in again.json()
    new.refresh_from_db()
    assert new.status == LicenseStatus.ACTIVE
    # Both days' reports land on the same instance and day.
    assert SeatReport.objects.count() == 1


def test_a_superseded_key_is_refused_once_the_grace_period_is_over(client, license, subscription):
    provision_services.subscription_seats_change(
        actor=None, subscription=subscription, seats=60, reason="More seats"
    )
    License.objects.filter(supersedes=license).update(
        issued_at=timezone.now() - SEAT_LINK_SUPERSEDED_GRACE - timedelta(days=1)
    )

    response = post(client, seat_link_body("newest", license.key))

    assert response.status_code == 422
    assert response.json()["reason"] == "license_superseded"
    assert stored_nothing()


def test_an_old_key_gets_the_renewals_license_once_the_renewal_has_started(client):
    customer = CustomerFactory()
    ContactFactory(customer=customer)
    today = timezone.localdate()
    old = subscription_factory(
        customer, term_start=today - timedelta(days=370), term_end=today - timedelta(days=5)
    )
    old_license = issue(old)
    renewal = subscription_factory(
        customer, renews=old, term_start=old.term_end, term_end=old.term_end + timedelta(days=365)
    )
    renewal_license = issue(renewal)

    response = post(client, seat_link_body("newest", old_license.key))

    assert response.status_code == 200, response.content
    assert response.json()["license"] == renewal_license.key
    # The report belongs to the license the instance reported with.
    assert SeatReport.objects.get().subscription_id == old.pk


def test_a_renewal_that_starts_later_is_a_future_subscription(client, license, subscription):
    renewal = subscription_factory(
        subscription.customer,
        renews=subscription,
        term_start=subscription.term_end,
        term_end=subscription.term_end + timedelta(days=365),
        seats=80,
        plan=Plan.ULTIMATE,
    )
    renewal_license = issue(renewal)

    response = post(client, seat_link_body("newest", license.key))

    assert response.status_code == 200
    answer = response.json()
    assert "license" not in answer
    assert answer["future_subscriptions"] == [
        {
            "cloud_license_enabled": True,
            "offline_cloud_license_enabled": False,
            "plan": "ultimate",
            "name": renewal_license.licensee_name,
            "company": renewal_license.licensee_company,
            "email": renewal_license.licensee_email,
            "starts_at": renewal.term_start.isoformat(),
            "expires_at": renewal.term_end.isoformat(),
            "users_in_license_count": 80,
            # The instance's SubscriptionFutureEntry.type resolver reads this key (§2.3).
            "offline_cloud_licensing": False,
        }
    ]


def test_no_future_subscriptions_is_an_empty_list(client, license):
    answer = post(client, seat_link_body("newest", license.key)).json()

    assert answer["future_subscriptions"] == []


# --- quarterly reconciliation -----------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def twelve_month_subscription(customer, *, started_days_ago: int, **overrides):
    term_start = timezone.localdate() - timedelta(days=started_days_ago)
    return subscription_factory(
        customer, term_start=term_start, term_end=add_months(term_start, 12), **overrides
    )


@pytest.mark.parametrize("started_days_ago, quarter", [(40, 3), (100, 6), (200, 9)])
def test_the_answer_carries_the_next_quarterly_reconciliation_and_its_alert_date(
    client, customer, started_days_ago, quarter
):
    subscription = twelve_month_subscription(customer, started_days_ago=started_days_ago)
    license = issue(subscription)
    expected = add_months(subscription.term_start, quarter)

    answer = post(client, seat_link_body("newest", license.key)).json()

    assert answer["next_reconciliation_date"] == expected.isoformat()
    # The banner from 7 days before: the §1.4 fixture's 2024-05-01 / 2024-04-24.
    assert answer["display_alert_from"] == (expected - timedelta(days=7)).isoformat()


@pytest.mark.parametrize(
    "started_days_ago, overrides",
    [
        (40, {"quarterly_reconciliation": False}),
        (40, {"plan": Plan.PREMIUM_TRIAL}),
        # After the third reconciliation none is left: the fourth quarter goes to the renewal.
        (300, {}),
    ],
    ids=["qsr-off", "trial", "after-the-last"],
)
def test_no_reconciliation_dates_when_none_applies(client, customer, started_days_ago, overrides):
    subscription = twelve_month_subscription(
        customer, started_days_ago=started_days_ago, **overrides
    )
    license = issue(subscription)

    answer = post(client, seat_link_body("newest", license.key)).json()

    # Both keys absent: the instance removes its "upcoming reconciliation" banner.
    assert "next_reconciliation_date" not in answer
    assert "display_alert_from" not in answer


# --- provisioning and audit -------------------------------------------------------------------


def test_the_first_report_closes_the_first_usage_step_once(client, license, subscription):
    step = ProvisioningStep.objects.get(
        record__subscription=subscription, kind=ProvisioningStepKind.FIRST_USAGE
    )
    assert step.state == StepState.PENDING

    post(client, seat_link_body("newest", license.key))
    post(client, seat_link_body("newest", license.key))  # a second instance, same subscription

    step.refresh_from_db()
    assert step.state == StepState.DONE
    events = AuditEvent.objects.filter(action="provision.provisioning_step_changed")
    assert events.filter(changes__first_usage=["pending", "done"]).count() == 1
    event = events.get(changes__first_usage=["pending", "done"])
    assert event.actor_kind == "instance" and event.actor_id is None
    assert event.source == "api"


def test_reports_are_not_audited_one_by_one_but_a_new_instance_is(client, license):
    instance_id = str(uuid.uuid4())
    post(client, seat_link_body("newest", license.key, instance_id=instance_id))
    registered = AuditEvent.objects.get(action="usage.instance_registered")
    assert registered.changes["instance_id"] == [None, instance_id]
    assert registered.target_type == "usage.instance"
    before = AuditEvent.objects.count()

    for billable in (41, 42, 43):
        body = seat_link_body("newest", license.key, instance_id=instance_id, billable=billable)
        assert post(client, body).status_code == 200

    assert AuditEvent.objects.count() == before


def test_an_instance_that_moves_to_another_subscription_is_relinked_and_audited(
    client, license, customer
):
    instance_id = str(uuid.uuid4())
    post(client, seat_link_body("newest", license.key, instance_id=instance_id))
    other = subscription_factory(customer)
    other_license = issue(other)

    response = post(client, seat_link_body("newest", other_license.key, instance_id=instance_id))

    assert response.status_code == 200
    instance = Instance.objects.get()
    assert instance.subscription_id == other.pk
    event = AuditEvent.objects.get(action="usage.instance_relinked")
    assert event.changes == {"subscription_id": [license.subscription_id, other.pk]}


def test_an_instance_known_from_usage_files_is_online_once_it_syncs(client, license):
    instance = InstanceFactory(air_gapped=True, subscription=None, customer=None)

    body = seat_link_body("newest", license.key, instance_id=str(instance.instance_id))
    assert post(client, body).status_code == 200

    instance.refresh_from_db()
    assert instance.air_gapped is False
    assert instance.subscription_id == license.subscription_id
    assert AuditEvent.objects.filter(action="usage.instance_relinked").count() == 1


def test_an_instance_without_an_id_reports_on_the_same_stand_in_every_day(client, license):
    now = timezone.now()
    for moment in (now - timedelta(days=1), now):
        body = seat_link_body("13.x", license.key, moment=moment)
        assert post(client, body, generation="13.x").status_code == 200

    assert Instance.objects.count() == 1
    assert SeatReport.objects.count() == 2
    assert AuditEvent.objects.filter(action="usage.instance_registered").count() == 1


def test_the_daily_report_of_a_known_instance_costs_a_handful_of_queries(client, license):
    instance_id = str(uuid.uuid4())
    post(client, seat_link_body("newest", license.key, instance_id=instance_id))

    with CaptureQueriesContext(connection) as queries:
        response = post(client, seat_link_body("newest", license.key, instance_id=instance_id))

    assert response.status_code == 200
    statements = [
        q["sql"]
        for q in queries.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))
    ]
    # License lookup, instance update, report upsert; the rollup is the minute task's.
    assert len(statements) == 3, "\n".join(statements)


# --- refusals: 4xx, JSON, nothing stored ------------------------------------------------------


@pytest.fixture
def keys(subscription, customer):
    """A key of each kind Seat Link refuses, by name."""
    result = {}
    revoked = issue(subscription_factory(customer))
    license_services.license_revoke(actor=None, license=revoked, reason="Chargeback")
    result["revoked"] = revoked.key
    result["legacy"] = issue(subscription_factory(customer, licensing_method="legacy")).key
    result["offline"] = issue(subscription_factory(customer, licensing_method="offline_cloud")).key
    good = issue(subscription).key
    middle = len(good) // 2
    flipped = "A" if good[middle] != "A" else "B"
    result["tampered"] = good[:middle] + flipped + good[middle + 1 :]
    result["unknown"] = "eyJkYXRhIjoiIiwia2V5IjoiIiwiaXYiOiIifQ==\n"
    result["good"] = good
    return result


FAR_FUTURE = "2999-01-01T00:00:00Z"

HOSTILE_BODIES = {
    # name: (body builder, expected status, field named in error_attribute_map or None)
    "unknown key": (lambda k: seat_link_body("newest", k["unknown"]), 422, "license_key"),
    "revoked key": (lambda k: seat_link_body("newest", k["revoked"]), 422, "license_key"),
    "tampered key": (lambda k: seat_link_body("newest", k["tampered"]), 422, "license_key"),
    "legacy key": (lambda k: seat_link_body("14.x", k["legacy"]), 422, "license_key"),
    "offline key": (lambda k: seat_link_body("newest", k["offline"]), 422, "license_key"),
    "key not a string": (lambda k: seat_link_body("newest", ["x"]), 422, "license_key"),
    "empty key": (lambda k: seat_link_body("newest", "  \n"), 422, "license_key"),
    "non-UUID instance id": (
        lambda k: seat_link_body("newest", k["good"], instance_id="one-two-three"),
        422,
        "instance_id",
    ),
    "instance id a number": (
        lambda k: seat_link_body("newest", k["good"], instance_id=12345),
        422,
        "instance_id",
    ),
    "negative billable": (
        lambda k: seat_link_body("newest", k["good"], billable=-1),
        422,
        "billable_users_count",
    ),
    "negative max": (
        lambda k: seat_link_body("newest", k["good"], max_users=-5),
        422,
        "max_historical_user_count",
    ),
    "count as string": (
        lambda k: seat_link_body("newest", k["good"], billable="40"),
        422,
        "billable_users_count",
    ),
    "count as float": (
        lambda k: seat_link_body("newest", k["good"], billable=40.0),
        422,
        "billable_users_count",
    ),
    "count as boolean": (
        lambda k: seat_link_body("newest", k["good"], max_users=True),
        422,
        "max_historical_user_count",
    ),
    "count over the column": (
        lambda k: seat_link_body("newest", k["good"], billable=2**31),
        422,
        "billable_users_count",
    ),
    "huge count": (
        lambda k: seat_link_body("newest", k["good"], max_users=10**40),
        422,
        "max_historical_user_count",
    ),
    "13.x active_users as string": (
        lambda k: seat_link_body("13.x", k["good"], active_users="x"),
        422,
        "active_users",
    ),
    "negative add-on seats": (
        lambda k: seat_link_body(
            "newest",
            k["good"],
            add_on_metrics=[{"add_on_type": "duo_pro", "purchased_seats": -1, "assigned_seats": 0}],
        ),
        422,
        "add_on_metrics[0].purchased_seats",
    ),
    "add-on metrics not a list": (
        lambda k: seat_link_body("newest", k["good"], add_on_metrics={"a": 1}),
        422,
        "add_on_metrics",
    ),
    "far-future timestamp": (
        lambda k: seat_link_body("newest", k["good"], timestamp=FAR_FUTURE),
        422,
        "timestamp",
    ),
    "timestamp two days ahead": (
        lambda k: seat_link_body(
            "newest", k["good"], timestamp=iso(timezone.now() + timedelta(days=2))
        ),
        422,
        "timestamp",
    ),
    "timestamp before the license": (
        lambda k: seat_link_body("newest", k["good"], timestamp="2001-01-01T00:00:00Z"),
        422,
        "timestamp",
    ),
    "timestamp without offset": (
        lambda k: seat_link_body("newest", k["good"], timestamp="2025-01-21T12:00:11"),
        422,
        "timestamp",
    ),
    "timestamp at the edge of time": (
        lambda k: seat_link_body("newest", k["good"], timestamp="0001-01-01T00:00:00+14:00"),
        422,
        "timestamp",
    ),
    "timestamp not a date": (
        lambda k: seat_link_body("newest", k["good"], timestamp="yesterday"),
        422,
        "timestamp",
    ),
    "12.9 date not a date": (
        lambda k: seat_link_body("12.9", k["good"], date="2025-02-30"),
        422,
        "date",
    ),
    "missing license key": (
        lambda k: {
            n: v for n, v in seat_link_body("newest", k["good"]).items() if n != "license_key"
        },
        422,
        "license_key",
    ),
    "missing max": (
        lambda k: {
            n: v
            for n, v in seat_link_body("newest", k["good"]).items()
            if n != "max_historical_user_count"
        },
        422,
        "max_historical_user_count",
    ),
    "missing billable": (
        lambda k: {
            n: v
            for n, v in seat_link_body("newest", k["good"]).items()
            if n != "billable_users_count"
        },
        422,
        "billable_users_count",
    ),
    "missing timestamp": (
        lambda k: {
            n: v for n, v in seat_link_body("newest", k["good"]).items() if n != "timestamp"
        },
        422,
        "timestamp",
    ),
    "null timestamp": (
        lambda k: seat_link_body("newest", k["good"], timestamp=None),
        422,
        "timestamp",
    ),
    "hostname not a string": (
        lambda k: seat_link_body("newest", k["good"], hostname={"a": 1}),
        422,
        "hostname",
    ),
    "unique instance id too long": (
        lambda k: seat_link_body("newest", k["good"], unique_instance_id="x" * 65),
        422,
        "unique_instance_id",
    ),
}


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_refused_bodies_get_a_4xx_json_answer_and_store_nothing(client, keys, name):
    build, status, field = HOSTILE_BODIES[name]
    events_before = AuditEvent.objects.count()
    licenses_before = dict(License.objects.values_list("pk", "status"))

    response = post(client, build(keys))

    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["success"] is False
    assert answer["errors"] and all(isinstance(e, str) for e in answer["errors"])
    assert field in answer["error_attribute_map"], answer
    assert stored_nothing()
    assert AuditEvent.objects.count() == events_before
    assert dict(License.objects.values_list("pk", "status")) == licenses_before


RAW_BODIES = {
    "invalid JSON": (b'{"license_key": ', 400),
    "empty body": (b"", 400),
    "whitespace body": (b"  \n", 400),
    "array body": (b"[]", 400),
    "string body": (b'"seat link"', 400),
    "null body": (b"null", 400),
    "NaN count": (b'{"license_key": "x", "max_historical_user_count": NaN}', 400),
    "not UTF-8": (b'{"license_key": "\xff\xfe"}', 400),
    "nested too deeply": (b'{"extra": ' + b"[" * 40 + b"]" * 40 + b"}", 400),
    "digits beyond Python's limit": (b'{"max_historical_user_count": ' + b"9" * 5000 + b"}", 400),
    "oversized body": (
        json.dumps({"license_key": "x", "padding": "y" * seat_link.MAX_BODY_BYTES}).encode(),
        413,
    ),
}


@pytest.mark.parametrize("name", RAW_BODIES)
def test_malformed_bodies_get_a_4xx_json_answer_and_store_nothing(client, license, name):
    raw, status = RAW_BODIES[name]

    response = post(client, raw, raw=True)

    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["success"] is False and answer["errors"]
    assert stored_nothing()


def test_an_oversized_body_is_refused_before_it_is_read(client, license):
    response = client.post(
        URL,
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH=str(seat_link.MAX_BODY_BYTES + 1),
    )

    assert response.status_code == 413
    assert response.json()["reason"] == "too_large"


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_get_405_with_allow(client, method):
    response = getattr(client, method)(URL)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["success"] is False


def test_a_body_that_is_not_json_by_content_type_gets_415(client, license):
    body = json.dumps(seat_link_body("newest", license.key))

    response = post(client, body, raw=True, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 415
    assert stored_nothing()


# --- tolerance ---------------------------------------------------------------------------------


def test_unknown_fields_are_accepted_and_kept(client, license):
    body = seat_link_body(
        "newest",
        license.key,
        # A field from a GitLab newer than Provision, and one with a NUL byte (jsonb refuses it).
        duo_core_metrics={"enabled": True, "users": [1, 2]},
        note="line\x00feed",
    )

    response = post(client, body)

    assert response.status_code == 200, response.content
    raw = SeatReport.objects.get().raw_payload
    assert raw["duo_core_metrics"] == {"enabled": True, "users": [1, 2]}
    assert raw["note"] == "linefeed"


def test_hostname_and_version_are_cleaned_and_cut_to_their_columns(client, license):
    body = seat_link_body(
        "newest",
        license.key,
        hostname="  gitlab\x00.acme\n.test" + "x" * 300,
        gitlab_version="17.6.1-ee\x07" + "9" * 50,
    )

    assert post(client, body).status_code == 200

    instance = Instance.objects.get()
    assert instance.hostname.startswith("gitlab.acme.test")
    assert len(instance.hostname) == 255
    assert instance.version.startswith("17.6.1-ee9") and len(instance.version) == 40


def test_an_expired_license_still_reports(client, customer):
    today = timezone.localdate()
    subscription = subscription_factory(
        customer, term_start=today - timedelta(days=400), term_end=today - timedelta(days=35)
    )
    license = issue(subscription)
    license_services.licenses_mark_expired(today=today)
    license.refresh_from_db()
    assert license.status == LicenseStatus.EXPIRED

    response = post(client, seat_link_body("newest", license.key))

    assert response.status_code == 200, response.content
    assert "license" not in response.json()
    assert SeatReport.objects.count() == 1


# --- the endpoint --------------------------------------------------------------------------------


def test_the_url_is_not_swallowed_by_the_api_router():
    assert reverse("seat_link") == URL
    assert resolve(URL).func.__name__ == "seat_link_endpoint"


def test_no_csrf_token_and_no_session_are_needed(license):
    client = Client(enforce_csrf_checks=True)

    response = post(client, seat_link_body("newest", license.key))

    assert response.status_code == 200, response.content


def test_the_per_address_limit_answers_429_with_retry_after(client, license, settings):
    settings.SEAT_LINK_RATE_LIMIT_PER_IP = 2
    instance_id = str(uuid.uuid4())
    for _ in range(2):
        body = seat_link_body("newest", license.key, instance_id=instance_id)
        assert post(client, body).status_code == 200

    response = post(client, seat_link_body("newest", license.key))

    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["reason"] == "rate_limited"
    assert Instance.objects.count() == 1  # the third, a new instance, was not stored


def test_ping_answers_ok_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/-/ping")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert client.post("/-/ping").status_code == 405


# --- fuzz ----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)
FIELDS = (
    "gitlab_version",
    "timestamp",
    "date",
    "license_key",
    "max_historical_user_count",
    "billable_users_count",
    "active_users",
    "hostname",
    "instance_id",
    "unique_instance_id",
    "add_on_metrics",
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=30),
)
counts = st.one_of(st.integers(), st.integers(min_value=0, max_value=10**6), st.floats(), st.text())


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    replacements=st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(json_values, timestamps, counts),
        max_size=4,
    ),
    removals=st.sets(st.sampled_from(FIELDS), max_size=3),
    extra=st.dictionaries(st.text(max_size=10), json_values, max_size=3),
    generation=st.sampled_from(GENERATIONS),
)
def test_fuzzed_seat_links_never_get_a_5xx(
    client, settings, license, data, replacements, removals, extra, generation
):
    """A valid body with fields replaced, removed and added: always a JSON answer below 500,
    and a 200 only when a report was really stored."""
    settings.SEAT_LINK_RATE_LIMIT_PER_IP = 0
    body = seat_link_body(generation, license.key)
    for name in removals:
        body.pop(name, None)
    body.update(extra)
    body.update(replacements)
    before = SeatReport.objects.count()

    response = post(client, body)

    assert response.status_code < 500, (body, response.content[:300])
    event(f"HTTP {response.status_code}")
    answer = json.loads(response.content)
    if response.status_code == 200:
        assert answer["success"] is True
        assert SeatReport.objects.count() >= max(before, 1)
    else:
        assert answer["success"] is False and answer["errors"]
        assert SeatReport.objects.count() == before


@hypothesis_settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=st.one_of(json_values, st.binary(max_size=512)))
def test_fuzzed_raw_bodies_never_get_a_5xx(client, settings, body):
    settings.SEAT_LINK_RATE_LIMIT_PER_IP = 0
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    response = post(client, raw, raw=True)

    assert 400 <= response.status_code < 500, (raw, response.content[:300])
    assert json.loads(response.content)["success"] is False
