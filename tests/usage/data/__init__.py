"""Usage files for the tests, and the fixtures that issue the licenses they carry.

Each ``*.csv`` here is GitLab's ``license_usage.csv`` layout (wire protocol §3.2), or a known
variant or a way it goes wrong, with ``{license_key}`` where the key goes: keys are issued in
each test run (signed with the session's key), so they cannot be stored. ``usage_file``
puts the key in, in the file's own line ends. The files are byte-exact (``.gitattributes``
keeps git from touching CRLF, the BOM or an unterminated last line).

The license term of every file is 2025-01-01 to 2026-01-01, generated 2025-02-01 09:14:07,
with 31 daily rows (2025-01-01 … 2025-01-31, highest count 48).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from licenses import services as license_services
from licenses.choices import LicenseKind
from provision.choices import LicensingMethod
from tests.factories import subscription_factory

# The signing key the license tests use (a session RSA key in a temporary file); autouse there,
# and so here too wherever these are imported.
from tests.licenses.conftest import (  # noqa: F401
    _signing_key_files,
    other_rsa_private_key,
    rsa_private_key,
    signing_key_file,
)

DATA = Path(__file__).resolve().parent
TERM_START = date(2025, 1, 1)
TERM_END = date(2026, 1, 1)
ISSUED_ON = date(2025, 1, 2)
DAYS_IN_FILES = 31
PEAK_IN_FILES = 48


def usage_file(name: str, license_key: str) -> bytes:
    """The fixture ``name`` with ``license_key`` in it, as the bytes a customer would send."""
    raw = (DATA / name).read_bytes()
    encoding = "latin-1" if name == "latin1.csv" else "utf-8"
    text = raw.decode(encoding)
    key = license_key.replace("\n", "\r\n") if "\r\n" in text else license_key
    text = (
        text.replace("{license_key_half}", key[: len(key) // 2])
        .replace("{license_key_bare}", license_key)
        .replace("{license_key}", key)
    )
    return text.encode(encoding)


def generated_usage_file(
    license_key: str,
    *,
    starts_on: date = TERM_START,
    expires_on: date = TERM_END,
    days: int = 365,
    rows_per_day: int = 1,
    base_count: int = 40,
) -> bytes:
    """A large export in GitLab's exact layout: ``days`` days from ``starts_on``, each with
    ``rows_per_day`` records spread over the day, generated the day after the last."""
    generated = datetime.combine(starts_on + timedelta(days=days), datetime.min.time())
    lines = [
        f'License Key,"{license_key}"',
        "Email,buyer@acme.test",
        f"License Start Date,{starts_on:%Y-%m-%d}",
        f"License End Date,{expires_on:%Y-%m-%d}",
        "Company,Acme Robotics",
        f"Generated At,{generated:%Y-%m-%d} 06:00:00",
        '"",""',
        "Date,Billable User Count",
    ]
    step = 86_400 // rows_per_day
    for day in range(days):
        midnight = datetime.combine(starts_on + timedelta(days=day), datetime.min.time())
        for row in range(rows_per_day):
            moment = midnight + timedelta(seconds=row * step)
            lines.append(f"{moment:%Y-%m-%d %H:%M:%S},{base_count + (day * 7 + row) % 23}")
    return ("\n".join(lines) + "\n").encode("utf-8")


@pytest.fixture
def offline_subscription(customer):
    return subscription_factory(
        customer,
        term_start=TERM_START,
        term_end=TERM_END,
        seats=50,
        licensing_method=LicensingMethod.OFFLINE_CLOUD,
    )


@pytest.fixture
def offline_license(support_agent, offline_subscription):
    return license_services.license_issue(
        actor=support_agent,
        subscription=offline_subscription,
        kind=LicenseKind.OFFLINE_CLOUD,
        reason="Air-gapped site",
        today=ISSUED_ON,
    )
