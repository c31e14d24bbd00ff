"""Print the public half of the configured license signing key."""

from django.core.management.base import BaseCommand, CommandError

from licenses.signing import SigningKeyNotConfigured, configured_key


class Command(BaseCommand):
    help = (
        "Print the PEM public key of the configured license signing key: what a GitLab "
        "instance needs in .license_encryption_key.pub (or .test_license_encryption_key.pub "
        "with GITLAB_LICENSE_MODE=test)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--fingerprint", action="store_true", help="Also print the SHA-256 fingerprint."
        )

    def handle(self, *args, **options):
        try:
            key = configured_key()
        except SigningKeyNotConfigured as exc:
            raise CommandError(str(exc)) from None
        # Only the PEM goes to stdout, so the output can be redirected into the key file.
        self.stdout.write(key.public_key_pem, ending="")
        if options["fingerprint"]:
            self.stderr.write(f"Fingerprint: {key.fingerprint} ({key.origin})")
