"""Writes to customers, subscriptions, provisioning records and notes.

Every function is keyword-only, runs in one transaction, validates with ``full_clean()`` and
writes its audit event in that same transaction. Views, the API, tasks and commands call these;
they never save domain models themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from provision import permissions, selectors
from provision.audit import audit_record, diff_fields, require_reason
from provision.choices import (
    GITLAB_COM_STEPS,
    SELF_MANAGED_STEPS,
    AddOnKind,
    Channel,
    ContactRole,
    Deployment,
    FixRequestState,
    LicensingMethod,
    OrderKind,
    PartnerKind,
    Plan,
    ProvisioningStepKind,
    ReasonCode,
    StepState,
    SubscriptionStatus,
)
from provision.context import fix_context, four_eyes_granted
from provision.exceptions import ApplicationError
from provision.models import (
    Contact,
    Customer,
    FixRequest,
    Note,
    Partner,
    ProvisioningRecord,
    ProvisioningStep,
    SeatLedgerEntry,
    Subscription,
    SubscriptionAddOn,
)

CUSTOMER_EDITABLE_FIELDS = frozenset(
    {
        "name",
        "email_domains",
        "salesforce_account_id",
        "gainsight_company_id",
        "account_owner",
        "csm",
        "partner",
        "country",
    }
)
SUBSCRIPTION_EDITABLE_FIELDS = frozenset(
    {"auto_renew", "quarterly_reconciliation", "contract_overages_allowed", "licensing_method"}
)
CONTACT_EDITABLE_FIELDS = frozenset({"first_name", "last_name", "email", "phone"})


def _require_fix_permission(actor) -> None:
    # System writes (actor=None) come from tasks and commands that already decided to act.
    if actor is not None and not permissions.can_fix(actor):
        raise ApplicationError(
            "You do not have permission to change customer data.", code="forbidden"
        )


def _normalise_domains(domains: Iterable[str]) -> list[str]:
    return sorted({d.strip().lower() for d in domains if d and d.strip()})


# --- Partners ---------------------------------------------------------------------------------


@transaction.atomic
def partner_create(
    *,
    actor,
    name: str,
    email: str,
    kind: str = PartnerKind.RESELLER,
    salesforce_account_id: str = "",
    reason: str,
) -> Partner:
    _require_fix_permission(actor)
    reason = require_reason(reason)
    partner = Partner(
        name=name, email=email, kind=kind, salesforce_account_id=salesforce_account_id
    )
    partner.full_clean()
    partner.save()
    audit_record(
        actor=actor,
        action="provision.partner_created",
        target=partner,
        customer=None,
        changes={"name": [None, name], "email": [None, email]},
        reason=reason,
    )
    return partner


# --- Customers --------------------------------------------------------------------------------


@transaction.atomic
def customer_create(
    *,
    actor,
    billing_account_number: str,
    name: str,
    email_domains: Iterable[str] = (),
    salesforce_account_id: str | None = None,
    gainsight_company_id: str | None = None,
    account_owner=None,
    csm=None,
    partner: Partner | None = None,
    country: str = "",
    reason: str,
    ticket_url: str = "",
) -> Customer:
    _require_fix_permission(actor)
    reason = require_reason(reason)
    customer = Customer(
        billing_account_number=billing_account_number,
        name=name.strip(),
        email_domains=_normalise_domains(email_domains),
        salesforce_account_id=salesforce_account_id or None,
        gainsight_company_id=gainsight_company_id or None,
        account_owner=account_owner,
        csm=csm,
        partner=partner,
        country=country.upper(),
    )
    customer.full_clean()
    customer.save()
    audit_record(
        actor=actor,
        action="provision.customer_created",
        target=customer,
        customer=customer,
        changes={"billing_account_number": [None, billing_account_number], "name": [None, name]},
        reason=reason,
        ticket_url=ticket_url,
    )
    return customer


@transaction.atomic
def customer_update(
    *, actor, customer: Customer, data: dict, reason: str, ticket_url: str = ""
) -> Customer:
    """Change the editable fields in ``data``; a call that changes nothing writes nothing."""
    _require_fix_permission(actor)
    reason = require_reason(reason)
    unknown = set(data) - CUSTOMER_EDITABLE_FIELDS
    if unknown:
        raise ValidationError(f"These customer fields cannot be changed here: {sorted(unknown)}")
    data = dict(data)
    if "email_domains" in data:
        data["email_domains"] = _normalise_domains(data["email_domains"])
    for key in ("salesforce_account_id", "gainsight_company_id"):
        if key in data and not data[key]:
            data[key] = None
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    changes = diff_fields(customer, data)
    if not changes:
        return customer
    for field, value in data.items():
        setattr(customer, field, value)
    customer.full_clean()
    customer.save()
    audit_record(
        actor=actor,
        action="provision.customer_updated",
        target=customer,
        customer=customer,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
    )
    _crm_changed(customer.pk)
    return customer


# --- Contacts ---------------------------------------------------------------------------------


def _crm_changed(*customer_ids: int) -> None:
    """The CRMs carry these customers' subscriptions and licenses: queue their push (sent after
    the commit, debounced; crm_sync.services.crm_sync_request_push)."""
    from crm_sync.services import crm_sync_request_push

    crm_sync_request_push(customer_ids=customer_ids)


@transaction.atomic
def contact_create(
    *,
    actor,
    customer: Customer,
    role: str,
    first_name: str,
    last_name: str,
    email: str,
    phone: str = "",
    reason: str,
    ticket_url: str = "",
) -> Contact:
    _require_fix_permission(actor)
    reason = require_reason(reason)
    if role == ContactRole.SOLD_TO and customer.contacts.filter(role=ContactRole.SOLD_TO).exists():
        raise ApplicationError(
            "This customer already has a sold-to contact; change that contact instead.",
            code="sold_to_exists",
        )
    contact = Contact(
        customer=customer,
        role=role,
        first_name=first_name,
        last_name=last_name,
        email=email.lower(),
        phone=phone,
    )
    contact.full_clean()
    contact.save()
    audit_record(
        actor=actor,
        action="provision.contact_created",
        target=contact,
        customer=customer,
        changes={"role": [None, role], "email": [None, contact.email]},
        reason=reason,
        ticket_url=ticket_url,
    )
    return contact


@transaction.atomic
def contact_update(
    *, actor, contact: Contact, data: dict, reason: str, ticket_url: str = ""
) -> Contact:
    _require_fix_permission(actor)
    reason = require_reason(reason)
    unknown = set(data) - CONTACT_EDITABLE_FIELDS
    if unknown:
        raise ValidationError(f"These contact fields cannot be changed here: {sorted(unknown)}")
    data = dict(data)
    if "email" in data:
        data["email"] = data["email"].lower()
    contact = Contact.objects.select_for_update().get(pk=contact.pk)
    changes = diff_fields(contact, data)
    if not changes:
        return contact
    for field, value in data.items():
        setattr(contact, field, value)
    contact.full_clean()
    contact.save()
    audit_record(
        actor=actor,
        action="provision.contact_updated",
        target=contact,
        customer=contact.customer,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
    )
    return contact


# --- Subscriptions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AddOnSpec:
    kind: str
    quantity: int
    starts_on: date | None = None
    ends_on: date | None = None


def _status_for_term(term_start: date, term_end: date, today: date) -> str:
    if term_end <= today:
        return SubscriptionStatus.EXPIRED
    if term_start > today:
        return SubscriptionStatus.PENDING
    return SubscriptionStatus.ACTIVE


@transaction.atomic
def subscription_create(
    *,
    actor,
    customer: Customer,
    name: str,
    plan: str,
    deployment: str,
    term_start: date,
    term_end: date,
    seats: int,
    channel: str = Channel.SALES_ASSISTED,
    partner: Partner | None = None,
    licensing_method: str | None = None,
    auto_renew: bool = True,
    quarterly_reconciliation: bool = True,
    contract_overages_allowed: bool = True,
    renews: Subscription | None = None,
    add_ons: Iterable[AddOnSpec] = (),
    order_reference: str | None = None,
    reason: str,
    ticket_url: str = "",
    today: date | None = None,
) -> Subscription:
    """Record a sold subscription and open its provisioning record.

    Self-managed subscriptions default to online cloud licensing; legacy needs an explicit choice.
    """
    _require_fix_permission(actor)
    reason = require_reason(reason)
    today = today or timezone.localdate()
    if deployment == Deployment.SELF_MANAGED:
        licensing_method = licensing_method or LicensingMethod.ONLINE_CLOUD
    else:
        licensing_method = ""
    subscription = Subscription(
        name=name,
        customer=customer,
        plan=plan,
        deployment=deployment,
        status=_status_for_term(term_start, term_end, today),
        term_start=term_start,
        term_end=term_end,
        seats=seats,
        channel=channel,
        partner=partner,
        licensing_method=licensing_method,
        auto_renew=auto_renew,
        quarterly_reconciliation=quarterly_reconciliation
        and plan not in (Plan.PREMIUM_TRIAL, Plan.ULTIMATE_TRIAL),
        contract_overages_allowed=contract_overages_allowed,
        renews=renews,
    )
    subscription.full_clean()
    subscription.save()
    for spec in add_ons:
        add_on = SubscriptionAddOn(
            subscription=subscription,
            kind=AddOnKind(spec.kind),
            quantity=spec.quantity,
            starts_on=spec.starts_on or term_start,
            ends_on=spec.ends_on or term_end,
        )
        add_on.full_clean()
        add_on.save()
    event = audit_record(
        actor=actor,
        action="provision.subscription_created",
        target=subscription,
        customer=customer,
        changes={
            "plan": [None, plan],
            "deployment": [None, deployment],
            "seats": [None, seats],
            "term": [None, f"{term_start.isoformat()} → {term_end.isoformat()}"],
        },
        reason=reason,
        ticket_url=ticket_url,
        metadata={"add_ons": [[a.kind, a.quantity] for a in add_ons]},
    )
    SeatLedgerEntry.objects.create(subscription=subscription, seats=seats, audit_event=event)
    provisioning_record_open(
        subscription=subscription,
        order_reference=order_reference or f"ORD-{subscription.name}",
        kind=OrderKind.RENEWAL if renews else OrderKind.NEW,
    )
    _crm_changed(customer.pk)
    return subscription


@transaction.atomic
def subscription_update(
    *, actor, subscription: Subscription, data: dict, reason: str, ticket_url: str = ""
) -> Subscription:
    _require_fix_permission(actor)
    reason = require_reason(reason)
    unknown = set(data) - SUBSCRIPTION_EDITABLE_FIELDS
    if unknown:
        raise ValidationError(
            f"These subscription fields cannot be changed here: {sorted(unknown)}"
        )
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    changes = diff_fields(subscription, data)
    if not changes:
        return subscription
    for field, value in data.items():
        setattr(subscription, field, value)
    subscription.full_clean()
    subscription.save()
    audit_record(
        actor=actor,
        action="provision.subscription_updated",
        target=subscription,
        customer=subscription.customer,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
    )
    _crm_changed(subscription.customer_id)
    return subscription


# Four-eyes (issue 6): a seat increase above this share needs a second person's approval.
SEAT_INCREASE_APPROVAL_PERCENT = 20


def seats_increase_needs_approval(*, old_seats: int, seats: int) -> bool:
    """More than 20% above the current seats (any increase from 0)."""
    return seats > old_seats and seats * 100 > old_seats * (100 + SEAT_INCREASE_APPROVAL_PERCENT)


@transaction.atomic
def subscription_seats_change(
    *, actor, subscription: Subscription, seats: int, reason: str, ticket_url: str = ""
) -> Subscription:
    """Change the seat count. Going below the users the customer already had this term waives
    a true-up, so only a support lead may do it (support-workflows §2, "Reset max seats")."""
    _require_fix_permission(actor)
    reason = require_reason(reason)
    if seats < 0:
        raise ValidationError({"seats": "Seats cannot be negative."})
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    if subscription.status in (SubscriptionStatus.EXPIRED, SubscriptionStatus.CANCELLED):
        raise ApplicationError(
            f"{subscription.name} is {subscription.get_status_display().lower()}; "
            "seats can only change on a pending or active subscription.",
            code="subscription_closed",
        )
    old_seats = subscription.seats
    if seats == old_seats:
        raise ApplicationError(f"{subscription.name} already has {seats} seats.", code="no_change")
    if (
        actor is not None
        and seats_increase_needs_approval(old_seats=old_seats, seats=seats)
        and not four_eyes_granted(action="seats_change")
    ):
        raise ApplicationError(
            f"Raising {subscription.name} from {old_seats} to {seats} seats is an increase of "
            f"more than {SEAT_INCREASE_APPROVAL_PERCENT}%; it needs a support lead's approval.",
            code="needs_approval",
        )
    peak = selectors.subscription_peak_usage(subscription=subscription)
    if seats < peak and actor is not None and not permissions.can_approve(actor):
        raise ApplicationError(
            f"{seats} seats is below the {peak} users already in use this term; that waives a "
            "true-up and needs a support lead.",
            code="needs_approval",
            extra={"peak_usage": peak},
        )
    subscription.seats = seats
    subscription.full_clean()
    subscription.save(update_fields=["seats", "updated_at"])
    event = audit_record(
        actor=actor,
        action="provision.subscription_seats_changed",
        target=subscription,
        customer=subscription.customer,
        changes={"seats": [old_seats, seats]},
        reason=reason,
        ticket_url=ticket_url,
        metadata={"peak_usage": peak},
    )
    SeatLedgerEntry.objects.create(
        subscription=subscription, seats=seats, previous_seats=old_seats, audit_event=event
    )
    _reissue_current_licenses(
        actor=actor,
        subscription=subscription,
        reason=f"Seats changed from {old_seats} to {seats}: {reason}",
        ticket_url=ticket_url,
    )
    return subscription


def _reissue_current_licenses(*, actor, subscription: Subscription, reason: str, ticket_url: str):
    """A license states seats and add-ons, so a change to either needs a new key.

    Each current license is re-issued with the same kind; ``license_issue`` supersedes the old
    one in this same transaction. Instances with online cloud licensing pick the new key up at
    their next Seat Link; offline and legacy customers need the new file delivered.
    """
    from licenses.selectors import license_current
    from licenses.services import license_issue

    today = timezone.localdate()
    # A next-year license of a multi-year subscription (starting later) is left alone: it is
    # issued from the seats of its own year.
    kinds = {
        current.kind for current in license_current(subscription) if current.starts_on <= today
    }
    for kind in sorted(kinds):
        license_issue(
            actor=actor, subscription=subscription, kind=kind, reason=reason, ticket_url=ticket_url
        )


@transaction.atomic
def subscription_add_on_set(
    *,
    actor,
    subscription: Subscription,
    kind: str,
    quantity: int,
    reason: str,
    ticket_url: str = "",
    today: date | None = None,
) -> SubscriptionAddOn:
    """Set the quantity of an add-on for the rest of the term (0 ends it today).

    The current add-on period is closed today and a new one opens, so the history of
    quantities is kept (append, never overwrite); current licenses are re-issued.
    """
    _require_fix_permission(actor)
    reason = require_reason(reason)
    if kind not in AddOnKind.values:
        raise ValidationError({"kind": f"Choose one of {', '.join(AddOnKind.values)}."})
    if quantity < 0:
        raise ValidationError({"quantity": "The quantity cannot be negative."})
    today = today or timezone.localdate()
    subscription = (
        Subscription.objects.select_for_update().select_related("customer").get(pk=subscription.pk)
    )
    if subscription.status in (SubscriptionStatus.EXPIRED, SubscriptionStatus.CANCELLED):
        raise ApplicationError(
            f"{subscription.name} is {subscription.get_status_display().lower()}; "
            "add-ons can only change on a pending or active subscription.",
            code="subscription_closed",
        )
    start = max(today, subscription.term_start)
    current = (
        subscription.add_ons.filter(kind=kind, starts_on__lte=start, ends_on__gt=start)
        .order_by("-starts_on")
        .first()
    )
    old_quantity = current.quantity if current else 0
    if quantity == old_quantity:
        raise ApplicationError(
            f"{subscription.name} already has {quantity} × {AddOnKind(kind).label}.",
            code="no_change",
        )
    if current is not None:
        if current.starts_on == start:
            current.delete()
        else:
            current.ends_on = start
            current.full_clean()
            current.save(update_fields=["ends_on", "updated_at"])
    add_on = None
    if quantity > 0:
        add_on = SubscriptionAddOn(
            subscription=subscription,
            kind=kind,
            quantity=quantity,
            starts_on=start,
            ends_on=subscription.term_end,
        )
        add_on.full_clean()
        add_on.save()
    audit_record(
        actor=actor,
        action="provision.subscription_add_on_changed",
        target=subscription,
        customer=subscription.customer,
        changes={kind: [old_quantity, quantity]},
        reason=reason,
        ticket_url=ticket_url,
        metadata={"effective": start.isoformat()},
    )
    _reissue_current_licenses(
        actor=actor,
        subscription=subscription,
        reason=f"{AddOnKind(kind).label} changed from {old_quantity} to {quantity}: {reason}",
        ticket_url=ticket_url,
    )
    return add_on


def subscriptions_expire(*, today: date | None = None) -> dict[str, int]:
    """Move subscriptions whose term has started or ended to their new status (system action).

    Each transition is a conditional update on the old status, so two overlapping runs cannot
    both audit the same change.
    """
    today = today or timezone.localdate()
    counts = {"activated": 0, "expired": 0}
    transitions = (
        (
            "expired",
            SubscriptionStatus.ACTIVE,
            SubscriptionStatus.EXPIRED,
            {"term_end__lte": today},
        ),
        (
            "expired",
            SubscriptionStatus.PENDING,
            SubscriptionStatus.EXPIRED,
            {"term_end__lte": today},
        ),
        (
            "activated",
            SubscriptionStatus.PENDING,
            SubscriptionStatus.ACTIVE,
            {"term_start__lte": today, "term_end__gt": today},
        ),
    )
    for label, old, new, condition in transitions:
        ids = list(
            Subscription.objects.filter(status=old, **condition).values_list("pk", flat=True)
        )
        for pk in ids:
            with transaction.atomic():
                updated = Subscription.objects.filter(pk=pk, status=old).update(
                    status=new, updated_at=timezone.now()
                )
                if updated != 1:
                    continue
                subscription = Subscription.objects.select_related("customer").get(pk=pk)
                audit_record(
                    actor=None,
                    action=f"provision.subscription_{label}",
                    target=subscription,
                    customer=subscription.customer,
                    changes={"status": [old, new]},
                    reason=f"Term {'ended' if new == SubscriptionStatus.EXPIRED else 'started'}",
                )
                _crm_changed(subscription.customer_id)
                counts[label] += 1
    return counts


# --- Provisioning records ---------------------------------------------------------------------


def provisioning_record_open(
    *, subscription: Subscription, order_reference: str, kind: str = OrderKind.NEW
) -> ProvisioningRecord:
    """Open the record of an order with all its steps; the first step is already done.

    Called from ``subscription_create`` inside its transaction, whose audit event covers it.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("provisioning_record_open must run inside a service transaction")
    record = ProvisioningRecord(
        subscription=subscription, order_reference=order_reference, kind=kind
    )
    record.full_clean()
    record.save()
    kinds = SELF_MANAGED_STEPS if subscription.is_self_managed else GITLAB_COM_STEPS
    now = timezone.now()
    steps = [
        ProvisioningStep(
            record=record,
            kind=step_kind,
            position=position,
            state=StepState.DONE
            if step_kind == ProvisioningStepKind.SUBSCRIPTION_CREATED
            else StepState.PENDING,
            completed_at=now if step_kind == ProvisioningStepKind.SUBSCRIPTION_CREATED else None,
            due_at=now,
        )
        for position, step_kind in enumerate(kinds)
    ]
    _schedule_open_steps([step for step in steps if step.state == StepState.PENDING], start=now)
    ProvisioningStep.objects.bulk_create(steps)
    return record


