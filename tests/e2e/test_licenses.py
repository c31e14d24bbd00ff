"""The license pages in headless Chromium: a support lead follows a customer's license from the
subscription page to its detail, troubleshoots a superseded key and a bound activation code,
resends the code, downloads an offline license, and opens the signing key page. Full-page
screenshots land in test-artifacts/screenshots/ for review."""

import datetime as dt
import re
from pathlib import Path

import pytest
from django.core import mail
from django.utils import timezone

from licenses import services as license_services
from licenses.choices import LicenseKind
from licenses.models import Activation, License
from licenses.signing import generate_private_key_pem
from provision import services
from provision.choices import Channel, Deployment, LicensingMethod, Plan
from provision.context import reset_context, set_context
from tests.browser import SCREENSHOT_DIR
from tests.e2e.seed import PASSWORD, seed_customer
from usage.models import Instance

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


def _seed_licenses(seeded):
    """The history a real order leaves: a cloud license, a seat change that re-issued it, an
    activation code redeemed by the customer's instance, and an offline site."""
    token = set_context(request_id="seed-e2e-lic", source="command")
    try:
        subscription = seeded.self_managed
        first = license_services.license_issue(
            actor=seeded.support, subscription=subscription, reason="Order ORD-2025-0815 closed"
        )
        services.subscription_seats_change(
            actor=seeded.support,
            subscription=subscription,
            seats=300,
            reason="Munich plant rollout: 25 more seats",
            ticket_url="https://tickets.example.test/L-R/4201",
        )
        current = License.objects.get(supersedes=first)
        code, plaintext = license_services.activation_code_generate(
            actor=seeded.support, subscription=subscription, reason="Order ORD-2025-0815 closed"
        )
        instance = Instance.objects.get(hostname="gitlab.northwind-robotics.test")
        Activation.objects.create(
            activation_code=code,
            license=current,
            instance=instance,
            gitlab_version="17.6.2-ee",
            hostname=instance.hostname,
            activated_at=timezone.now() - dt.timedelta(days=20),
        )
        today = timezone.localdate()
        offline_subscription = services.subscription_create(
            actor=seeded.support,
            customer=seeded.customer,
            name="A-S00012350",
            plan=Plan.PREMIUM,
            deployment=Deployment.SELF_MANAGED,
            licensing_method=LicensingMethod.OFFLINE_CLOUD,
            term_start=today - dt.timedelta(days=60),
            term_end=today + dt.timedelta(days=305),
            seats=40,
            channel=Channel.SALES_ASSISTED,
            reason="Air-gapped research site",
        )
        offline = license_services.license_issue(
            actor=seeded.support,
            subscription=offline_subscription,
            kind=LicenseKind.OFFLINE_CLOUD,
            reason="Air-gapped research site",
            ticket_url="https://tickets.example.test/L-R/4230",
        )
    finally:
        reset_context(token)
    return first, current, plaintext, offline


