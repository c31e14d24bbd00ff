"""Import the help desk's export of License & Renewals tickets for the indicator dashboard."""

from pathlib import Path

from django.core.management.base import CommandError

from provision import services
from provision.management.base import ProvisionCommand


class Command(ProvisionCommand):
    help = (
        "Import support tickets from a CSV export (columns: Ticket ID or id, Created at, Tags "
        "and/or Category or L&R - Category, optionally Subject) and classify each as "
        "provisioning-related or not by PROVISIONING_TICKET_RULE (docs/indicators.md). "
        "Upserts by ticket id, so importing the same file again changes nothing. A bad file "
        "or any bad row stores nothing and exits with status 1 and the reason on one line. "
        "--reclassify without a file classifies the stored tickets again after the rule "
        "changed."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="Path to the CSV export.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Read, check and count; store nothing."
        )
        parser.add_argument(
            "--reclassify",
            action="store_true",
            help="Classify stored tickets again under the rule in effect (no file needed).",
        )
        parser.add_argument("--reason", default="", help="Kept in the audit event.")

    def handle(self, *args, **options):
        path = options["file"]
        if path is None:
            if not options["reclassify"]:
                raise CommandError("Give the CSV file to import, or --reclassify.")
            if options["dry_run"]:
                raise CommandError("--dry-run needs a file.")
            result = services.support_tickets_reclassify(
                actor=None,
                reason=options["reason"] or "manage.py tickets_import --reclassify",
            )
            if result.run is None:
                self.stdout.write(
                    f"Every stored ticket is classified under rule {result.rule_version}; "
                    "nothing to do.\n"
                )
            else:
                self.stdout.write(
                    f"Classified {result.reclassified} tickets again under rule "
                    f"{result.rule_version}.\n"
                )
            return
        try:
            content = Path(path).read_bytes()
        except OSError as error:
            raise CommandError(f"Cannot read {path}: {error.strerror}.") from None
        name = Path(path).name
        result = services.support_tickets_import(
            actor=None,
            file_name=name,
            content=content,
            reason=options["reason"] or f"manage.py tickets_import {name}",
            dry_run=options["dry_run"],
        )
        verb = "Would import" if result.dry_run else "Imported"
        line = (
            f"{verb} {result.rows_total} tickets from {name}: {result.created} new, "
            f"{result.updated} updated, {result.unchanged} unchanged; "
            f"{result.provisioning} provisioning-related under rule {result.rule_version}"
        )
        if result.reclassified:
            verb = "would be classified" if result.dry_run else "classified"
            line += f"; {result.reclassified} stored tickets {verb} again"
        self.stdout.write(line + (" (dry run: nothing stored).\n" if result.dry_run else ".\n"))