def _schedule_open_steps(steps: list[ProvisioningStep], *, start) -> None:
    """Set the due dates of a record's open steps, in position order, from ``start``.

    Each step's SLA (``PROVISIONING_STEP_SLA_HOURS_BY_STEP``) runs from when the step before it
    completes, so a waiting step is due the sum of its own and the earlier open steps' SLAs
    after ``start``; when a step completes, the steps after it are scheduled again from then.
    """
    for step in sorted(steps, key=lambda s: s.position):
        step.due_at = ProvisioningStep.default_due_at(step.kind, start=start)
        start = step.due_at


@transaction.atomic
def provisioning_step_set_state(
    *,
    actor,
    step: ProvisioningStep,
    state: str,
    error: str = "",
    reason: str,
    actor_kind: str | None = None,
) -> ProvisioningStep:
    """Mark a step done, failed or skipped. The record completes when no step is left open."""
    reason = require_reason(reason)
    if state not in StepState.values or state == StepState.PENDING and not error:
        raise ValidationError({"state": "Choose done, failed or skipped."})
    step = (
        ProvisioningStep.objects.select_for_update()
        .select_related("record__subscription__customer")
        .get(pk=step.pk)
    )
    old_state = step.state
    if old_state == state and not error:
        return step
    step.state = state
    step.last_error = error if state == StepState.FAILED else ""
    step.completed_at = timezone.now() if state in (StepState.DONE, StepState.SKIPPED) else None
    step.attempts += 1 if state == StepState.FAILED else 0
    step.full_clean()
    step.save()
    record = step.record
    if step.completed_at is not None:
        # The next steps' SLAs start now (a delivery's clock starts when the license is issued).
        later = list(record.steps.filter(position__gt=step.position, state=StepState.PENDING))
        _schedule_open_steps(later, start=step.completed_at)
        ProvisioningStep.objects.bulk_update(later, ["due_at"])
    if not record.steps.exclude(state__in=[StepState.DONE, StepState.SKIPPED]).exists():
        record.completed_at = timezone.now()
        record.save(update_fields=["completed_at", "updated_at"])
    audit_record(
        actor=actor,
        actor_kind=actor_kind,
        action="provision.provisioning_step_changed",
        target=record,
        customer=record.subscription.customer,
        changes={step.kind: [old_state, state]},
        reason=reason,
        metadata={"error": error} if error else {},
    )
    return step


