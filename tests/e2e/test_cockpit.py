"""The seat utilization cockpit in headless Chromium: an account manager opens the cockpit on
their book, filters to the customers over their seats, exports the CSV (its rows are the rows
on the page, in order) and opens one customer, whose usage chart Chart.js draws. Screenshots
land in test-artifacts/screenshots/ for review."""

import csv
import datetime as dt
import io
import random
from pathlib import Path

import pytest
from django.utils import timezone

from licenses import services as license_services
from licenses.choices import LicenseKind
from licenses.signing import generate_private_key_pem
from provision import services
from provision.choices import Channel, Deployment, Plan
from provision.context import reset_context, set_context
from provision.models import Customer
from tests.browser import SCREENSHOT_DIR
from tests.e2e.seed import PASSWORD, seed_customer
from tests.factories import ContactFactory, CustomerFactory, InstanceFactory, NamespaceFactory
from usage.choices import SeatReportSource
from usage.models import SeatReport
from usage.services import subscription_usage_rollup

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def signing_key(settings, tmp_path):
    path = tmp_path / "license-key.pem"
    path.write_bytes(generate_private_key_pem())
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(path)
    return path


CHART_DRAWN = (
    "() => window.Chart && window.Chart.getChart(document.querySelector('canvas.cockpit-chart'))"
)


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)


def _log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def _usage(subscription, *, instance=None, namespace=None, start, end, days):
    """``days`` daily reports ending today, billable climbing from ``start`` to ``end`` with a
    weekend dip; the maximum is the running peak. Rolled up as Seat Link's task would."""
    rng = random.Random(subscription.pk)
    today = timezone.localdate()
    peak = 0
    reports = []
    for offset in range(days - 1, -1, -1):
        day = today - dt.timedelta(days=offset)
        trend = start + (end - start) * (days - 1 - offset) / max(days - 1, 1)
        billable = max(0, round(trend * (0.95 if day.weekday() >= 5 else 1) + rng.randint(-2, 2)))
        peak = max(peak, billable + rng.randint(0, 2))
        reports.append(
            SeatReport(
                subscription=subscription,
                instance=instance,
                namespace=namespace,
                report_date=day,
                billable_users=billable,
                max_historical_users=peak,
                source=SeatReportSource.SAAS if namespace else SeatReportSource.SEAT_LINK,
            )
        )
    SeatReport.objects.bulk_create(reports)
    subscription_usage_rollup(
        subscription_id=subscription.pk, dates=[r.report_date for r in reports]
    )
    return peak


def _seed_book(seeded):
    """Five more customers in the account manager's book: two over their seats, one under-used
    and renewing soon, one healthy whose seats run out this term, one whose instance is dark."""
    today = timezone.localdate()
    support, manager = seeded.support, seeded.manager

    def customer_with(name, **subscription):
        customer = CustomerFactory(name=name, account_owner=manager)
        values = {
            "customer": customer,
            "name": f"A-S{31_000_000 + Customer.objects.count():08d}",
            "plan": Plan.PREMIUM,
            "deployment": Deployment.SELF_MANAGED,
            "term_start": today - dt.timedelta(days=200),
            "term_end": today + dt.timedelta(days=165),
            "channel": Channel.SALES_ASSISTED,
            "reason": "Seeded order",
        } | subscription
        return customer, services.subscription_create(actor=support, **values)

    orion, orion_sub = customer_with("Orion Semiconductors", plan=Plan.ULTIMATE, seats=100)
    _usage(
        orion_sub,
        instance=InstanceFactory(customer=orion, subscription=orion_sub, hostname="orion.tld"),
        start=78, end=112, days=200,
    )  # fmt: skip

    pioneer, pioneer_sub = customer_with(
        "Pioneer Health", deployment=Deployment.GITLAB_COM, seats=40, channel=Channel.WEB_DIRECT
    )
    namespace = NamespaceFactory(
        full_path="pioneer-health", subscription=pioneer_sub, seats_in_use=51,
        max_seats_used=52, seats_owed=12, last_refreshed_at=timezone.now(),
    )  # fmt: skip
    _usage(pioneer_sub, namespace=namespace, start=36, end=51, days=120)

    quartz, quartz_sub = customer_with(
        "Quartz Retail Group",
        seats=200,
        term_start=today - dt.timedelta(days=320),
        term_end=today + dt.timedelta(days=45),
    )
    _usage(
        quartz_sub,
        instance=InstanceFactory(customer=quartz, subscription=quartz_sub),
        start=66, end=70, days=90,
    )  # fmt: skip

    redwood, redwood_sub = customer_with("Redwood Labs", seats=80)
    _usage(
        redwood_sub,
        instance=InstanceFactory(customer=redwood, subscription=redwood_sub),
        start=50, end=72, days=90,
    )  # fmt: skip

    summit, summit_sub = customer_with("Summit Bank plc", seats=150)
    ContactFactory(customer=summit, email="it@summit-bank.test")
    token = set_context(request_id="seed-e2e-cockpit", source="command")
    try:
        license_services.license_issue(
            actor=support, subscription=summit_sub, kind=LicenseKind.ONLINE_CLOUD,
            reason="Order closed",
        )  # fmt: skip
    finally:
        reset_context(token)
    dark = InstanceFactory(
        customer=summit, subscription=summit_sub, hostname="gitlab.summit-bank.test",
        last_sync_at=timezone.now() - dt.timedelta(days=5),
    )  # fmt: skip
    _usage(summit_sub, instance=dark, start=101, end=104, days=60)
    return {"orion": orion, "pioneer": pioneer, "redwood": redwood}


