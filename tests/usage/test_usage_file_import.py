"""usage_file_import: a license_usage.csv becomes one seat report per day, once, for the
subscription whose key it carries; any refusal is recorded and stores nothing else."""

import base64
import hashlib
import io
import json
from datetime import date

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from licenses import keyformat
from licenses import services as license_services
from licenses.choices import LicenseKind
from provision.choices import ProvisioningStepKind, StepState
from provision.exceptions import ApplicationError
from provision.models import AuditEvent, ProvisioningStep
from tests.factories import ContactFactory, CustomerFactory, subscription_factory
from tests.usage import data
from tests.usage.data import (
    DAYS_IN_FILES,
    ISSUED_ON,
    PEAK_IN_FILES,
    TERM_END,
    TERM_START,
    generated_usage_file,
    usage_file,
)
from usage.choices import SeatReportSource, UsageFileImportStatus
from usage.models import Instance, SeatReport, SubscriptionUsageDaily, UsageFileImport
from usage.selectors import usage_file_import_message
from usage.services import usage_file_import
from usage.usage_file import MAX_FILE_BYTES

# Fixtures shared with the other usage-file tests, and the license tests' signing key
# (autouse), registered in this module.
_signing_key_files = data._signing_key_files
signing_key_file = data.signing_key_file
rsa_private_key = data.rsa_private_key
other_rsa_private_key = data.other_rsa_private_key
offline_subscription = data.offline_subscription
offline_license = data.offline_license

pytestmark = pytest.mark.django_db


def import_file(actor, key_of, name="gitlab_export.csv", *, content=None, **where):
    """Import fixture ``name`` carrying the key of license ``key_of``; ``where`` says where
    it was uploaded (``license=`` or ``customer=``)."""
    content = usage_file(name, key_of.key) if content is None else content
    return usage_file_import(actor=actor, file_name="license_usage.csv", content=content, **where)


def first_usage_state(subscription):
    return ProvisioningStep.objects.get(
        record__subscription=subscription, kind=ProvisioningStepKind.FIRST_USAGE
    ).state


def assert_nothing_stored(subscription):
    assert not SeatReport.objects.filter(subscription=subscription).exists()
    assert not Instance.objects.filter(subscription=subscription).exists()
    assert not SubscriptionUsageDaily.objects.filter(subscription=subscription).exists()
    assert first_usage_state(subscription) == StepState.PENDING
    assert not AuditEvent.objects.filter(action="usage.usage_file_imported").exists()


# --- imported -----------------------------------------------------------------------------------


def test_an_export_becomes_one_usage_file_report_per_day(support_agent, offline_license):
    subscription = offline_license.subscription
    content = usage_file("gitlab_export.csv", offline_license.key)

    file_import = import_file(support_agent, offline_license, license=offline_license)

    assert file_import.status == UsageFileImportStatus.IMPORTED
    assert (file_import.rows_total, file_import.rows_imported) == (DAYS_IN_FILES, DAYS_IN_FILES)
    assert file_import.reason_code is None
    file_import.refresh_from_db()
    assert file_import.license == offline_license and file_import.subscription == subscription
    assert file_import.uploaded_by == support_agent
    assert file_import.file_sha256 == hashlib.sha256(content).hexdigest()
    assert file_import.content == content.decode()
    assert file_import.finished_at is not None and file_import.rejection_reason == ""

    reports = list(SeatReport.objects.filter(subscription=subscription).order_by("report_date"))
    assert len(reports) == DAYS_IN_FILES
    assert {r.source for r in reports} == {SeatReportSource.USAGE_FILE}
    assert (reports[0].report_date, reports[0].billable_users) == (date(2025, 1, 1), 40)
    assert (reports[-1].report_date, reports[-1].billable_users) == (date(2025, 1, 31), 47)
    assert reports[-1].max_historical_users == PEAK_IN_FILES
    assert reports[0].raw_payload["usage_file_import_id"] == file_import.pk
    assert reports[0].raw_payload["license_id"] == offline_license.pk