def provisioning_steps_complete(
    *, actor, subscription_id: int, kind: str, reason: str, actor_kind: str | None = None
) -> int:
    """Mark the subscription's open (pending or failed) steps of ``kind`` done, each audited.

    The one way licensing, delivery, activation, namespaces and usage close their step of an
    order; cheap when nothing is open (one indexed query).
    """
    steps = list(
        ProvisioningStep.objects.filter(
            record__subscription_id=subscription_id,
            kind=kind,
            state__in=[StepState.PENDING, StepState.FAILED],
        )
    )
    for step in steps:
        provisioning_step_set_state(
            actor=actor, actor_kind=actor_kind, step=step, state=StepState.DONE, reason=reason
        )
    return len(steps)


# --- Notes ------------------------------------------------------------------------------------


@transaction.atomic
def note_add(*, actor, customer: Customer, body: str, target=None) -> Note:
    """A human note on the customer or one of its objects. Every staff role may add notes."""
    if not permissions.CustomerPolicy.can_add_note(actor, customer):
        raise ApplicationError("You do not have permission to add notes.", code="forbidden")
    body = (body or "").strip()
    if not body:
        raise ValidationError({"body": "A note cannot be empty."})
    target = target or customer
    note = Note(
        customer=customer,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        author=actor,
        author_text=actor.get_username(),
        body=body,
    )
    note.full_clean()
    note.save()
    audit_record(
        actor=actor,
        action="provision.note_added",
        target=note,
        customer=customer,
        reason=body[:500],
        metadata={"on": f"{note.target_type}:{note.target_id}"},
    )
    return note


