"""Decode a license key with Provision's signing keys and print its attributes."""

import json
import sys

from django.core.management.base import CommandError

from licenses import selectors
from licenses.keyformat import LicenseKeyError, key_sha256
from licenses.models import SigningKey
from provision.management.base import ProvisionCommand


class Command(ProvisionCommand):
    help = (
        "Decode a license key (a .gitlab-license file, or - for standard input) with the "
        "registered signing keys and print its attributes as JSON, with the key that opened "
        "it and the license it was issued as. Exits non-zero with one line when the key is "
        "invalid, altered or signed by another key."
    )
    # call_command(..., stdin=...) in tests; the real command reads sys.stdin.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path to the license file, or - for standard input.")

    def handle(self, *args, **options):
        path = options["file"]
        if path == "-":
            text = (options.get("stdin") or sys.stdin).read()
        else:
            try:
                with open(path, encoding="utf-8") as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"Cannot read {path}: {exc}") from None
        try:
            decoded = selectors.license_key_decode(text)
        except LicenseKeyError as exc:
            raise CommandError(f"Invalid license key: {exc.message}") from None
        signing_key = SigningKey.objects.get(fingerprint=decoded.signing_key_fingerprint)
        license = selectors.license_find_by_key(text)
        result = {
            "kind": decoded.kind,
            "signing_key": {
                "fingerprint": signing_key.fingerprint,
                "active": signing_key.is_active,
                "source": signing_key.source,
            },
            "key_sha256": key_sha256(text),
            # Decoding proves only that our key opens it; the stored hash proves we issued it.
            "issued_by_provision": license is not None,
            "license": (
                {
                    "id": license.pk,
                    "status": license.status,
                    "subscription": license.subscription.name,
                }
                if license
                else None
            ),
            "attributes": decoded.attributes,
        }
        self.stdout.write(json.dumps(result, indent=2, ensure_ascii=False))
