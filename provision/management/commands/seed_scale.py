"""``manage.py seed_scale``: bulk synthetic data at design size for benchmarks (provision.scale)."""

import argparse
import time

from django.conf import settings
from django.core.management.base import CommandError, CommandParser

from provision.management.base import ProvisionCommand
from provision.scale import ScaleSeeder, expected_counts


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return number


class Command(ProvisionCommand):
    help = (
        "Add synthetic customers, subscriptions, instances, namespaces and a year of daily seat "
        "reports in the proportions of design.md §5 (200,000 customers → 300,000 subscriptions, "
        "100,000 instances, 250,000 namespaces, 36.5M seat reports). Uses COPY on PostgreSQL. "
        "Refuses to run in production."
    )
    # The refusal must be the only thing a production run prints.
    requires_system_checks = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--customers", type=positive_int, required=True)
        parser.add_argument(
            "--days",
            type=non_negative_int,
            default=365,
            help="Days of daily seat reports (and rollups) per instance; 0 writes none.",
        )
        parser.add_argument(
            "--batch",
            type=positive_int,
            default=5000,
            help="Rows per bulk_create batch (SQLite) or per COPY write (PostgreSQL).",
        )
        parser.add_argument(
            "--rollups",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="Also write the daily usage rollups for the seat-report days (default: yes).",
        )
        parser.add_argument(
            "--reason",
            default="Synthetic scale data for benchmarks",
            help="Reason recorded on the one summary audit event.",
        )

    def handle(self, *args, **options):
        if settings.IS_PRODUCTION:
            raise CommandError(
                "seed_scale refuses to run with PROVISION_ENV=production: it bulk-loads synthetic "
                "customers into the database."
            )
        seeder = ScaleSeeder(
            customers=options["customers"],
            days=options["days"],
            batch=options["batch"],
            rollups=options["rollups"],
            reason=options["reason"],
            progress=self._progress,
        )
        self.stdout.write(
            f"Seeding {options['customers']:,} customers, {options['days']} days of seat "
            f"reports, into {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} "
            f"via {seeder.writer.method} …"
        )
        result = seeder.run()
        expected = expected_counts(
            first=result.first_customer,
            customers=options["customers"],
            days=options["days"],
            rollups=options["rollups"],
        )
        written = result.counts()
        mismatched = {
            label: (count, written.get(label)) for label, count in expected.items()
            if written.get(label, 0) != count
        }  # fmt: skip
        if mismatched:
            raise CommandError(f"Row counts differ from the plan (expected, written): {mismatched}")
        total_rows = sum(written.values())
        size = (
            f", database size {result.database_bytes / 2**30:.2f} GiB"
            if result.database_bytes is not None
            else ""
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {total_rows:,} rows in {result.seconds:.1f}s "
                f"({total_rows / result.seconds:,.0f} rows/s overall"
                + (f", vacuum {result.vacuum_seconds:.1f}s" if result.vacuum_seconds else "")
                + f"){size}."
            )
        )

    def _progress(self, message: str) -> None:
        self.stdout.write(f"  {time.strftime('%H:%M:%S')} {message}")
        self.stdout.flush()