def test_the_reports_hang_on_one_air_gapped_instance_of_the_subscription(
    support_agent, offline_license
):
    import_file(support_agent, offline_license)

    instance = Instance.objects.get(subscription=offline_license.subscription)
    assert instance.air_gapped is True
    assert instance.subscription == offline_license.subscription
    assert instance.customer == offline_license.subscription.customer
    assert instance.last_seen_at.isoformat() == "2025-02-01T09:14:07+00:00"  # Generated At
    assert set(instance.seat_reports.values_list("subscription", flat=True)) == {
        offline_license.subscription_id
    }


def test_an_import_is_audited_with_its_actor_and_figures(support_agent, offline_license):
    file_import = import_file(support_agent, offline_license)

    event = AuditEvent.objects.get(action="usage.usage_file_imported")
    assert (event.actor, event.target_id) == (support_agent, str(file_import.pk))
    assert event.customer == offline_license.subscription.customer
    assert event.reason == "Usage file license_usage.csv"
    assert event.metadata["rows_total"] == DAYS_IN_FILES
    assert event.metadata["reports_created"] == DAYS_IN_FILES
    assert event.metadata["first_day"] == "2025-01-01"
    assert event.metadata["last_day"] == "2025-01-31"
    assert event.metadata["peak_users"] == PEAK_IN_FILES
    assert event.metadata["same_file_imported_before"] is None


def test_the_first_import_closes_the_first_usage_step(support_agent, offline_license):
    subscription = offline_license.subscription
    assert first_usage_state(subscription) == StepState.PENDING

    import_file(support_agent, offline_license)

    assert first_usage_state(subscription) == StepState.DONE
    event = AuditEvent.objects.get(
        action="provision.provisioning_step_changed", changes__has_key="first_usage"
    )
    assert event.actor == support_agent
    assert event.changes == {"first_usage": ["pending", "done"]}


def test_the_imported_days_are_rolled_up(support_agent, offline_license):
    import_file(support_agent, offline_license)

    rollup = SubscriptionUsageDaily.objects.filter(subscription=offline_license.subscription)
    assert rollup.count() == DAYS_IN_FILES
    last = rollup.get(date=date(2025, 1, 31))
    assert (last.billable_users, last.max_users, last.seats) == (47, PEAK_IN_FILES, 50)


def test_the_same_file_twice_adds_nothing(support_agent, offline_license):
    first = import_file(support_agent, offline_license)
    before = list(
        SeatReport.objects.order_by("report_date").values_list(
            "pk", "billable_users", "max_historical_users", "received_at"
        )
    )

    second = import_file(support_agent, offline_license)

    assert second.status == UsageFileImportStatus.IMPORTED
    assert (second.rows_total, second.rows_imported) == (DAYS_IN_FILES, 0)
    after = list(
        SeatReport.objects.order_by("report_date").values_list(
            "pk", "billable_users", "max_historical_users", "received_at"
        )
    )
    assert after == before
    assert Instance.objects.count() == 1
    assert UsageFileImport.objects.count() == 2
    event = AuditEvent.objects.filter(action="usage.usage_file_imported").latest("pk")
    assert event.metadata["same_file_imported_before"] == first.pk
    assert usage_file_import_message(file_import=second).startswith(
        "Nothing new in license_usage.csv: the same file was already imported on "
    )


def test_a_later_export_adds_only_the_new_and_changed_days(support_agent, offline_license):
    import_file(support_agent, offline_license)
    later = (
        usage_file("gitlab_export.csv", offline_license.key)
        .replace(b"Generated At,2025-02-01 09:14:07", b"Generated At,2025-02-04 08:00:00")
        .replace(b"2025-01-31 12:00:33,47\n", b"2025-01-31 12:00:33,49\n")
    )
    later += b"2025-02-01 12:00:01,47\n2025-02-02 12:00:02,46\n2025-02-03 12:00:03,46\n"

    file_import = import_file(support_agent, offline_license, content=later)

    assert (file_import.rows_total, file_import.rows_imported) == (DAYS_IN_FILES + 3, 4)
    assert SeatReport.objects.count() == DAYS_IN_FILES + 3
    changed = SeatReport.objects.get(report_date=date(2025, 1, 31))
    assert (changed.billable_users, changed.max_historical_users) == (49, 49)
    assert changed.raw_payload["usage_file_import_id"] == file_import.pk
    assert usage_file_import_message(file_import=file_import) == (
        "Imported 4 daily reports from license_usage.csv"
    )


