"""The license signing key (loaded from settings, registered as a ``SigningKey`` row) and the
keyed hash activation codes are stored under.

The private key never touches the database. ``LICENSE_PRIVATE_KEY`` (PEM text) wins over
``LICENSE_PRIVATE_KEY_FILE`` (a path). The parsed key is cached per process, keyed on what is
configured (the text's hash, or the file's path, size and mtime), so changing the setting or
replacing the file takes effect without a restart and tests can switch keys. The row is looked
up on every call (one indexed query) rather than cached, so a cached row can never outlive the
database it came from.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from licenses.choices import SigningKeySource
from licenses.keyformat import public_key_fingerprint, public_key_pem
from licenses.models import SigningKey

MIN_KEY_BITS = 2048
DEV_KEY_FILENAME = "dev-license-key.pem"


class SigningKeyNotConfigured(ImproperlyConfigured):
    """No usable signing key: issuing licenses is impossible until the settings are fixed."""


@dataclass(frozen=True)
class LoadedKey:
    private_key: rsa.RSAPrivateKey
    fingerprint: str
    public_key_pem: str
    source: str  # SigningKeySource
    origin: str  # where it came from, for messages: "LICENSE_PRIVATE_KEY" or the file path


@dataclass(frozen=True)
class ActiveSigningKey:
    row: SigningKey
    private_key: rsa.RSAPrivateKey

    @property
    def fingerprint(self) -> str:
        return self.row.fingerprint


_cache: dict[tuple, LoadedKey] = {}
_cache_lock = threading.Lock()


def dev_key_path() -> Path:
    return Path(settings.VAR_DIR) / DEV_KEY_FILENAME


def parse_private_key(pem: bytes, *, origin: str) -> rsa.RSAPrivateKey:
    """Parse an unencrypted PEM RSA key of at least 2048 bits, or say clearly what is wrong."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # The message names the origin only: never echo key material into logs.
        raise SigningKeyNotConfigured(
            f"The license signing key from {origin} is not an unencrypted PEM private key "
            f"({exc.__class__.__name__})."
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningKeyNotConfigured(f"The license signing key from {origin} is not an RSA key.")
    if key.key_size < MIN_KEY_BITS:
        raise SigningKeyNotConfigured(
            f"The license signing key from {origin} has {key.key_size} bits; "
            f"use at least {MIN_KEY_BITS}."
        )
    return key


def _configured_source() -> tuple[tuple, str, Callable[[], bytes]]:
    """(cache key, origin, reader) for whatever the settings point at."""
    text = settings.LICENSE_PRIVATE_KEY or ""
    if text.strip():
        # A PEM squeezed into one environment line often arrives with literal "\n".
        pem = text if "\n" in text.strip() else text.replace("\\n", "\n")
        digest = hashlib.sha256(pem.encode()).hexdigest()
        return ("text", digest), "LICENSE_PRIVATE_KEY", lambda: pem.encode()
    path_setting = settings.LICENSE_PRIVATE_KEY_FILE
    if not path_setting:
        raise SigningKeyNotConfigured(
            "No license signing key is configured: set LICENSE_PRIVATE_KEY (PEM text) or "
            "LICENSE_PRIVATE_KEY_FILE (path to a PEM file) before issuing licenses."
        )
    path = Path(path_setting)
    try:
        stat = path.stat()
    except FileNotFoundError:
        hint = (
            " Run `manage.py license_dev_key` to create a development key."
            if not settings.IS_PRODUCTION
            else ""
        )
        raise SigningKeyNotConfigured(
            f"LICENSE_PRIVATE_KEY_FILE points at {path}, which does not exist.{hint}"
        ) from None
    return ("file", str(path.resolve()), stat.st_size, stat.st_mtime_ns), str(path), path.read_bytes


def configured_key() -> LoadedKey:
    """The private key the settings name, parsed once per process and configuration."""
    cache_key, origin, read = _configured_source()
    loaded = _cache.get(cache_key)
    if loaded is not None:
        return loaded
    with _cache_lock:
        loaded = _cache.get(cache_key)
        if loaded is None:
            private_key = parse_private_key(read(), origin=origin)
            is_dev_file = cache_key[0] == "file" and Path(origin).resolve() == (
                dev_key_path().resolve()
            )
            loaded = LoadedKey(
                private_key=private_key,
                fingerprint=public_key_fingerprint(private_key),
                public_key_pem=public_key_pem(private_key),
                source=SigningKeySource.GENERATED if is_dev_file else SigningKeySource.ENVIRONMENT,
                origin=origin,
            )
            _cache[cache_key] = loaded
    return loaded


def active_signing_key() -> ActiveSigningKey:
    """The configured key and its ``SigningKey`` row, registering the row on first use.

    A newly configured key (a rotation) retires the previously active row; retired rows stay so
    that keys signed with them still decode.
    """
    from licenses.services import signing_key_register

    loaded = configured_key()
    row = SigningKey.objects.filter(fingerprint=loaded.fingerprint, is_active=True).first()
    if row is None:
        row = signing_key_register(public_key_pem=loaded.public_key_pem, source=loaded.source)
    return ActiveSigningKey(row=row, private_key=loaded.private_key)


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def generate_private_key_pem(bits: int = MIN_KEY_BITS) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- activation codes ---------------------------------------------------------------------------


def _activation_code_hmac_key() -> bytes:
    configured = settings.ACTIVATION_CODE_HMAC_KEY
    if configured:
        return configured.encode("utf-8")
    # Derived, not SECRET_KEY itself: the hash of a code must not double as a use of the key
    # that signs sessions.
    return hmac.new(
        settings.SECRET_KEY.encode("utf-8"), b"provision.licenses.activation-code", hashlib.sha256
    ).digest()


def activation_code_hash(code: str) -> str:
    """The keyed hash an activation code is stored and looked up by (HMAC-SHA256, hex)."""
    return hmac.new(
        _activation_code_hmac_key(), code.strip().encode("utf-8"), hashlib.sha256
    ).hexdigest()
