"""Support fixes in headless Chromium, as support staff work them:

1. an agent pastes a license key from a ticket into the search box, lands on the customer,
   changes seats with a reason, reads the preview, confirms, and sees the fix on the timeline;
2. an agent asks for a risky seat increase (four-eyes) and a support lead approves it;
3. an account manager sees no fix buttons and a direct POST is refused.

Screenshots land in test-artifacts/screenshots/ for review.
"""

import re

import pytest

from licenses import services as license_services
from licenses.choices import LicenseKind
from licenses.signing import generate_private_key_pem
from provision.choices import FixRequestState
from provision.context import reset_context, set_context
from provision.models import AuditEvent, FixRequest, Subscription
from tests.browser import SCREENSHOT_DIR
from tests.e2e.seed import PASSWORD, seed_customer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def signing_key(settings, tmp_path):
    path = tmp_path / "license-key.pem"
    path.write_bytes(generate_private_key_pem())
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(path)
    return path


@pytest.fixture
def seeded(signing_key):
    seeded = seed_customer(extra_customers=3)
    token = set_context(request_id="seed-e2e-fixes", source="command")
    try:
        seeded.license = license_services.license_issue(
            actor=seeded.support,
            subscription=seeded.self_managed,
            kind=LicenseKind.OFFLINE_CLOUD,
            reason="Order ORD-2025-0815 closed",
        )
    finally:
        reset_context(token)
    return seeded


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)


def _log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def _open_fix(page, key: str, subscription: Subscription) -> None:
    """Click the fix's button on the customer page (opening its menu first if it is in one)."""
    href = f"/fixes/{key}/{subscription.pk}/"
    link = page.locator(f'a[href="{href}"]').first
    if not link.is_visible():
        page.locator(f'[data-fix-menu="{subscription.pk}"]').first.click()
    link.click()
    page.wait_for_url(f"**{href}")


def _change_seats(page, seats: int, reason: str) -> None:
    page.get_by_label("New seats").fill(str(seats))
    page.locator("#preview-fix").click()
    page.wait_for_selector("#preview")
    page.get_by_label("Reason code").select_option("order_correction")
    page.get_by_label("Reason", exact=True).fill(reason)
    page.get_by_label("Ticket link").fill("https://tickets.example.test/L-R/5150")


def test_pasted_key_to_seat_change_with_preview_and_timeline(console_page, seeded):
    page, problems = console_page
    _log_in(page, seeded.support.username)

    pasted = "\r\n".join(f"  {line}" for line in seeded.license.key.strip().split("\n"))
    box = page.get_by_role("searchbox", name="Search")
    box.click()
    page.keyboard.insert_text(pasted)
    box.press("Enter")
    page.wait_for_url(f"**{seeded.customer.get_absolute_url()}")
    page.wait_for_load_state("networkidle")

    seats = Subscription.objects.get(pk=seeded.self_managed.pk).seats
    _open_fix(page, "seats_change", seeded.self_managed)
    _change_seats(page, seats + 10, "Customer bought 10 more seats on the amendment")
    preview = page.locator("#preview")
    assert str(seats) in preview.inner_text() and str(seats + 10) in preview.inner_text()
    assert "becomes superseded" in preview.inner_text()
    assert page.locator("#fix-needs-approval").count() == 0  # +4% needs no second person
    _shot(page, "fix-seats-preview")
    problems.assert_clean("seat change preview")

    page.locator("#confirm-fix").click()
    page.wait_for_url(f"**{seeded.customer.get_absolute_url()}")
    page.wait_for_load_state("networkidle")
    assert page.get_by_text(f"changed from {seats} to {seats + 10}").first.is_visible()
    assert Subscription.objects.get(pk=seeded.self_managed.pk).seats == seats + 10
    event = AuditEvent.objects.get(
        action="provision.subscription_seats_changed", changes__seats=[seats, seats + 10]
    )
    assert event.reason_code == "order_correction"
    timeline = page.locator("#timeline")
    assert "Customer bought 10 more seats on the amendment" in timeline.inner_text()
    _shot(page, "fix-seats-timeline")
    problems.assert_clean("customer page after the fix")


def test_four_eyes_request_approved_by_a_lead(browser, live_server, console_page, seeded):
    page, problems = console_page
    seats = Subscription.objects.get(pk=seeded.self_managed.pk).seats
    _log_in(page, seeded.support.username)
    page.goto(seeded.customer.get_absolute_url())
    _open_fix(page, "seats_change", seeded.self_managed)
    _change_seats(page, 400, "Expansion deal signed; +125 seats")
    assert page.locator("#fix-needs-approval").is_visible()
    page.locator("#confirm-fix").click()
    page.wait_for_url(re.compile(r".*/approvals/\d+/$"))
    assert "waiting for a support lead" in page.locator("body").inner_text()
    assert Subscription.objects.get(pk=seeded.self_managed.pk).seats == seats
    _shot(page, "fix-four-eyes-requested")
    request_url = page.url

    # The lead, in their own browser session.
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_server.url)
    lead_page = context.new_page()
    try:
        _log_in(lead_page, seeded.lead.username)
        lead_page.goto("/approvals/?state=pending")
        lead_page.locator("[data-fix-request] a").first.click()
        lead_page.wait_for_url(request_url)
        lead_page.get_by_label("Note").first.fill("Checked the signed order form")
        _shot(lead_page, "fix-four-eyes-approve")
        lead_page.locator("#approve-request").click()
        lead_page.wait_for_url(request_url)
        assert "Approved and done" in lead_page.locator("#request-state").inner_text()
    finally:
        context.close()
    assert Subscription.objects.get(pk=seeded.self_managed.pk).seats == 400
    fix_request = FixRequest.objects.get()
    assert fix_request.state == FixRequestState.DONE
    event = AuditEvent.objects.get(
        action="provision.subscription_seats_changed", changes__seats=[seats, 400]
    )
    assert event.metadata["requested_by"] == seeded.support.username
    assert event.metadata["approved_by"] == seeded.lead.username
    problems.assert_clean("agent's pages")


def test_account_manager_sees_no_fix_buttons_and_is_refused(console_page, seeded):
    page, _problems = console_page
    seats = Subscription.objects.get(pk=seeded.self_managed.pk).seats
    _log_in(page, seeded.manager.username)
    page.goto(seeded.customer.get_absolute_url())
    page.wait_for_load_state("networkidle")
    assert page.locator("[data-fix]").count() == 0
    assert page.locator('a[href^="/fixes/"]').count() == 0
    _shot(page, "fix-account-manager-view")

    # A hand-made POST with the manager's own session and CSRF token is refused.
    csrf = page.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    response = page.request.post(
        f"/fixes/seats_change/{seeded.self_managed.pk}/",
        form={
            "seats": "999",
            "step": "confirm",
            "preview_digest": "0" * 64,
            "reason_code": "customer_request",
            "reason": "trying",
            "csrfmiddlewaretoken": csrf,
        },
        headers={"Referer": page.url},
    )
    assert response.status == 403
    assert Subscription.objects.get(pk=seeded.self_managed.pk).seats == seats
