"""Reads for the licenses app: current licenses, key and code lookups, decoding keys."""

from __future__ import annotations

import threading
from datetime import date

from cryptography.hazmat.primitives.asymmetric import rsa
from django.db.models import Max, Q

from licenses.choices import CURRENT_LICENSE_STATUSES, ActivationCodeStatus
from licenses.keyformat import (
    DecodedLicense,
    LicenseKeyError,
    decode_license,
    key_sha256,
    normalized_key,
)
from licenses.models import ActivationCode, License, SigningKey
from licenses.signing import activation_code_hash, load_public_key
from provision.models import Subscription

_public_keys: dict[str, rsa.RSAPublicKey] = {}
_public_keys_lock = threading.Lock()


def signing_keys_for_decoding() -> list[tuple[SigningKey, rsa.RSAPublicKey]]:
    """Every registered signing key, the active one first, then retired ones newest first."""
    rows = list(SigningKey.objects.order_by("-is_active", "-created_at"))
    result = []
    for row in rows:
        # A fingerprint names one public key forever, so the parsed key can be kept.
        key = _public_keys.get(row.fingerprint)
        if key is None:
            key = load_public_key(row.public_key_pem)
            with _public_keys_lock:
                _public_keys[row.fingerprint] = key
        result.append((row, key))
    return result


def license_key_decode(key: str) -> DecodedLicense:
    """Decode a key with Provision's signing keys; raises ``LicenseKeyError`` with a reason."""
    keys = [public_key for _, public_key in signing_keys_for_decoding()]
    if not keys:
        raise LicenseKeyError("unknown_signing_key", "no signing key is registered yet")
    return decode_license(key, keys)


def license_find_by_key(key: str) -> License | None:
    """The license issued as exactly this key (CRLF and trailing newlines forgiven, as EE's
    ``normalized_data`` forgives them)."""
    return (
        License.objects.select_related("subscription")
        .filter(key_sha256__in={key_sha256(key), key_sha256(normalized_key(key))})
        .first()
    )


def license_current(subscription: Subscription, *, starts_on: date | None = None):
    """Current (issued or active) licenses of a subscription, latest start first."""
    qs = License.objects.filter(subscription=subscription, status__in=CURRENT_LICENSE_STATUSES)
    if starts_on is not None:
        qs = qs.filter(starts_on=starts_on)
    return qs.order_by("-starts_on", "-issued_at")


def activation_code_find(code: str) -> ActivationCode | None:
    """The active activation code with this plaintext, or None."""
    return (
        ActivationCode.objects.select_related("subscription")
        .filter(code_hash=activation_code_hash(code), status=ActivationCodeStatus.ACTIVE)
        .first()
    )


def subscription_peak_users(subscription: Subscription, *, start: date, end: date) -> int:
    """The most users any report showed for the subscription between two dates (inclusive):
    EE's historical maximum over a true-up period."""
    from usage.models import SeatReport

    peaks = SeatReport.objects.filter(
        Q(subscription=subscription) & Q(report_date__gte=start) & Q(report_date__lte=end)
    ).aggregate(max_historical=Max("max_historical_users"), billable=Max("billable_users"))
    return max(peaks["max_historical"] or 0, peaks["billable"] or 0)
