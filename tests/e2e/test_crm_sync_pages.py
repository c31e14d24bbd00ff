"""The CRM sync pages in headless Chromium: real syncs of a realistic customer base to the fake
Salesforce and Gainsight (over HTTP), then a support agent reads the customer's CRM cards,
pushes it now with a reason, follows the runs list to a run with a rejected row, sees the
banner after three failed Gainsight runs, and watches a running run's row refresh itself.
Full-page screenshots land in test-artifacts/screenshots/ for review."""

import pytest
from django.core.cache import cache
from django.utils import timezone

from crm_sync import services
from crm_sync.choices import CrmTarget, SyncRunKind, SyncRunStatus
from crm_sync.context_processors import FAILING_TARGETS_CACHE_KEY
from crm_sync.models import SyncRun
from provision import services as provision_services
from provision.models import AuditEvent, Customer
from tests.browser import SCREENSHOT_DIR
from tests.e2e.seed import PASSWORD, seed_customer
from tests.fakes.gainsight import FakeGainsight
from tests.fakes.salesforce import FakeSalesforce

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def crm_fakes(settings):
    """Both fake CRMs on random local ports, with the settings that point the clients at them."""
    with FakeSalesforce() as salesforce, FakeGainsight() as gainsight:
        for fake in (salesforce, gainsight):
            for name, value in fake.provision_settings().items():
                setattr(settings, name, value)
        yield salesforce, gainsight


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOT_DIR / f"{name}.png"), full_page=True)


