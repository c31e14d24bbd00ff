import datetime as dt

import pytest
from django.utils import timezone

from tests.factories import InstanceFactory, SeatReportFactory
from usage.selectors import customer_usage_overview, subscription_usage_series

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
    series = subscription_usage_series(subscription=subscription, days=5)
    assert series["billable"][-1] == row["billable_users"]