# --- Support fixes: retry and close provisioning steps ------------------------------------------

RETRYABLE_STEPS = frozenset(
    {
        ProvisioningStepKind.LICENSE_ISSUED,
        ProvisioningStepKind.DELIVERED,
        ProvisioningStepKind.ACTIVATED,
    }
)


@dataclass(frozen=True)
class StepRetryPlan:
    """What retrying a step would do, for its preview and for the retry itself."""

    action: str  # "issue_license" | "send_license" | "send_code"
    due_at: object
    license_id: int | None = None
    licenses_issued: tuple[str, ...] = ()
    licenses_superseded: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def provisioning_step_retry_plan(*, step: ProvisioningStep) -> StepRetryPlan:
    """Decide what a retry of ``step`` does; refuses (ApplicationError) when nothing can be
    resent. Reads only: the preview and ``provisioning_step_retry`` share it."""
    from licenses.choices import LicenseKind
    from licenses.selectors import delivery_recipient, license_current

    if step.kind not in RETRYABLE_STEPS:
        raise ApplicationError(
            f"{step.get_kind_display()} waits on the customer; there is nothing to resend.",
            code="not_retryable",
        )
    subscription = step.record.subscription
    due_at = ProvisioningStep.default_due_at(kind=step.kind)
    cloud = subscription.licensing_method == LicensingMethod.ONLINE_CLOUD
    if step.kind == ProvisioningStepKind.LICENSE_ISSUED:
        current = license_current(subscription).defer("key", "attributes").first()
        return StepRetryPlan(
            action="issue_license",
            due_at=due_at,
            licenses_issued=(
                f"A new {LicenseKind(subscription.licensing_method).label.lower()} for "
                f"{subscription.seats} users",
            ),
            licenses_superseded=(
                (f"License #{current.pk} becomes superseded",) if current is not None else ()
            ),
        )
    if cloud:
        _method, email, _who = delivery_recipient(subscription)
        if not email:
            raise ApplicationError(
                f"{subscription.customer.name} has no sold-to contact to send the code to.",
                code="no_sold_to_contact",
            )
        return StepRetryPlan(
            action="send_code",
            due_at=due_at,
            emails=(f"A new activation code to {email}",),
            notes=("The previous activation code stops working.",),
        )
    current = (
        license_current(subscription)
        .filter(kind__in=[LicenseKind.OFFLINE_CLOUD, LicenseKind.LEGACY])
        .defer("key", "attributes")
        .first()
    )
    if current is None:
        raise ApplicationError(
            f"{subscription.name} has no current license file to send: retry the license step "
            "first.",
            code="no_license",
        )
    return StepRetryPlan(
        action="send_license",
        due_at=due_at,
        license_id=current.pk,
        emails=(f"License #{current.pk}'s file to {current.licensee_email}",),
    )