def _page_rows(page) -> list[tuple[int, str]]:
    rows = page.locator("#cockpit-table tbody tr")
    return [
        (
            int(rows.nth(i).get_attribute("data-customer")),
            rows.nth(i).locator("td.cockpit-customer a").inner_text().strip(),
        )
        for i in range(rows.count())
    ]


def test_account_manager_filters_exports_and_opens_a_customer(console_page, signing_key):
    page, problems = console_page
    seeded = seed_customer(extra_customers=9)
    book = _seed_book(seeded)
    _log_in(page, seeded.manager.username)

    page.get_by_role("link", name="Cockpit", exact=True).first.click()
    page.wait_for_url("**/cockpit/")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="Seat utilization cockpit").is_visible()
    assert page.locator("#cockpit-book").is_visible()
    everything = _page_rows(page)
    names = [name for _, name in everything]
    assert {"Orion Semiconductors", "Pioneer Health", "Redwood Labs", "Summit Bank plc"} <= set(
        names
    )
    assert all(
        seeded.manager == owner
        for owner in (Customer.objects.get(pk=pk).account_owner for pk, _ in everything)
    )
    assert page.locator(".cockpit-sparkline").count() >= 5
    assert page.locator('[data-flag="instance_dark"]').count() >= 1
    _shot(page, "50-cockpit-book")
    problems.assert_clean("cockpit, account manager's book")

    # Over-utilized: the risk filter applies on change (cockpit.js submits the form).
    page.locator("#id_risk").select_option("over_seats")
    page.wait_for_url("**/cockpit/?*risk=over_seats*")
    page.wait_for_load_state("networkidle")
    over = _page_rows(page)
    assert {"Orion Semiconductors", "Pioneer Health"} <= {name for _, name in over}
    assert "Redwood Labs" not in {name for _, name in over}
    flags = page.locator("#cockpit-table tbody tr")
    for i in range(flags.count()):
        assert flags.nth(i).locator('[data-flag="over_seats"]').count() == 1
    assert page.locator("#cockpit-book").is_visible()  # still the book
    # Largest utilization first.
    page.locator("#cockpit-table thead").get_by_role("link", name="Utilization").click()
    page.wait_for_url("**sort=-utilization*")
    page.wait_for_load_state("networkidle")
    over = _page_rows(page)
    _shot(page, "51-cockpit-over-seats")
    problems.assert_clean("cockpit, over seats")

    # The export carries the query string: the file's rows are the page's rows, in order.
    with page.expect_download() as download_info:
        page.locator("#cockpit-export").click()
    download = download_info.value
    assert download.suggested_filename.startswith("seat-cockpit-")
    lines = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    assert [(int(line["Customer ID"]), line["Customer"]) for line in lines] == over
    assert all("Over seats" in line["Risk flags"] for line in lines)
    orion_line = next(line for line in lines if line["Customer"] == "Orion Semiconductors")
    assert int(orion_line["Seats owed"]) > 0 and float(orion_line["Utilization %"]) > 100

    # One customer: the chart is drawn, with the forecast and the reconciliation preview.
    page.locator("#cockpit-table").get_by_role("link", name="Orion Semiconductors").click()
    page.wait_for_url(f"**/cockpit/customers/{book['orion'].pk}/*")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="Orion Semiconductors").is_visible()
    canvas = page.locator("canvas.cockpit-chart").first
    page.wait_for_function(CHART_DRAWN)
    datasets = page.evaluate(
        "() => window.Chart.getChart(document.querySelector('canvas.cockpit-chart'))"
        ".data.datasets.map(d => d.label)"
    )
    assert datasets[:3] == ["Billable users", "Max users", "Seats purchased (100)"]
    box = canvas.bounding_box()
    assert box["width"] > 400 and box["height"] > 200
    assert page.locator('[data-forecast="already_over"]').is_visible()
    assert page.locator("table.cockpit-quarters tbody tr").count() == 4
    assert page.locator('[data-figure="owed"]').inner_text().strip() == orion_line["Seats owed"]
    _shot(page, "52-cockpit-customer")
    problems.assert_clean("cockpit customer page")

    # Back to the filtered list, and a customer whose seats run out within the term.
    page.get_by_role("link", name="Seat utilization cockpit").click()
    page.wait_for_url("**/cockpit/?*risk=over_seats*")
    page.goto(f"/cockpit/customers/{book['redwood'].pk}/")
    page.wait_for_load_state("networkidle")
    page.wait_for_function(CHART_DRAWN)
    assert page.locator('[data-forecast="date"]').is_visible()
    _shot(page, "53-cockpit-forecast")
    problems.assert_clean("cockpit forecast")
