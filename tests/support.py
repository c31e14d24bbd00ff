"""Helpers shared by the test modules and fixtures (kept out of conftest to avoid import cycles)."""

import os

import pytest

IN_CI = os.environ.get("CI") == "true"


def require_service(available: bool, reason: str):
    """Skip locally when an outside service is absent; in CI a missing service is a failure."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)
