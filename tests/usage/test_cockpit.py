"""The seat utilization cockpit: figures equal to the rollups and seat reports they come from
(hand-computed below), risk flags, filters and sort, the account manager's book, the CSV
export and ``/api/cockpit/`` returning the same rows as the page, the per-customer page's
forecast and quarterly reconciliation preview, and a bounded number of queries."""

import csv
import datetime as dt
import hashlib
import io
import itertools

import pytest
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from licenses.choices import LicenseKind, LicenseStatus, SigningKeySource
from licenses.models import License, SigningKey
from provision.choices import Deployment, Plan, Role
from tests.factories import (
    CustomerFactory,
    InstanceFactory,
    NamespaceFactory,
    SeatReportFactory,
    UserFactory,
    subscription_factory,
)
from usage import cockpit
from usage.models import SubscriptionUsageDaily
from usage.services import namespace_seats_update, subscription_usage_rollup

pytestmark = pytest.mark.django_db

TODAY = timezone.localdate()
_keys = itertools.count()


def days_ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


def report(subscription, instance, day, billable, peak):
    """A Seat Link report for ``day``, rolled up as the minute task would."""
    SeatReportFactory(
        subscription=subscription,
        instance=instance,
        report_date=day,
        billable_users=billable,
        max_historical_users=peak,
    )
    subscription_usage_rollup(subscription_id=subscription.pk, dates=[day])


def online_cloud_license(subscription):
    """A license row as issuing leaves it (tests/usage/test_health.py); the key is irrelevant."""
    signing_key = SigningKey.objects.first() or SigningKey.objects.create(
        fingerprint="f" * 64, public_key_pem="-", source=SigningKeySource.GENERATED
    )
    key = f"cockpit-key-{next(_keys)}"
    return License.objects.create(
        subscription=subscription,
        kind=LicenseKind.ONLINE_CLOUD,
        status=LicenseStatus.ACTIVE,
        key=key,
        key_sha256=hashlib.sha256(key.encode()).hexdigest(),
        signing_key=signing_key,
        licensee_name="Buyer",
        licensee_email="buyer@acme.test",
        licensee_company="Acme",
        starts_on=subscription.term_start,
        expires_on=subscription.term_end,
        plan=subscription.plan,
        user_count=subscription.seats,
    )


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def other_manager(db):
    return UserFactory(username="jo.am", first_name="Jo", last_name="Whitfield",
                       roles=[Role.ACCOUNT_MANAGER])  # fmt: skip


@pytest.fixture
def book(customer, subscription, account_manager, other_manager):
    """Four customers, figures worked out by hand:

    * Acme Robotics (alex.am): 50 seats, self-managed; production and staging instances.
      Two days ago 40 + 5 billable (max 48 + 6), yesterday 44 + 6 (max 52 + 6), today
      production alone 41 (max 52). Latest billable 41; max used = the highest daily max in
      the term = 58; owed max(0, 58 - 50) = 8; utilization 41 / 50 = 82 %. Over seats.
    * Blue Harbor (jo.am): 20 seats on GitLab.com ending in 60 days; its namespace reports 8
      in use, 9 max. Billable 8, max used 9 (the namespace's), owed 0; 8 / 20 = 40 %: under
      50 % used, and renewal within 90 days with low use.
    * Cobalt Health (alex.am): 100 seats, never reported; an instance on an online cloud
      license silent for four days: instance dark. No usage figures.
    * Delta Freight (alex.am): only an expired subscription: not in the cockpit.
    """
    production = InstanceFactory(
        customer=customer,
        subscription=subscription,
        last_sync_at=timezone.now() - dt.timedelta(hours=2),
    )
    staging = InstanceFactory(
        customer=customer,
        subscription=subscription,
        last_sync_at=timezone.now() - dt.timedelta(hours=30),
    )
    report(subscription, production, days_ago(2), 40, 48)
    report(subscription, staging, days_ago(2), 5, 6)
    report(subscription, production, days_ago(1), 44, 52)
    report(subscription, staging, days_ago(1), 6, 6)
    report(subscription, production, TODAY, 41, 52)

    harbor = CustomerFactory(name="Blue Harbor Logistics", account_owner=other_manager)
    saas = subscription_factory(
        harbor,
        deployment=Deployment.GITLAB_COM,
        plan=Plan.ULTIMATE,
        seats=20,
        term_start=days_ago(305),
        term_end=TODAY + dt.timedelta(days=60),
    )
    namespace = NamespaceFactory(subscription=saas, full_path="blue-harbor")
    namespace_seats_update(
        namespace=namespace, seats_in_use=8, max_seats_used=9, as_of=timezone.now()
    )

    cobalt = CustomerFactory(name="Cobalt Health Systems", account_owner=account_manager)
    cobalt_subscription = subscription_factory(cobalt, seats=100)
    online_cloud_license(cobalt_subscription)
    InstanceFactory(
        customer=cobalt,
        subscription=cobalt_subscription,
        last_sync_at=timezone.now() - dt.timedelta(days=4),
    )

    delta = CustomerFactory(name="Delta Freight AG", account_owner=account_manager)
    subscription_factory(delta, term_start=days_ago(400), term_end=days_ago(35))
    return {
        "acme": customer,
        "harbor": harbor,
        "cobalt": cobalt,
        "delta": delta,
        "namespace": namespace,
        "saas": saas,
        "production": production,
    }