def test_a_file_of_a_superseded_license_lands_on_the_same_days(support_agent, offline_license):
    """A seat change supersedes the license; the new license's export repeats the term's
    days. One stand-in instance per subscription keeps them from counting twice."""
    import_file(support_agent, offline_license)
    successor = license_services.license_issue(
        actor=support_agent,
        subscription=offline_license.subscription,
        kind=LicenseKind.OFFLINE_CLOUD,
        reason="Seats corrected",
        today=ISSUED_ON,
    )
    assert successor.supersedes == offline_license

    file_import = import_file(support_agent, successor)

    assert file_import.license == successor and file_import.rows_imported == 0
    assert SeatReport.objects.count() == DAYS_IN_FILES
    daily = SubscriptionUsageDaily.objects.get(
        subscription=offline_license.subscription, date=date(2025, 1, 31)
    )
    assert daily.billable_users == 47  # not 94


def test_a_large_file_is_kept_whole(support_agent, offline_license):
    content = generated_usage_file(offline_license.key, days=365, rows_per_day=40)  # 340 KB

    file_import = import_file(support_agent, offline_license, content=content)

    assert (file_import.rows_total, file_import.rows_imported) == (365 * 40, 365)
    assert UsageFileImport.objects.get(pk=file_import.pk).content == content.decode()


@pytest.mark.parametrize(
    "name",
    ["separator_bare_commas.csv", "active_user_count.csv", "crlf.csv", "bom.csv"],
)
def test_variants_import_the_same_reports(name, support_agent, offline_license):
    file_import = import_file(support_agent, offline_license, name)

    assert file_import.rows_imported == DAYS_IN_FILES
    assert SeatReport.objects.filter(billable_users=47, report_date=date(2025, 1, 31)).exists()


def test_a_legacy_license_file_is_imported(support_agent, customer):
    subscription = subscription_factory(
        customer, term_start=TERM_START, term_end=TERM_END, licensing_method="legacy"
    )
    legacy = license_services.license_issue(
        actor=support_agent,
        subscription=subscription,
        kind=LicenseKind.LEGACY,
        reason="Exemption",
        today=ISSUED_ON,
    )

    file_import = import_file(support_agent, legacy, license=legacy)

    assert file_import.status == UsageFileImportStatus.IMPORTED


def test_a_customer_page_upload_is_matched_by_the_key(support_agent, offline_license):
    customer = offline_license.subscription.customer

    file_import = import_file(support_agent, offline_license, customer=customer)

    assert file_import.status == UsageFileImportStatus.IMPORTED
    assert file_import.subscription == offline_license.subscription


# --- rejected -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason_code",
    [
        ("excel_resaved.csv", "spreadsheet_timestamps"),
        ("cut_mid_row.csv", "file_cut_off"),
        ("negative_count.csv", "count_negative"),
        ("outside_term.csv", "date_outside_term"),
        ("license_key.gitlab-license", "license_file"),
        ("latin1.csv", "not_utf8"),
        ("edited_license_dates.csv", "license_details_mismatch"),
    ],
)
def test_a_rejected_file_is_recorded_and_stores_nothing_else(
    name, reason_code, support_agent, offline_license
):
    subscription = offline_license.subscription

    file_import = import_file(support_agent, offline_license, name, license=offline_license)

    assert file_import.status == UsageFileImportStatus.REJECTED
    assert file_import.reason_code == reason_code
    assert file_import.rows_imported == 0
    file_import.refresh_from_db()
    assert file_import.rejection_reason and file_import.license == offline_license
    assert (
        file_import.file_sha256 == hashlib.sha256(usage_file(name, offline_license.key)).hexdigest()
    )
    assert_nothing_stored(subscription)
    event = AuditEvent.objects.get(action="usage.usage_file_rejected")
    assert (event.actor, event.customer) == (support_agent, subscription.customer)
    assert event.metadata["reason_code"] == reason_code
    assert usage_file_import_message(file_import=file_import) == (
        f"license_usage.csv was rejected: {file_import.rejection_reason}"
    )


