"""Where a write comes from: request id and source, carried in a context variable.

The middleware sets it for web requests, the Celery prerun signal for tasks and
``provision.management.base`` for commands, so services can stamp audit events without every
caller threading these values through.
"""

import uuid
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