def rows(actor, **filters):
    listing = cockpit.cockpit_list(actor=actor, filters=filters)
    assert listing.valid, listing.filterset.errors
    return cockpit.cockpit_rows_complete(listing.rows)


def by_name(actor, **filters):
    return {row.name: row for row in rows(actor, **filters)}


# --- Figures ------------------------------------------------------------------------------------


def test_the_row_equals_the_rollups_and_seat_reports_it_comes_from(book, support_lead):
    # The rollups themselves, as the hand computation says.
    assert list(
        SubscriptionUsageDaily.objects.filter(subscription__customer=book["acme"])
        .order_by("date")
        .values_list("billable_users", "max_users", "seats")
    ) == [(45, 54, 50), (50, 58, 50), (41, 52, 50)]

    acme = by_name(support_lead)["Acme Robotics"]
    assert (acme.seats, acme.billable_users, acme.max_used, acme.seats_owed) == (50, 41, 58, 8)
    assert acme.utilization_pct == pytest.approx(82.0)
    assert acme.renewal_date == TODAY + dt.timedelta(days=335)
    assert acme.plans == ["Premium"] and acme.deployments == ["Self-managed"]
    assert acme.flags == [cockpit.CockpitRisk.OVER_SEATS]
    # 30 days, today last: two days ago 45, yesterday 50, today 41; nothing before.
    assert acme.trend == [None] * 27 + [45, 50, 41]
    assert acme.trend_change == 41 - 45
    assert acme.last_sync_at == book["production"].last_sync_at


def test_gitlab_com_owed_is_the_namespace_s_and_follows_its_pushes(book, support_lead):
    harbor = by_name(support_lead)["Blue Harbor Logistics"]
    namespace = book["namespace"]
    namespace.refresh_from_db()
    assert (harbor.billable_users, harbor.max_used, harbor.seats_owed) == (8, 9, 0)
    assert harbor.max_used == namespace.max_seats_used
    assert harbor.seats_owed == namespace.seats_owed
    assert harbor.utilization_pct == pytest.approx(40.0)
    assert harbor.flags == [cockpit.CockpitRisk.UNDER_USED, cockpit.CockpitRisk.RENEWAL_LOW_USE]
    assert harbor.last_sync_at == namespace.last_refreshed_at

    # A new peak of 25 on GitLab.com: 5 over the 20 seats, as the namespace says.
    namespace_seats_update(
        namespace=namespace, seats_in_use=18, max_seats_used=25, as_of=timezone.now()
    )
    namespace.refresh_from_db()
    harbor = by_name(support_lead)["Blue Harbor Logistics"]
    assert (harbor.billable_users, harbor.max_used, harbor.seats_owed) == (18, 25, 5)
    assert harbor.seats_owed == namespace.seats_owed == 5
    assert harbor.flags == [cockpit.CockpitRisk.OVER_SEATS]