@transaction.atomic
def provisioning_step_retry(
    *, actor, step: ProvisioningStep, reason: str, ticket_url: str = ""
) -> str:
    """Run a pending or failed step's action again (issue the license, send the file or a new
    activation code) and restart its SLA clock. Returns what was done, for the agent."""
    from licenses.models import License
    from licenses.services import activation_code_send, license_issue, license_send

    _require_fix_permission(actor)
    reason = require_reason(reason)
    step = (
        ProvisioningStep.objects.select_for_update(of=("self",))
        .select_related("record__subscription__customer")
        .get(pk=step.pk)
    )
    if step.state not in (StepState.PENDING, StepState.FAILED):
        raise ApplicationError(
            f"{step.get_kind_display()} is already {step.get_state_display().lower()}.",
            code="no_change",
        )
    plan = provisioning_step_retry_plan(step=step)
    record = step.record
    subscription = record.subscription
    changes = {
        step.kind: [step.state, StepState.PENDING],
        "attempts": [step.attempts, step.attempts + 1],
        "due_at": [step.due_at, plan.due_at],
    }
    step.state = StepState.PENDING
    step.attempts += 1
    step.due_at = plan.due_at
    step.last_error = ""
    step.save(update_fields=["state", "attempts", "due_at", "last_error", "updated_at"])
    # The steps waiting behind it start their SLAs after the retried step's new due date.
    later = list(record.steps.filter(position__gt=step.position, state=StepState.PENDING))
    _schedule_open_steps(later, start=step.due_at)
    ProvisioningStep.objects.bulk_update(later, ["due_at"])
    audit_record(
        actor=actor,
        action="provision.provisioning_step_retried",
        target=record,
        customer=subscription.customer,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
        metadata={"step": step.kind, "retry": plan.action},
    )
    retry_reason = f"Retry of {step.get_kind_display().lower()}: {reason}"
    if plan.action == "issue_license":
        license = license_issue(
            actor=actor, subscription=subscription, reason=retry_reason, ticket_url=ticket_url
        )
        return f"License {license.pk} issued for {subscription.name}."
    if plan.action == "send_code":
        activation_code, _code, delivery = activation_code_send(
            actor=actor, subscription=subscription, reason=retry_reason, ticket_url=ticket_url
        )
        return (
            f"New activation code …{activation_code.code_hint} queued for "
            f"{delivery.recipient_email}."
        )
    license = License.objects.get(pk=plan.license_id)
    delivery = license_send(
        actor=actor, license=license, reason=retry_reason, ticket_url=ticket_url
    )
    return f"License #{license.pk}'s file queued for {delivery.recipient_email}."


@transaction.atomic
def provisioning_step_mark_done(
    *, actor, step: ProvisioningStep, evidence: str, reason: str, ticket_url: str = ""
) -> ProvisioningStep:
    """Close a step done outside Provision, keeping the evidence that it is done."""
    _require_fix_permission(actor)
    reason = require_reason(reason)
    evidence = (evidence or "").strip()
    if not evidence:
        raise ValidationError({"evidence": "Say what shows the step is done."})
    step = (
        ProvisioningStep.objects.select_for_update(of=("self",))
        .select_related("record__subscription__customer")
        .get(pk=step.pk)
    )
    if step.state not in (StepState.PENDING, StepState.FAILED):
        raise ApplicationError(
            f"{step.get_kind_display()} is already {step.get_state_display().lower()}.",
            code="no_change",
        )
    old_state = step.state
    now = timezone.now()
    step.state = StepState.DONE
    step.completed_at = now
    step.last_error = ""
    step.full_clean()
    step.save(update_fields=["state", "completed_at", "last_error", "updated_at"])
    record = step.record
    completed = not record.steps.exclude(state__in=[StepState.DONE, StepState.SKIPPED]).exists()
    if completed:
        record.completed_at = now
        record.save(update_fields=["completed_at", "updated_at"])
    audit_record(
        actor=actor,
        action="provision.provisioning_step_marked_done",
        target=record,
        customer=record.subscription.customer,
        changes={step.kind: [old_state, StepState.DONE]},
        reason=reason,
        ticket_url=ticket_url,
        metadata={"evidence": evidence, "record_completed": completed},
    )
    return step


# --- Support fixes: submit, and the four-eyes requests -------------------------------------------


class FixConflict(ApplicationError):
    """The target changed since the agent's preview; ``preview`` is what the fix would do now."""

    def __init__(self, message: str, *, preview):
        super().__init__(message, code="conflict")
        self.preview = preview


