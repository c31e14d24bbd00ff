"""Issue a license for a subscription from the command line."""

import json

from django.core.management.base import CommandError
from django.db import transaction

from licenses import services
from licenses.choices import LicenseKind
from provision.management.base import ProvisionCommand
from provision.models import Subscription


class Command(ProvisionCommand):
    help = (
        "Issue a license key for a subscription (superseding its current one) and print it; "
        "for an online cloud license also generate a fresh activation code, which replaces the "
        "subscription's previous code. Audited as a system action from a command."
    )

    def add_arguments(self, parser):
        parser.add_argument("--subscription", required=True, help="Subscription name, A-S…")
        parser.add_argument("--kind", required=True, choices=LicenseKind.values)
        parser.add_argument(
            "--reason", default="Issued with manage.py license_issue", help="For the audit trail."
        )
        parser.add_argument("--ticket-url", default="", help="The ticket that asked for it.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        name = options["subscription"].strip().upper()
        try:
            subscription = Subscription.objects.get(name=name)
        except Subscription.DoesNotExist:
            raise CommandError(f"No subscription is named {name}.") from None
        reason, ticket_url = options["reason"], options["ticket_url"]
        # One transaction: a license without the code it needs (or the reverse) is never left.
        with transaction.atomic():
            license = services.license_issue(
                actor=None,
                subscription=subscription,
                kind=options["kind"],
                reason=reason,
                ticket_url=ticket_url,
            )
            code = None
            if license.kind == LicenseKind.ONLINE_CLOUD:
                _, code = services.activation_code_generate(
                    actor=None, subscription=subscription, reason=reason, ticket_url=ticket_url
                )
        result = {
            "license_id": license.pk,
            "subscription": subscription.name,
            "kind": license.kind,
            "status": license.status,
            "starts_on": license.starts_on.isoformat(),
            "expires_on": license.expires_on.isoformat(),
            "user_count": license.user_count,
            "supersedes": license.supersedes_id,
            "key_sha256": license.key_sha256,
            "license_key": license.key,
        }
        if code is not None:
            result["activation_code"] = code
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        replaced = f", superseding license {license.supersedes_id}" if license.supersedes_id else ""
        self.stdout.write(
            f"Issued {license.get_kind_display().lower()} {license.pk} for {subscription.name}"
            f"{replaced}: {license.user_count} users, {license.starts_on} to "
            f"{license.expires_on}.\n"
        )
        if code is not None:
            self.stdout.write(f"Activation code (shown once): {code}\n")
        self.stdout.write(license.key, ending="")
