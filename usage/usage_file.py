"""Reading GitLab's ``license_usage.csv`` (wire protocol §3.2), the usage export of air-gapped
instances that customers e-mail in.

GitLab EE writes it with ``HistoricalUserData::CsvService``: six ``label,value`` rows (the
license key, multi-line and quoted; e-mail; license start and end date; company; generation
time), an empty separator row, then ``Date,Billable User Count`` and one row per
``historical_data`` record, ``YYYY-MM-DD HH:MM:SS,<count>`` in UTC. Known variants, all
accepted: the separator written ``"",""``, ``,``, ``""`` or as an empty line; the older
``Active User Count`` column title (issue #368644: the value was the billable count all along);
CRLF or CR line ends; a UTF-8 byte-order mark; blank lines in and after the table.

Everything else is refused with a ``UsageFileError`` whose ``reason_code`` is stable (pages,
audit events and the command print it) and whose message says, in words a customer
understands, what is wrong and what to do. Opaque "we couldn't process your file" replies are
a known complaint (customers-gitlab-com#5551), and the commonest cause is a spreadsheet that
rewrote the timestamps (customers-gitlab-com#7561), so those get their own reason.

Pure: no database and no settings. ``usage.services.usage_file_import`` matches the key to a
license, checks the term against it and stores the days.

Speed: a valid table is checked and read a day's run of rows at a time by regular
expressions (in C), faster than plain CSV parsing; only a file that fails that check goes
through the row-by-row reader, whose job is to find the first bad row and say why. The fast
check is a strict subset of the slow reader's rules, and both give the same days for any
table the fast one takes (a property test holds them to it), so it only changes how fast a
file is accepted.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

MAX_FILE_BYTES = 5 * 1024 * 1024
# A year of daily rows is ~10 KB and the key ~3 KB; GitLab caps the export body at 15 MB.
# 5 MB leaves room for years of several rows a day and still refuses a mis-attached archive.

MAX_COUNT = 999_999_999  # fits SeatReport's PositiveIntegerField with room to spare

# HistoricalData is recorded once a day on the instance. Rows that stop more days than this
# before the export (while the license term still ran) mean the end of the file was lost.
ROWS_END_EARLY_TOLERANCE = timedelta(days=3)

LICENSE_KEY = "License Key"
LABELS = (
    LICENSE_KEY,
    "Email",
    "License Start Date",
    "License End Date",
    "Company",
    "Generated At",
)
DATE_COLUMN = "Date"
COUNT_COLUMNS = ("Billable User Count", "Active User Count")  # newest first

TIMESTAMP_FORMAT = "YYYY-MM-DD HH:MM:SS"
EXPORT_HINT = (
    "Export the file again in GitLab (Admin > Subscription > Export license usage file) and "
    "send it without opening it."
)

# Stable codes → a short title (filters, badges, audit metadata). The messages carry detail.
REASONS = {
    # The bytes
    "empty_file": "Empty file",
    "file_too_large": "File too large",
    "not_utf8": "Not UTF-8 text",
    "spreadsheet_workbook": "Spreadsheet workbook, not the CSV",
    "spreadsheet_encoding": "Re-saved by a spreadsheet (UTF-16)",
    "license_file": "A license file, not a usage file",
    "not_usage_file": "Not a license usage file",
    # The layout
    "spreadsheet_separator": "Re-saved by a spreadsheet (separator changed)",
    "header_missing": "License details missing (file truncated)",
    "header_invalid": "License details unreadable",
    "key_missing": "No license key in the file",
    "table_missing": "Daily table missing (file truncated)",
    "file_cut_off": "File cut off mid-row",
    "row_malformed": "Malformed row",
    "no_rows": "No daily rows",
    "rows_missing": "Rows missing at the end (file truncated)",
    # The values
    "spreadsheet_timestamps": "Timestamps rewritten by a spreadsheet",
    "timestamp_invalid": "Timestamp not in GitLab's format",
    "count_negative": "Negative user count",
    "count_not_a_number": "User count is not a number",
    "count_too_large": "User count too large",
    "date_outside_term": "Date outside the license term",
    "date_after_export": "Date after the export time",
    # Checked against Provision's records (usage.services)
    "key_unknown": "License key not issued by us",
    "key_tampered": "License key altered",
    "key_other_subscription": "Key of another subscription",
    "key_other_customer": "Key of another customer",
    "license_details_mismatch": "License details edited",
    "online_cloud_license": "Online cloud license (syncs by itself)",
}


class UsageFileError(ValueError):
    """A usage file was refused. ``reason_code`` is one of ``REASONS``; ``message`` is for
    people (it is shown to staff and may be forwarded to the customer as it stands)."""

    def __init__(self, reason_code: str, message: str):
        if reason_code not in REASONS:
            raise ValueError(f"unknown usage file reason {reason_code!r}")
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message

    @property
    def title(self) -> str:
        return REASONS[self.reason_code]


@dataclass(frozen=True)
class UsageDay:
    """One day of the file: the highest count recorded that day (HistoricalData is daily, but
    a day with two records must not be counted twice) and the running maximum since the first
    day of the file, which is EE's "maximum users" for the license term (§4.4)."""

    day: date
    billable_users: int
    max_historical_users: int
    rows: int


