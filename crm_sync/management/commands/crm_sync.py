"""Run one CRM sync now and print its summary."""

import json

from django.core.management.base import CommandError

from crm_sync import services
from crm_sync.choices import CrmTarget, SyncRunKind, SyncRunStatus, SyncTrigger
from provision.management.base import ProvisionCommand


class Command(ProvisionCommand):
    help = (
        "Sync customers' usage to one CRM now: only what changed since that CRM last accepted "
        "it (incremental), or every customer diffed (--full). Prints the run's counts; exits "
        "with status 1 and the reason on one line when the run failed. --dry-run computes and "
        "diffs without sending or recording state."
    )

    def add_arguments(self, parser):
        parser.add_argument("--target", required=True, choices=CrmTarget.values)
        parser.add_argument(
            "--full", action="store_true", help="Consider every customer, not only the changed."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would be sent; send nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        progress = None
        if not options["json"] and options["verbosity"] > 0:

            def progress(summary):
                self.stderr.write(
                    f"  … {summary.considered:,} considered, {summary.sent:,} sent, "
                    f"{summary.failed:,} failed"
                )

        summary = services.crm_sync_run(
            target=options["target"],
            kind=SyncRunKind.FULL if options["full"] else SyncRunKind.INCREMENTAL,
            trigger=SyncTrigger.STAFF,
            dry_run=options["dry_run"],
            progress=progress,
        )
        if options["json"]:
            self.stdout.write(json.dumps(summary.as_dict(), indent=2))
        else:
            label = CrmTarget(summary.target).label
            would = "would send" if summary.dry_run else "sent"
            self.stdout.write(
                f"{label} {summary.kind} sync (run {summary.run_id}): {summary.status}; "
                f"{summary.considered:,} customers considered, {summary.sent:,} {would} "
                f"({summary.rows_sent:,} rows), {summary.created:,} created, "
                f"{summary.updated:,} updated, {summary.unchanged:,} unchanged, "
                f"{summary.failed:,} failed, in {summary.seconds:.1f} s.\n"
            )
            for sample in summary.sample:
                self.stdout.write(f"  {json.dumps(sample, sort_keys=True)}\n")
        if summary.status == SyncRunStatus.FAILED:
            message = f"{CrmTarget(summary.target).label} sync failed: {summary.error}"
            raise CommandError(" ".join(message.split()))
