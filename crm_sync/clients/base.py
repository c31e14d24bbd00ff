"""What every CRM client offers the sync engine, and the errors it raises.

A client turns "upsert these records into this object, keyed by this external id field" into the
target's own calls, and answers one ``RowResult`` per record, in the order given. It never decides
what to send (the engine diffs) and never writes to the database.

Errors come in two kinds, because the engine treats them differently:

* ``TransientCrmError``: the call as a whole failed for a reason that passes (timeout, connection
  refused, 5xx, rate limit, row lock, a session that expired again right after re-authenticating).
  The engine stops the run, keeps every unsent row pending, and retries later with backoff.
* ``PermanentCrmError``: retrying cannot help until a person changes something (credentials
  refused, 403 without a rate limit, unknown object or field = a bad mapping, target not
  configured). The engine stops the run with this message.

A record the target rejects on its own (validation, duplicate, bad value) is neither: it is a
``RowResult`` with ``ok=False`` and the target's code and message; the rest of the batch goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class OutgoingRecord:
    """One record to upsert: its external id value and the target's fields (API names)."""

    key: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowResult:
    """What the target said about one record."""

    key: str
    ok: bool
    created: bool = False
    error_code: str = ""
    message: str = ""
    # True when the row failed for a passing reason (e.g. UNABLE_TO_LOCK_ROW on that row only).
    retryable: bool = False


class CrmError(Exception):
    """A failure of a whole call to a CRM, with the target's code when it gave one."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        # Results of the records the target had already answered before the failure (earlier
        # chunks of the same upsert), so the engine can record what did land.
        self.partial: list[RowResult] = []

    def __str__(self) -> str:
        prefix = f"{self.code}: " if self.code else ""
        return f"{prefix}{self.message}"


class TransientCrmError(CrmError):
    """The call failed for a reason that passes; retry later with backoff."""


class PermanentCrmError(CrmError):
    """The call cannot succeed until a person fixes configuration, credentials or mapping."""


class CrmClient(Protocol):
    """The interface the sync engine uses; one implementation per target."""

    target: str

    def upsert(
        self, *, object_name: str, external_id_field: str, records: Sequence[OutgoingRecord]
    ) -> list[RowResult]:
        """Create or update ``records`` in ``object_name`` keyed by ``external_id_field``.

        Answers one result per record in the given order. Raises ``TransientCrmError`` or
        ``PermanentCrmError`` when the call as a whole fails; rows already accepted by an
        earlier sub-call of the same upsert are still reported through ``CrmError.partial``
        (a list of ``RowResult``) when the client knows them.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
