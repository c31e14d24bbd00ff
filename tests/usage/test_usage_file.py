"""The license_usage.csv reader (usage/usage_file.py): GitLab's layout and its variants are
read to the same days; everything else is refused with a specific reason. No database: the
keys are made with the session signing key, exactly as license_issue makes them."""

import io
import zipfile
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from licenses import keyformat
from tests.usage import data
from tests.usage.data import (
    DAYS_IN_FILES,
    PEAK_IN_FILES,
    TERM_END,
    TERM_START,
    generated_usage_file,
    usage_file,
)
from usage import usage_file as reader
from usage.usage_file import MAX_FILE_BYTES, REASONS, UsageFileError, parse_usage_file

# Fixtures shared with the other usage-file tests, and the license tests' signing key
# (autouse), registered in this module.
_signing_key_files = data._signing_key_files
signing_key_file = data.signing_key_file
rsa_private_key = data.rsa_private_key


@pytest.fixture(scope="module")
def license_key(rsa_private_key):
    attributes = keyformat.build_attributes(
        licensee_name="Bea Buyer",
        licensee_email="buyer@acme.test",
        licensee_company="Acme Robotics",
        starts_on=TERM_START,
        expires_on=TERM_END,
        kind=keyformat.KIND_OFFLINE_CLOUD,
        plan="premium",
        user_count=50,
        license_id=7,
        subscription_id="3",
        subscription_name="A-S00012345",
    )
    return keyformat.encode_license(attributes, rsa_private_key)


def parse(name, license_key):
    return parse_usage_file(usage_file(name, license_key))


def lines(license_key) -> list[int]:
    """``lines(key)[n]``: the line a file's n-th row is on in a text editor (the quoted key
    spans lines of its own)."""
    return [n + license_key.count("\n") for n in range(100)]


def refusal(content: bytes) -> UsageFileError:
    with pytest.raises(UsageFileError) as caught:
        parse_usage_file(content)
    return caught.value


# --- accepted -----------------------------------------------------------------------------------


def test_gitlabs_export_gives_the_key_the_license_details_and_one_entry_per_day(license_key):
    parsed = parse("gitlab_export.csv", license_key)

    assert parsed.license_key == license_key  # EE's normalized_data, as issued
    assert (parsed.email, parsed.company) == ("buyer@acme.test", "Acme Robotics")
    assert (parsed.starts_on, parsed.expires_on) == (TERM_START, TERM_END)
    assert parsed.generated_at == datetime(2025, 2, 1, 9, 14, 7, tzinfo=UTC)
    assert parsed.count_column == "Billable User Count"
    assert parsed.rows_total == len(parsed.days) == DAYS_IN_FILES
    assert (parsed.first_day, parsed.last_day) == (date(2025, 1, 1), date(2025, 1, 31))
    first, last = parsed.days[0], parsed.days[-1]
    assert (first.billable_users, first.max_historical_users, first.rows) == (40, 40, 1)
    assert (last.billable_users, last.max_historical_users) == (47, PEAK_IN_FILES)
    assert parsed.peak_users == PEAK_IN_FILES


def test_the_historical_maximum_is_the_running_maximum_of_the_days_so_far(license_key):
    days = parse("gitlab_export.csv", license_key).days

    running = 0
    for day in days:
        running = max(running, day.billable_users)
        assert day.max_historical_users == running
    # The count dips on 2025-01-19 (46 → 45) but the maximum does not.
    dip = next(day for day in days if day.day == date(2025, 1, 19))
    assert (dip.billable_users, dip.max_historical_users) == (45, 46)


@pytest.mark.parametrize(
    "name",
    [
        "separator_bare_commas.csv",
        "separator_single_cell.csv",
        "separator_empty_line.csv",
        "active_user_count.csv",
        "crlf.csv",
        "bom.csv",
        "trailing_blank_lines.csv",
    ],
)
def test_known_variants_read_the_same_as_the_newest_export(name, license_key):
    expected = parse("gitlab_export.csv", license_key)

    parsed = parse(name, license_key)

    assert parsed.license_key == license_key
    assert parsed.days == expected.days
    assert parsed.generated_at == expected.generated_at


