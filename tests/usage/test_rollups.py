"""The daily rollup: per-day sums over a subscription's sources, seats from the ledger in force
that day, idempotent upserts, a bounded number of queries; and the safety-net beat task."""

import datetime as dt
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from crm_sync.choices import CrmTarget
from provision import services as provision_services
from provision.models import SeatLedgerEntry
from tests.factories import InstanceFactory, SeatReportFactory
from usage.models import SubscriptionUsageDaily
from usage.services import ROLLUP_RECENT_WATERMARK_KEY, subscription_usage_rollup
from usage.tasks import usage_rollup_recent

pytestmark = pytest.mark.django_db

TODAY = dt.date(2026, 3, 10)


def at_noon(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(12)))


def daily(subscription, day):
    return SubscriptionUsageDaily.objects.get(subscription=subscription, date=day)


@pytest.fixture
def instances(subscription):
    production = InstanceFactory(customer=subscription.customer, subscription=subscription)
    staging = InstanceFactory(customer=subscription.customer, subscription=subscription)
    return production, staging


def report(subscription, instance, day, billable, peak):
    return SeatReportFactory(
        subscription=subscription,
        instance=instance,
        report_date=day,
        billable_users=billable,
        max_historical_users=peak,
    )


def test_rollup_sums_billable_and_max_over_every_instance_of_the_day(subscription, instances):
    production, staging = instances
    report(subscription, production, TODAY, 40, 48)
    report(subscription, staging, TODAY, 7, 9)
    report(subscription, production, TODAY - dt.timedelta(days=1), 999, 999)

    subscription_usage_rollup(subscription_id=subscription.pk, dates=[TODAY])

    row = daily(subscription, TODAY)
    assert (row.billable_users, row.max_users, row.seats) == (47, 57, 50)
    assert row.overage == 7
    assert row.utilization == Decimal("0.9400")
    # Only the dates asked for are touched.
    assert SubscriptionUsageDaily.objects.filter(subscription=subscription).count() == 1


def test_rollup_has_no_row_for_a_day_without_reports(subscription, instances):
    report(subscription, instances[0], TODAY, 10, 10)
    subscription_usage_rollup(
        subscription_id=subscription.pk, dates=[TODAY, TODAY - dt.timedelta(days=1)]
    )
    assert list(
        SubscriptionUsageDaily.objects.filter(subscription=subscription).values_list(
            "date", flat=True
        )
    ) == [TODAY]


def test_rollup_uses_the_seats_in_force_on_each_day(subscription, instances):
    """Seats went 50 → 60 on the 5th and 60 → 30 on the 8th (a ledger append each time)."""
    SeatLedgerEntry.objects.filter(subscription=subscription).update(
        effective_at=at_noon(TODAY - dt.timedelta(days=30))
    )
    SeatLedgerEntry.objects.create(
        subscription=subscription,
        seats=60,
        previous_seats=50,
        effective_at=at_noon(dt.date(2026, 3, 5)),
    )
    SeatLedgerEntry.objects.create(
        subscription=subscription,
        seats=30,
        previous_seats=60,
        effective_at=at_noon(dt.date(2026, 3, 8)),
    )
    days = [dt.date(2026, 3, d) for d in (4, 5, 7, 8, 9)]
    for day in days:
        report(subscription, instances[0], day, 45, 55)

    subscription_usage_rollup(subscription_id=subscription.pk, dates=days)

    seats = {day: daily(subscription, day).seats for day in days}
    # A change at noon counts for the whole of that day ("latest entry by the end of the day").
    assert seats == {
        dt.date(2026, 3, 4): 50,
        dt.date(2026, 3, 5): 60,
        dt.date(2026, 3, 7): 60,
        dt.date(2026, 3, 8): 30,
        dt.date(2026, 3, 9): 30,
    }
    assert daily(subscription, dt.date(2026, 3, 4)).overage == 5
    assert daily(subscription, dt.date(2026, 3, 7)).overage == 0
    assert daily(subscription, dt.date(2026, 3, 9)).overage == 25
    assert daily(subscription, dt.date(2026, 3, 9)).utilization == Decimal("1.5000")