def test_a_silent_cloud_instance_flags_the_customer_dark_and_no_usage_is_no_data(
    book, support_lead
):
    cobalt = by_name(support_lead)["Cobalt Health Systems"]
    assert cobalt.seats == 100
    assert (cobalt.billable_users, cobalt.max_used, cobalt.utilization_pct) == (None, None, None)
    assert cobalt.seats_owed == 0
    assert cobalt.trend == [None] * cockpit.TREND_DAYS and cobalt.trend_change is None
    assert cobalt.flags == [cockpit.CockpitRisk.INSTANCE_DARK]


def test_customers_without_an_active_subscription_are_not_listed(book, support_lead):
    assert set(by_name(support_lead)) == {
        "Acme Robotics",
        "Blue Harbor Logistics",
        "Cobalt Health Systems",
    }


def test_one_subscription_s_spare_seats_never_cancel_another_s_overage(customer, support_lead):
    """Seats 30 used up to 33 (owes 3) and seats 40 used up to 20 (owes 0): owed 3, not 0."""
    over = subscription_factory(customer, seats=30)
    under = subscription_factory(customer, seats=40)
    report(over, InstanceFactory(customer=customer, subscription=over), TODAY, 31, 33)
    report(under, InstanceFactory(customer=customer, subscription=under), TODAY, 18, 20)
    row = by_name(support_lead)["Acme Robotics"]
    assert (row.seats, row.billable_users, row.max_used, row.seats_owed) == (70, 49, 53, 3)
    assert row.utilization_pct == pytest.approx(70.0)


def test_max_used_is_the_term_s_highest_day_not_the_latest(customer, subscription, support_lead):
    instance = InstanceFactory(customer=customer, subscription=subscription)
    report(subscription, instance, days_ago(20), 30, 61)
    report(subscription, instance, days_ago(1), 30, 40)
    # Before the term: not this term's usage.
    report(subscription, instance, subscription.term_start - dt.timedelta(days=1), 70, 70)
    row = by_name(support_lead)["Acme Robotics"]
    assert (row.billable_users, row.max_used, row.seats_owed) == (30, 61, 11)


def test_the_unfiltered_count_from_the_subscriptions_index_equals_the_rows(book, support_lead):
    everyone = cockpit.cockpit_list(actor=support_lead, filters={"sort": "-owed"})
    assert everyone.rows._count_every_active_customer
    assert everyone.rows.count() == len(list(everyone.rows)) == 3
    narrowed = cockpit.cockpit_list(actor=support_lead, filters={"utilization_min": "0"})
    assert not narrowed.rows._count_every_active_customer
    assert narrowed.rows.count() == 2  # Cobalt has no utilization
    # A further filter counts the ordinary way.
    assert everyone.rows.filter(name__startswith="A").count() == 1


def test_rows_filtered_on_a_figure_are_counted_in_the_page_query(
    account_manager, django_assert_num_queries
):
    _customers_with_usage(5, account_manager)  # all five over their seats
    listing = cockpit.cockpit_list(actor=account_manager, filters={"risk": "over_seats"})
    assert listing.rows._count_with_page  # one book, filtered on a figure
    everyone = {"risk": "over_seats", "account_owner_id": ""}
    assert not cockpit.cockpit_list(actor=account_manager, filters=everyone).rows._count_with_page
    paginator = cockpit.CockpitPaginator(listing.rows, 2)
    with django_assert_num_queries(1):
        page = paginator.get_page("2")
        assert (paginator.count, paginator.num_pages, len(page)) == (5, 3, 2)
    assert [c.name for c in page] == ["Book 02", "Book 03"]
    # Past the end: the last page; not a number: the first.
    assert [c.name for c in cockpit.CockpitPaginator(listing.rows, 2).get_page(9)] == ["Book 04"]
    assert len(cockpit.CockpitPaginator(listing.rows, 2).get_page("x")) == 2
    none = cockpit.cockpit_list(actor=account_manager, filters={"risk": "instance_dark"})
    empty = cockpit.CockpitPaginator(none.rows, 2).get_page(1)
    assert (empty.paginator.count, list(empty)) == (0, [])