@pytest.mark.parametrize(
    "content, reason_code",
    [
        (b"", "empty_file"),
        (b"x" * (MAX_FILE_BYTES + 1), "file_too_large"),
        (b"PK\x03\x04 a zipped workbook", "spreadsheet_workbook"),
        (b"Name,Email\x00\n", "not_usage_file"),
    ],
)
def test_a_file_with_nothing_usable_is_still_recorded(
    content, reason_code, support_agent, offline_license
):
    file_import = import_file(support_agent, offline_license, content=content)

    file_import.refresh_from_db()
    assert file_import.status == UsageFileImportStatus.REJECTED
    assert file_import.file_sha256 == hashlib.sha256(content).hexdigest()
    assert "\x00" not in file_import.content  # PostgreSQL text cannot hold NUL
    if reason_code in ("file_too_large", "spreadsheet_workbook"):
        assert file_import.content == ""
    assert AuditEvent.objects.get(action="usage.usage_file_rejected").metadata["reason_code"] == (
        reason_code
    )


def test_a_rejection_inside_the_callers_transaction_is_still_recorded(
    support_agent, offline_license
):
    with transaction.atomic():
        file_import = import_file(support_agent, offline_license, "no_rows.csv")

    assert UsageFileImport.objects.get(pk=file_import.pk).status == UsageFileImportStatus.REJECTED
    assert_nothing_stored(offline_license.subscription)


def test_a_key_signed_by_someone_else_is_unknown(
    support_agent, offline_license, other_rsa_private_key
):
    foreign = keyformat.encode_license(offline_license.attributes, other_rsa_private_key)

    file_import = import_file(
        support_agent,
        offline_license,
        content=usage_file("gitlab_export.csv", foreign),
        license=offline_license,
    )

    assert file_import.reason_code == "key_unknown"
    assert "not one we issued" in file_import.rejection_reason
    assert_nothing_stored(offline_license.subscription)


def _altered(key: str) -> str:
    """The key with one byte of its encrypted data changed (the envelope still parses)."""
    envelope = json.loads(base64.b64decode(key))
    data = bytearray(base64.b64decode(envelope["data"]))
    data[-20] ^= 0x01
    envelope["data"] = keyformat.ruby_base64(bytes(data))
    return keyformat.ruby_base64(json.dumps(envelope, separators=(",", ":")).encode())


def test_an_altered_key_is_refused_as_tampered(support_agent, offline_license):
    content = usage_file("gitlab_export.csv", _altered(offline_license.key))

    file_import = import_file(support_agent, offline_license, content=content)

    assert file_import.reason_code == "key_tampered"
    assert "changed after it was issued" in file_import.rejection_reason
    assert file_import.license is None  # neither chosen nor found
    assert_nothing_stored(offline_license.subscription)


def test_a_key_re_encrypted_with_our_key_is_refused_as_tampered(
    support_agent, offline_license, rsa_private_key
):
    remade = keyformat.encode_license(offline_license.attributes, rsa_private_key)
    assert remade != offline_license.key  # a fresh AES key: other bytes, same attributes

    file_import = import_file(
        support_agent, offline_license, content=usage_file("gitlab_export.csv", remade)
    )

    assert file_import.reason_code == "key_tampered"
    assert f"as license {offline_license.pk}" in file_import.rejection_reason


def test_a_key_of_another_subscription_is_refused_on_a_license_page(
    support_agent, offline_license, customer
):
    other_subscription = subscription_factory(
        customer, term_start=TERM_START, term_end=TERM_END, licensing_method="offline_cloud"
    )
    other = license_services.license_issue(
        actor=support_agent, subscription=other_subscription, reason="Second site", today=ISSUED_ON
    )

    file_import = import_file(support_agent, other, license=offline_license)

    assert file_import.reason_code == "key_other_subscription"
    assert other_subscription.name in file_import.rejection_reason
    assert file_import.license == offline_license  # shown where it was uploaded
    assert not SeatReport.objects.exists()


