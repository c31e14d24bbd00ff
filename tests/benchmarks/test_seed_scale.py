"""How fast seed_scale loads design-size data. Run with ``pytest -m benchmark`` (PostgreSQL:
DATABASE_URL=postgres://…); size with SEED_SCALE_CUSTOMERS / SEED_SCALE_DAYS.

Runs inside the test transaction, so the VACUUM that a real run does afterwards is skipped.
The figures recorded in docs/benchmarks.md come from the command itself (see there)."""

import io
import os

import pytest
from django.core.management import call_command
from django.db import connection

from provision.scale import expected_counts
from usage.models import SeatReport


@pytest.mark.benchmark
@pytest.mark.django_db
def test_seed_scale_throughput():
    customers = int(os.environ.get("SEED_SCALE_CUSTOMERS", "20000"))
    days = int(os.environ.get("SEED_SCALE_DAYS", "365"))
    out = io.StringIO()
    call_command("seed_scale", customers=customers, days=days, stdout=out)
    print(f"\nseed_scale on {connection.vendor}:\n{out.getvalue()}")
    expected = expected_counts(first=0, customers=customers, days=days)
    assert SeatReport.objects.count() == expected["seat reports"]
