"""The performance indicators (/indicators/): each rate against a week computed by hand, the
week boundaries, empty weeks, the time zone, bounded queries, the cache, and the page.

The hand-computed fixtures all use week 47 of 2026, Monday 16 to Sunday 22 November, seen from
Wednesday 25 November 2026 at noon UTC (week 48 is then the current, partial week).
"""

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import uuid

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from licenses.choices import ActivationCodeStatus, LicenseKind
from licenses.models import Activation, ActivationCode, License, SigningKey
from provision import indicators, services
from provision.choices import Deployment, LicensingMethod, Plan, SubscriptionStatus
from provision.indicators import Week, indicator_dashboard, indicator_weeks
from provision.models import Subscription
from tests.factories import (
    CustomerFactory,
    InstanceFactory,
    SeatReportFactory,
    subscription_factory,
)
from usage.choices import SeatReportSource, UsageFileImportStatus
from usage.models import UsageFileImport

pytestmark = pytest.mark.django_db

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # Wednesday of week 48
W46, W47, W48 = dt.date(2026, 11, 9), dt.date(2026, 11, 16), dt.date(2026, 11, 23)
ONLINE, OFFLINE, LEGACY = (
    LicensingMethod.ONLINE_CLOUD,
    LicensingMethod.OFFLINE_CLOUD,
    LicensingMethod.LEGACY,
)


