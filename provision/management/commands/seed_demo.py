"""``manage.py seed_demo``: the demo data set and one login per staff role (see provision.demo)."""

import time

from django.core.management.base import CommandError

from licenses.signing import SigningKeyNotConfigured
from provision import demo
from provision.management.base import ProvisionCommand


class Command(ProvisionCommand):
    help = (
        "Create realistic demo data (customers, subscriptions, licenses, usage) and the demo "
        "logins. Safe to run again: existing demo data is detected and left alone."
    )

    def handle(self, *args, **options):
        started = time.monotonic()
        try:
            result = demo.seed_demo()
        except SigningKeyNotConfigured as exc:
            raise CommandError(str(exc)) from None
        if result.created:
            for label, count in result.counts.items():
                self.stdout.write(f"  {label:<18} {count:>6}")
            self.stdout.write(
                self.style.SUCCESS(f"Demo data created in {time.monotonic() - started:.1f}s.")
            )
        else:
            self.stdout.write("demo data already present; logins checked.")
        self._print_logins(result.logins)

    def _print_logins(self, logins):
        headers = ("username", "password", "role")
        widths = [max(len(row[i]) for row in (headers, *logins)) for i in range(3)]

        def line(cells):
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

        self.stdout.write("")
        self.stdout.write(line(headers).rstrip())
        self.stdout.write(line(["-" * width for width in widths]))
        for row in logins:
            self.stdout.write(line(row).rstrip())
