"""Create a service account's API token (a staff role for another internal tool); print it once."""

from provision import services
from provision.management.base import ProvisionCommand


class Command(ProvisionCommand):
    help = (
        "Create the API token of a service account: a user without a password, in one staff "
        "role, made on first use. The token gets exactly what a person with that role gets "
        "from /api/ (an account manager reads; support makes fixes; four-eyes rules apply). "
        "The token is printed once. Audited as a system action from a command."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", required=True, help="e.g. renewals-dashboard")
        parser.add_argument(
            "--role",
            required=True,
            choices=services.SERVICE_ACCOUNT_ROLES,
            help="The staff role the token acts with.",
        )
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="Replace an existing token (the old one stops working at once); with a "
            "different --role, also change the account's role.",
        )
        parser.add_argument(
            "--reason",
            default="Created with manage.py service_account_create",
            help="For the audit trail.",
        )

    def handle(self, *args, **options):
        token, created = services.service_account_create(
            actor=None,
            username=options["username"],
            role=options["role"],
            reason=options["reason"],
            rotate=options["rotate"],
        )
        account = "new service account" if created else "service account"
        self.stderr.write(
            f"Token for {account} {options['username']} ({options['role']}). It is shown this "
            "once: store it in the caller's secret store. Send it as "
            "'Authorization: Token <token>'."
        )
        self.stdout.write(token)
