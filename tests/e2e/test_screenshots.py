"""The console as a person sees it: log in through the real form in headless Chromium, open
the main pages of a realistic customer, check what is visible, and keep full-page screenshots
in test-artifacts/screenshots/ for review."""

import pytest

from tests.browser import SCREENSHOT_DIR
from tests.e2e.seed import PASSWORD, seed_customer

pytestmark = [
    pytest.mark.e2e,
    # The live server answers from another thread, so the seeded rows must really be committed.
    pytest.mark.django_db(transaction=True),
]


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)


def _log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def test_console_pages_render_with_data_and_without_errors(console_page):
    page, problems = console_page
    seeded = seed_customer()
    customer, subscription = seeded.customer, seeded.self_managed

    page.goto("/login/")
    page.wait_for_load_state("networkidle")
    _shot(page, "00-login")
    _log_in(page, seeded.support.username)

    # Home: live counts and the stuck order.
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="Good to see you, Sam").is_visible()
    assert page.locator('[data-stat="customers"]').inner_text().strip() == "15"
    assert page.locator('[data-stat="stuck"]').inner_text().strip() == "1"
    assert page.get_by_role("link", name="A-S00012346").is_visible()
    assert page.get_by_text("Sam Rivera").is_visible()
    _shot(page, "01-home")
    problems.assert_clean("home")

    # Customer list, then htmx search-as-you-type narrows it without a page load.
    page.get_by_role("link", name="Customers", exact=True).first.click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="Customers").is_visible()
    assert page.locator("#customer-table tbody tr").count() == 15
    _shot(page, "02-customer-list")
    page.locator("#customer-results").evaluate("element => { element.dataset.marker = 'kept'; }")
    page.get_by_placeholder("Name, billing account, SFDC id, e-mail, domain, subscription…").fill(
        "northwind"
    )
    page.wait_for_url("**/customers/?q=northwind*")
    page.wait_for_function(
        "() => document.querySelectorAll('#customer-table tbody tr').length === 1"
    )
    # Swapped inside the same element: htmx did it, not a full navigation.
    assert page.locator("#customer-results").get_attribute("data-marker") == "kept"
    assert page.locator("#customer-table").get_by_role("link", name=customer.name).is_visible()
    problems.assert_clean("customer list")

    # Customer page.
    page.locator("#customer-table").get_by_role("link", name=customer.name).click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=customer.name).is_visible()
    assert page.get_by_text("A00012345").first.is_visible()
    assert page.locator("#subscriptions").get_by_role("link", name="A-S00012345").is_visible()
    assert page.locator("#instances .console-stale").count() == 1
    assert page.locator("#notes").get_by_text("QBR on the 14th").is_visible()
    assert page.locator("#timeline").get_by_text("Customer bought 25 more seats").is_visible()
    assert page.get_by_role("link", name="Edit customer").is_visible()
    _shot(page, "03-customer")
    problems.assert_clean("customer page")

    # Subscription page with its chart drawn by Chart.js from the json_script data.
    page.locator("#subscriptions").get_by_role("link", name="A-S00012345").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="A-S00012345").is_visible()
    canvas = page.locator("canvas#usage-chart")
    assert canvas.count() == 1
    page.wait_for_function(
        "() => window.Chart && window.Chart.getChart(document.getElementById('usage-chart'))"
    )
    points = page.evaluate(
        "() => window.Chart.getChart(document.getElementById('usage-chart')).data.labels.length"
    )
    assert points == 120
    box = canvas.bounding_box()
    assert box["width"] > 400 and box["height"] > 200
    assert page.get_by_role("link", name="Change seats").is_visible()
    assert page.locator('[data-stat="seats"]').inner_text().strip() == str(subscription.seats)
    _shot(page, "04-subscription")
    problems.assert_clean("subscription page")