@dataclass
class FixOutcome:
    """A submitted fix either ran (``result``) or waits for approval (``request``)."""

    result: object | None = None
    request: FixRequest | None = None


def _fix_checked(*, fix, target, params: dict, seen_digest: str):
    """The fix's preview of ``target`` now; refuses when the fix does not apply or when the
    agent confirmed a different preview (somebody changed the target meanwhile)."""
    unavailable = fix.unavailable(target)
    if unavailable:
        raise ApplicationError(unavailable, code="not_applicable")
    preview = fix.preview(target, params)
    if seen_digest and preview.digest() != seen_digest:
        raise FixConflict(
            "Somebody changed this while you were looking: nothing was done. Check the new "
            "preview and confirm again.",
            preview=preview,
        )
    return preview


@transaction.atomic
def fix_submit(
    *,
    actor,
    action: str,
    target_pk: int,
    params: dict,
    reason_code: str,
    reason: str,
    ticket_url: str = "",
    seen_digest: str = "",
) -> FixOutcome:
    """Run one support fix, or file it for a second person's approval when a four-eyes rule
    applies. The target is locked, its preview recomputed and compared with ``seen_digest``
    (the preview the agent confirmed) before anything changes; one service call follows, inside
    ``fix_context`` so its audit events carry the reason code."""
    from provision.fixes import fix_get

    fix = fix_get(action)
    if not fix.allowed(actor):
        raise ApplicationError("You do not have permission to make this fix.", code="forbidden")
    reason = require_reason(reason)
    if reason_code not in ReasonCode.values:
        raise ValidationError({"reason_code": "Choose a reason from the list."})
    target = fix.lock(target_pk)
    preview = _fix_checked(fix=fix, target=target, params=params, seen_digest=seen_digest)
    rule = fix.approval_rule(target, params, actor)
    if rule:
        if fix.key == "namespace_force_associate" and not (ticket_url or "").strip():
            raise ValidationError({"ticket_url": "Force associate needs the ticket link."})
        waiting = FixRequest.objects.filter(
            action=fix.key,
            target_type=target._meta.label_lower,
            target_id=str(target.pk),
            state=FixRequestState.PENDING,
        ).first()
        if waiting is not None:
            raise ApplicationError(
                f"Request #{waiting.pk} for this is already waiting for a lead's approval; "
                "withdraw it first to ask again.",
                code="already_requested",
                extra={"fix_request": waiting.pk},
            )
        customer = fix.customer_of(target, params)
        request = FixRequest(
            action=fix.key,
            target_type=target._meta.label_lower,
            target_id=str(target.pk),
            target_text=fix.describe(target)[:200],
            customer=customer,
            params=params,
            preview=preview.as_dict(),
            preview_digest=preview.digest(),
            why_approval=rule[:300],
            reason_code=reason_code,
            reason=reason,
            ticket_url=ticket_url,
            requested_by=actor,
        )
        request.full_clean()
        request.save()
        with fix_context(action=fix.key, reason_code=reason_code):
            audit_record(
                actor=actor,
                action="provision.fix_requested",
                target=request,
                customer=customer,
                changes={"state": [None, FixRequestState.PENDING]},
                reason=reason,
                ticket_url=ticket_url,
                metadata={"why_approval": rule, "target": f"{request.target_type}:{target.pk}"},
            )
        return FixOutcome(request=request)
    with fix_context(action=fix.key, reason_code=reason_code, requested_by=actor):
        result = fix.apply(
            actor=actor, target=target, params=params, reason=reason, ticket_url=ticket_url
        )
    return FixOutcome(result=result)


def _fix_request_locked(fix_request: FixRequest) -> FixRequest:
    request = (
        FixRequest.objects.select_for_update(of=("self",))
        .select_related("requested_by", "customer")
        .get(pk=fix_request.pk)
    )
    if request.state != FixRequestState.PENDING:
        raise ApplicationError(
            f"Request #{request.pk} is already {request.get_state_display().lower()}.",
            code="not_pending",
        )
    return request


def _fix_request_decide(*, request: FixRequest, actor, state: str, note: str, outcome: str):
    request.state = state
    request.decided_by = actor
    request.decided_at = timezone.now()
    request.decision_note = note
    request.outcome = outcome
    request.full_clean()
    request.save()


@transaction.atomic
def fix_request_approve(*, actor, fix_request: FixRequest, note: str = ""):
    """A second person approves a four-eyes fix: it runs now, as the approver, in this
    transaction; its audit events name requester and approver. Refused to the requester
    themself and when the target changed since the request (the preview no longer matches)."""
    from provision.fixes import fix_get

    if not permissions.can_approve(actor):
        raise ApplicationError("Only a support lead can approve fixes.", code="forbidden")
    request = _fix_request_locked(fix_request)
    if request.requested_by_id == actor.pk:
        raise ApplicationError(
            "You asked for this fix: another support lead must approve it.", code="four_eyes"
        )
    fix = fix_get(request.action)
    try:
        target = fix.lock(request.target_id)
    except fix.model.DoesNotExist as error:
        raise ApplicationError(
            f"{request.target_text} no longer exists; reject the request.", code="gone"
        ) from error
    _fix_checked(fix=fix, target=target, params=request.params, seen_digest=request.preview_digest)
    with fix_context(
        action=fix.key,
        reason_code=request.reason_code,
        requested_by=request.requested_by,
        approved_by=actor,
        fix_request_id=request.pk,
    ):
        result = fix.apply(
            actor=actor,
            target=target,
            params=request.params,
            reason=request.reason,
            ticket_url=request.ticket_url,
        )
    _fix_request_decide(
        request=request, actor=actor, state=FixRequestState.DONE, note=note, outcome=result.message
    )
    return result


