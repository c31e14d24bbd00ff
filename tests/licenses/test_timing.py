"""Rough figures for the report: one raw RSA private operation and one license_issue call.
Printed, never asserted (run with ``pytest -m benchmark -s tests/licenses``)."""

import time

import pytest

from licenses import keyformat, services

pytestmark = [pytest.mark.benchmark, pytest.mark.django_db]


def _best_of(runs, func):
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return best


def test_print_rsa_private_op_and_license_issue_times(rsa_private_key, support_agent, subscription):
    payload = bytes(16)
    openssl = _best_of(50, lambda: keyformat.rsa_private_encrypt(rsa_private_key, payload))
    raw = _best_of(20, lambda: keyformat.rsa_private_encrypt_raw(rsa_private_key, payload))
    services.license_issue(actor=support_agent, subscription=subscription, reason="warm-up")
    issue = _best_of(
        10,
        lambda: services.license_issue(
            actor=support_agent, subscription=subscription, reason="timing"
        ),
    )
    print(
        f"\nRSA-2048 private encrypt, OpenSSL (sign, NoDigestInfo): {openssl * 1000:.2f} ms"
        f"\nRSA-2048 private encrypt, Python CRT + self-check: {raw * 1000:.2f} ms"
        f"\nlicense_issue (supersede, encode, audit; warm key cache): {issue * 1000:.1f} ms"
    )