def _log_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def test_crm_sync_pages_in_the_browser(console_page, crm_fakes):
    page, problems = console_page
    salesforce, gainsight = crm_fakes
    seeded = seed_customer(extra_customers=6)
    customer = seeded.customer
    # Salesforce refuses one of Northwind's subscription rows; everything else is accepted.
    salesforce.reject_rows(
        {seeded.saas.name: "FIELD_CUSTOM_VALIDATION_EXCEPTION"},
        message="Seats Purchased must be at least Billable Users on a GitLab.com subscription",
    )
    first = services.crm_sync_run(target=CrmTarget.SALESFORCE, kind=SyncRunKind.FULL)
    assert first.status == SyncRunStatus.PARTIAL and first.failed == 1
    assert services.crm_sync_run(target=CrmTarget.GAINSIGHT, kind=SyncRunKind.FULL).failed == 0
    services.crm_sync_run(target=CrmTarget.SALESFORCE, dry_run=True)
    _log_in(page, seeded.support.username)

    # The customer page: one card per CRM with what it last accepted and what it rejected.
    page.goto(customer.get_absolute_url())
    page.wait_for_load_state("networkidle")
    salesforce_card = page.locator("#crm-salesforce")
    assert salesforce_card.get_attribute("data-status") == "failed"
    assert salesforce_card.get_by_text("FIELD_CUSTOM_VALIDATION_EXCEPTION").first.is_visible()
    assert salesforce_card.locator('[data-field="subscription-rows"]').inner_text() == "1"
    assert page.locator("#crm-gainsight").get_attribute("data-status") == "synced"
    assert page.locator("#crm-gainsight").get_by_text(customer.billing_account_number).is_visible()
    page.locator("#crm-sync").scroll_into_view_if_needed()
    _shot(page, "40-crm-customer-cards")
    page.locator("#crm-sync").screenshot(path=str(SCREENSHOT_DIR / "40a-crm-customer-cards.png"))
    problems.assert_clean("customer page with CRM cards")

    # Push now without a reason: the form comes back with the error, nothing is recorded.
    page.locator("#crm-push-now").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=f"Push {customer.name} now").is_visible()
    assert page.locator("#id_reason.is-invalid").is_visible()
    assert not AuditEvent.objects.filter(action="crm_sync.customer_push_requested").exists()
    _shot(page, "41-crm-push-needs-a-reason")
    problems.assert_clean("push form with its error")

    # With a reason: back on the customer page with the message, both CRMs now pending.
    page.get_by_label("Reason").fill("SFDC shows last month's seat count after the true-up")
    page.get_by_label("Ticket link").fill("https://tickets.example.test/CRM/77")
    page.locator("#confirm-push").click()
    page.wait_for_url(f"**{customer.get_absolute_url()}#crm-sync")
    page.wait_for_load_state("networkidle")
    message = f"Queued a push of {customer.name} to Salesforce and Gainsight."
    assert page.get_by_text(message).is_visible()
    assert page.locator("#crm-salesforce").get_attribute("data-status") == "pending"
    assert page.locator("#crm-gainsight").get_attribute("data-status") == "pending"
    event = AuditEvent.objects.get(action="crm_sync.customer_push_requested")
    assert event.actor == seeded.support and event.ticket_url.endswith("/CRM/77")
    _shot(page, "42-crm-pushed")
    page.locator("#crm-sync").screenshot(path=str(SCREENSHOT_DIR / "42a-crm-pushed-cards.png"))
    problems.assert_clean("customer page after push")

    # The runs list from the navigation, then the partial run and its rejected row.
    page.get_by_role("link", name="CRM sync", exact=True).click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name="Sync runs").is_visible()
    assert page.locator("#run-table tbody tr").count() == 3
    assert page.locator("#run-table").get_by_text("dry run").is_visible()
    _shot(page, "43-crm-runs")
    problems.assert_clean("runs list")

    page.locator("#run-table").get_by_role("link", name=f"#{first.run_id}", exact=True).click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=f"Run #{first.run_id}").is_visible()
    row_errors = page.locator("#row-error-table tbody tr")
    assert row_errors.count() == 1
    assert row_errors.get_by_role("link", name=customer.name).is_visible()
    assert row_errors.get_by_text(seeded.saas.name).is_visible()
    _shot(page, "44-crm-run-detail")
    problems.assert_clean("run detail")
    page.locator("#back-to-target").click()
    page.wait_for_url("**/crm/runs/?target=salesforce")
    assert page.locator("#run-table tbody tr").count() == 2

    # Gainsight stops accepting the key: three failed runs raise the banner on every page.
    renamed = Customer.objects.exclude(pk=customer.pk).order_by("pk").first()
    provision_services.customer_update(
        actor=seeded.support,
        customer=renamed,
        data={"name": f"{renamed.name} (renamed)"},
        reason="Legal name changed",
    )
    gainsight.set_access_key("rotated-by-someone-else")
    for _ in range(3):
        run = services.crm_sync_run(target=CrmTarget.GAINSIGHT, kind=SyncRunKind.FULL)
        assert run.status == SyncRunStatus.FAILED
    last_failed = SyncRun.objects.filter(target=CrmTarget.GAINSIGHT).latest("created_at")
    cache.delete(FAILING_TARGETS_CACHE_KEY)  # what 30 s of waiting would do

    # A run in progress: its row shows progress and the table asks for itself every 5 s.
    running = SyncRun.objects.create(
        target=CrmTarget.SALESFORCE,
        kind=SyncRunKind.INCREMENTAL,
        trigger="schedule",
        status=SyncRunStatus.RUNNING,
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        considered=1250,
    )
    page.goto("/crm/runs/")
    page.wait_for_load_state("domcontentloaded")
    banner = page.locator("#crm-failing-gainsight")
    assert banner.get_by_text("Gainsight sync has failed 3 runs in a row").is_visible()
    assert banner.get_by_role("link", name=f"see run #{last_failed.pk}").is_visible()
    row = page.locator(f'#run-table tr[data-run="{running.pk}"]')
    assert row.get_by_text("1,250 considered", exact=True).is_visible()
    _shot(page, "45-crm-runs-banner-running")

    # The run finishes; the next poll swaps the table in place and stops polling.
    SyncRun.objects.filter(pk=running.pk).update(
        status=SyncRunStatus.SUCCEEDED, finished_at=timezone.now(), considered=1300, sent=12
    )
    page.wait_for_selector(
        f'#run-table tr[data-run="{running.pk}"][data-status="succeeded"]', timeout=12000
    )
    assert page.locator("#sync-runs").get_attribute("hx-trigger") is None
    problems.assert_clean("runs list with banner and polling")

    banner.get_by_role("link", name=f"see run #{last_failed.pk}").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#run-error").is_visible()
    _shot(page, "46-crm-failed-run")
    problems.assert_clean("failed run detail")
