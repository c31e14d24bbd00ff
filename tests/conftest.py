"""Personas and shared fixtures.

The personas (after Healthchecks' Alice/Bob/Charlie) are the people the pages and endpoints
are tested for: a support agent, a support lead, an account manager, an admin and an outsider
(a logged-in user with no Provision role).
"""

import pytest
from django.conf import settings

from provision.choices import Role
from tests.browser import browser, console_page  # noqa: F401  (shared browser fixtures)
from tests.factories import ContactFactory, CustomerFactory, UserFactory, subscription_factory
from tests.support import IN_CI, require_service  # noqa: F401  (imported by test modules)


def pytest_collection_modifyitems(config, items):
    """Benchmarks print figures and run only when asked for (``-m benchmark``)."""
    if "benchmark" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `make bench` or `pytest -m benchmark`")
    for item in items:
        if "benchmark" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_login_lockout_between_tests(settings):
    settings.AXES_ENABLED = False


@pytest.fixture(autouse=True)
def _crm_banner_already_read():
    """The CRM failure banner on every staff page reads the runs at most once per 30 s (it is
    cached: crm_sync.context_processors). Page query-count tests measure the page, not that
    amortised read, so each test starts with it cached as "nothing failing"; the banner's own
    tests (tests/crm_sync/test_pages.py) clear it."""
    from django.core.cache import cache

    from crm_sync.context_processors import FAILING_TARGETS_CACHE_KEY

    cache.set(FAILING_TARGETS_CACHE_KEY, [], 300)
    yield
    cache.delete(FAILING_TARGETS_CACHE_KEY)


@pytest.fixture
def support_agent(db):
    return UserFactory(username="sam.support", roles=[Role.SUPPORT])


@pytest.fixture
def support_lead(db):
    return UserFactory(username="lee.lead", roles=[Role.SUPPORT_LEAD])


@pytest.fixture
def account_manager(db):
    return UserFactory(username="alex.am", roles=[Role.ACCOUNT_MANAGER])


@pytest.fixture
def admin_user(db):
    return UserFactory(username="ada.admin", roles=[Role.ADMIN])


@pytest.fixture
def outsider(db):
    return UserFactory(username="oscar.outsider", roles=[])


@pytest.fixture
def customer(db, account_manager):
    customer = CustomerFactory(
        name="Acme Robotics", email_domains=["acme.test"], account_owner=account_manager
    )
    ContactFactory(customer=customer, email="buyer@acme.test")
    return customer


@pytest.fixture
def subscription(customer):
    return subscription_factory(customer, seats=50)


@pytest.fixture
def client_for(client):
    """``client_for(user)`` returns the test client logged in as that user."""

    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def database_vendor():
    return settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
