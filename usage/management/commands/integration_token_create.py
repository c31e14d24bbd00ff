"""Create an integration account's API token and print it once."""

from provision.management.base import ProvisionCommand
from usage import services


class Command(ProvisionCommand):
    help = (
        "Create the API token of an integration account (made on first use, in the "
        "'integration' group, no password) and print it once. Integration accounts may call "
        "machine endpoints such as POST /api/namespaces/seat-usage/ and read nothing else. "
        "Audited as a system action from a command."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", required=True, help="e.g. gitlab-com-seat-sync")
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="Replace an existing token; the old one stops working at once.",
        )
        parser.add_argument(
            "--reason",
            default="Created with manage.py integration_token_create",
            help="For the audit trail.",
        )

    def handle(self, *args, **options):
        token, created = services.integration_token_create(
            actor=None,
            username=options["username"],
            reason=options["reason"],
            rotate=options["rotate"],
        )
        account = "new integration account" if created else "integration account"
        self.stderr.write(
            f"Token for {account} {options['username']}. It is shown this once: store it in "
            "the caller's secret store. Send it as 'Authorization: Token <token>'."
        )
        self.stdout.write(token)