def test_older_exports_name_the_count_column_active_user_count(license_key):
    assert parse("active_user_count.csv", license_key).count_column == "Active User Count"


def test_a_day_with_two_records_counts_its_highest_once(license_key):
    parsed = parse("two_rows_a_day.csv", license_key)

    assert parsed.rows_total == DAYS_IN_FILES + 3
    assert len(parsed.days) == DAYS_IN_FILES
    fifth = parsed.days[4]
    assert (fifth.day, fifth.billable_users, fifth.rows) == (date(2025, 1, 5), 41 + 3, 2)


def test_rows_out_of_time_order_give_the_same_days(license_key):
    content = usage_file("gitlab_export.csv", license_key)
    head, table = content.split(b"Date,Billable User Count\n")
    shuffled = b"\n".join(reversed(table.rstrip(b"\n").split(b"\n"))) + b"\n"

    parsed = parse_usage_file(head + b"Date,Billable User Count\n" + shuffled)

    assert parsed.days == parse("gitlab_export.csv", license_key).days


def test_quoted_values_in_the_table_are_read_by_the_careful_reader(license_key):
    content = usage_file("gitlab_export.csv", license_key)
    head, table = content.split(b"Date,Billable User Count\n")
    quoted = b"".join(
        b'"' + line.replace(b",", b'","') + b'"\n' for line in table.rstrip(b"\n").split(b"\n")
    )
    assert reader._read_table_fast(quoted.decode()) is None  # not GitLab's exact bytes

    parsed = parse_usage_file(head + b"Date,Billable User Count\n" + quoted)

    assert parsed.days == parse("gitlab_export.csv", license_key).days


@pytest.mark.parametrize(
    "name",
    ["gitlab_export.csv", "two_rows_a_day.csv", "trailing_blank_lines.csv", "crlf.csv"],
)
def test_the_fast_reader_agrees_with_the_careful_one(name, license_key):
    text = usage_file(name, license_key).decode("utf-8").replace("\r\n", "\n")
    table = text.split("Date,Billable User Count\n", 1)[1]

    fast = reader._read_table_fast(table)

    assert fast is not None
    assert fast == reader._highest_per_day(reader._read_rows_slowly(table, 9))


def test_a_large_file_is_read_completely(license_key):
    content = generated_usage_file(license_key, days=365, rows_per_day=24)

    parsed = parse_usage_file(content)

    assert parsed.rows_total == 365 * 24
    assert len(parsed.days) == 365
    assert parsed.last_day == date(2025, 12, 31)


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason_code, says",
    [
        ("excel_resaved.csv", "spreadsheet_timestamps", '"Generated At" on line {6}'),
        ("seconds_dropped.csv", "spreadsheet_timestamps", 'Line {9} has the time "2025-01-01 12'),
        ("time_dropped.csv", "spreadsheet_timestamps", "spreadsheet program"),
        ("iso_with_time_zone.csv", "timestamp_invalid", "2025-01-01T12:00:03Z"),
        ("semicolons.csv", "spreadsheet_separator", "separated by semicolons"),
        ("cut_mid_row.csv", "file_cut_off", '"2025-01-18 12:0"'),
        ("cut_in_license_key.csv", "file_cut_off", "inside the license key"),
        ("no_license_details.csv", "header_missing", "starts with the daily table"),
        ("no_daily_table.csv", "table_missing", "table of daily user counts is missing"),
        ("no_rows.csv", "no_rows", "no daily user counts"),
        ("rows_missing.csv", "rows_missing", "stop on 2025-01-10, 22 days before"),
        ("negative_count.csv", "count_negative", "Line {20} has the user count -3"),
        ("non_numeric_count.csv", "count_not_a_number", 'Line {15} has "n/a"'),
        ("thousands_separator.csv", "count_not_a_number", "thousands separator"),
        ("outside_term.csv", "date_outside_term", "count for 2024-12-31, outside the license"),
        ("after_export.csv", "date_after_export", "count for 2025-02-03, after it was generated"),
        ("license_key.gitlab-license", "license_file", "GitLab license file"),
        ("other_report.csv", "not_usage_file", 'starts with "Name"'),
        ("latin1.csv", "not_utf8", "(line {5}) is 0xFC"),
    ],
)
def test_a_broken_file_is_refused_with_a_specific_reason(name, reason_code, says, license_key):
    error = refusal(usage_file(name, license_key))

    assert error.reason_code == reason_code
    assert says.format(*lines(license_key)) in error.message
    assert error.title == REASONS[reason_code]