@transaction.atomic
def fix_request_reject(*, actor, fix_request: FixRequest, reason: str) -> FixRequest:
    """A support lead turns a request down, saying why; nothing else changes."""
    if not permissions.can_approve(actor):
        raise ApplicationError("Only a support lead can reject fixes.", code="forbidden")
    reason = require_reason(reason)
    request = _fix_request_locked(fix_request)
    if request.requested_by_id == actor.pk:
        raise ApplicationError(
            "You asked for this fix: withdraw it instead of rejecting it.", code="four_eyes"
        )
    _fix_request_decide(
        request=request, actor=actor, state=FixRequestState.REJECTED, note=reason, outcome=""
    )
    with fix_context(action=request.action, reason_code=request.reason_code):
        audit_record(
            actor=actor,
            action="provision.fix_request_rejected",
            target=request,
            customer=request.customer,
            changes={"state": [FixRequestState.PENDING, FixRequestState.REJECTED]},
            reason=reason,
            metadata={"requested_by": request.requested_by.get_username()},
        )
    return request


@transaction.atomic
def fix_request_withdraw(*, actor, fix_request: FixRequest, reason: str) -> FixRequest:
    """The requester takes their own pending request back."""
    reason = require_reason(reason)
    request = _fix_request_locked(fix_request)
    if actor is None or request.requested_by_id != actor.pk:
        raise ApplicationError("Only the requester can withdraw a request.", code="forbidden")
    _fix_request_decide(
        request=request, actor=actor, state=FixRequestState.WITHDRAWN, note=reason, outcome=""
    )
    with fix_context(action=request.action, reason_code=request.reason_code):
        audit_record(
            actor=actor,
            action="provision.fix_request_withdrawn",
            target=request,
            customer=request.customer,
            changes={"state": [FixRequestState.PENDING, FixRequestState.WITHDRAWN]},
            reason=reason,
        )
    return request


# --- Service accounts: API tokens with a staff role -----------------------------------------------

SERVICE_ACCOUNT_ROLES = ("support", "support_lead", "account_manager", "admin")


@transaction.atomic
def service_account_create(
    *, actor, username: str, role: str, reason: str, rotate: bool = False
) -> tuple[str, bool]:
    """Create (or, with ``rotate``, replace) the API token of a service account holding one
    staff role, and return ``(token, account_created)``; the caller shows the token once.

    A service account is a user without a usable password (it cannot log in to the console)
    in exactly one staff group, so its token gets what a person with that role gets, through
    the same ``provision.permissions`` checks: an account-manager token reads, a support token
    makes fixes, four-eyes rules apply as to anyone. A person's login (usable password, staff
    or superuser flag) and an integration account are refused. An existing token is refused
    unless ``rotate``; rotating invalidates it at once and may change the role. Audited with
    the last four characters of the token, never the token. Admins only.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from provision.choices import Role

    if actor is not None and Role.ADMIN not in permissions.roles_of(actor):
        raise ApplicationError("Only an admin may create service accounts.", code="forbidden")
    reason = require_reason(reason)
    if role not in SERVICE_ACCOUNT_ROLES:
        raise ValidationError({"role": f"Choose one of {', '.join(SERVICE_ACCOUNT_ROLES)}."})
    username = (username or "").strip()
    if not username:
        raise ValidationError({"username": "Give the service account's username."})
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    created = user is None
    old_role = None
    if created:
        user = user_model(username=username, is_active=True)
        user.set_unusable_password()
        user.full_clean(exclude=["password"])
        user.save()
    else:
        groups = set(user.groups.values_list("name", flat=True))
        if user.is_superuser or user.is_staff or user.has_usable_password():
            raise ApplicationError(
                f"{username} is a person's login; service accounts are separate users.",
                code="not_service_account",
            )
        if groups & permissions.MACHINE_ROLES or not groups & permissions.STAFF_ROLES:
            raise ApplicationError(
                f"{username} exists but is not a service account.", code="not_service_account"
            )
        old_role = ",".join(sorted(groups & permissions.STAFF_ROLES))
    previous = Token.objects.filter(user=user).first()
    if previous is not None and not rotate:
        raise ApplicationError(
            f"{username} already has a token; rotate it to replace it (the old one stops working).",
            code="token_exists",
        )
    if old_role != role:
        user.groups.set([Group.objects.get_or_create(name=role)[0]])
    previous_hint = f"…{previous.key[-4:]}" if previous is not None else None
    if previous is not None:
        previous.delete()
    token = Token.objects.create(user=user)
    changes = {"token": [previous_hint, f"…{token.key[-4:]}"]}
    if old_role != role:
        changes["role"] = [old_role, role]
    audit_record(
        actor=actor,
        action="provision.service_account_token_created",
        target=user,
        customer=None,
        changes=changes,
        reason=reason,
        metadata={"account_created": created, "rotated": previous is not None},
    )
    return token.key, created


# --- Support tickets: import and classification (the provisioning-ticket indicator) ----------
#
# The help desk's CSV export is read by provision.tickets (pure parsing and the rule); these
# services store it. One import run = one SupportTicketImport row and one audit event with the
# counts, never one event per ticket.

TICKET_UPSERT_BATCH = 2000
TICKET_FIELDS = ("created_at", "tags", "category", "subject")
TICKET_CLASSIFICATION_FIELDS = ("is_provisioning", "classification_reason", "rule_version")


@dataclass(frozen=True)
class TicketImportResult:
    """What a ticket import or re-classification did (in a dry run: would do)."""

    rows_total: int
    created: int
    updated: int
    unchanged: int
    reclassified: int
    provisioning: int
    rule_version: str
    dry_run: bool = False
    run: object | None = None  # the SupportTicketImport row; None in a dry run or a no-op


def _require_ticket_import_permission(actor) -> None:
    # The command runs as the system (actor=None); people need a support role.
    if actor is not None and not permissions.can_fix(actor):
        raise ApplicationError(
            "You do not have permission to import support tickets.", code="forbidden"
        )


def _tickets_stale(rule):
    """Stored tickets classified under another rule version than ``rule``'s. Written as two
    ranges rather than "<>", so the rule_version index answers it."""
    from django.db.models import Q

    from provision.models import SupportTicket

    return SupportTicket.objects.filter(
        Q(rule_version__lt=rule.version) | Q(rule_version__gt=rule.version)
    )


def _tickets_classify_again(*, rule) -> int:
    """Classify every stale ticket under ``rule``; how many there were."""
    from provision.models import SupportTicket

    changed = 0
    batch: list[SupportTicket] = []
    stale = _tickets_stale(rule).only("id", "tags", "category", "subject").order_by("pk")
    for ticket in stale.iterator(chunk_size=TICKET_UPSERT_BATCH):
        ticket.is_provisioning, ticket.classification_reason = rule.classify(
            tags=ticket.tags, category=ticket.category, subject=ticket.subject
        )
        ticket.rule_version = rule.version
        batch.append(ticket)
        if len(batch) == TICKET_UPSERT_BATCH:
            SupportTicket.objects.bulk_update(batch, TICKET_CLASSIFICATION_FIELDS, batch_size=500)
            changed, batch = changed + len(batch), []
    if batch:
        SupportTicket.objects.bulk_update(batch, TICKET_CLASSIFICATION_FIELDS, batch_size=500)
    return changed + len(batch)


class _DryRun(Exception):
    """Raised inside a dry run's transaction to roll back what it wrote."""