@dataclass(frozen=True)
class ParsedUsageFile:
    """A usage file that passed every check that needs nothing but the file itself."""

    license_key: str  # EE's normalized_data: LF line ends, one trailing newline
    email: str
    company: str
    starts_on: date
    expires_on: date
    generated_at: datetime  # UTC
    count_column: str  # "Billable User Count", or "Active User Count" from older versions
    rows_total: int  # rows in the daily table (usually one a day)
    days: tuple[UsageDay, ...]  # ascending, one per day

    @property
    def first_day(self) -> date:
        return self.days[0].day

    @property
    def last_day(self) -> date:
        return self.days[-1].day

    @property
    def peak_users(self) -> int:
        return self.days[-1].max_historical_users


# --- patterns -----------------------------------------------------------------------------------

_DATE = r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
_TIME = r"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
_TIMESTAMP = re.compile(rf"{_DATE} {_TIME}", re.ASCII)
_ISO_DATE = re.compile(_DATE, re.ASCII)
_COUNT = re.compile(r"\d{1,9}", re.ASCII)  # \d alone would take any script's digits
# The fast path (module docstring): the rows of one day, a run of lines that start with the
# same date, each exactly as GitLab writes it and ending in a newline, the count without
# leading zeros (so that of two counts the longer is the larger). Classes ([0-9]), not \d:
# \d matches any Unicode digit, and the classes are also faster.
_CLOCK_AND_COUNT = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9],(?:0|[1-9][0-9]{0,8})\n"
_DAY_RUN = re.compile(
    rf"([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}) {_CLOCK_AND_COUNT}(?:\1 {_CLOCK_AND_COUNT})*+"
)
_RUN_COUNTS = re.compile(r",([0-9]+)\n")

# What spreadsheets make of "2025-01-21 12:00:11": 1/21/2025 12:00, 21.01.2025 12:00:11,
# 2025-01-21 12:00 (seconds dropped), 2025-01-21 (time dropped), 2025/01/21, 45678.5 (a serial).
_SPREADSHEET_VALUE = re.compile(
    r"""
    \d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}(?:,?\s+\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp]\.?[Mm]\.?)?)?
    | \d{4}[/.]\d{1,2}[/.]\d{1,2}(?:\s+\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp]\.?[Mm]\.?)?)?
    | \d{4}-\d{1,2}-\d{1,2}(?:\s+\d{1,2}:\d{2}(?:\s*[AaPp]\.?[Mm]\.?)?)?
    | \d{4}-\d{1,2}-\d{1,2}\s+\d{1,2}:\d{2}:\d{2}\s*[AaPp]\.?[Mm]\.?
    | \d{5}(?:[.,]\d+)?
    """,
    re.VERBOSE,
)
_BASE64_ONLY = re.compile(r"[A-Za-z0-9+/=\s]+")
_LICENSE_BOUNDARY = re.compile(r"-{3,}\s*BEGIN [A-Z ]*LICENSE\s*-{3,}")


# --- entry point --------------------------------------------------------------------------------


