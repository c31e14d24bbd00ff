"""The license key format of the ``gitlab-license`` gem, byte for byte (wire protocol §4).

A key is ``Base64(JSON{"data","key","iv"})``:

* ``data``: the attributes as compact JSON, AES-128-CBC with PKCS#7 padding;
* ``key``: the 16-byte AES key put through RSA "private encrypt" with PKCS#1 v1.5 *type-1*
  padding (OpenSSL ``RSA_private_encrypt``; not a hash-and-sign signature: no DigestInfo);
* ``iv``: the 16-byte CBC IV;

each Base64 value (and the outer blob) written the way Ruby's ``Base64.encode64`` writes it:
standard alphabet, 60-character lines, every line ending in ``\\n``.

The format has no MAC: whoever holds the public key can recover the AES key, and CBC lets a
changed IV or ciphertext byte decrypt to changed plaintext. So that an altered key is rejected
rather than decoded into wrong data, Provision derives the IV from the plaintext
(``HMAC-SHA256(aes_key, plaintext)[:16]``, a "synthetic IV"). The gem accepts any 16-byte IV, so
keys stay gem-compatible; our decoder recomputes the IV and refuses a key whose data or IV no
longer match (reason ``integrity_check_failed``). That catches corruption and edited bytes
deterministically. It is not a signature, and nothing in this format can be: anyone with the
public key can take the AES key out of a valid license and encrypt other attributes under it.
The stored ``key_sha256`` of each issued key is what proves a key is one Provision issued.

This module is pure (no database, no settings): the services and Seat Link call it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 47: PKCS#1 v1.5 type-1 padding without DigestInfo, in OpenSSL
    from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo as _NoDigestInfo
except ImportError:  # pragma: no cover - older cryptography
    _NoDigestInfo = None

AES_KEY_BYTES = 16
AES_BLOCK_BYTES = 16
BASE64_LINE_CHARS = 60  # Ruby's Base64.encode64 (pack "m"): 45 input bytes per line
PKCS1_MIN_PADDING = 8  # RSA_padding_check_PKCS1_type_1 wants at least eight 0xFF bytes
LICENSE_VERSION = 1
# EE warns about expiry itself; block_changes_at marks the end of the 14-day grace period (§4.4).
GRACE_PERIOD = timedelta(days=14)

# GitLab EE plans that a license can carry in restrictions.plan (§4.3).
LICENSE_PLANS = frozenset({"starter", "premium", "ultimate"})
# Our add-on kinds → the add-on names EE reads from restrictions.add_on_products (§4.3).
ADD_ON_PRODUCT_NAMES = {"duo_pro": "code_suggestions", "duo_enterprise": "duo_enterprise"}

KIND_ONLINE_CLOUD = "online_cloud"
KIND_OFFLINE_CLOUD = "offline_cloud"
KIND_LEGACY = "legacy"
KINDS = (KIND_ONLINE_CLOUD, KIND_OFFLINE_CLOUD, KIND_LEGACY)

DATE_ATTRIBUTES = (
    "issued_at",
    "expires_at",
    "notify_admins_at",
    "notify_users_at",
    "block_changes_at",
)
DATETIME_ATTRIBUTES = ("next_sync_at", "last_synced_at", "activated_at")
BOOLEAN_ATTRIBUTES = (
    "cloud_licensing_enabled",
    "offline_cloud_licensing_enabled",
    "auto_renew_enabled",
    "seat_reconciliation_enabled",
    "operational_metrics_enabled",
    "generated_from_customers_dot",
    "generated_from_cancellation",
)
LICENSEE_KEYS = ("Name", "Email", "Company")  # EE LICENSEE_ATTRIBUTES, capitalised

# Why a key was refused. The codes are stable (support pages and Seat Link log them); the
# messages are for people.
REASONS = {
    "empty_key": "The license key is empty.",
    "bad_base64": "The license key is not valid Base64 (standard alphabet, as GitLab writes it).",
    "malformed_envelope": (
        "The decoded license key is not the JSON envelope {data, key, iv} the gem writes."
    ),
    "iv_invalid": "The AES IV in the license key is not 16 bytes.",
    "ciphertext_invalid": "The encrypted license data is empty or not whole AES blocks.",
    "unknown_signing_key": (
        "None of Provision's signing keys opens this license key: it was signed with another "
        "key (GitLab Inc.'s, another Provision installation's, or a retired key that is no "
        "longer configured), or its RSA key block was altered. The two cannot be told apart."
    ),
    "rsa_padding_invalid": (
        "A signing key opens the RSA key block, but its PKCS#1 type-1 padding is malformed: "
        "the key was not made by the gem's encryptor."
    ),
    "aes_key_invalid": "The RSA key block holds something other than a 16-byte AES key.",
    "aes_padding_invalid": (
        "The license data does not decrypt to valid PKCS#7 padding: the data or key was altered."
    ),
    "integrity_check_failed": (
        "The license data or IV was altered after the key was issued (its synthetic IV does "
        "not match the data), or the key was not made by Provision."
    ),
    "attributes_not_json": "The decrypted license data is not UTF-8 JSON.",
    "version_unsupported": "The license attributes do not have version 1.",
    "attributes_invalid": "The license attributes are not a valid GitLab license.",
}


class LicenseKeyError(ValueError):
    """A license key was refused. ``reason`` is one of ``REASONS``; ``detail`` says more."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown license key error reason {reason!r}")
        self.reason = reason
        self.detail = detail
        message = REASONS[reason] + (f" ({detail})" if detail else "")
        super().__init__(message)
        self.message = message