# --- Filters and sort ---------------------------------------------------------------------------


def test_risk_and_range_filters(book, support_lead):
    def names(**filters):
        return [row.name for row in rows(support_lead, **filters)]

    assert names(risk="over_seats") == ["Acme Robotics"]
    assert names(risk="under_used") == ["Blue Harbor Logistics"]
    assert names(risk="instance_dark") == ["Cobalt Health Systems"]
    assert names(risk="renewal_low_use") == ["Blue Harbor Logistics"]
    assert names(risk="any") == ["Acme Robotics", "Blue Harbor Logistics", "Cobalt Health Systems"]
    assert names(utilization_min="50") == ["Acme Robotics"]
    assert names(utilization_max="82") == ["Acme Robotics", "Blue Harbor Logistics"]
    assert names(utilization_max="81.9") == ["Blue Harbor Logistics"]
    assert names(renewal_within="90") == ["Blue Harbor Logistics"]
    assert names(deployment=Deployment.GITLAB_COM) == ["Blue Harbor Logistics"]
    assert names(plan=Plan.PREMIUM) == ["Acme Robotics", "Cobalt Health Systems"]
    assert names(q="harbor") == ["Blue Harbor Logistics"]
    assert names(q=book["acme"].billing_account_number.lower()) == ["Acme Robotics"]


def test_sorting_by_a_figure_puts_customers_without_one_last_both_ways(book, support_lead):
    def names(sort):
        return [row.name for row in rows(support_lead, sort=sort)]

    acme, harbor, cobalt = "Acme Robotics", "Blue Harbor Logistics", "Cobalt Health Systems"
    assert names("utilization") == [harbor, acme, cobalt]
    assert names("-utilization") == [acme, harbor, cobalt]
    assert names("-owed") == [acme, harbor, cobalt]
    assert names("renewal") == [harbor, acme, cobalt]
    assert names("-risk") == [harbor, acme, cobalt]
    assert names("-seats") == ["Cobalt Health Systems", "Acme Robotics", "Blue Harbor Logistics"]
    shown = {row.name: (row.account_owner.get_full_name(), row.pk) for row in rows(support_lead)}
    assert names("owner") == sorted(shown, key=shown.get)
    assert (
        names("-owner") == sorted(shown, key=lambda name: (shown[name][0], -shown[name][1]))[::-1]
    )


@pytest.mark.parametrize(
    "params",
    [
        {"utilization_min": "abc"},
        {"utilization_max": "-5"},
        {"renewal_within": "1.5"},
        {"risk": "on_fire"},
        {"sort": "password"},
        {"account_owner_id": "999999"},
        {"plan": "platinum"},
    ],
)
def test_bad_filter_input_is_a_form_error_never_a_500(book, client_for, support_lead, params):
    client = client_for(support_lead)
    page = client.get(reverse("cockpit:cockpit"), params)
    assert page.status_code == 200
    assert not page.context["filter_valid"] and not page.context["rows"]
    assert "These filters cannot be applied" in page.content.decode()
    export = client.get(reverse("cockpit:export"), params)
    assert export.status_code == 400
    assert "not valid" in export.content.decode()
    api = client.get("/api/cockpit/", params)
    assert api.status_code == 400


# --- Who sees what ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cockpit:cockpit", "cockpit:export", "cockpit:customer"])
def test_anonymous_is_sent_to_login_and_an_outsider_gets_403(
    client, client_for, outsider, customer, name
):
    url = reverse(name, args=[customer.pk] if name == "cockpit:customer" else [])
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")
    assert client_for(outsider).get(url).status_code == 403
    assert client_for(outsider).get("/api/cockpit/").status_code == 403