def parse_usage_file(content: bytes, *, max_bytes: int = MAX_FILE_BYTES) -> ParsedUsageFile:
    """Read a ``license_usage.csv`` or raise ``UsageFileError`` saying why it cannot be used."""
    text = _decode(content, max_bytes)
    _refuse_other_files(text)
    lines = _Lines(text)
    reader = csv.reader(lines, strict=True)
    header, count_column = _read_header(reader)
    table_first_line = reader.line_num + 1
    table = text[lines.position :]
    per_day = _read_table_fast(table)
    if per_day is None:
        per_day = _highest_per_day(_read_rows_slowly(table, table_first_line))
    if not table and not text.endswith("\n"):
        # An unterminated last row is the readers' to report; this is a file that ends
        # right after its table title.
        raise UsageFileError(
            "file_cut_off",
            f"The file ends right after the table title on line {reader.line_num}, without a "
            f"line break: it was cut off before the daily rows. {EXPORT_HINT}",
        )
    days = _days(per_day, header)
    return ParsedUsageFile(
        license_key=header["key"],
        email=header["email"],
        company=header["company"],
        starts_on=header["starts_on"],
        expires_on=header["expires_on"],
        generated_at=header["generated_at"],
        count_column=count_column,
        rows_total=sum(rows for _, _, rows in per_day),
        days=days,
    )


class _Lines:
    """The text's lines for ``csv.reader``, remembering where the next one starts: the table
    after the header is then sliced from the text (``io.StringIO`` would copy megabytes into
    UCS-4 and back)."""

    def __init__(self, text: str):
        self.text = text
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        start = self.position
        if start >= len(self.text):
            raise StopIteration
        end = self.text.find("\n", start)
        self.position = len(self.text) if end < 0 else end + 1
        return self.text[start : self.position]


# --- bytes --------------------------------------------------------------------------------------


def _megabytes(size: int) -> str:
    # Rounded up, so that a file one byte over the limit does not read as "5.0 MB".
    return f"{math.ceil(size * 10 / (1024 * 1024)) / 10:.1f} MB"