# --- attributes ---------------------------------------------------------------------------------


def _iso_date(value: date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        raise TypeError("give a date, not a datetime")
    return value.isoformat()


def _iso_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("license datetimes must be timezone-aware")
    # Ruby's DateTime#to_s form: seconds, numeric offset (2025-01-21T12:00:11+00:00).
    return value.isoformat(timespec="seconds")


def add_on_product(
    *, quantity: int, started_on: date, expires_on: date, purchase_xid: str, trial: bool
) -> dict:
    """One entry of ``restrictions.add_on_products[<name>]`` in EE's key order (§4.3 fixture)."""
    return {
        "quantity": int(quantity),
        "started_on": _iso_date(started_on),
        "expires_on": _iso_date(expires_on),
        "purchase_xid": purchase_xid,
        "trial": bool(trial),
    }


def build_attributes(
    *,
    licensee_name: str,
    licensee_email: str,
    licensee_company: str,
    starts_on: date,
    expires_on: date,
    kind: str,
    plan: str,
    user_count: int | None,
    trial: bool = False,
    notify_admins_on: date | None = None,
    notify_users_on: date | None = None,
    block_changes_on: date | None = None,
    next_sync_at: datetime | None = None,
    last_synced_at: datetime | None = None,
    activated_at: datetime | None = None,
    auto_renew: bool = False,
    seat_reconciliation: bool = False,
    operational_metrics: bool = False,
    generated_from_cancellation: bool = False,
    license_id: int | None = None,
    subscription_id: str | None = None,
    subscription_name: str | None = None,
    previous_user_count: int | None = None,
    trueup_quantity: int | None = None,
    trueup_from: date | None = None,
    trueup_to: date | None = None,
    code_suggestions_seat_count: int | None = None,
    add_on_products: Mapping[str, list[dict]] | None = None,
) -> dict:
    """The plaintext attributes, with the gem 2.x names, key order and formats (§4.2, §4.3).

    Defaults follow EE's own test factory: admins and users are notified on the expiry date and
    changes are blocked when the 14-day grace period ends. ``kind`` sets the two cloud flags:
    online cloud = cloud only, offline cloud = cloud + offline, legacy = neither.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if plan not in LICENSE_PLANS:
        raise ValueError(f"plan must be one of {sorted(LICENSE_PLANS)}, got {plan!r}")
    if trueup_quantity is not None and (trueup_from is None or trueup_to is None):
        raise ValueError("a true-up needs its period (trueup_from, trueup_to)")
    attributes: dict[str, Any] = {
        "version": LICENSE_VERSION,
        "licensee": {"Name": licensee_name, "Email": licensee_email, "Company": licensee_company},
        "issued_at": _iso_date(starts_on),  # the gem's legacy name for starts_at
        "expires_at": _iso_date(expires_on),
        "notify_admins_at": _iso_date(notify_admins_on or expires_on),
        "notify_users_at": _iso_date(notify_users_on or expires_on),
        "block_changes_at": _iso_date(block_changes_on or expires_on + GRACE_PERIOD),
    }
    # The gem emits the sync times only when next_sync_at is set.
    if next_sync_at is not None:
        attributes["next_sync_at"] = _iso_datetime(next_sync_at)
        if last_synced_at is not None:
            attributes["last_synced_at"] = _iso_datetime(last_synced_at)
    if activated_at is not None:
        attributes["activated_at"] = _iso_datetime(activated_at)
    attributes.update(
        {
            "cloud_licensing_enabled": kind in (KIND_ONLINE_CLOUD, KIND_OFFLINE_CLOUD),
            "offline_cloud_licensing_enabled": kind == KIND_OFFLINE_CLOUD,
            "auto_renew_enabled": bool(auto_renew),
            "seat_reconciliation_enabled": bool(seat_reconciliation),
            "operational_metrics_enabled": bool(operational_metrics),
            "generated_from_customers_dot": True,
            "generated_from_cancellation": bool(generated_from_cancellation),
        }
    )
    restrictions: dict[str, Any] = {}
    if license_id is not None:
        restrictions["id"] = license_id
    restrictions["plan"] = plan
    if user_count is not None:  # absent = unlimited (§4.3)
        restrictions["active_user_count"] = int(user_count)
    if previous_user_count is not None:
        restrictions["previous_user_count"] = int(previous_user_count)
    if trueup_quantity is not None:
        restrictions["trueup_quantity"] = int(trueup_quantity)
        restrictions["trueup_from"] = _iso_date(trueup_from)
        restrictions["trueup_to"] = _iso_date(trueup_to)
    if subscription_id is not None:
        restrictions["subscription_id"] = subscription_id
    if subscription_name is not None:
        restrictions["subscription_name"] = subscription_name
    restrictions["trial"] = bool(trial)
    if code_suggestions_seat_count:
        restrictions["code_suggestions_seat_count"] = int(code_suggestions_seat_count)
    if add_on_products:
        restrictions["add_on_products"] = {
            name: list(items) for name, items in add_on_products.items()
        }
    attributes["restrictions"] = restrictions
    validate_attributes(attributes)
    return attributes


def _check_date(name: str, value: Any, problems: list[str]) -> None:
    # Date.parse on the instance turns anything unexpected into nil, silently; refuse here.
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        problems.append(f"{name} must be a YYYY-MM-DD date string")
        return
    try:
        date.fromisoformat(value)
    except ValueError:
        problems.append(f"{name} is not a calendar date")


def _check_datetime(name: str, value: Any, problems: list[str]) -> None:
    if not isinstance(value, str):
        problems.append(f"{name} must be an ISO 8601 datetime string")
        return
    try:
        datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{name} is not an ISO 8601 datetime")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def attribute_problems(attributes: Any) -> list[str]:
    """What would make GitLab EE reject or silently misread these attributes (§4.1a, §4.2)."""
    if not isinstance(attributes, dict):
        return ["the attributes must be a JSON object"]
    problems: list[str] = []
    licensee = attributes.get("licensee")
    if not isinstance(licensee, dict) or not licensee:
        problems.append("licensee must be a non-empty object")
    elif not all(isinstance(v, str) for v in licensee.values()):
        problems.append("licensee values must be strings")
    if "issued_at" not in attributes:
        problems.append("issued_at (the start date) is missing")
    for name in DATE_ATTRIBUTES:
        if name in attributes:
            _check_date(name, attributes[name], problems)
    for name in DATETIME_ATTRIBUTES:
        if name in attributes:
            _check_datetime(name, attributes[name], problems)
    for name in BOOLEAN_ATTRIBUTES:
        # "true" as a string reads as false on the instance: a cloud license turns legacy.
        if name in attributes and not isinstance(attributes[name], bool):
            problems.append(f"{name} must be a JSON boolean")
    if attributes.get("offline_cloud_licensing_enabled") is True and (
        attributes.get("cloud_licensing_enabled") is not True
    ):
        problems.append("offline_cloud_licensing_enabled requires cloud_licensing_enabled")
    if "restrictions" in attributes:
        restrictions = attributes["restrictions"]
        if not isinstance(restrictions, dict):
            problems.append("restrictions must be an object")
        else:
            for name in ("active_user_count", "previous_user_count", "trueup_quantity"):
                if name in restrictions and not (
                    _is_int(restrictions[name]) and restrictions[name] >= 0
                ):
                    problems.append(f"restrictions.{name} must be a whole number >= 0")
            for name in ("trueup_from", "trueup_to"):
                if name in restrictions:
                    _check_date(f"restrictions.{name}", restrictions[name], problems)
            if "trial" in restrictions and not isinstance(restrictions["trial"], bool):
                problems.append("restrictions.trial must be a JSON boolean")
            if "plan" in restrictions and not isinstance(restrictions["plan"], str):
                problems.append("restrictions.plan must be a string")
            products = restrictions.get("add_on_products")
            if products is not None and not (
                isinstance(products, dict)
                and all(isinstance(items, list) for items in products.values())
            ):
                problems.append("restrictions.add_on_products must map names to lists")
    return problems


def validate_attributes(attributes: Any) -> None:
    """Raise ``LicenseKeyError`` unless the attributes make a version-1 license EE accepts."""
    version = attributes.get("version") if isinstance(attributes, dict) else None
    if not (_is_int(version) and version == LICENSE_VERSION):
        raise LicenseKeyError("version_unsupported", f"version is {version!r}")
    problems = attribute_problems(attributes)
    if problems:
        raise LicenseKeyError("attributes_invalid", "; ".join(problems))


def license_kind(attributes: Mapping[str, Any]) -> str:
    """online_cloud / offline_cloud / legacy, as EE's ``License#license_type`` decides it."""
    if attributes.get("cloud_licensing_enabled") is True:
        if attributes.get("offline_cloud_licensing_enabled") is True:
            return KIND_OFFLINE_CLOUD
        return KIND_ONLINE_CLOUD
    return KIND_LEGACY


# --- Base64, Ruby style -------------------------------------------------------------------------


def ruby_base64(data: bytes) -> str:
    """``Base64.encode64``: standard alphabet, 60-character lines, each ending in ``\\n``."""
    encoded = base64.b64encode(data).decode("ascii")
    return "".join(
        encoded[i : i + BASE64_LINE_CHARS] + "\n" for i in range(0, len(encoded), BASE64_LINE_CHARS)
    )


_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = re.compile(r"[ \t\r\n]+")


def _base64_decode(text: str, what: str, *, line_breaks_only: bool = False) -> bytes:
    """Decode what the gem decodes (any line length, CRLF, missing ``=``) and nothing looser.

    Ruby's ``decode64`` skips characters outside the alphabet; we refuse them, and we refuse
    non-canonical trailing bits, so a changed character can never decode to the same bytes.
    With ``line_breaks_only`` (the values inside the envelope, which no mail client touches)
    only LF and CRLF may separate lines: a ``\\n`` escape altered into ``\\r`` or ``\\t`` is
    an alteration, even though it would decode to the same bytes.
    """
    if line_breaks_only:
        stray = re.search(r"[ \t\f\v]|\r(?!\n)", text)
        if stray:
            raise LicenseKeyError("bad_base64", f"{what} has {stray.group()!r} between lines")
    compact = _WHITESPACE.sub("", text)
    if not compact:
        raise LicenseKeyError("bad_base64", f"{what} is empty")
    if not _BASE64_TEXT.fullmatch(compact):
        bad = sorted({c for c in compact.rstrip("=") if not re.match(r"[A-Za-z0-9+/]", c)})
        raise LicenseKeyError("bad_base64", f"{what} contains {''.join(bad)[:10]!r}")
    body = compact.rstrip("=")
    if len(body) % 4 == 1 or (compact != body and len(compact) % 4):
        raise LicenseKeyError("bad_base64", f"{what} has a truncated Base64 group")
    try:
        decoded = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error as exc:
        raise LicenseKeyError("bad_base64", f"{what}: {exc}") from None
    if base64.b64encode(decoded).decode("ascii").rstrip("=") != body:
        raise LicenseKeyError("bad_base64", f"{what} has non-canonical trailing bits")
    return decoded


# The gem's Boundary module: optional "-----BEGIN <PRODUCT> LICENSE-----" framing lines.
_BOUNDARY_START = re.compile(r"(?:\A|\r?\n)-*BEGIN .+? LICENSE-*\r?\n")
_BOUNDARY_END = re.compile(r"\r?\n-*END .+? LICENSE-*(?:\r?\n|\Z)")


def remove_boundary(key: str) -> str:
    after = _BOUNDARY_START.split(key)[-1]
    return _BOUNDARY_END.split(after)[0]


def normalized_key(key: str) -> str:
    """EE's ``normalized_data``: LF line ends, trailing newlines stripped, then one ``\\n``.

    Keys Provision issues are already in this form, so a copy that went through a CRLF mail
    client still hashes to the stored ``key_sha256``.
    """
    return key.replace("\r\n", "\n").rstrip("\n") + "\n"


# --- RSA, raw -----------------------------------------------------------------------------------


def _modulus_bytes(n: int) -> int:
    return (n.bit_length() + 7) // 8


def rsa_private_encrypt(private_key: rsa.RSAPrivateKey, payload: bytes) -> bytes:
    """OpenSSL ``RSA_private_encrypt(..., RSA_PKCS1_PADDING)``: ``00 01 FF.. 00 || payload``
    raised to ``d`` mod ``n``, left-padded to the modulus length.

    cryptography 47 and later do exactly this as a PKCS#1 v1.5 "signature" without DigestInfo,
    inside OpenSSL (blinded, constant-time, ~25× faster than Python integers); older versions
    fall back to ``rsa_private_encrypt_raw``. Type-1 padding is deterministic, so both give the
    same bytes (a test holds them to it).
    """
    if _NoDigestInfo is None:
        return rsa_private_encrypt_raw(private_key, payload)
    return private_key.sign(payload, asymmetric_padding.PKCS1v15(), _NoDigestInfo())


def rsa_private_encrypt_raw(private_key: rsa.RSAPrivateKey, payload: bytes) -> bytes:
    """The same operation in Python: pad, then ``m^d mod n`` through the CRT (about four times
    faster than ``pow(m, d, n)``), checked with the public exponent before it is returned, since
    a CRT fault would otherwise leak a factor of ``n`` (the Bellcore attack). Python's ``pow``
    is not constant-time, which is why the OpenSSL path above is preferred.
    """
    numbers = private_key.private_numbers()
    public = numbers.public_numbers
    k = _modulus_bytes(public.n)
    if len(payload) > k - 3 - PKCS1_MIN_PADDING:
        raise ValueError("payload too long for the RSA key")
    encoded = b"\x00\x01" + b"\xff" * (k - 3 - len(payload)) + b"\x00" + payload
    return _rsa_private_op(numbers, encoded)


def _rsa_private_op(numbers: rsa.RSAPrivateNumbers, encoded: bytes) -> bytes:
    public = numbers.public_numbers
    k = _modulus_bytes(public.n)
    m = int.from_bytes(encoded, "big")
    if m >= public.n:
        raise ValueError("message representative out of range")
    s1 = pow(m, numbers.dmp1, numbers.p)
    s2 = pow(m, numbers.dmq1, numbers.q)
    h = (numbers.iqmp * (s1 - s2)) % numbers.p
    s = s2 + h * numbers.q
    if pow(s, public.e, public.n) != m:
        raise RuntimeError("RSA private operation failed its self-check")
    return s.to_bytes(k, "big")


class _Unopened(Exception):
    pass


class _BadPadding(Exception):
    pass


def rsa_public_decrypt(public_key: rsa.RSAPublicKey, block: bytes) -> bytes:
    """OpenSSL ``RSA_public_decrypt`` with a strict PKCS#1 type-1 check.

    Raises ``_Unopened`` when the block does not open under this key at all (wrong size, out of
    range, or no ``00 01`` header: what a block made by another key looks like), and
    ``_BadPadding`` when the header is there but the rest of the type-1 structure is not.
    """
    numbers = public_key.public_numbers()
    k = _modulus_bytes(numbers.n)
    if len(block) != k:
        raise _Unopened(f"block is {len(block)} bytes, key is {k}")
    c = int.from_bytes(block, "big")
    if c >= numbers.n:
        raise _Unopened("block is not below the modulus")
    em = pow(c, numbers.e, numbers.n).to_bytes(k, "big")
    if em[:2] != b"\x00\x01":
        raise _Unopened("no type-1 header")
    separator = em.find(b"\x00", 2)
    if separator < 0:
        raise _BadPadding("no 0x00 separator after the padding")
    padding = em[2:separator]
    if padding.strip(b"\xff"):
        raise _BadPadding("padding bytes other than 0xFF")
    if len(padding) < PKCS1_MIN_PADDING:
        raise _BadPadding(f"only {len(padding)} padding bytes")
    return em[separator + 1 :]


def public_key_fingerprint(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> str:
    """SHA-256 (hex) of the DER SubjectPublicKeyInfo: the SigningKey row's fingerprint."""
    if isinstance(key, rsa.RSAPrivateKey):
        key = key.public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def public_key_pem(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> str:
    """The PEM GitLab reads from ``.license_encryption_key.pub`` (``-----BEGIN PUBLIC KEY``)."""
    if isinstance(key, rsa.RSAPrivateKey):
        key = key.public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


# --- AES ----------------------------------------------------------------------------------------


def synthetic_iv(aes_key: bytes, plaintext: bytes) -> bytes:
    return hmac.new(aes_key, plaintext, hashlib.sha256).digest()[:AES_BLOCK_BYTES]


def _aes_encrypt(aes_key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    pad = AES_BLOCK_BYTES - len(plaintext) % AES_BLOCK_BYTES  # PKCS#7, OpenSSL's default
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    return encryptor.update(plaintext + bytes([pad]) * pad) + encryptor.finalize()


def _aes_decrypt(aes_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    pad = padded[-1]
    if not 1 <= pad <= AES_BLOCK_BYTES or padded[-pad:] != bytes([pad]) * pad:
        raise LicenseKeyError("aes_padding_invalid")
    return padded[:-pad]


# --- encode / decode ----------------------------------------------------------------------------


def attributes_json(attributes: Mapping[str, Any]) -> bytes:
    """Ruby ``JSON.dump``: compact, keys in insertion order, non-ASCII as raw UTF-8."""
    return json.dumps(attributes, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encrypt_payload(
    plaintext: bytes,
    private_key: rsa.RSAPrivateKey,
    *,
    aes_key: bytes | None = None,
    iv: bytes | None = None,
) -> str:
    """The gem's ``Encryptor#encrypt`` over raw bytes. ``aes_key``/``iv`` are for test vectors;
    left out, the key is random and the IV synthetic (see the module docstring)."""
    aes_key = secrets.token_bytes(AES_KEY_BYTES) if aes_key is None else aes_key
    if len(aes_key) != AES_KEY_BYTES:
        raise ValueError("the AES key must be 16 bytes (AES-128)")
    iv = synthetic_iv(aes_key, plaintext) if iv is None else iv
    if len(iv) != AES_BLOCK_BYTES:
        raise ValueError("the IV must be 16 bytes")
    envelope = {
        "data": ruby_base64(_aes_encrypt(aes_key, iv, plaintext)),
        "key": ruby_base64(rsa_private_encrypt(private_key, aes_key)),
        "iv": ruby_base64(iv),
    }
    return ruby_base64(json.dumps(envelope, separators=(",", ":")).encode("ascii"))


def encode_license(
    attributes: Mapping[str, Any],
    private_key: rsa.RSAPrivateKey,
    *,
    aes_key: bytes | None = None,
    iv: bytes | None = None,
) -> str:
    """The exact license key string for ``attributes`` (validated first: a key EE would
    misread is never produced)."""
    validate_attributes(dict(attributes))
    return encrypt_payload(attributes_json(attributes), private_key, aes_key=aes_key, iv=iv)


@dataclass(frozen=True)
class DecodedLicense:
    """A license key that opened and passed every check, with the key that opened it."""

    attributes: dict
    signing_key_fingerprint: str
    plaintext: bytes = field(repr=False)

    @property
    def licensee(self) -> dict:
        return self.attributes["licensee"]

    @property
    def restrictions(self) -> dict:
        return self.attributes.get("restrictions") or {}

    @property
    def starts_on(self) -> date:
        return date.fromisoformat(self.attributes["issued_at"])

    @property
    def expires_on(self) -> date | None:
        value = self.attributes.get("expires_at")
        return date.fromisoformat(value) if value else None

    @property
    def kind(self) -> str:
        return license_kind(self.attributes)

    @property
    def plan(self) -> str:
        return self.restrictions.get("plan", "starter")  # EE's default when absent

    @property
    def user_count(self) -> int | None:
        return self.restrictions.get("active_user_count")

    @property
    def trial(self) -> bool:
        return self.restrictions.get("trial") is True

    @property
    def subscription_name(self) -> str | None:
        return self.restrictions.get("subscription_name")

    @property
    def license_id(self):
        return self.restrictions.get("id")


def _envelope(key: str) -> tuple[bytes, bytes, bytes]:
    if not isinstance(key, str):
        raise LicenseKeyError("malformed_envelope", "the key must be text")
    if not key.strip():
        raise LicenseKeyError("empty_key")
    raw = _base64_decode(remove_boundary(key), "the key")
    try:
        envelope = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LicenseKeyError("malformed_envelope", "not JSON") from None
    if not isinstance(envelope, dict):
        raise LicenseKeyError("malformed_envelope", "not a JSON object")
    missing = [name for name in ("data", "key", "iv") if not isinstance(envelope.get(name), str)]
    if missing:
        raise LicenseKeyError("malformed_envelope", f"no string {', '.join(missing)}")
    ciphertext = _base64_decode(envelope["data"], "data", line_breaks_only=True)
    block = _base64_decode(envelope["key"], "key", line_breaks_only=True)
    iv = _base64_decode(envelope["iv"], "iv", line_breaks_only=True)
    if len(iv) != AES_BLOCK_BYTES:
        raise LicenseKeyError("iv_invalid", f"{len(iv)} bytes")
    if len(ciphertext) % AES_BLOCK_BYTES:
        raise LicenseKeyError("ciphertext_invalid", f"{len(ciphertext)} bytes")
    return ciphertext, block, iv


def _open_key_block(block: bytes, public_keys: Iterable[rsa.RSAPublicKey]):
    malformed = None
    for public_key in public_keys:
        try:
            return rsa_public_decrypt(public_key, block), public_key
        except _Unopened:
            continue
        except _BadPadding as exc:
            malformed = malformed or str(exc)
    if malformed:
        raise LicenseKeyError("rsa_padding_invalid", malformed)
    raise LicenseKeyError("unknown_signing_key")


def decode_license(
    key: str,
    public_keys: Iterable[rsa.RSAPublicKey],
    *,
    verify_integrity: bool = True,
) -> DecodedLicense:
    """Open a license key with the first of ``public_keys`` that fits (active, then retired).

    Every step is strict, so an altered key raises ``LicenseKeyError`` with the step that
    caught it. ``verify_integrity=False`` skips the synthetic-IV check, for keys made by the
    gem itself with one of our private keys (it picks a random IV).
    """
    public_keys = list(public_keys)
    if not public_keys:
        raise ValueError("decode_license needs at least one public key")
    ciphertext, block, iv = _envelope(key)
    aes_key, public_key = _open_key_block(block, public_keys)
    if len(aes_key) != AES_KEY_BYTES:
        raise LicenseKeyError("aes_key_invalid", f"{len(aes_key)} bytes")
    plaintext = _aes_decrypt(aes_key, iv, ciphertext)
    if verify_integrity and not hmac.compare_digest(iv, synthetic_iv(aes_key, plaintext)):
        raise LicenseKeyError("integrity_check_failed")

    def refuse_constant(name):
        raise ValueError(f"{name} is not JSON")

    try:
        attributes = json.loads(plaintext.decode("utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError):
        raise LicenseKeyError("attributes_not_json") from None
    validate_attributes(attributes)
    return DecodedLicense(
        attributes=attributes,
        signing_key_fingerprint=public_key_fingerprint(public_key),
        plaintext=plaintext,
    )


def key_sha256(key: str) -> str:
    """The hash stored beside each issued key (``License.key_sha256``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
