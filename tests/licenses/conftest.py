"""License tests sign with one small RSA key per session (plus a second one for "another
signer"), written to a temporary file that LICENSE_PRIVATE_KEY_FILE points at."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from licenses.signing import generate_private_key_pem


def _key_file(directory, name):
    pem = generate_private_key_pem()
    path = directory / name
    path.write_bytes(pem)
    return path, serialization.load_pem_private_key(pem, password=None)


@pytest.fixture(scope="session")
def _signing_key_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("license-keys")
    return {name: _key_file(directory, f"{name}.pem") for name in ("main", "other")}


@pytest.fixture(scope="session")
def rsa_private_key(_signing_key_files) -> rsa.RSAPrivateKey:
    return _signing_key_files["main"][1]


@pytest.fixture(scope="session")
def other_rsa_private_key(_signing_key_files) -> rsa.RSAPrivateKey:
    return _signing_key_files["other"][1]


@pytest.fixture(scope="session")
def other_key_file(_signing_key_files):
    return _signing_key_files["other"][0]


@pytest.fixture(autouse=True)
def signing_key_file(settings, _signing_key_files):
    """Every test here signs with the session key unless it points the settings elsewhere."""
    path = _signing_key_files["main"][0]
    # The personas' passwords are irrelevant here; hashing them properly costs most of a second.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(path)
    return path
