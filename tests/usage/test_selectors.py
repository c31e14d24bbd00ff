import datetime as dt

import pytest
from django.utils import timezone

from provision import services
from tests.factories import InstanceFactory, SeatReportFactory
from usage.selectors import (
    customer_usage_overview,
    customer_usage_series,
    subscription_usage_series,
)
from usage.services import subscription_usage_rollup

pytestmark = pytest.mark.django_db


def test_latest_usage_sums_every_instance_of_a_subscription(subscription):
    today = timezone.localdate()
    production = InstanceFactory(customer=subscription.customer, subscription=subscription)
    staging = InstanceFactory(customer=subscription.customer, subscription=subscription)
    SeatReportFactory(
        subscription=subscription,
        instance=production,
        report_date=today,
        billable_users=250,
        max_historical_users=260,
    )
    SeatReportFactory(
        subscription=subscription,
        instance=staging,
        report_date=today,
        billable_users=6,
        max_historical_users=10,
    )
    SeatReportFactory(
        subscription=subscription,
        instance=production,
        report_date=today - dt.timedelta(days=1),
        billable_users=999,
        max_historical_users=999,
    )
    usage = customer_usage_overview(customer=subscription.customer)
    row = usage["usage_by_subscription"][subscription.pk]
    assert (row["last_date"], row["billable_users"], row["peak"]) == (today, 256, 270)
    subscription_usage_rollup(
        subscription_id=subscription.pk, dates=[today - dt.timedelta(days=1), today]
    )
    series = subscription_usage_series(subscription=subscription)
    assert series["billable"] == [999, row["billable_users"]]
    assert series["seats"] == [50, 50]


def test_usage_series_follows_the_seats_purchased_over_the_term(support_agent, subscription):
    today = timezone.localdate()
    instance = InstanceFactory(customer=subscription.customer, subscription=subscription)
    for days_ago in (2, 0):
        SeatReportFactory(
            subscription=subscription,
            instance=instance,
            report_date=today - dt.timedelta(days=days_ago),
            billable_users=48,
            max_historical_users=55,
        )
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[today - dt.timedelta(days=2)])
    services.subscription_seats_change(
        actor=support_agent, subscription=subscription, seats=60, reason="True-up"
    )
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[today])
    subscription.refresh_from_db()
    series = subscription_usage_series(subscription=subscription)
    assert series["seats"] == [50, 60] and series["overage"] == [5, 0]
    assert series["current_seats"] == 60
    customer_series = customer_usage_series(customer=subscription.customer)
    assert customer_series["billable"] == [48, 48]


def test_customer_page_instances_carry_their_health(subscription, settings):
    settings.INSTANCE_DARK_AFTER_DAYS = 3
    quiet = InstanceFactory(
        customer=subscription.customer,
        subscription=subscription,
        last_sync_at=timezone.now() - dt.timedelta(days=5),
    )
    (instance,) = customer_usage_overview(customer=subscription.customer)["instances"]
    assert instance == quiet and instance.health.missed_days == 5