def test_days_before_the_first_ledger_entry_use_the_seats_as_sold(subscription, instances):
    """A back-dated order: the ledger starts when it was entered, the term weeks earlier."""
    SeatLedgerEntry.objects.filter(subscription=subscription).update(effective_at=at_noon(TODAY))
    earlier = TODAY - dt.timedelta(days=20)
    report(subscription, instances[0], earlier, 20, 20)
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[earlier])
    assert daily(subscription, earlier).seats == 50


def test_zero_seats_means_zero_utilization_not_a_division_error(customer):
    from tests.factories import subscription_factory

    free = subscription_factory(customer, seats=0)
    instance = InstanceFactory(customer=customer, subscription=free)
    report(free, instance, TODAY, 12, 12)
    subscription_usage_rollup(subscription_id=free.pk, dates=[TODAY])
    row = daily(free, TODAY)
    assert (row.utilization, row.overage) == (Decimal("0"), 12)


def test_rollup_is_idempotent_and_follows_a_replaced_report(subscription, instances):
    seat_report = report(subscription, instances[0], TODAY, 40, 40)
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[TODAY])
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[TODAY, TODAY])
    assert SubscriptionUsageDaily.objects.filter(subscription=subscription).count() == 1
    assert daily(subscription, TODAY).billable_users == 40

    # A second sync the same day replaces the report (upsert); the rollup follows it.
    type(seat_report).objects.filter(pk=seat_report.pk).update(billable_users=44)
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[TODAY])
    assert SubscriptionUsageDaily.objects.filter(subscription=subscription).count() == 1
    assert daily(subscription, TODAY).billable_users == 44


def test_rollup_leaves_other_subscriptions_alone(subscription, instances, customer):
    from tests.factories import subscription_factory

    other = subscription_factory(customer, seats=5)
    other_instance = InstanceFactory(customer=customer, subscription=other)
    report(other, other_instance, TODAY, 3, 3)
    report(subscription, instances[0], TODAY, 40, 40)
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[TODAY])
    assert not SubscriptionUsageDaily.objects.filter(subscription=other).exists()
    assert daily(subscription, TODAY).billable_users == 40


def test_an_empty_date_list_does_nothing(subscription, django_assert_num_queries):
    with django_assert_num_queries(0):
        subscription_usage_rollup(subscription_id=subscription.pk, dates=[])


@pytest.mark.parametrize("how_many", [1, 10, 60])
def test_rollup_query_count_does_not_grow_with_the_number_of_dates(
    subscription, instances, how_many, django_assert_num_queries
):
    days = [TODAY - dt.timedelta(days=n) for n in range(how_many)]
    for day in days:
        report(subscription, instances[0], day, 10, 12)
        report(subscription, instances[1], day, 1, 1)
    # Lock the subscription, sum the reports, read the ledger, one upsert; then the customer
    # is marked changed for the CRMs (an update and an insert-if-missing per target).
    with django_assert_num_queries(4 + 2 * len(CrmTarget.values)):
        subscription_usage_rollup(subscription_id=subscription.pk, dates=days)
    assert SubscriptionUsageDaily.objects.filter(subscription=subscription).count() == how_many
    assert {row.billable_users for row in SubscriptionUsageDaily.objects.all()} == {11}


def test_a_long_date_range_is_rolled_up_in_full(subscription, instances):
    """Past the IN-list limit the reports are read by range; sparse dates still come out right."""
    days = [TODAY - dt.timedelta(days=n) for n in range(0, 900, 2)]
    SeatReportFactory._meta.model.objects.bulk_create(
        [
            SeatReportFactory.build(
                subscription=subscription,
                instance=instances[0],
                report_date=day,
                billable_users=5,
                max_historical_users=6,
            )
            for day in days
        ]
        + [
            SeatReportFactory.build(
                subscription=subscription,
                instance=instances[0],
                report_date=TODAY - dt.timedelta(days=1),
                billable_users=99,
                max_historical_users=99,
            )
        ]
    )
    subscription_usage_rollup(subscription_id=subscription.pk, dates=days)
    rows = SubscriptionUsageDaily.objects.filter(subscription=subscription)
    assert rows.count() == len(days)
    assert not rows.filter(date=TODAY - dt.timedelta(days=1)).exists()


