"""Universal search in headless Chromium: a support lead pastes a multi-line license key from a
ticket into the navigation search box and lands on the customer, then searches a name and
reads the grouped results. Screenshots land in test-artifacts/screenshots/ for review."""

import pytest

from licenses import services as license_services
from licenses.choices import LicenseKind
from licenses.signing import generate_private_key_pem
from provision.context import reset_context, set_context
from tests.browser import SCREENSHOT_DIR
from tests.e2e.seed import PASSWORD, seed_customer
from tests.factories import CustomerFactory, InstanceFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def signing_key(settings, tmp_path):
    path = tmp_path / "license-key.pem"
    path.write_bytes(generate_private_key_pem())
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(path)
    return path


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)


def _log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def test_pasted_license_key_and_name_search_in_the_browser(console_page, signing_key):
    page, problems = console_page
    seeded = seed_customer(extra_customers=6)
    token = set_context(request_id="seed-e2e-search", source="command")
    try:
        license = license_services.license_issue(
            actor=seeded.support,
            subscription=seeded.self_managed,
            kind=LicenseKind.ONLINE_CLOUD,
            reason="Order ORD-2025-0815 closed",
        )
    finally:
        reset_context(token)
    traders = CustomerFactory(name="Northwind Traders Ltd", email_domains=["nwtraders.test"])
    InstanceFactory(customer=traders, hostname="gitlab.northwind-traders.test")
    _log_in(page, seeded.lead.username)

    # The key as a ticket shows it: 60-column lines, indented, CRLF line ends.
    pasted = "\r\n".join(f"    {line}" for line in license.key.strip().split("\n")) + "\r\n"
    assert "\n" in pasted and len(pasted) > 500
    box = page.get_by_role("searchbox", name="Search")
    box.click()
    page.keyboard.insert_text(pasted)  # what a paste does
    box.press("Enter")
    page.wait_for_url(f"**{seeded.customer.get_absolute_url()}")
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=seeded.customer.name).first.is_visible()
    assert page.get_by_text("found by license key").is_visible()
    problems.assert_clean("customer page after pasting a key")

    # A name: grouped, explained, not opened.
    box = page.get_by_role("searchbox", name="Search").first
    box.fill("northwind")
    box.press("Enter")
    page.wait_for_url("**/search/?q=northwind")
    page.wait_for_load_state("networkidle")
    groups = page.locator("[data-group]")
    assert [groups.nth(i).get_attribute("data-group") for i in range(groups.count())] == [
        "customer",
        "instance",
        "namespace",
    ]
    customers = page.locator("#group-customer")
    assert customers.get_by_role("link", name="Northwind Robotics GmbH").is_visible()
    assert customers.get_by_role("link", name="Northwind Traders Ltd").is_visible()
    assert customers.get_by_text("name starts with it").first.is_visible()
    assert page.locator("#group-instance").get_by_text("hostname contains it").first.is_visible()
    assert page.locator("#search-tips").is_visible()
    _shot(page, "40-search-results")
    problems.assert_clean("search results")

    page.locator("#group-instance").get_by_role("link", name="Northwind Traders Ltd").click()
    page.wait_for_url(f"**{traders.get_absolute_url()}")

    # Nothing found: the empty state with what can be searched.
    page.goto("/search/?q=no-such-thing-anywhere")
    assert page.locator("#search-empty").is_visible()
    _shot(page, "41-search-empty")
    problems.assert_clean("empty search")
