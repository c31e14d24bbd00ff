"""Fixtures for the CRM sync tests: fake CRM servers over real HTTP on 127.0.0.1.

Each fake has its own clearly marked block below; add new blocks rather than editing others.
"""

import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.gainsight import FakeGainsight, ManualClock
from tests.fakes.salesforce import FakeSalesforce

# --- Salesforce fake (tests/fakes/salesforce.py) -------------------------------------------


@pytest.fixture(scope="session")
def _fake_salesforce_server():
    """One fake Salesforce per test session (per xdist worker); tests get it reset."""
    with FakeSalesforce() as fake:
        yield fake


@pytest.fixture
def fake_salesforce(_fake_salesforce_server):
    """The running fake Salesforce, emptied of records, requests, faults and tokens."""
    _fake_salesforce_server.reset()
    yield _fake_salesforce_server
    _fake_salesforce_server.reset()


@pytest.fixture
def salesforce_settings(settings, fake_salesforce):
    """Settings pointing the Salesforce client at the fake, with a password + token login."""
    for name, value in fake_salesforce.provision_settings().items():
        setattr(settings, name, value)
    # Pinned whatever the environment says: tests expect v59.0 paths and Bulk from 2,000 rows.
    settings.SALESFORCE_API_VERSION = "59.0"
    settings.SALESFORCE_BULK_THRESHOLD = 2000
    return settings


@pytest.fixture(scope="session")
def salesforce_jwt_private_key() -> str:
    """A fresh RSA private key (PEM) for JWT bearer logins against the fake."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture
def salesforce_jwt_settings(salesforce_settings, fake_salesforce, salesforce_jwt_private_key):
    """Settings for the JWT bearer flow; the fake verifies the signature with the public key."""
    private_key = serialization.load_pem_private_key(
        salesforce_jwt_private_key.encode(), password=None
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fake_salesforce.trust_jwt_key(public_pem)
    salesforce_settings.SALESFORCE_PASSWORD = ""
    salesforce_settings.SALESFORCE_SECURITY_TOKEN = ""
    salesforce_settings.SALESFORCE_CONSUMER_KEY = fake_salesforce.consumer_key
    salesforce_settings.SALESFORCE_PRIVATE_KEY = salesforce_jwt_private_key
    return salesforce_settings


# --- end of the Salesforce fake block --------------------------------------------------------


# --- Gainsight fake (tests/fakes/gainsight.py) -----------------------------------------------


@pytest.fixture(scope="session")
def _fake_gainsight_server():
    """One fake Gainsight per test session (per xdist worker); tests get it reset."""
    with FakeGainsight() as fake:
        yield fake


@pytest.fixture
def fake_gainsight(_fake_gainsight_server):
    """The running fake Gainsight, reset before and after the test (records, log, faults)."""
    _fake_gainsight_server.reset()
    yield _fake_gainsight_server
    _fake_gainsight_server.reset()


@pytest.fixture
def gainsight_settings(settings, fake_gainsight):
    """Settings pointing GainsightClient.from_settings() at the fake, with a fresh call budget.

    The call budget lives in the cache; a cache of its own per test keeps one test's calls from
    spending the next test's minute (without clearing a cache other code may share).
    """
    for name, value in fake_gainsight.provision_settings().items():
        setattr(settings, name, value)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"gainsight-test-{uuid.uuid4().hex}",
        }
    }
    return settings


@pytest.fixture
def gainsight_clock(fake_gainsight):
    """A manual clock shared by the fake's rate limit and a client (``clock=``, ``sleep=``)."""
    clock = ManualClock()
    fake_gainsight.clock = clock.time
    return clock


# --- end of the Gainsight fake block ---------------------------------------------------------
