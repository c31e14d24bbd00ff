"""API tests authenticate as people do elsewhere (``client_for``) and as service accounts
(``token_client(role)``): a token from ``service_account_create``, as another tool would hold.
Fixes sign licenses with the licenses tests' session key."""

import pytest
from rest_framework.test import APIClient

from provision import services
from tests.licenses.conftest import _signing_key_files, signing_key_file  # noqa: F401


def token_for(username: str, role: str) -> str:
    key, _created = services.service_account_create(
        actor=None, username=username, role=role, reason="API tests"
    )
    return key


def api_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def token_client(db):
    """``token_client(role)``: an API client holding a new service account's token."""

    def make(role: str) -> APIClient:
        return api_client(token_for(f"svc-{role.replace('_', '-')}", role))

    return make