def test_a_key_of_another_customer_is_refused_on_a_customer_page(support_agent, offline_license):
    stranger = CustomerFactory(name="Globex")
    ContactFactory(customer=stranger)

    file_import = import_file(support_agent, offline_license, customer=stranger)

    assert file_import.reason_code == "key_other_customer"
    assert file_import.subscription is None  # not linked to the other customer's subscription
    event = AuditEvent.objects.get(action="usage.usage_file_rejected")
    assert event.customer == stranger
    assert not SeatReport.objects.exists()


def test_an_online_cloud_license_file_is_refused(support_agent, customer):
    subscription = subscription_factory(customer, term_start=TERM_START, term_end=TERM_END)
    online = license_services.license_issue(
        actor=support_agent, subscription=subscription, reason="Order", today=ISSUED_ON
    )
    assert online.kind == LicenseKind.ONLINE_CLOUD

    file_import = import_file(support_agent, online)

    assert file_import.reason_code == "online_cloud_license"
    assert file_import.license == online  # the key named it; no page chose another
    assert_nothing_stored(subscription)


@pytest.mark.parametrize("persona", ["account_manager", "outsider"])
def test_only_support_roles_may_import(persona, request, offline_license):
    actor = request.getfixturevalue(persona)

    with pytest.raises(ApplicationError) as refused:
        import_file(actor, offline_license)

    assert refused.value.code == "forbidden"
    assert not UsageFileImport.objects.exists()


# --- the command --------------------------------------------------------------------------------


def run(*args):
    out = io.StringIO()
    call_command("usage_file_import", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def write(tmp_path, license, name="gitlab_export.csv"):
    path = tmp_path / "license_usage.csv"
    path.write_bytes(usage_file(name, license.key))
    return path


def test_the_command_imports_and_prints_a_summary(offline_license, tmp_path):
    output = run(str(write(tmp_path, offline_license)))

    file_import = UsageFileImport.objects.get()
    assert output == (
        f"Imported 31 daily reports from license_usage.csv for "
        f"{offline_license.subscription.name} (license {offline_license.pk}); 31 rows read, "
        f"import {file_import.pk}.\n"
    )
    event = AuditEvent.objects.get(action="usage.usage_file_imported")
    assert (event.actor, event.actor_kind, event.source) == (None, "system", "command")
    assert event.reason == "manage.py usage_file_import license_usage.csv"


def test_the_command_prints_json(offline_license, tmp_path):
    path = write(tmp_path, offline_license)

    result = json.loads(run(str(path), "--json", "--license", str(offline_license.pk)))

    assert result["status"] == "imported"
    assert (result["rows_total"], result["rows_imported"]) == (31, 31)
    assert result["license_id"] == offline_license.pk
    assert result["subscription"] == offline_license.subscription.name
    assert result["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result["reason_code"] is None


def test_a_rejected_file_fails_the_command_with_one_line(offline_license, tmp_path):
    path = write(tmp_path, offline_license, "seconds_dropped.csv")

    with pytest.raises(CommandError) as failed:
        run(str(path))

    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("license_usage.csv was rejected: Line ")
    assert "spreadsheet program" in message
    assert UsageFileImport.objects.get().status == UsageFileImportStatus.REJECTED
    assert not SeatReport.objects.exists()


def test_a_rejected_file_prints_its_json_and_still_fails(offline_license, tmp_path):
    path = write(tmp_path, offline_license, "no_rows.csv")
    out = io.StringIO()

    with pytest.raises(CommandError):
        call_command("usage_file_import", str(path), "--json", stdout=out)

    result = json.loads(out.getvalue())
    assert (result["status"], result["reason_code"]) == ("rejected", "no_rows")


def test_the_command_checks_the_license_it_is_given(offline_license, customer, tmp_path):
    with pytest.raises(CommandError, match="No license has the id 999999"):
        run(str(write(tmp_path, offline_license)), "--license", "999999")
    with pytest.raises(CommandError, match="Cannot read"):
        run(str(tmp_path / "missing.csv"))
