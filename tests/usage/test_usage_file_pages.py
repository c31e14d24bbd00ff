"""The usage-file pages: who may see and upload, the upload flow on the license and customer
pages, and the list of imports."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from licenses import services as license_services
from tests import browser as e2e
from tests.factories import ContactFactory, CustomerFactory, subscription_factory
from tests.usage import data
from tests.usage.data import DAYS_IN_FILES, ISSUED_ON, TERM_END, TERM_START, usage_file
from usage import forms as usage_forms
from usage.choices import UsageFileImportStatus
from usage.models import SeatReport, UsageFileImport
from usage.services import usage_file_import
from usage.usage_file import MAX_FILE_BYTES

# Fixtures shared with the other usage-file tests, and the license tests' signing key
# (autouse), registered in this module.
_signing_key_files = data._signing_key_files
signing_key_file = data.signing_key_file
offline_subscription = data.offline_subscription
offline_license = data.offline_license

pytestmark = pytest.mark.django_db


def upload(name, content):
    return SimpleUploadedFile(name, content, content_type="text/csv")


def csv_of(license, fixture="gitlab_export.csv"):
    return upload("license_usage.csv", usage_file(fixture, license.key))


def card_url(license):
    return reverse("usage:license_usage_files", args=[license.pk])


def license_upload_url(license):
    return reverse("usage:license_usage_file_upload", args=[license.pk])


def customer_upload_url(customer):
    return reverse("usage:customer_usage_file_upload", args=[customer.pk])


# --- who may do what ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "persona, list_status, card_status, upload_status",
    [
        (None, 302, 302, 302),
        ("outsider", 403, 403, 403),
        ("account_manager", 200, 200, 403),
        ("support_agent", 200, 200, 200),
        ("support_lead", 200, 200, 200),
    ],
)
def test_permission_matrix(
    persona, list_status, card_status, upload_status, request, client, offline_license
):
    if persona:
        client.force_login(request.getfixturevalue(persona))
    customer = offline_license.subscription.customer

    assert client.get(reverse("usage:usagefileimport_list")).status_code == list_status
    assert client.get(card_url(offline_license)).status_code == card_status
    assert client.get(license_upload_url(offline_license)).status_code == upload_status
    assert client.get(customer_upload_url(customer)).status_code == upload_status
    posted = client.post(license_upload_url(offline_license), {"file": csv_of(offline_license)})
    assert posted.status_code == (302 if upload_status == 200 else upload_status)
    if upload_status != 200:
        assert not UsageFileImport.objects.exists()
    if list_status == 302:
        assert client.get(reverse("usage:usagefileimport_list"))["Location"].startswith("/login/")


def test_account_managers_see_the_imports_but_no_upload_form(
    client_for, account_manager, support_agent, offline_license
):
    usage_file_import(
        actor=support_agent,
        file_name="license_usage.csv",
        content=usage_file("gitlab_export.csv", offline_license.key),
    )

    body = client_for(account_manager).get(card_url(offline_license)).content.decode()

    assert "license_usage.csv" in body and "Imported" in body
    assert 'id="upload-usage-file"' not in body


# --- the license page ---------------------------------------------------------------------------


def test_an_offline_license_page_loads_the_usage_files_card(
    client_for, support_agent, offline_license
):
    body = client_for(support_agent).get(offline_license.get_absolute_url()).content.decode()

    assert f'hx-get="{card_url(offline_license)}"' in body
    card = client_for(support_agent).get(card_url(offline_license)).content.decode()
    assert 'id="usage-files"' in card
    assert f'action="{license_upload_url(offline_license)}"' in card
    assert 'enctype="multipart/form-data"' in card
    assert "No usage files yet" in card


def test_an_online_license_page_has_no_usage_files_card(client_for, support_agent, customer):
    subscription = subscription_factory(customer, term_start=TERM_START, term_end=TERM_END)
    online = license_services.license_issue(
        actor=support_agent, subscription=subscription, reason="Order", today=ISSUED_ON
    )
    client = client_for(support_agent)

    assert "usage:license_usage_files" not in client.get(online.get_absolute_url()).content.decode()
    assert 'id="upload-usage-file"' not in client.get(card_url(online)).content.decode()
    response = client.post(license_upload_url(online), {"file": csv_of(online)}, follow=True)
    assert "Usage files are for offline cloud and legacy licenses" in response.content.decode()
    assert not UsageFileImport.objects.exists()


def test_uploading_on_the_license_page_imports_the_days(client_for, support_agent, offline_license):
    client = client_for(support_agent)

    response = client.post(license_upload_url(offline_license), {"file": csv_of(offline_license)})

    assert response.status_code == 302
    assert response["Location"] == f"{offline_license.get_absolute_url()}#usage-files"
    page = client.get(response["Location"]).content.decode()
    assert "Imported 31 daily reports from license_usage.csv" in page
    assert SeatReport.objects.filter(subscription=offline_license.subscription).count() == (
        DAYS_IN_FILES
    )
    file_import = UsageFileImport.objects.get()
    assert (file_import.uploaded_by, file_import.status) == (
        support_agent,
        UsageFileImportStatus.IMPORTED,
    )
    card = client.get(card_url(offline_license)).content.decode()
    assert 'data-status="imported"' in card and ">31</span>" in card


def test_uploading_the_same_file_again_says_it_was_already_imported(
    client_for, support_agent, offline_license
):
    client = client_for(support_agent)
    client.post(license_upload_url(offline_license), {"file": csv_of(offline_license)})

    response = client.post(
        license_upload_url(offline_license), {"file": csv_of(offline_license)}, follow=True
    )

    assert "Nothing new in license_usage.csv: the same file was already imported on" in (
        response.content.decode()
    )
    assert SeatReport.objects.count() == DAYS_IN_FILES


def test_a_rejected_upload_shows_the_reason_on_the_form(client_for, support_agent, offline_license):
    client = client_for(support_agent)

    response = client.post(
        license_upload_url(offline_license),
        {"file": csv_of(offline_license, "excel_resaved.csv")},
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert "Nothing was imported" in body
    assert "license_usage.csv was rejected:" in body
    assert "spreadsheet program" in body
    assert not SeatReport.objects.exists()
    rejected = UsageFileImport.objects.get()
    assert rejected.status == UsageFileImportStatus.REJECTED
    card = client.get(card_url(offline_license)).content.decode()
    assert 'data-status="rejected"' in card and "spreadsheet program" in card


def test_an_upload_without_a_file_is_a_form_error(client_for, support_agent, offline_license):
    response = client_for(support_agent).post(license_upload_url(offline_license), {})

    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not UsageFileImport.objects.exists()


def test_an_empty_upload_is_recorded_as_rejected(client_for, support_agent, offline_license):
    response = client_for(support_agent).post(
        license_upload_url(offline_license), {"file": upload("license_usage.csv", b"")}
    )

    assert response.status_code == 200
    assert "The file is empty" in response.content.decode()
    assert UsageFileImport.objects.get().status == UsageFileImportStatus.REJECTED


def test_an_oversized_upload_is_recorded_as_too_large(client_for, support_agent, offline_license):
    big = upload("license_usage.csv", b"x" * (MAX_FILE_BYTES + 1))

    response = client_for(support_agent).post(license_upload_url(offline_license), {"file": big})

    assert response.status_code == 200
    assert "we accept at most 5.0 MB" in response.content.decode()
    rejected = UsageFileImport.objects.get()
    assert rejected.content == ""  # an oversized file is not kept


def test_a_huge_upload_is_refused_by_the_form_unread(
    client_for, support_agent, offline_license, monkeypatch
):
    monkeypatch.setattr(usage_forms, "UPLOAD_READ_LIMIT", 1000)

    response = client_for(support_agent).post(
        license_upload_url(offline_license), {"file": upload("dump.zip", b"x" * 1001)}
    )

    assert response.status_code == 200
    assert "Check that the right file was chosen" in response.content.decode()
    assert not UsageFileImport.objects.exists()


def test_a_file_of_another_subscription_is_rejected_on_a_license_page(
    client_for, support_agent, offline_license, customer
):
    other = license_services.license_issue(
        actor=support_agent,
        subscription=subscription_factory(
            customer, term_start=TERM_START, term_end=TERM_END, licensing_method="offline_cloud"
        ),
        reason="Second site",
        today=ISSUED_ON,
    )

    response = client_for(support_agent).post(
        license_upload_url(offline_license), {"file": csv_of(other)}
    )

    assert response.status_code == 200
    assert f"not of {offline_license.subscription.name}" in response.content.decode()
    assert not SeatReport.objects.exists()


# --- the customer page --------------------------------------------------------------------------


def test_an_offline_customer_page_has_the_usage_files_card(
    client_for, support_agent, account_manager, offline_license
):
    customer = offline_license.subscription.customer

    body = client_for(support_agent).get(customer.get_absolute_url()).content.decode()

    assert 'id="usage-files"' in body
    assert f'action="{customer_upload_url(customer)}"' in body
    am_body = client_for(account_manager).get(customer.get_absolute_url()).content.decode()
    assert 'id="usage-files"' in am_body and 'id="upload-usage-file"' not in am_body


def test_an_online_only_customer_page_has_no_usage_files_card(client_for, support_agent, customer):
    subscription_factory(customer)

    body = client_for(support_agent).get(customer.get_absolute_url()).content.decode()

    assert 'id="usage-files"' not in body


def test_uploading_on_the_customer_page_matches_the_subscription_by_key(
    client_for, support_agent, offline_license
):
    customer = offline_license.subscription.customer
    client = client_for(support_agent)

    response = client.post(customer_upload_url(customer), {"file": csv_of(offline_license)})

    assert response["Location"] == f"{customer.get_absolute_url()}#usage-files"
    page = client.get(response["Location"]).content.decode()
    assert "Imported 31 daily reports from license_usage.csv" in page
    assert offline_license.subscription.name in page
    assert "usage file</span>" in page  # the air-gapped instance is not "stale"


def test_a_rejected_customer_upload_is_listed_on_that_customers_page(
    client_for, support_agent, offline_license
):
    customer = offline_license.subscription.customer
    stranger = CustomerFactory(name="Globex")
    ContactFactory(customer=stranger)
    subscription_factory(stranger, licensing_method="offline_cloud")
    client = client_for(support_agent)

    response = client.post(customer_upload_url(stranger), {"file": csv_of(offline_license)})

    assert response.status_code == 200
    assert "belongs to another customer than Globex" in response.content.decode()
    stranger_page = client.get(stranger.get_absolute_url()).content.decode()
    assert 'data-status="rejected"' in stranger_page
    own_page = client.get(customer.get_absolute_url()).content.decode()
    assert 'data-status="rejected"' not in own_page


# --- the list page ------------------------------------------------------------------------------


def test_the_list_filters_by_status_and_customer(client_for, support_agent, offline_license):
    customer = offline_license.subscription.customer
    for fixture in ("gitlab_export.csv", "no_rows.csv"):
        usage_file_import(
            actor=support_agent,
            file_name=fixture,
            content=usage_file(fixture, offline_license.key),
            customer=customer,
        )
    client = client_for(support_agent)
    url = reverse("usage:usagefileimport_list")

    everything = client.get(url, {"customer_id": customer.pk}).content.decode()
    rejected = client.get(url, {"status": "rejected"}).content.decode()

    assert "gitlab_export.csv" in everything and "no_rows.csv" in everything
    assert "no_rows.csv" in rejected and "gitlab_export.csv" not in rejected


@pytest.mark.parametrize("count", [1, 8])
def test_the_list_page_queries_do_not_grow_with_imports(
    count, client_for, support_agent, offline_license, django_assert_max_num_queries
):
    for _ in range(count):
        usage_file_import(
            actor=support_agent,
            file_name="license_usage.csv",
            content=usage_file("no_rows.csv", offline_license.key),
            license=offline_license,
        )
    client = client_for(support_agent)

    with django_assert_max_num_queries(8):
        response = client.get(reverse("usage:usagefileimport_list"))

    assert response.status_code == 200
    assert response.content.decode().count('data-status="rejected"') == count


# --- in the browser -----------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_support_agent_imports_a_usage_file_on_the_license_page(
    console_page, support_agent, offline_license, tmp_path
):
    page, problems = console_page
    good = tmp_path / "license_usage.csv"
    good.write_bytes(usage_file("gitlab_export.csv", offline_license.key))
    opened = tmp_path / "license_usage (opened in Excel).csv"
    opened.write_bytes(usage_file("excel_resaved.csv", offline_license.key))
    page.goto("/login/")
    page.get_by_label("Username").fill(support_agent.username)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")

    page.goto(offline_license.get_absolute_url())
    page.wait_for_selector("#upload-usage-file")  # htmx swapped the card in
    page.set_input_files("#usage-files input[type=file]", str(good))
    page.click("#upload-usage-file")
    page.wait_for_url("**#usage-files")
    assert "Imported 31 daily reports from license_usage.csv" in page.content()
    page.wait_for_selector('#usage-files tr[data-status="imported"]')
    page.screenshot(path=str(e2e.SCREENSHOT_DIR / "usage-file-imported.png"), full_page=True)

    page.set_input_files("#usage-files input[type=file]", str(opened))
    page.click("#upload-usage-file")
    page.wait_for_selector(".console-usage-file-error")
    error = page.inner_text(".console-usage-file-error")
    assert "was rejected" in error and "spreadsheet program" in error
    page.screenshot(path=str(e2e.SCREENSHOT_DIR / "usage-file-rejected.png"), full_page=True)

    page.goto(offline_license.subscription.customer.get_absolute_url())
    rows = page.locator("#usage-files tr.console-usage-file")
    assert rows.count() == 2  # the rejected attempt too, newest first
    assert rows.nth(0).get_attribute("data-status") == "rejected"
    page.screenshot(path=str(e2e.SCREENSHOT_DIR / "usage-files-customer.png"), full_page=True)
    problems.assert_clean("usage file upload")
    assert SeatReport.objects.count() == DAYS_IN_FILES