def test_a_spreadsheets_dates_are_named_as_such_and_the_customer_is_told_what_to_do(license_key):
    error = refusal(usage_file("excel_resaved.csv", license_key))

    assert "2/1/2025 9:14" in error.message
    assert "Excel" in error.message
    assert "Export the file again" in error.message and "without opening it" in error.message


def test_an_empty_file_is_refused():
    assert refusal(b"").reason_code == "empty_file"
    assert refusal(b"\n\n  \n").reason_code == "empty_file"


def test_a_file_over_the_limit_is_refused_before_it_is_read():
    error = refusal(b"x" * (MAX_FILE_BYTES + 1))

    assert error.reason_code == "file_too_large"
    assert "5.0 MB" in error.message


def test_an_excel_workbook_is_refused_as_a_workbook():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as workbook:
        workbook.writestr("xl/workbook.xml", "<workbook/>")

    assert refusal(buffer.getvalue()).reason_code == "spreadsheet_workbook"


def test_a_file_saved_as_utf16_is_refused_as_re_saved(license_key):
    content = usage_file("gitlab_export.csv", license_key).decode().encode("utf-16")

    assert refusal(content).reason_code == "spreadsheet_encoding"


@pytest.mark.parametrize(
    "row, reason_code",
    [
        ("2025-02-30 12:00:00,40", "timestamp_invalid"),  # not a calendar day
        ("2025-01-21 24:00:00,40", "timestamp_invalid"),
        ("2025-01-21 12:00:00,", "count_not_a_number"),
        ("2025-01-21 12:00:00,4.5", "count_not_a_number"),
        ("2025-01-21 12:00:00,١٢", "count_not_a_number"),  # digits, but not ASCII ones
        ("2025-01-21 12:00:00,12345678901", "count_too_large"),
        ("2025-01-21 12:00:00,40,extra", "row_malformed"),
        ("2025-01-21 12:00:00", "row_malformed"),
    ],
)
def test_a_bad_row_is_named_by_its_line(row, reason_code, license_key):
    content = usage_file("gitlab_export.csv", license_key) + row.encode() + b"\n"

    error = refusal(content)

    assert error.reason_code == reason_code
    assert f"Line {lines(license_key)[40]} " in error.message


def test_a_last_row_without_a_line_break_counts_as_cut_off(license_key):
    content = usage_file("gitlab_export.csv", license_key).rstrip(b"\n")

    error = refusal(content)

    assert error.reason_code == "file_cut_off"
    assert f"({lines(license_key)[39]}, " in error.message


def test_an_empty_license_key_is_refused(license_key):
    content = usage_file("gitlab_export.csv", license_key).replace(license_key.encode(), b"", 1)

    assert refusal(content).reason_code == "key_missing"


def test_a_missing_license_detail_is_named(license_key):
    content = usage_file("gitlab_export.csv", license_key).replace(b"Email,buyer@acme.test\n", b"")

    error = refusal(content)

    assert error.reason_code == "header_missing"
    assert "lack Email" in error.message


def test_reason_codes_are_a_closed_list():
    with pytest.raises(ValueError):
        UsageFileError("something_else", "?")


@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 400),  # day of the term
            st.integers(0, 86_399),  # second of the day
            st.integers(0, 999_999_999),  # count
        ),
        max_size=60,
    ),
    trailing_blank_lines=st.integers(0, 2),
)
@settings(max_examples=200, deadline=None)
def test_the_fast_reader_agrees_with_the_careful_one_on_any_table(rows, trailing_blank_lines):
    lines = [
        f"{TERM_START + timedelta(days=day)} {second // 3600:02d}:{second // 60 % 60:02d}:"
        f"{second % 60:02d},{count}\n"
        for day, second, count in rows
    ]
    table = "".join(lines) + "\n" * trailing_blank_lines

    fast = reader._read_table_fast(table)

    assert fast == reader._highest_per_day(reader._read_rows_slowly(table, 1))