def test_an_account_manager_starts_on_their_book_and_may_widen_it(
    book, client_for, account_manager
):
    client = client_for(account_manager)
    response = client.get(reverse("cockpit:cockpit"))
    names = [row.name for row in response.context["rows"]]
    assert names == ["Acme Robotics", "Cobalt Health Systems"]
    assert response.context["book_default"]
    assert "Showing your book" in response.content.decode()
    # Sorting and filtering keep the book.
    sorted_rows = client.get(reverse("cockpit:cockpit"), {"sort": "-utilization"})
    assert [r.name for r in sorted_rows.context["rows"]] == names
    assert [r.name for r in client.get(reverse("cockpit:cockpit"), {"risk": "any"}).context[
        "rows"
    ]] == names  # fmt: skip
    # Every owner: an empty owner, or all=true.
    for params in ({"account_owner_id": ""}, {"all": "true"}):
        widened = client.get(reverse("cockpit:cockpit"), params)
        assert len(widened.context["rows"]) == 3 and not widened.context["book_default"]
    other = book["harbor"].account_owner
    assert [
        r.name
        for r in client.get(reverse("cockpit:cockpit"), {"account_owner_id": other.pk}).context[
            "rows"
        ]
    ] == ["Blue Harbor Logistics"]


@pytest.mark.parametrize("persona", ["support_agent", "support_lead", "admin_user"])
def test_support_and_admins_see_every_customer(book, client_for, request, persona):
    response = client_for(request.getfixturevalue(persona)).get(reverse("cockpit:cockpit"))
    assert response.status_code == 200
    assert len(response.context["rows"]) == 3 and not response.context["book_default"]


# --- Page, CSV and API agree --------------------------------------------------------------------