@pytest.fixture(autouse=True)
def _no_cache(settings):
    """Figures are computed on every call unless a test turns the cache on."""
    settings.INDICATORS_CACHE_SECONDS = 0
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def at(day: int, hour=12, minute=0, second=0, month=11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def d(day: int, month=11) -> dt.date:
    return dt.date(2026, month, day)


JUNE_1 = dt.date(2026, 6, 1)


def sub(customer=None, *, method=ONLINE, start=JUNE_1, days=365, **overrides):
    return subscription_factory(
        customer,
        licensing_method=method,
        term_start=start,
        term_end=start + dt.timedelta(days=days),
        **overrides,
    )


def activate(subscription, when):
    """An instance redeemed one of the subscription's codes at ``when`` (plain rows: the
    activation protocol has its own tests; here only the time matters)."""
    signing_key = SigningKey.objects.first() or SigningKey.objects.create(
        fingerprint=uuid.uuid4().hex, public_key_pem="-", source="generated"
    )
    key = uuid.uuid4().hex
    license = License.objects.create(
        subscription=subscription,
        kind=LicenseKind.ONLINE_CLOUD,
        status="superseded",
        key=key,
        key_sha256=hashlib.sha256(key.encode()).hexdigest(),
        signing_key=signing_key,
        licensee_name="Buyer",
        licensee_email="buyer@customer.test",
        licensee_company=subscription.customer.name,
        starts_on=subscription.term_start,
        expires_on=subscription.term_end,
        plan=subscription.plan,
        user_count=subscription.seats,
        attributes={},
    )
    code = ActivationCode.objects.create(
        subscription=subscription,
        code_hash=uuid.uuid4().hex,
        code_hint="ABCD",
        status=ActivationCodeStatus.REPLACED,
    )
    return Activation.objects.create(
        activation_code=code,
        license=license,
        instance=InstanceFactory(customer=subscription.customer),
        activated_at=when,
        status="deactivated",
    )


def reports(subscription, instance, days, source=SeatReportSource.SEAT_LINK):
    for day in days:
        SeatReportFactory(
            subscription=subscription, instance=instance, report_date=day, source=source
        )


def usage_file(subscription, when, status=UsageFileImportStatus.IMPORTED):
    return UsageFileImport.objects.create(
        subscription=subscription,
        uploaded_at=when,
        file_name="license_usage.csv",
        file_sha256=uuid.uuid4().hex,
        content="",
        status=status,
        rejection_reason="" if status == UsageFileImportStatus.IMPORTED else "Bad file",
        finished_at=when,
    )


def figures(compute):
    weeks = indicator_weeks(today=NOW.date())
    return compute(weeks=weeks, now=NOW)


# --- Weeks ---------------------------------------------------------------------------------


def test_the_26_weeks_end_with_the_current_partial_one():
    weeks = indicator_weeks(today=d(25))

    assert len(weeks) == 26
    assert weeks[-1] == Week(start=W48, partial=True)
    assert weeks[-2] == Week(start=W47) and weeks[0].start == d(1, 6)
    assert [w.start.weekday() for w in weeks] == [0] * 26
    assert (weeks[-2].iso, weeks[-2].label, weeks[-2].span) == (
        "2026-W47",
        "16 Nov",
        "16–22 Nov 2026",
    )
    assert Week(start=d(30, 11)).span == "30 Nov – 6 Dec 2026"
    # On a Monday the week that just started is the partial one.
    assert indicator_weeks(today=W48)[-1].start == W48


# --- (a) Cloud Licensing adoption --------------------------------------------------------------


def test_cloud_adoption_in_a_hand_computed_week():
    """Week 47 (16–22 Nov), counted by hand:

    - A1 new online cloud, activated Mon 16 Nov 09:00 ............... online   (W47)
    - A2 new online cloud, first activated 13 Nov, again on 18 Nov ... online   (W46 only)
    - A3 offline cloud, term starts Wed 18 Nov ........................ offline  (W47)
    - A4 legacy, term starts Sun 22 Nov ............................... legacy   (W47)
    - A5 online cloud renewal of A0, term starts Fri 20 Nov, no new
      activation (Seat Link hands it over) ............................ online   (W47)
    - A6 legacy, term starts Mon 23 Nov ............................... legacy   (W48)
    - A7 new online cloud, activated Sun 22 Nov 23:59:59 .............. online   (W47)
    - A8 new online cloud, activated Mon 23 Nov 00:00:00 .............. online   (W48)
    - not counted: an online trial activated 17 Nov, a GitLab.com subscription starting
      17 Nov, a new online subscription starting 17 Nov never activated, a cancelled legacy
      one starting 19 Nov, and A0 (its term started a year ago).

    W47: online 3 (A1, A5, A7) + offline 1 (A3) = 4 cloud, out of 5 with A4 → 80.0 %.
    W48 (partial): A8 online, A6 legacy → 1 of 2 = 50.0 %. W46: A2 → 1 of 1 = 100 %.
    """
    customer = CustomerFactory()
    activate(sub(customer, start=d(10)), at(16, 9))  # A1
    a2 = sub(customer, start=d(9))
    activate(a2, at(13, 10))
    activate(a2, at(18, 10))
    sub(customer, method=OFFLINE, start=d(18))  # A3
    sub(customer, method=LEGACY, start=d(22))  # A4
    a0 = sub(customer, start=d(20, 11) - dt.timedelta(days=365), days=365)
    sub(customer, start=d(20), renews=a0)  # A5
    sub(customer, method=LEGACY, start=d(23))  # A6
    activate(sub(customer, start=d(2)), at(22, 23, 59, 59))  # A7
    activate(sub(customer, start=d(2)), at(23, 0, 0, 0))  # A8
    activate(sub(customer, start=d(17), plan=Plan.PREMIUM_TRIAL, days=30), at(17))
    sub(customer, start=d(17), deployment=Deployment.GITLAB_COM, method=None)
    sub(customer, start=d(17))
    cancelled = sub(customer, method=LEGACY, start=d(19))
    Subscription.objects.filter(pk=cancelled.pk).update(status=SubscriptionStatus.CANCELLED)

    result = figures(indicators.cloud_licensing_adoption)

    week47 = result[W47]
    assert (week47.numerator, week47.denominator) == (4, 5)
    assert week47.parts == {"online": 3, "offline": 1, "legacy": 1}
    assert week47.rate_text == "80.0%"
    assert (result[W48].numerator, result[W48].denominator) == (1, 2)
    assert (result[W46].numerator, result[W46].denominator, result[W46].rate) == (1, 1, 100.0)
    assert all(result[w].denominator == 0 for w in result if w < W46)


def test_an_empty_week_has_no_rate_not_zero():
    result = figures(indicators.cloud_licensing_adoption)

    assert result[W47].denominator == 0
    assert result[W47].rate is None
    assert result[W47].rate_text == "—"


def test_a_subscription_starting_later_this_week_is_not_counted_yet():
    sub(method=LEGACY, start=d(27))  # Friday of week 48, after NOW

    assert figures(indicators.cloud_licensing_adoption)[W48].denominator == 0


# --- (b) Seat-utilization sync rate ----------------------------------------------------------


def test_seat_sync_rate_in_a_hand_computed_week():
    """Week 47 (16–22 Nov), counted by hand, per customer:

    - C1 online; one instance reports 18–22 Nov (5 days, Sunday included) ...... synced
    - C2 online; two instances, 16+17 and 17+18+19 → 4 distinct days, and
      Mon 23 Nov (next week) ............................................... not synced
    - C3 online; reports 16–20 Nov but entered by hand (source manual) ........ not synced
    - C4 offline; usage file uploaded 24 Oct (within the 31 days to 22 Nov) ... synced
    - C5 offline; file uploaded 22 Oct (too early), a rejected one 20 Nov .... not synced
    - C9 online and offline subscriptions; a file on 20 Nov, no Seat Link:
      an online customer, and files do not count for those ................. not synced
    - not counted: C6 legacy only; C7 online but its term ended Mon 16 Nov
      (term_end = 16 Nov, last day 15 Nov), with reports 16–20 Nov; C8 an
      online trial reporting every day.

    W47: synced C1 + C4 = 2, out of online 4 (C1, C2, C3, C9) + offline 2 (C4, C5) → 33.3 %.
    W48 (partial, 3 days so far → 3 days needed): C1 reports 23–25 Nov (synced), C2 only
    23 Nov; C4's file is now older than 31 days → 1 of 6 = 16.7 %.
    """
    c1, c2, c3, c4, c5, c6, c7, c8, c9 = (CustomerFactory() for _ in range(9))
    s1 = sub(c1)
    i1 = InstanceFactory(customer=c1)
    reports(s1, i1, [d(18), d(19), d(20), d(21), d(22), d(23), d(24), d(25)])
    s2 = sub(c2)
    i2a, i2b = InstanceFactory(customer=c2), InstanceFactory(customer=c2)
    reports(s2, i2a, [d(16), d(17)])
    reports(s2, i2b, [d(17), d(18), d(19), d(23)])
    s3 = sub(c3)
    reports(
        s3, InstanceFactory(customer=c3), [d(n) for n in range(16, 21)], SeatReportSource.MANUAL
    )
    usage_file(sub(c4, method=OFFLINE), at(24, 10, month=10))
    s5 = sub(c5, method=OFFLINE)
    usage_file(s5, at(22, 10, month=10))
    usage_file(s5, at(20), status=UsageFileImportStatus.REJECTED)
    reports(sub(c6, method=LEGACY), InstanceFactory(customer=c6), [d(n) for n in range(16, 21)])
    s7 = sub(c7, start=d(16) - dt.timedelta(days=365), days=365)
    reports(s7, InstanceFactory(customer=c7), [d(n) for n in range(16, 21)])
    s8 = sub(c8, plan=Plan.ULTIMATE_TRIAL, start=d(1), days=60)
    reports(s8, InstanceFactory(customer=c8), [d(n) for n in range(16, 23)])
    sub(c9)
    usage_file(sub(c9, method=OFFLINE), at(20))

    result = figures(indicators.seat_sync_rate)

    week47 = result[W47]
    assert week47.parts == {
        "online": 4,
        "online_synced": 1,
        "offline": 2,
        "offline_synced": 1,
        "days_required": 5,
    }
    assert (week47.numerator, week47.denominator, week47.rate_text) == (2, 6, "33.3%")
    week48 = result[W48]
    assert week48.parts["days_required"] == 3
    assert (week48.numerator, week48.denominator, week48.rate_text) == (1, 6, "16.7%")


def test_four_days_are_not_enough_and_monday_starts_the_next_week():
    customer = CustomerFactory()
    subscription = sub(customer)
    instance = InstanceFactory(customer=customer)
    # Sunday 15 Nov belongs to week 46; Monday 23 Nov to week 48.
    reports(subscription, instance, [d(15), d(16), d(17), d(18), d(19), d(23)])

    result = figures(indicators.seat_sync_rate)

    assert (result[W47].numerator, result[W47].denominator) == (0, 1)
    reports(subscription, instance, [d(22)])
    assert figures(indicators.seat_sync_rate)[W47].numerator == 1


def test_only_reports_from_days_the_subscription_is_in_force_count():
    """A term starting Thursday 19 Nov: the customer is counted that week, but its reports of
    16–18 Nov (under no term) do not count, leaving 4 days (19–22)."""
    customer = CustomerFactory()
    subscription = sub(customer, start=d(19))
    reports(subscription, InstanceFactory(customer=customer), [d(n) for n in range(16, 23)])

    result = figures(indicators.seat_sync_rate)

    assert (result[W47].numerator, result[W47].denominator) == (0, 1)


def test_the_days_needed_in_the_current_week_grow_with_it():
    week = Week(start=W48, partial=True)
    assert [indicators.sync_days_required(week, W48 + dt.timedelta(days=n)) for n in range(7)] == [
        1,
        2,
        3,
        3,
        4,
        5,
        5,
    ]
    assert indicators.sync_days_required(Week(start=W47), W48) == 5


# --- (c) Provisioning tickets ------------------------------------------------------------------


def import_tickets(text: str):
    return services.support_tickets_import(
        actor=None, file_name="lnr.csv", content=text.encode(), reason="Test export"
    )


def test_provisioning_ticket_share_in_a_hand_computed_week():
    """Week 47 (16–22 Nov), by hand, under the default rule:

    - T1 Mon 16 Nov 00:00:00, tag lnr_sm_did_not_receive ........ provisioning (W47)
    - T2 Sun 22 Nov 23:59:59, category Billing & Payment ......... not         (W47)
    - T3 Wed 18 Nov, category Cloud licensing::Trueup ............ provisioning (W47)
    - T4 Sun 15 Nov 23:59:59, tag lnr_saas_link_sub .............. provisioning (W46)
    - T5 Mon 23 Nov 00:00:00, no tags, subject "Invoice copy" ..... not         (W48)

    W47: 2 of 3 = 66.7 %; W46: 1 of 1 = 100 %; W48: 0 of 1 = 0.0 % (a real zero).
    """
    import_tickets(
        "Ticket ID,Created at,Tags,L&R - Category,Subject\n"
        "1,2026-11-16 00:00:00,lnr_sm_did_not_receive,,\n"
        "2,2026-11-22 23:59:59,,Billing & Payment,\n"
        "3,2026-11-18 10:00:00,,Cloud licensing::Trueup,\n"
        "4,2026-11-15 23:59:59,lnr_saas_link_sub,,\n"
        "5,2026-11-23 00:00:00,,,Invoice copy\n"
    )

    result = figures(indicators.provisioning_ticket_share)

    assert (result[W47].numerator, result[W47].denominator, result[W47].rate_text) == (
        2,
        3,
        "66.7%",
    )
    assert (result[W46].numerator, result[W46].denominator) == (1, 1)
    assert (result[W48].rate_text, result[d(2, 11)].rate_text) == ("0.0%", "—")


def test_weeks_follow_the_projects_time_zone(settings):
    """22:00 on Sunday in New York is 03:00 on Monday in UTC: the ticket belongs to the week
    ending that Sunday when TIME_ZONE is America/New_York."""
    settings.TIME_ZONE = "America/New_York"
    import_tickets(
        "id,Created at,Tags\n"
        "1,2026-11-23T03:00:00Z,lnr_sm_did_not_receive\n"
        "2,2026-11-16T03:00:00Z,x\n"
    )

    result = figures(indicators.provisioning_ticket_share)

    assert (result[W47].numerator, result[W47].denominator) == (1, 1)
    assert (result[W46].numerator, result[W46].denominator) == (0, 1)
    assert result[W48].denominator == 0


# --- The dashboard: queries and cache ----------------------------------------------------------


def populate():
    customer = CustomerFactory()
    online = sub(customer, start=d(1, 7))
    activate(online, at(3, 9, month=7))
    instance = InstanceFactory(customer=customer)
    reports(online, instance, [d(1, 7) + dt.timedelta(days=n) for n in range(0, 140, 3)])
    usage_file(sub(customer, method=OFFLINE, start=d(1, 8)), at(5, month=9))
    sub(customer, method=LEGACY, start=d(14, 9))
    import_tickets(
        "id,Created at,Tags\n"
        + "".join(f"{n},2026-{6 + n % 5:02d}-{1 + n % 27:02d} 10:00,x\n" for n in range(60))
    )


def test_the_dashboard_takes_the_same_few_queries_whatever_the_data():
    with CaptureQueriesContext(connection) as empty:
        indicator_dashboard(now=NOW)
    populate()
    with CaptureQueriesContext(connection) as full:
        dashboard = indicator_dashboard(now=NOW)

    # Last import, stale tickets, adoption (2), sync (3), tickets (1).
    assert len(empty.captured_queries) == len(full.captured_queries) == 8
    assert [s.definition.key for s in dashboard.series] == [
        "cloud_adoption",
        "seat_sync",
        "provisioning_tickets",
    ]
    assert sum(r.figures.denominator for r in dashboard.series[2].rows) == 60


def test_cached_weeks_are_reused_and_a_new_import_recomputes_the_tickets(settings, monkeypatch):
    settings.INDICATORS_CACHE_SECONDS = 300
    monkeypatch.setattr(indicators, "CACHE_PREFIX", f"test-{uuid.uuid4().hex}")
    populate()
    first = indicator_dashboard(now=NOW)

    sub(method=LEGACY, start=d(17))  # a change the cached adoption figures do not see yet
    with CaptureQueriesContext(connection) as again:
        cached = indicator_dashboard(now=NOW)
    assert len(again.captured_queries) == 2  # the import status only
    assert cached.series[0].rows[-2].figures == first.series[0].rows[-2].figures

    import_tickets("id,Created at,Tags\n900,2026-11-17 10:00,lnr_saas_link_sub\n")
    with CaptureQueriesContext(connection) as after_import:
        fresh = indicator_dashboard(now=NOW)
    assert len(after_import.captured_queries) == 3  # status, then the ticket figures only
    assert fresh.series[2].rows[-2].figures.numerator == 1


def test_only_the_weeks_that_expired_from_the_cache_are_computed(settings, monkeypatch):
    settings.INDICATORS_CACHE_SECONDS = 300
    monkeypatch.setattr(indicators, "CACHE_PREFIX", f"test-{uuid.uuid4().hex}")
    calls = []
    original = indicators.DEFINITIONS[2].compute

    def spy(*, weeks, now):
        calls.append([w.start for w in weeks])
        return original(weeks=weeks, now=now)

    spied = dataclasses.replace(indicators.DEFINITIONS[2], compute=spy)
    monkeypatch.setattr(indicators, "DEFINITIONS", (*indicators.DEFINITIONS[:2], spied))
    indicator_dashboard(now=NOW)
    # The next day: the current week's key changes (its day), settled weeks stay cached.
    indicator_dashboard(now=NOW + dt.timedelta(days=1))
    # Two weeks apart fall out of the cache: each is computed alone, not the span between.
    june_8, week_40 = dt.date(2026, 6, 8), dt.date(2026, 9, 28)
    for monday in (june_8, week_40):
        cache.delete(indicators._cache_key(spied, spied_version(), Week(start=monday), W48))
    indicator_dashboard(now=NOW + dt.timedelta(days=1))

    assert len(calls[0]) == 26
    assert calls[1] == [W48]
    assert calls[2:] == [[june_8], [week_40]]


def spied_version():
    from provision.tickets import ticket_rule

    return indicators._version(
        indicators.DEFINITIONS[2], rule_version=ticket_rule().version, last_import_id=None
    )


def test_settled_weeks_expire_at_different_hours():
    weeks = indicator_weeks(today=NOW.date())[:24]
    timeouts = [indicators._settled_timeout(week, 300) for week in weeks]
    assert len(set(timeouts)) == 24
    assert min(timeouts) == 24 * 3600 and max(timeouts) == 47 * 3600


# --- The page ----------------------------------------------------------------------------------

URL = reverse("provision:indicators")


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_user_without_a_role_is_refused(client_for, outsider):
    assert client_for(outsider).get(URL).status_code == 403


@pytest.mark.parametrize(
    "persona", ["support_agent", "support_lead", "account_manager", "admin_user"]
)
def test_every_staff_role_sees_the_indicators(persona, request, client_for):
    response = client_for(request.getfixturevalue(persona)).get(URL)

    assert response.status_code == 200
    html = response.content.decode()
    for title in ("Cloud Licensing adoption rate", "Seat-utilization sync rate",
                  "Provisioning share of L&amp;R tickets"):  # fmt: skip
        assert title in html
    assert 'data-indicator-source="indicator-data-seat_sync"' in html
    assert 'id="indicator-data-cloud_adoption" type="application/json"' in html


def last_complete_week() -> Week:
    return indicator_weeks(today=timezone.localdate())[-2]


def test_the_page_shows_the_numbers_the_definitions_and_the_import(client_for, support_agent):
    week = last_complete_week()
    monday = week.start.isoformat()
    import_tickets(
        "Ticket ID,Created at,Tags\n"
        f"1,{monday} 09:00,lnr_sm_did_not_receive\n"
        f"2,{monday} 10:00,lnr_saas_link_sub\n"
        f"3,{monday} 11:00,billing\n"
    )

    response = client_for(support_agent).get(URL)

    html = response.content.decode()
    table = html.split('data-table="provisioning_tickets"')[1].split("</table>")[0]
    row = table.split(f'data-week="{week.iso}"')[1].split("</tr>")[0]
    assert '<td class="text-end" data-numerator>2</td>' in row
    assert '<td class="text-end" data-denominator>3</td>' in row
    assert '<td class="text-end fw-medium" data-rate>66.7%</td>' in row
    # A week with no tickets shows a dash, not 0 %.
    earlier = table.split(f'data-week="{indicator_weeks(today=timezone.localdate())[0].iso}"')[1]
    assert "data-rate>—</td>" in earlier.split("</tr>")[0]
    assert "Online customers with Seat Link usage on at least 5 of the 7 days" in html
    assert 'id="ticket-import-status"' in html and "lnr.csv" in html
    rule = response.context["rule"]
    assert rule.version in html and "lnr_sm_did_not_receive" in html
    assert 'id="tickets-stale"' not in html
    assert "Figures are computed on every request." in html  # the tests turn the cache off


def test_the_page_warns_when_tickets_were_classified_under_another_rule(
    client_for, account_manager, settings
):
    import_tickets("id,Created at,Tags\n1,2026-11-16,lnr_saas_link_sub\n")
    settings.PROVISIONING_TICKET_RULE = {"tags_any": ["something_else"]}

    html = client_for(account_manager).get(URL).content.decode()

    assert 'id="tickets-stale"' in html
    assert "1 of 1 stored tickets were classified under an older rule" in html


def test_the_page_takes_a_bounded_number_of_queries(client_for, support_lead):
    client = client_for(support_lead)
    client.get(URL)
    with CaptureQueriesContext(connection) as empty:
        assert client.get(URL).status_code == 200
    populate()
    with CaptureQueriesContext(connection) as full:
        assert client.get(URL).status_code == 200

    assert len(full.captured_queries) == len(empty.captured_queries) <= 12


def test_the_csv_download_has_the_numbers_behind_the_charts(client_for, account_manager):
    week = last_complete_week()
    import_tickets(
        "id,Created at,Tags\n"
        f"1,{week.start.isoformat()} 09:00,lnr_sm_did_not_receive\n"
        f"2,{week.end.isoformat()} 23:59:59,x\n"
    )

    response = client_for(account_manager).get(URL, {"format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="provision-indicators-')
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == [
        "indicator",
        "week",
        "week_start",
        "week_end",
        "partial",
        "numerator",
        "denominator",
        "rate_percent",
        "breakdown",
    ]
    assert len(rows) == 1 + 3 * 26
    ticket_row = next(r for r in rows if r[0] == "provisioning_tickets" and r[1] == week.iso)
    assert ticket_row[2:] == [
        week.start.isoformat(),
        week.end.isoformat(),
        "no",
        "1",
        "2",
        "50.0",
        "",
    ]
    empty = next(r for r in rows if r[0] == "cloud_adoption" and r[1] == week.iso)
    assert empty[6:] == ["0", "", "Online cloud=0; Offline cloud=0; Legacy=0"]
    assert rows[-1][4] == "yes"  # the current week is partial


def test_the_csv_download_is_refused_to_an_outsider(client_for, outsider):
    assert client_for(outsider).get(URL, {"format": "csv"}).status_code == 403
