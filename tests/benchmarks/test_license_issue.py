"""How many licenses Provision issues per second, against the RSA private operation that bounds
it. Run with ``pytest -m benchmark -s tests/benchmarks/test_license_issue.py`` (PostgreSQL:
DATABASE_URL=postgres://…); size with LICENSE_BENCH_ISSUES (default 300) and
LICENSE_BENCH_KEY_BITS (default 2048).

Three figures in one run, on the same key and machine, so their ratios mean something:

* raw RSA private operations per second (``keyformat.rsa_private_encrypt``: OpenSSL, PKCS#1
  type-1 padding, the one private-key step of a license);
* ``encode_license`` alone (attributes → JSON → AES → RSA → Base64);
* ``license_issue`` end to end (lock, terms, supersede, encode, validate, save, audit, close
  the provisioning step), one license for each of N subscriptions, inside the test transaction.
"""

import os
import time

import pytest
from django.db import connection
from django.utils import timezone

from licenses import keyformat, services
from licenses.models import License
from licenses.signing import generate_private_key_pem
from provision.choices import Role
from tests.factories import ContactFactory, CustomerFactory, UserFactory, subscription_factory

ISSUES = int(os.environ.get("LICENSE_BENCH_ISSUES", "300"))
KEY_BITS = int(os.environ.get("LICENSE_BENCH_KEY_BITS", "2048"))


def _rate(count: int, func, *, rounds: int = 1) -> tuple[float, float]:
    """Calls per second over ``count`` calls (the best of ``rounds``: a shared machine only
    ever makes a round slower), and the mean milliseconds per call."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(count):
            func()
        best = min(best, time.perf_counter() - started)
    return count / best, best / count * 1000


@pytest.mark.benchmark
@pytest.mark.django_db
def test_license_issue_throughput(settings, tmp_path):
    from cryptography.hazmat.primitives import serialization

    pem = generate_private_key_pem(KEY_BITS)
    key_file = tmp_path / "bench-key.pem"
    key_file.write_bytes(pem)
    settings.LICENSE_PRIVATE_KEY = ""
    settings.LICENSE_PRIVATE_KEY_FILE = str(key_file)
    private_key = serialization.load_pem_private_key(pem, password=None)

    actor = UserFactory(username="bench.support", roles=[Role.SUPPORT])
    subscriptions = []
    for _ in range(ISSUES + 1):
        customer = CustomerFactory()
        ContactFactory(customer=customer)
        subscriptions.append(subscription_factory(customer, seats=250))
    # Warm-up: registers the signing key row and parses the key once, as a running server has.
    warm = services.license_issue(actor=actor, subscription=subscriptions.pop(), reason="warm")
    attributes = warm.attributes

    aes_key = bytes(16)
    rsa_rate, rsa_ms = _rate(
        max(ISSUES * 2, 500), lambda: keyformat.rsa_private_encrypt(private_key, aes_key), rounds=3
    )
    encode_rate, encode_ms = _rate(
        max(ISSUES * 2, 500), lambda: keyformat.encode_license(attributes, private_key), rounds=3
    )
    remaining = iter(subscriptions)
    issue_rate, issue_ms = _rate(
        ISSUES,
        lambda: services.license_issue(
            actor=actor, subscription=next(remaining), reason="Benchmark order"
        ),
    )
    assert License.objects.count() == ISSUES + 1

    vendor = connection.vendor
    print(
        f"\nLicense issuance on {vendor}, RSA-{KEY_BITS}, {ISSUES} licenses, "
        f"{timezone.now():%Y-%m-%d}:\n"
        f"  {'operation':<40} {'per second':>12} {'ms each':>9} {'vs RSA':>8}\n"
        f"  {'RSA private operation (OpenSSL)':<40} {rsa_rate:>12,.0f} {rsa_ms:>9.3f} "
        f"{1:>8.2f}\n"
        f"  {'encode_license':<40} {encode_rate:>12,.0f} {encode_ms:>9.3f} "
        f"{encode_rate / rsa_rate:>8.2f}\n"
        f"  {'license_issue (end to end)':<40} {issue_rate:>12,.0f} {issue_ms:>9.3f} "
        f"{issue_rate / rsa_rate:>8.2f}\n"
        f"  RSA share of encode_license: {rsa_ms / encode_ms:.0%}; "
        f"of license_issue: {rsa_ms / issue_ms:.0%}"
    )