def _csv(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


@pytest.mark.parametrize(
    "query",
    [
        "",
        "sort=-utilization",
        "sort=utilization&all=true",
        "risk=any&sort=-owed",
        "account_owner_id=&sort=renewal",
        "utilization_min=30&sort=-billable",
    ],
)
def test_the_same_query_string_gives_the_same_rows_on_page_csv_and_api(
    book, client_for, account_manager, query
):
    client = client_for(account_manager)
    page = client.get(f"{reverse('cockpit:cockpit')}?{query}")
    page_ids = [row.pk for row in page.context["rows"]]
    assert page_ids
    assert page.context["export_url"] == f"{reverse('cockpit:export')}?{query}"
    export = client.get(page.context["export_url"])
    assert export.status_code == 200
    csv_ids = [int(line["Customer ID"]) for line in _csv(export)]
    api_ids = [row["id"] for row in client.get(f"/api/cockpit/?{query}").json()["results"]]
    assert page_ids == csv_ids == api_ids


def test_csv_rows_equal_the_filtered_rows(book, client_for, support_lead):
    client = client_for(support_lead)
    response = client.get(reverse("cockpit:export"), {"sort": "-utilization"})
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    lines = _csv(response)
    assert list(lines[0]) == cockpit.CSV_HEADERS
    acme, harbor, cobalt = lines
    assert acme == {
        "Customer ID": str(book["acme"].pk),
        "Customer": "Acme Robotics",
        "Billing account": book["acme"].billing_account_number,
        "Account owner": book["acme"].account_owner.get_full_name(),
        "Plans": "Premium",
        "Seats": "50",
        "Billable users": "41",
        "Max used": "58",
        "Utilization %": "82.0",
        "Seats owed": "8",
        "Billable change over 30 days": "-4",
        "Last sync (UTC)": book["production"]
        .last_sync_at.astimezone(dt.UTC)
        .strftime("%Y-%m-%d %H:%M"),
        "Renewal date": (TODAY + dt.timedelta(days=335)).isoformat(),
        "Risk flags": "Over seats",
    }
    assert (harbor["Utilization %"], harbor["Risk flags"]) == (
        "40.0",
        "Under 50% used; Renewal ≤ 90 days, low use",
    )
    assert (cobalt["Billable users"], cobalt["Utilization %"], cobalt["Risk flags"]) == (
        "",
        "",
        "Instance dark",
    )


def test_csv_streams_every_row_in_chunks(client_for, support_lead, monkeypatch):
    """More rows than a chunk: every row once, in order, two queries per chunk."""
    monkeypatch.setattr(cockpit, "CSV_CHUNK", 4)
    customers = [CustomerFactory(name=f"Customer {i:02d}") for i in range(10)]
    for customer in customers:
        subscription_factory(customer)
    response = client_for(support_lead).get(reverse("cockpit:export"))
    assert [line["Customer"] for line in _csv(response)] == [c.name for c in customers]


def test_api_row_fields(book, client_for, support_lead):
    results = client_for(support_lead).get("/api/cockpit/", {"risk": "over_seats"}).json()
    assert results["count"] == 1
    (row,) = results["results"]
    assert row["id"] == book["acme"].pk
    assert (row["seats"], row["billable_users"], row["max_used"], row["seats_owed"]) == (
        50,
        41,
        58,
        8,
    )
    assert row["utilization_percent"] == 82.0
    assert row["risk_flags"] == ["over_seats"]
    assert row["trend"][-3:] == [45, 50, 41] and row["trend_change"] == -4
    assert row["plans"] == ["Premium"]
    assert row["cockpit_url"] == reverse("cockpit:customer", args=[book["acme"].pk])
    assert (
        "/api/cockpit/"
        in client_for(support_lead).get("/api/schema/", {"format": "json"}).json()["paths"]
    )


# --- Query counts -------------------------------------------------------------------------------


def _customers_with_usage(count, owner):
    for index in range(count):
        customer = CustomerFactory(name=f"Book {index:02d}", account_owner=owner)
        subscription = subscription_factory(customer, seats=40)
        instance = InstanceFactory(customer=customer, subscription=subscription)
        # Every one over its 40 seats, so the risk filter keeps them all.
        report(subscription, instance, days_ago(1), 30 + index, 41 + index)


def _queries(client, url) -> int:
    from django.db import connection

    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
        if hasattr(response, "streaming_content"):
            b"".join(response.streaming_content)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    "url",
    [
        reverse("cockpit:cockpit"),
        reverse("cockpit:cockpit") + "?sort=-utilization&risk=any",
        reverse("cockpit:export"),
        "/api/cockpit/",
    ],
)
def test_queries_do_not_grow_with_the_rows(client_for, account_manager, url):
    client = client_for(account_manager)
    _customers_with_usage(1, account_manager)
    one = _queries(client, url)
    _customers_with_usage(29, account_manager)
    thirty = _queries(client, url)
    assert one == thirty <= 15


def test_the_customer_page_reads_a_bounded_number_of_queries(
    book, client_for, support_lead, customer
):
    client = client_for(support_lead)
    url = reverse("cockpit:customer", args=[customer.pk])
    before = _queries(client, url)
    for _ in range(3):
        extra = subscription_factory(customer)
        report(extra, InstanceFactory(customer=customer, subscription=extra), TODAY, 5, 5)
    assert _queries(client, url) == before <= 15


# --- Forecast -----------------------------------------------------------------------------------


def test_least_squares_by_hand():
    # x̄ = 1.5, ȳ = 3; Σ(x−x̄)(y−ȳ) = 3 + 0 − 0.5 + 4.5 = 7; Σ(x−x̄)² = 5: slope 1.4, 3 − 2.1.
    intercept, slope = cockpit.least_squares([(0, 1), (1, 3), (2, 2), (3, 6)])
    assert (round(intercept, 6), round(slope, 6)) == (0.9, 1.4)


def _linear(days: int, start: int, step: float) -> dict:
    """``days`` daily values ending today: start, start + step, …"""
    first = TODAY - dt.timedelta(days=days - 1)
    return {first + dt.timedelta(days=i): round(start + step * i) for i in range(days)}


