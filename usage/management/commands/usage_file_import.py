"""Import a license_usage.csv an air-gapped customer sent, from the command line."""

import json
import sys
from pathlib import Path

from django.core.management.base import CommandError

from licenses.models import License
from provision.management.base import ProvisionCommand
from usage import selectors, services
from usage.choices import UsageFileImportStatus


class Command(ProvisionCommand):
    help = (
        "Import a license usage file (license_usage.csv, exported by an air-gapped GitLab "
        "instance): one seat report per day for the subscription whose license key the file "
        "carries. Every attempt is recorded and audited as a system action; a rejected file "
        "stores nothing and exits with status 1 and the reason on one line."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path to the file, or - for standard input.")
        parser.add_argument(
            "--license",
            type=int,
            metavar="ID",
            help="Only accept a file of this license's subscription.",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        license = None
        if options["license"] is not None:
            license = (
                License.objects.select_related("subscription__customer")
                .filter(pk=options["license"])
                .first()
            )
            if license is None:
                raise CommandError(f"No license has the id {options['license']}.")
        path = options["file"]
        if path == "-":
            file_name, content = "license_usage.csv", sys.stdin.buffer.read()
        else:
            try:
                content = Path(path).read_bytes()
            except OSError as error:
                raise CommandError(f"Cannot read {path}: {error.strerror}.") from None
            file_name = Path(path).name
        file_import = services.usage_file_import(
            actor=None,
            file_name=file_name,
            content=content,
            license=license,
            reason=f"manage.py usage_file_import {file_name}",
        )
        message = selectors.usage_file_import_message(file_import=file_import)
        rejected = file_import.status == UsageFileImportStatus.REJECTED
        if options["json"]:
            self.stdout.write(json.dumps(self._result(file_import), indent=2))
        elif not rejected:
            subscription = file_import.subscription
            self.stdout.write(
                f"{message} for {subscription.name} (license {file_import.license_id}); "
                f"{file_import.rows_total} rows read, import {file_import.pk}.\n"
            )
        if rejected:
            # One line: the message never holds a line break.
            raise CommandError(" ".join(message.split()))

    @staticmethod
    def _result(file_import) -> dict:
        return {
            "id": file_import.pk,
            "status": file_import.status,
            "file_name": file_import.file_name,
            "file_sha256": file_import.file_sha256,
            "license_id": file_import.license_id,
            "subscription": file_import.subscription.name if file_import.subscription else None,
            "rows_total": file_import.rows_total,
            "rows_imported": file_import.rows_imported,
            "reason_code": file_import.reason_code,
            "rejection_reason": file_import.rejection_reason,
        }
