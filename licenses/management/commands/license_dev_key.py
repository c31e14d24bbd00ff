"""Create the development license signing key, once."""

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from licenses.keyformat import public_key_fingerprint
from licenses.signing import generate_private_key_pem, parse_private_key


class Command(BaseCommand):
    help = (
        "Generate a 2048-bit RSA license signing key at LICENSE_PRIVATE_KEY_FILE if none exists "
        "(development only; idempotent) and print where it is."
    )

    def handle(self, *args, **options):
        if settings.IS_PRODUCTION:
            raise CommandError(
                "Refusing to generate a license signing key in production: configure "
                "LICENSE_PRIVATE_KEY or LICENSE_PRIVATE_KEY_FILE with the real key instead."
            )
        if settings.LICENSE_PRIVATE_KEY:
            self.stdout.write(
                "LICENSE_PRIVATE_KEY is set, so licenses are signed with that key and no key "
                "file is needed."
            )
            return
        if not settings.LICENSE_PRIVATE_KEY_FILE:
            raise CommandError("LICENSE_PRIVATE_KEY_FILE is empty: set the path to create.")
        path = Path(settings.LICENSE_PRIVATE_KEY_FILE)
        if path.exists():
            key = parse_private_key(path.read_bytes(), origin=str(path))
            self.stdout.write(
                f"License signing key already exists: {path}\n"
                f"Fingerprint: {public_key_fingerprint(key)}"
            )
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = generate_private_key_pem()
        # O_EXCL: two concurrent runs cannot both write (one fails instead of overwriting the
        # key the other has already used); 0600 because it is a private key.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CommandError(
                f"{path} appeared while generating; run the command again."
            ) from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        key = parse_private_key(pem, origin=str(path))
        self.stdout.write(
            f"Created license signing key: {path}\nFingerprint: {public_key_fingerprint(key)}\n"
            "Install its public half on test GitLab instances: manage.py license_public_key"
        )