def support_tickets_import(
    *, actor, file_name: str, content: bytes, reason: str, dry_run: bool = False
) -> TicketImportResult:
    """Store the tickets of a help-desk CSV export, classified by ``PROVISIONING_TICKET_RULE``.

    Upsert by ticket id: a new id is created, a known one updated when anything read from the
    file (created at, tags, category, subject) or its classification changed, and left alone
    otherwise, so importing the same file again changes nothing. Stored tickets classified
    under an older rule are classified again in the same run (``reclassified``). Rows go in
    with bulk upserts of ``TICKET_UPSERT_BATCH``.

    The stored tickets are compared through one range read on ``created_at`` (the file's first
    to last ticket; a ticket's creation time never changes), not through lists of ids: with
    prepared statements PostgreSQL plans a 2,000-id ``IN`` as a scan of the table, ~1 s each.
    A ticket it misses is written anyway; ``created`` comes from the table's size before and
    after, so the counts stay exact.

    A file that cannot be read, or that has any bad row, raises ``ApplicationError`` with one
    line naming the lines at fault, and stores nothing. Otherwise everything is written in one
    transaction with one ``SupportTicketImport`` row and one audit event
    (``provision.support_tickets_imported``) holding the counts. ``dry_run`` does all of it
    and rolls it back. The system (``actor=None``, the command) and support roles may import.
    """
    import hashlib
    from datetime import timedelta
    from pathlib import PurePath

    from provision.models import SupportTicket, SupportTicketImport
    from provision.tickets import TicketFileError, parse_ticket_csv, ticket_rule

    _require_ticket_import_permission(actor)
    reason = require_reason(reason)
    file_name = PurePath(file_name or "tickets.csv").name[:255]
    rule = ticket_rule()
    try:
        rows = parse_ticket_csv(content, tz=timezone.get_current_timezone())
    except TicketFileError as error:
        raise ApplicationError(f"{file_name}: {error}", code="bad_ticket_file") from None
    now = timezone.now()
    compared = (*TICKET_FIELDS, *TICKET_CLASSIFICATION_FIELDS)
    result = None
    try:
        with transaction.atomic():
            span = [row.created_at for row in rows]
            existing = {
                values[0]: values[1:]
                for values in SupportTicket.objects.filter(
                    created_at__gte=min(span) - timedelta(seconds=1),
                    created_at__lte=max(span) + timedelta(seconds=1),
                )
                .order_by()
                .values_list("external_id", *compared)
            }
            writes: list[SupportTicket] = []
            provisioning = 0
            for row in rows:
                is_provisioning, why = rule.classify(
                    tags=row.tags, category=row.category, subject=row.subject
                )
                provisioning += is_provisioning
                values = (
                    row.created_at,
                    row.tags,
                    row.category,
                    row.subject,
                    is_provisioning,
                    why,
                    rule.version,
                )
                if existing.get(row.external_id) == values:
                    continue
                ticket = SupportTicket(
                    external_id=row.external_id,
                    imported_at=now,
                    **dict(zip(compared, values, strict=True)),
                )
                ticket.full_clean(validate_unique=False)
                writes.append(ticket)
            before = SupportTicket.objects.count()
            SupportTicket.objects.bulk_create(
                writes,
                batch_size=TICKET_UPSERT_BATCH,
                update_conflicts=True,
                unique_fields=["external_id"],
                update_fields=[*compared, "imported_at"],
            )
            created = SupportTicket.objects.count() - before
            result = {
                "rows_total": len(rows),
                "created": created,
                "updated": len(writes) - created,
                "unchanged": len(rows) - len(writes),
                "reclassified": _tickets_classify_again(rule=rule),
                "provisioning": provisioning,
                "rule_version": rule.version,
            }
            run = SupportTicketImport(
                imported_at=now,
                actor=actor,
                file_name=file_name,
                file_sha256=hashlib.sha256(content).hexdigest(),
                **result,
            )
            run.full_clean()
            run.save(force_insert=True)
            audit_record(
                actor=actor,
                action="provision.support_tickets_imported",
                target=run,
                customer=None,
                reason=reason,
                metadata={**result, "file_name": file_name, "file_sha256": run.file_sha256},
            )
            if dry_run:
                raise _DryRun
    except _DryRun:
        return TicketImportResult(**result, dry_run=True)
    return TicketImportResult(**result, run=run)


@transaction.atomic
def support_tickets_reclassify(*, actor, reason: str) -> TicketImportResult:
    """Classify again, under the rule now in ``PROVISIONING_TICKET_RULE``, every stored
    ticket classified under another one; one ``SupportTicketImport`` row (no file) and one
    audit event (``provision.support_tickets_reclassified``). Nothing to do writes nothing."""
    from provision.models import SupportTicket, SupportTicketImport
    from provision.tickets import ticket_rule

    _require_ticket_import_permission(actor)
    reason = require_reason(reason)
    rule = ticket_rule()
    result = {
        "rows_total": 0,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "reclassified": 0,
        "provisioning": 0,
        "rule_version": rule.version,
    }
    if not _tickets_stale(rule).exists():
        return TicketImportResult(**result)
    before = SupportTicket.objects.filter(is_provisioning=True).count()
    result["reclassified"] = _tickets_classify_again(rule=rule)
    after = SupportTicket.objects.filter(is_provisioning=True).count()
    run = SupportTicketImport(actor=actor, **result)
    run.full_clean()
    run.save(force_insert=True)
    audit_record(
        actor=actor,
        action="provision.support_tickets_reclassified",
        target=run,
        customer=None,
        changes={"provisioning_tickets": [before, after]},
        reason=reason,
        metadata=result,
    )
    return TicketImportResult(**result, run=run)