# --- The safety-net beat task -------------------------------------------------------------------


@pytest.fixture
def fresh_watermark():
    cache.delete(ROLLUP_RECENT_WATERMARK_KEY)
    yield
    cache.delete(ROLLUP_RECENT_WATERMARK_KEY)


def run_task():
    return usage_rollup_recent.apply(kwargs={"request_id": "test"}).get()


def test_the_rollup_task_is_scheduled_by_beat():
    entries = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == "usage.tasks.usage_rollup_recent"
    ]
    assert len(entries) == 1
    assert usage_rollup_recent.name == "usage.tasks.usage_rollup_recent"
    from provision.celery import app

    app.loader.import_default_modules()
    assert "usage.tasks.usage_rollup_recent" in app.tasks


def test_the_task_rolls_up_every_day_whose_reports_just_arrived(
    subscription, instances, fresh_watermark
):
    today = timezone.localdate()
    # Reports written without a rollup (Seat Link never rolls up inline), one of them for a
    # day five days back: an instance that was offline sends its missed days when it returns.
    report(subscription, instances[0], today, 30, 31)
    report(subscription, instances[1], today - dt.timedelta(days=1), 20, 21)
    report(subscription, instances[0], today - dt.timedelta(days=5), 99, 99)

    assert run_task() == {"subscriptions": 1, "days": 3, "failed": 0}

    rows = dict(
        SubscriptionUsageDaily.objects.filter(subscription=subscription).values_list(
            "date", "billable_users"
        )
    )
    assert rows == {today: 30, today - dt.timedelta(days=1): 20, today - dt.timedelta(days=5): 99}
    # Rolled up after the reports arrived: the next run finds nothing to do.
    assert run_task() == {"subscriptions": 0, "days": 0, "failed": 0}


def test_the_task_skips_subscriptions_whose_rollup_is_current(
    subscription, instances, customer, fresh_watermark
):
    from tests.factories import subscription_factory

    today = timezone.localdate()
    report(subscription, instances[0], today, 30, 31)
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[today])
    other = subscription_factory(customer, seats=5)
    report(other, InstanceFactory(customer=customer, subscription=other), today, 3, 3)

    assert run_task() == {"subscriptions": 1, "days": 1, "failed": 0}
    assert SubscriptionUsageDaily.objects.filter(subscription=other, date=today).exists()


def test_the_task_follows_a_seat_change(subscription, instances, support_lead, fresh_watermark):
    today = timezone.localdate()
    report(subscription, instances[0], today, 40, 45)
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[today])
    cache.set(ROLLUP_RECENT_WATERMARK_KEY, timezone.now() - dt.timedelta(minutes=1))

    provision_services.subscription_seats_change(
        actor=support_lead, subscription=subscription, seats=40, reason="Downgrade"
    )
    run_task()
    row = daily(subscription, today)
    assert (row.seats, row.overage) == (40, 5)


def test_a_second_run_after_the_first_has_nothing_to_do(subscription, instances, fresh_watermark):
    report(subscription, instances[0], timezone.localdate(), 30, 31)
    assert run_task()["subscriptions"] == 1
    assert cache.get(ROLLUP_RECENT_WATERMARK_KEY) is not None
    assert run_task() == {"subscriptions": 0, "days": 0, "failed": 0}


def test_the_task_only_looks_at_reports_received_since_its_last_run(
    subscription, instances, fresh_watermark
):
    seat_report = report(subscription, instances[0], timezone.localdate(), 30, 31)
    type(seat_report).objects.filter(pk=seat_report.pk).update(
        received_at=timezone.now() - dt.timedelta(hours=1)
    )
    cache.set(ROLLUP_RECENT_WATERMARK_KEY, timezone.now() - dt.timedelta(minutes=30))
    assert run_task()["subscriptions"] == 0
    # Without a watermark (first run, cache flushed) the whole window is covered.
    cache.delete(ROLLUP_RECENT_WATERMARK_KEY)
    assert run_task()["subscriptions"] == 1
