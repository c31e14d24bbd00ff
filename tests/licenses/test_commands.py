"""license_dev_key and license_public_key."""

import io
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.core.management.base import CommandError

from licenses import keyformat, signing


def run(name, *args):
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_license_dev_key_creates_a_private_2048_bit_key_once(settings, tmp_path):
    path = tmp_path / "var" / "dev-license-key.pem"
    settings.LICENSE_PRIVATE_KEY_FILE = str(path)

    out, _ = run("license_dev_key")
    assert f"Created license signing key: {path}" in out
    pem = path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert key.key_size == 2048
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keyformat.public_key_fingerprint(key) in out

    out, _ = run("license_dev_key")
    assert f"already exists: {path}" in out
    assert path.read_bytes() == pem  # never regenerated


def test_license_dev_key_refuses_in_production(settings, tmp_path):
    settings.IS_PRODUCTION = True
    settings.LICENSE_PRIVATE_KEY_FILE = str(tmp_path / "key.pem")
    with pytest.raises(CommandError, match="production"):
        run("license_dev_key")
    assert not (tmp_path / "key.pem").exists()


def test_license_dev_key_is_not_needed_when_the_pem_text_is_set(settings, tmp_path):
    settings.LICENSE_PRIVATE_KEY = signing.generate_private_key_pem().decode()
    settings.LICENSE_PRIVATE_KEY_FILE = str(tmp_path / "key.pem")
    out, _ = run("license_dev_key")
    assert "LICENSE_PRIVATE_KEY is set" in out
    assert not (tmp_path / "key.pem").exists()


def test_license_public_key_prints_the_pem_of_the_configured_key(rsa_private_key):
    out, err = run("license_public_key", "--fingerprint")
    assert out.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert out.endswith("-----END PUBLIC KEY-----\n")
    printed = serialization.load_pem_public_key(out.encode())
    assert printed.public_numbers() == rsa_private_key.public_key().public_numbers()
    assert keyformat.public_key_fingerprint(rsa_private_key) in err


def test_license_public_key_without_a_key_says_what_to_do(settings, tmp_path):
    settings.LICENSE_PRIVATE_KEY_FILE = str(tmp_path / "none.pem")
    with pytest.raises(CommandError, match="license_dev_key"):
        run("license_public_key")
