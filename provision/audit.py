"""The one way to write an audit event. Services call ``audit_record`` inside their transaction."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction

from provision.choices import ActorKind
from provision.context import get_context, get_fix_context
from provision.models import AuditEvent, Customer


def _plain(value: Any) -> Any:
    """Make a field value JSON-friendly and readable in the timeline."""
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def diff_fields(instance: models.Model, new_values: dict[str, Any]) -> dict[str, list]:
    """``{field: [old, new]}`` for the fields whose value would change."""
    changes = {}
    for field, new in new_values.items():
        old = getattr(instance, field)
        if old != new:
            changes[field] = [_plain(old), _plain(new)]
    return changes


def require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Give a reason: it is kept in the audit trail."})
    return reason


def audit_record(
    *,
    actor,
    action: str,
    target: models.Model,
    customer: Customer | None,
    changes: dict | None = None,
    reason: str = "",
    ticket_url: str = "",
    actor_kind: str | None = None,
    metadata: dict | None = None,
) -> AuditEvent:
    """Append one audit event. Must run inside the transaction of the change it describes."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must be called inside the service's transaction")
    context = get_context()
    metadata = dict(metadata or {})
    fix = get_fix_context()
    reason_code = ""
    if fix is not None:
        # Every event of a console fix (and of what it sets off) carries its reason code and,
        # for a four-eyes fix, both people: the timeline shows who asked and who approved.
        reason_code = fix.reason_code
        metadata.setdefault("fix", fix.action)
        if fix.approved_by is not None:
            metadata.setdefault("requested_by", fix.requested_by.get_username())
            metadata.setdefault("approved_by", fix.approved_by.get_username())
            metadata.setdefault("fix_request", fix.fix_request_id)
    if actor is not None:
        actor_text = actor.get_username()
        kind = actor_kind or ActorKind.STAFF
    else:
        kind = actor_kind or ActorKind.SYSTEM
        actor_text = kind
    event = AuditEvent(
        actor=actor,
        actor_text=actor_text,
        actor_kind=kind,
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_text=str(target)[:200],
        customer=customer,
        changes={k: [_plain(v[0]), _plain(v[1])] for k, v in (changes or {}).items()},
        reason_code=reason_code,
        reason=reason,
        ticket_url=ticket_url,
        request_id=context.request_id,
        source=context.source,
        metadata=metadata,
    )
    event.full_clean(exclude=["actor", "customer"])
    event.save(force_insert=True)
    return event