def test_forecast_date_where_the_line_reaches_the_seats():
    # 20, 21, … 49 over the last 30 days: the line is 20 + x, it reaches 60 at x = 40, which
    # is 40 days after the first day (29 days ago): in 11 days.
    forecast = cockpit.seat_forecast(
        daily=_linear(30, 20, 1), seats=60, term_end=TODAY + dt.timedelta(days=200), today=TODAY
    )
    assert forecast.status == "date"
    assert forecast.run_out_on == TODAY + dt.timedelta(days=11)
    assert (round(forecast.intercept, 6), round(forecast.slope, 6)) == (20, 1)
    assert forecast.points == 30 and "Least-squares" in forecast.method


def test_forecast_uses_only_the_last_60_days():
    daily = _linear(90, 0, 1)  # 0 … 89; the window keeps 30 … 89
    forecast = cockpit.seat_forecast(
        daily=daily, seats=100, term_end=TODAY + dt.timedelta(days=200), today=TODAY
    )
    assert forecast.points == 60 and forecast.window_start == TODAY - dt.timedelta(days=59)
    assert forecast.run_out_on == TODAY + dt.timedelta(days=11)  # 89 + 11 = 100


@pytest.mark.parametrize(
    "daily, seats, term_days, status, words",
    [
        (_linear(30, 20, 1), 49, 200, "already_over", "Already out of seats: 49"),
        (_linear(30, 40, -0.5), 60, 200, "not_within_term", "flat or falling"),
        (_linear(30, 20, 1), 60, 10, "not_within_term", "at the term end"),
        (_linear(13, 20, 1), 60, 200, "not_enough_data", "13 day(s)"),
    ],
)
def test_forecast_says_when_there_is_no_date(daily, seats, term_days, status, words):
    forecast = cockpit.seat_forecast(
        daily=daily, seats=seats, term_end=TODAY + dt.timedelta(days=term_days), today=TODAY
    )
    assert forecast.status == status and forecast.run_out_on is None
    assert words in forecast.summary


def test_the_customer_page_shows_the_forecast_and_the_chart_data(
    client_for, account_manager, customer
):
    subscription = subscription_factory(customer, seats=60, term_start=days_ago(100))
    instance = InstanceFactory(customer=customer, subscription=subscription)
    for day, billable in _linear(30, 20, 1).items():
        report(subscription, instance, day, billable, billable)
    response = client_for(account_manager).get(reverse("cockpit:customer", args=[customer.pk]))
    assert response.status_code == 200
    (section,) = response.context["sections"]
    assert section.forecast.run_out_on == TODAY + dt.timedelta(days=11)
    chart = section.chart
    assert chart["labels"][0] == subscription.term_start.isoformat()
    assert chart["labels"][-1] == subscription.term_end.isoformat()
    today_index = chart["labels"].index(TODAY.isoformat())
    assert chart["billable"][today_index - 29 : today_index + 1] == list(range(20, 50))
    assert chart["billable"][today_index + 1] is None
    assert set(chart["seats"]) == {60}
    assert (
        chart["forecast"][today_index] == 49.0
        and chart["run_out_on"] == (TODAY + dt.timedelta(days=11)).isoformat()
    )
    body = response.content.decode()
    assert f'id="{section.data_id}"' in body and "data-cockpit-chart" in body
    assert (TODAY + dt.timedelta(days=11)).isoformat() in body
    assert "<script>" not in body  # CSP: data only, in json_script elements


# --- Quarterly reconciliation -------------------------------------------------------------------