def _decode(content: bytes, max_bytes: int) -> str:
    if not content or content.isspace():  # isspace: no copy of a large file
        raise UsageFileError(
            "empty_file", f"The file is empty: it holds no license usage data. {EXPORT_HINT}"
        )
    if len(content) > max_bytes:
        raise UsageFileError(
            "file_too_large",
            f"The file is {_megabytes(len(content))}; a license usage file is a few kilobytes "
            f"per year of data and we accept at most {_megabytes(max_bytes)}. Check that the "
            "right file was attached.",
        )
    if content.startswith(b"PK\x03\x04") or content.startswith(b"\xd0\xcf\x11\xe0"):
        raise UsageFileError(
            "spreadsheet_workbook",
            "This is a spreadsheet workbook (an Excel .xlsx or .xls file), not the CSV file GitLab "
            f"exports: saving in a spreadsheet changes the data. {EXPORT_HINT}",
        )
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UsageFileError(
            "spreadsheet_encoding",
            'The file is saved as UTF-16 ("Unicode text"), which spreadsheet programs write '
            f"when they save a CSV; GitLab writes UTF-8. {EXPORT_HINT}",
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        line = content.count(b"\n", 0, error.start) + 1
        raise UsageFileError(
            "not_utf8",
            f"The file is not UTF-8 text: byte {error.start + 1} (line {line}) is "
            f"0x{content[error.start]:02X}. GitLab writes UTF-8, so the file was converted or "
            f"re-saved by another program. {EXPORT_HINT}",
        ) from None
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _refuse_other_files(text: str) -> None:
    if "," in text:  # a license key (Base64 and boundary lines) has none; a usage file has many
        return
    stripped = text.strip()
    looks_like_key = _LICENSE_BOUNDARY.search(stripped[:200]) or (
        len(stripped) >= 100 and "," not in stripped and _BASE64_ONLY.fullmatch(stripped)
    )
    if looks_like_key:
        raise UsageFileError(
            "license_file",
            "This is a GitLab license file (a license key), not a license usage file. The "
            "usage file is a CSV named license_usage.csv, exported in GitLab under Admin > "
            "Subscription > Export license usage file.",
        )


# --- header -------------------------------------------------------------------------------------


def _is_blank(row: list[str]) -> bool:
    return not any(cell.strip() for cell in row)


def _next_row(reader, what: str) -> list[str] | None:
    try:
        return next(reader, None)
    except csv.Error as error:
        if "end of data" in str(error):
            raise UsageFileError(
                "file_cut_off",
                f"The file ends inside {what} (line {reader.line_num}): it was cut off. "
                f"{EXPORT_HINT}",
            ) from None
        raise UsageFileError(
            "header_invalid",
            f"Line {reader.line_num}, in {what}, is not valid CSV ({error}): the file was "
            f"edited or re-saved by another program. {EXPORT_HINT}",
        ) from None


def _first_row(reader) -> list[str]:
    row = _next_row(reader, "the license key")
    while row is not None and _is_blank(row):
        row = _next_row(reader, "the license key")
    if row is None:
        raise UsageFileError("empty_file", f"The file holds no data. {EXPORT_HINT}")
    first = row[0].strip()
    if first == LICENSE_KEY:
        return row
    if first.startswith((f"{LICENSE_KEY};", f"{LICENSE_KEY}\t")):
        separator = "semicolons" if ";" in first else "tabs"
        raise UsageFileError(
            "spreadsheet_separator",
            f"The values in the file are separated by {separator} instead of commas: it was "
            f"opened and saved in a spreadsheet program. {EXPORT_HINT}",
        )
    if first == DATE_COLUMN and len(row) > 1 and row[1].strip() in COUNT_COLUMNS:
        raise UsageFileError(
            "header_missing",
            "The file starts with the daily table: the license details GitLab writes above "
            "it (the license key, e-mail, dates and company) are missing, so the file cannot "
            f"be matched to a license. The top of the file was cut off. {EXPORT_HINT}",
        )
    raise UsageFileError(
        "not_usage_file",
        f'This is not a license usage file: it starts with "{_clip(row[0])}", where GitLab\'s '
        f'export starts with "{LICENSE_KEY}". The usage file is a CSV named license_usage.csv, '
        "exported in GitLab under Admin > Subscription > Export license usage file.",
    )


def _clip(value: str, limit: int = 40) -> str:
    value = value.replace("\n", " ")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _header_date(label: str, value: str, line: int) -> date:
    value = value.strip()
    if _ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    if _SPREADSHEET_VALUE.fullmatch(value):
        raise UsageFileError(
            "spreadsheet_timestamps",
            f'"{label}" on line {line} reads "{value}", where GitLab writes YYYY-MM-DD: the '
            "file was opened and saved in a spreadsheet program (such as Excel), which "
            f"rewrites dates. {EXPORT_HINT}",
        )
    raise UsageFileError(
        "header_invalid",
        f'"{label}" on line {line} reads "{_clip(value)}", which is not a date in the form '
        f"YYYY-MM-DD. {EXPORT_HINT}",
    )


def _read_header(reader) -> tuple[dict, str]:
    """The label rows, the separator and the table title; returns the values and the count
    column's title."""
    row = _first_row(reader)
    values: dict[str, tuple[str, int]] = {}
    while True:
        label = row[0].strip()
        if label == DATE_COLUMN and len(row) > 1 and row[1].strip() in COUNT_COLUMNS:
            table_title = row  # some copies lose the empty separator row; nothing is missing
            break
        if label not in LABELS or label in values:
            raise UsageFileError(
                "header_invalid",
                f'Line {reader.line_num} reads "{_clip(",".join(row))}", where GitLab writes '
                f"the license details ({', '.join(LABELS)}), once each. {EXPORT_HINT}",
            )
        if len(row) < 2 or any(cell.strip() for cell in row[2:]):
            raise UsageFileError(
                "header_invalid",
                f'"{label}" on line {reader.line_num} should have exactly one value. {EXPORT_HINT}',
            )
        values[label] = (row[1], reader.line_num)
        row = _next_row(reader, "the license details")
        if row is not None and _is_blank(row):
            table_title = _next_row(reader, "the table title")
            break
        if row is None:
            table_title = None
            break
    missing = [label for label in LABELS if label not in values]
    if missing:
        raise UsageFileError(
            "header_missing",
            f"The license details at the top of the file lack {', '.join(missing)}: the file "
            f"was cut off or edited. {EXPORT_HINT}",
        )
    if table_title is None:
        raise UsageFileError(
            "table_missing",
            "The file ends after the license details: the table of daily user counts is "
            f"missing, so the file was cut off. {EXPORT_HINT}",
        )
    title = [cell.strip() for cell in table_title]
    if len(title) != 2 or title[0] != DATE_COLUMN or title[1] not in COUNT_COLUMNS:
        raise UsageFileError(
            "table_missing",
            f'Line {reader.line_num} should be the table title "Date,Billable User Count" '
            f'but reads "{_clip(",".join(table_title))}". {EXPORT_HINT}',
        )

    key = values[LICENSE_KEY][0]
    if not key.strip():
        raise UsageFileError(
            "key_missing",
            f"The file holds no license key (line {values[LICENSE_KEY][1]} is empty), so it "
            f"cannot be matched to a license. {EXPORT_HINT}",
        )
    generated_value, generated_line = values["Generated At"]
    generated_at = _timestamp(generated_value.strip(), generated_line, "Generated At")
    starts_on = _header_date("License Start Date", *values["License Start Date"])
    expires_on = _header_date("License End Date", *values["License End Date"])
    if expires_on < starts_on:
        raise UsageFileError(
            "header_invalid",
            f"The license end date {expires_on} is before its start date {starts_on}: the "
            f"file was edited. {EXPORT_HINT}",
        )
    header = {
        # EE's normalized_data; a spreadsheet may have dropped the final newline.
        "key": key.rstrip("\n") + "\n",
        "email": values["Email"][0].strip(),
        "company": values["Company"][0].strip(),
        "starts_on": starts_on,
        "expires_on": expires_on,
        "generated_at": generated_at,
    }
    return header, title[1]


# --- rows ---------------------------------------------------------------------------------------


def _timestamp(value: str, line: int, what: str = "") -> datetime:
    if _TIMESTAMP.fullmatch(value):
        try:
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        except ValueError:  # 2025-02-30
            pass
    where = f'"{what}" on line {line}' if what else f"Line {line}"
    if _SPREADSHEET_VALUE.fullmatch(value):
        raise UsageFileError(
            "spreadsheet_timestamps",
            f'{where} has the time "{value}", where GitLab writes {TIMESTAMP_FORMAT} (for '
            "example 2025-01-21 12:00:11): the file was opened and saved in a spreadsheet "
            f"program (such as Excel), which rewrites dates and times. {EXPORT_HINT}",
        )
    raise UsageFileError(
        "timestamp_invalid",
        f'{where} has "{_clip(value)}" where GitLab writes a time as {TIMESTAMP_FORMAT} (UTC, '
        f"for example 2025-01-21 12:00:11): the file was edited. {EXPORT_HINT}",
    )


def _count(value: str, line: int) -> int:
    if _COUNT.fullmatch(value):
        return int(value)
    if re.fullmatch(r"\d+", value, re.ASCII):
        raise UsageFileError(
            "count_too_large",
            f"Line {line} has the user count {value}, more than any GitLab instance has: the "
            f"file was edited. {EXPORT_HINT}",
        )
    if re.fullmatch(r"\s*-\s*\d+(?:[.,]\d+)?\s*", value):
        raise UsageFileError(
            "count_negative",
            f"Line {line} has the user count {value.strip()}; a count of users cannot be "
            f"negative, so the file was edited. {EXPORT_HINT}",
        )
    hint = ""
    if re.fullmatch(r"\d{1,3}(?:[,. \u00a0']\d{3})+", value.strip()):
        hint = " (a thousands separator added by a spreadsheet)"
    elif value.strip() == "":
        hint = " (it is empty)"
    raise UsageFileError(
        "count_not_a_number",
        f'Line {line} has "{_clip(value)}" as its user count{hint}; GitLab writes a whole '
        f"number of users. {EXPORT_HINT}",
    )


def _read_table_fast(table: str) -> list[tuple[str, int, int]] | None:
    """(day, highest count, rows) per day for a table exactly as GitLab writes it, or None to
    leave the file to the row-by-row reader.

    One regular expression takes each day's run of rows, checking every byte, and the runs
    must follow one another with nothing between them (blank lines only at the end); each
    run's counts are then read with one ``findall``, and the days (a few hundred, however many
    rows) are checked as calendar dates once each. All of it runs in C: a Python loop over
    the rows would cost more than the CSV parsing itself.
    """
    highest: dict[str, int] = {}
    seen: dict[str, int] = {}
    position = 0
    for run in _DAY_RUN.finditer(table):
        if run.start() != position:  # a line the pattern does not take
            return None
        position = run.end()
        day = run.group(1)
        counts = _RUN_COUNTS.findall(table, run.start(), position)
        top = max(counts)  # as text: right when the largest is also one of the longest
        top = int(top) if len(top) == max(map(len, counts)) else max(map(int, counts))
        highest[day] = max(highest.get(day, 0), top)
        seen[day] = seen.get(day, 0) + len(counts)
    if table.count("\n", position) != len(table) - position:  # more than blank lines left
        return None
    for day in highest:
        if not _ISO_DATE.fullmatch(day):
            return None
        try:
            date.fromisoformat(day)
        except ValueError:  # 2025-02-30: the slow reader names the line
            return None
    return [(day, highest[day], seen[day]) for day in sorted(highest)]


def _read_rows_slowly(table: str, first_line: int) -> list[tuple[str, int]]:
    """Row by row, to name the first bad line and why. Data rows never span lines."""
    lines = table.split("\n")
    unterminated = lines.pop()  # "" when the table ends in a newline, as GitLab writes it
    rows: list[tuple[str, int]] = []
    last = len(lines) if unterminated.strip() else -1
    if unterminated.strip():
        lines.append(unterminated)
    for index, text in enumerate(lines):
        line = first_line + index
        if index == last:
            raise UsageFileError(
                "file_cut_off",
                f'The file ends in the middle of a row: its last line ({line}, "{_clip(text)}") '
                "has no line break, so the file was cut off and that row may be incomplete. "
                f"{EXPORT_HINT}",
            )
        if not text.strip():
            continue
        try:
            cells = next(csv.reader([text], strict=True))
        except csv.Error as error:
            raise UsageFileError(
                "row_malformed",
                f'Line {line} ("{_clip(text)}") is not valid CSV ({error}). {EXPORT_HINT}',
            ) from None
        if len(cells) != 2:
            raise UsageFileError(
                "row_malformed",
                f'Line {line} ("{_clip(text)}") has {len(cells)} values; each row of the table '
                f"is a time and a user count. {EXPORT_HINT}",
            )
        timestamp, count = cells
        _timestamp(timestamp, line)
        rows.append((timestamp, _count(count, line)))
    return rows


def _highest_per_day(rows: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """(day, highest count, rows) per day, ascending."""
    highest: dict[str, int] = {}
    seen: dict[str, int] = {}
    for timestamp, count in rows:
        day = timestamp[:10]
        if highest.get(day, -1) < count:
            highest[day] = count
        seen[day] = seen.get(day, 0) + 1
    return [(day, highest[day], seen[day]) for day in sorted(highest)]


def _days(per_day: list[tuple[str, int, int]], header: dict) -> tuple[UsageDay, ...]:
    starts_on, expires_on = header["starts_on"], header["expires_on"]
    generated_at = header["generated_at"]
    if not per_day:
        raise UsageFileError(
            "no_rows",
            f"The file has no daily user counts (it was generated on {generated_at.date()}, "
            f"for the license term {starts_on} to {expires_on}). GitLab records one count a "
            "day once the license is installed; export the file again after a few days, or "
            "check that the instance's background jobs run.",
        )
    days = []
    running = 0
    for text, count, seen in per_day:
        day = date.fromisoformat(text)  # the timestamps were checked as calendar dates
        running = max(running, count)
        days.append(UsageDay(day, count, running, seen))
    first, last = days[0].day, days[-1].day
    if first < starts_on or last > expires_on:
        outside = first if first < starts_on else last
        raise UsageFileError(
            "date_outside_term",
            f"The file has a count for {outside}, outside the license term {starts_on} to "
            f"{expires_on}: GitLab only exports the days of the license's term, so the rows "
            f"were edited or copied from another file. {EXPORT_HINT}",
        )
    if last > generated_at.date():
        raise UsageFileError(
            "date_after_export",
            f"The file has a count for {last}, after it was generated "
            f"({generated_at:%Y-%m-%d %H:%M:%S} UTC): the file was edited. {EXPORT_HINT}",
        )
    expected_last = min(generated_at.date(), expires_on)
    if expected_last - last > ROWS_END_EARLY_TOLERANCE:
        raise UsageFileError(
            "rows_missing",
            f"The daily counts stop on {last}, {(expected_last - last).days} days before "
            f"{'the file was generated' if expected_last < expires_on else 'the license ended'}"
            f" ({expected_last}): the end of the file is missing, so it was cut off. "
            f"{EXPORT_HINT}",
        )
    return tuple(days)
