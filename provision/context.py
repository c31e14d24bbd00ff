"""Where a write comes from: request id and source, carried in a context variable.

The middleware sets it for web requests, the Celery prerun signal for tasks and
``provision.management.base`` for commands, so services can stamp audit events without every
caller threading these values through.
"""

import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class WriteContext:
    request_id: str
    source: str  # one of provision.choices.AuditSource


_context: ContextVar[WriteContext | None] = ContextVar("provision_write_context", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def set_context(*, request_id: str, source: str):
    return _context.set(WriteContext(request_id=request_id, source=source))


def reset_context(token) -> None:
    _context.reset(token)


def get_context() -> WriteContext:
    current = _context.get()
    if current is None:
        return WriteContext(request_id="", source="shell")
    return current


# --- Support fixes --------------------------------------------------------------------------
#
# A fix made through the console (provision.fixes) runs its one service call inside
# ``fix_context``: every audit event that call writes carries the fix's reason code and, for a
# four-eyes fix, who asked and who approved. Services of risky changes ask
# ``four_eyes_granted`` before they act, so no entry point (page, API, shell) can skip the
# approval.


@dataclass(frozen=True)
class FixContext:
    action: str
    reason_code: str
    requested_by: object | None = None
    approved_by: object | None = None
    fix_request_id: int | None = None


_fix_context: ContextVar[FixContext | None] = ContextVar("provision_fix_context", default=None)


@contextmanager
def fix_context(
    *,
    action: str,
    reason_code: str,
    requested_by=None,
    approved_by=None,
    fix_request_id: int | None = None,
):
    token = _fix_context.set(
        FixContext(
            action=action,
            reason_code=reason_code,
            requested_by=requested_by,
            approved_by=approved_by,
            fix_request_id=fix_request_id,
        )
    )
    try:
        yield
    finally:
        _fix_context.reset(token)


def get_fix_context() -> FixContext | None:
    return _fix_context.get()


def four_eyes_granted(*, action: str) -> bool:
    """True inside an approved fix request of ``action`` whose approver is not its requester."""
    current = _fix_context.get()
    return bool(
        current is not None
        and current.action == action
        and current.approved_by is not None
        and current.requested_by is not None
        and current.approved_by.pk != current.requested_by.pk
    )