def _months_later(day: dt.date, months: int) -> dt.date:
    index = day.month - 1 + months
    return dt.date(day.year + index // 12, index % 12 + 1, day.day)


def test_quarterly_reconciliation_preview_by_hand(client_for, support_lead, customer):
    """A 12-month term that started on the 1st seven months ago (today is in Q3), 50 seats.

    Q1: highest daily max 55 over 50 paid → owes 5 × 3 quarters left = 15 seat-quarters;
        55 becomes the paid count.
    Q2: highest 61 over 55 → owes 6 × 2 = 12; 61 is paid from now on.
    Q3 (to date): highest 62 over 61 → owes 1 × 1 = 1.
    Q4: upcoming. Total 28 seat-quarters = 7 seat-years.
    """
    start = _months_later(TODAY.replace(day=1), -7)
    q2, q3, q4 = (_months_later(start, m) for m in (3, 6, 9))
    subscription = subscription_factory(
        customer, seats=50, term_start=start, term_end=_months_later(start, 12)
    )
    instance = InstanceFactory(customer=customer, subscription=subscription)
    for day, billable, peak in [
        (start + dt.timedelta(days=10), 45, 48),
        (start + dt.timedelta(days=40), 52, 55),
        (q2 + dt.timedelta(days=5), 58, 61),
        (q3 + dt.timedelta(days=3), 60, 62),
    ]:
        report(subscription, instance, day, billable, peak)

    response = client_for(support_lead).get(reverse("cockpit:customer", args=[customer.pk]))
    (section,) = response.context["sections"]
    preview = section.reconciliation
    assert preview.qsr
    quarters = [
        (q.number, q.start, q.status, q.max_used, q.paid, q.owed, q.quarters_left, q.seat_quarters)
        for q in preview.quarters
    ]
    assert quarters == [
        (1, start, "reconciled", 55, 50, 5, 3, 15),
        (2, q2, "reconciled", 61, 55, 6, 2, 12),
        (3, q3, "in_progress", 62, 61, 1, 1, 1),
        (4, q4, "upcoming", None, 62, 0, 0, 0),
    ]
    assert preview.seat_years == 7.0
    assert preview.quarters[0].arithmetic == (
        "max(0, 55 − 50) = 5 seats × 3 quarters left = 15 seat-quarters"
    )
    assert preview.quarters[2].end == q4
    body = response.content.decode()
    assert "max(0, 61 − 55) = 6 seats × 2 quarters left = 12 seat-quarters" in body
    assert "7.00 seat-years" in body
    # The same customer's row: latest billable 60 for 50 seats, the term's max 62: owes 12.
    row = response.context["customer"]
    assert (row.billable_users, row.max_used, row.seats_owed) == (60, 62, 12)


def test_a_subscription_outside_qsr_gets_the_annual_true_up(client_for, support_lead, customer):
    subscription = subscription_factory(customer, seats=50, quarterly_reconciliation=False)
    report(subscription, InstanceFactory(customer=customer, subscription=subscription),
           TODAY, 50, 57)  # fmt: skip
    response = client_for(support_lead).get(reverse("cockpit:customer", args=[customer.pk]))
    (section,) = response.context["sections"]
    preview = section.reconciliation
    assert not preview.qsr and preview.true_up == 7
    assert preview.not_in_qsr_reason == "quarterly reconciliation is switched off"
    assert preview.true_up_arithmetic == "max(0, 57 max used − 50 seats) = 7"
    assert "Not in quarterly reconciliation" in response.content.decode()


def test_the_customer_page_of_a_customer_without_active_subscriptions(
    client_for, support_lead, customer
):
    response = client_for(support_lead).get(reverse("cockpit:customer", args=[customer.pk]))
    assert response.status_code == 200
    assert response.context["sections"] == []
    assert "No active subscription" in response.content.decode()
    assert client_for(support_lead).get(reverse("cockpit:customer", args=[987654])).status_code == (
        404
    )


def test_the_list_page_renders_rows_sort_links_and_export(book, client_for, support_lead):
    response = client_for(support_lead).get(reverse("cockpit:cockpit"), {"sort": "-owed"})
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="cockpit-export"' in body and "export.csv?sort=-owed" in body
    assert 'aria-sort="descending"' in body and "sort=owed" in body  # clicking again flips it
    assert body.count('class="cockpit-sparkline"') == 2  # Cobalt has no data to draw
    assert 'data-flag="over_seats"' in body and 'data-flag="instance_dark"' in body
    assert "How the numbers are computed" in body
