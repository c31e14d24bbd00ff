"""Helpers shared by the test modules and fixtures (kept out of conftest to avoid import cycles)."""

import os
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI") == "true"


def require_service(available: bool, reason: str):
    """Skip locally when an outside service is absent; in CI a missing service is a failure."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


@contextmanager
def four_eyes(action: str, *, requested_by, approved_by, reason_code: str = "customer_request"):
    """Run a risky service call as the console does once a lead approved the request: for
    tests of the services themselves (the approval flow has its own tests in tests/console)."""
    from provision.context import fix_context

    with fix_context(
        action=action,
        reason_code=reason_code,
        requested_by=requested_by,
        approved_by=approved_by,
    ):
        yield