def test_license_pages_in_the_browser(console_page, signing_key, mailoutbox):
    page, problems = console_page
    seeded = seed_customer(extra_customers=4)
    first, current, code, offline = _seed_licenses(seeded)
    _log_in(page, seeded.lead.username)

    # Subscription page: licenses card and activation code card.
    page.goto(seeded.self_managed.get_absolute_url())
    page.wait_for_load_state("networkidle")
    licenses_card = page.locator("#licenses")
    assert licenses_card.get_by_role("link", name=f"#{current.pk}").is_visible()
    assert licenses_card.get_by_text("Superseded").is_visible()
    assert page.locator("#activation-code .console-code-hint").inner_text() == f"…{code[-4:]}"
    assert page.locator("#activation-code").get_by_text("gitlab.northwind-robotics.test").count()
    _shot(page, "10-subscription-licenses")
    problems.assert_clean("subscription page with licenses")

    # License detail: chain, activation, audit trail, decoded attributes.
    licenses_card.get_by_role("link", name=f"#{current.pk}").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_role("heading", name=re.compile(rf"#{current.pk}")).is_visible()
    assert page.locator("#chain .list-group-item").count() == 2
    assert page.locator("#key-check").inner_text().strip().startswith("Decodes")
    assert page.locator("#activations").get_by_text("gitlab.northwind-robotics.test").is_visible()
    assert page.locator("#timeline").get_by_text("Munich plant rollout").first.is_visible()
    assert page.locator("#revoke-license").is_visible()
    _shot(page, "11-license-detail")
    problems.assert_clean("license detail")

    # The re-issue and issue forms preview what they would produce.
    page.locator("#reissue-license").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#preview").get_by_text(f"license #{current.pk}").is_visible()
    _shot(page, "11a-license-reissue")
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(f"**{current.get_absolute_url()}")
    page.goto(seeded.self_managed.get_absolute_url())
    page.locator("#issue-license").click()
    page.wait_for_load_state("networkidle")
    assert page.get_by_label("Kind").input_value() == "online_cloud"
    _shot(page, "11b-license-issue")
    problems.assert_clean("issue and re-issue forms")
    page.goto(current.get_absolute_url())

    # Troubleshoot a superseded key: the verdict links the license that replaced it.
    page.get_by_role("link", name="Troubleshoot", exact=True).click()
    page.wait_for_load_state("networkidle")
    page.locator("textarea").fill(first.key)
    page.get_by_role("button", name="Diagnose").click()
    page.wait_for_load_state("networkidle")
    verdict = page.locator("#verdict")
    assert verdict.get_attribute("data-verdict") == "license_superseded"
    assert verdict.get_by_role("link", name=f"License #{first.pk}").is_visible()
    assert page.locator("textarea").input_value() == ""  # nothing pasted is echoed
    _shot(page, "12-troubleshoot-superseded")
    problems.assert_clean("troubleshoot superseded key")

    # ...and the activation code a second instance was refused with.
    page.locator("textarea").fill(code)
    page.get_by_role("button", name="Diagnose").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#verdict").get_attribute("data-verdict") == "code_in_use"
    assert code not in page.content()
    assert page.locator("#next-actions").get_by_role("link", name="Release the code").is_visible()
    _shot(page, "13-troubleshoot-code")
    problems.assert_clean("troubleshoot activation code")

    # Resend the code: a new one is shown once and e-mailed to the sold-to contact.
    page.locator("#next-actions").get_by_role("link", name="Resend activation code").click()
    page.wait_for_load_state("networkidle")
    _shot(page, "14-activation-code-send")
    page.get_by_label("Reason code").select_option("delivery_problem")
    page.get_by_label("Reason", exact=True).fill("Customer says the e-mail never arrived")
    page.locator("#confirm-fix").click()
    page.wait_for_load_state("networkidle")
    new_code = page.locator("#activation-code").inner_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9]{24}", new_code) and new_code != code
    (message,) = mailoutbox
    assert message.to == ["greta.hoffmann@northwind-robotics.test"] and new_code in message.body
    assert page.locator("#delivery").get_by_text("Sent").is_visible()
    _shot(page, "15-activation-code-sent")
    problems.assert_clean("activation code sent")

    # Offline license: the download is the exact key, recorded as a delivery.
    page.goto(offline.get_absolute_url())
    page.wait_for_load_state("networkidle")
    with page.expect_download() as download_info:
        page.locator("#download-license").click()
    download = download_info.value
    assert download.suggested_filename == f"A-S00012350_{offline.pk}.gitlab-license"
    assert Path(download.path()).read_text(encoding="utf-8") == offline.key
    page.reload()
    page.wait_for_load_state("networkidle")
    assert page.locator("#deliveries").get_by_text("Downloaded").is_visible()
    _shot(page, "16-license-offline")
    problems.assert_clean("offline license")

    # Licenses list and the signing key page.
    page.get_by_role("link", name="Licenses", exact=True).first.click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#license-table tbody tr").count() == 3
    _shot(page, "17-license-list")
    page.get_by_role("link", name="Signing key").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("#fingerprint").inner_text().strip() == current.signing_key.fingerprint
    _shot(page, "18-signing-key")
    problems.assert_clean("licenses list and signing key")
    assert len(mail.outbox) == 1
