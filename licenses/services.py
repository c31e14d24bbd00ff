"""Writes for the licenses app: issuing, superseding, revoking and expiring licenses, activation
codes and signing-key registration.

Every function is keyword-only, runs in one transaction and writes its audit event in that same
transaction (see provision/services.py). Key material never reaches the audit trail: events
carry the key's SHA-256 and an activation code's last four characters, nothing more.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from licenses import keyformat
from licenses.choices import (
    CURRENT_LICENSE_STATUSES,
    ActivationCodeStatus,
    LicenseKind,
    LicenseStatus,
)
from licenses.models import ActivationCode, License, SigningKey
from licenses.selectors import subscription_peak_users
from licenses.signing import activation_code_hash
from provision import permissions
from provision.audit import audit_record, require_reason
from provision.choices import (
    AddOnKind,
    ContactRole,
    Plan,
    ProvisioningStepKind,
    StepState,
    SubscriptionStatus,
)
from provision.exceptions import ApplicationError
from provision.models import ProvisioningStep, Subscription

ACTIVATION_CODE_ALPHABET = string.ascii_letters + string.digits
ACTIVATION_CODE_LENGTH = 24
# A legacy license covers one year of a multi-year term (support-workflows §1.8); a remainder of
# up to this long stays with the last year instead of becoming a license of its own.
LEGACY_REMAINDER_TOLERANCE = timedelta(days=31)
LICENSE_PLAN = {
    Plan.PREMIUM: "premium",
    Plan.ULTIMATE: "ultimate",
    Plan.PREMIUM_TRIAL: "premium",
    Plan.ULTIMATE_TRIAL: "ultimate",
}
# Fields compared between a license and the one it supersedes, for the audit event.
AUDITED_LICENSE_FIELDS = (
    "kind",
    "plan",
    "user_count",
    "starts_on",
    "expires_on",
    "previous_user_count",
    "trueup_quantity",
    "add_ons",
    "trial",
    "licensee_email",
)


def _require_fix_permission(actor) -> None:
    # System writes (actor=None) come from tasks and commands that already decided to act.
    if actor is not None and not permissions.can_fix(actor):
        raise ApplicationError("You do not have permission to change licenses.", code="forbidden")


# --- Signing keys -------------------------------------------------------------------------------


@transaction.atomic
def signing_key_register(*, public_key_pem: str, source: str, actor=None) -> SigningKey:
    """Make this public key the active signing key, retiring the one before it (a rotation).

    Idempotent: registering the active key again returns its row and writes nothing.
    """
    from licenses.signing import load_public_key

    public_key = load_public_key(public_key_pem)
    fingerprint = keyformat.public_key_fingerprint(public_key)
    existing = SigningKey.objects.select_for_update().filter(fingerprint=fingerprint).first()
    if existing is not None and existing.is_active:
        return existing
    now = timezone.now()
    retired = list(SigningKey.objects.select_for_update().filter(is_active=True))
    for row in retired:
        row.is_active = False
        row.retired_at = now
        row.save(update_fields=["is_active", "retired_at"])
        audit_record(
            actor=actor,
            action="licenses.signing_key_retired",
            target=row,
            customer=None,
            changes={"is_active": [True, False]},
            reason=f"Replaced by signing key {fingerprint[:16]}",
        )
    if existing is not None:
        # A key configured again after a rotation: reactivate its row rather than duplicate it.
        existing.is_active = True
        existing.retired_at = None
        existing.save(update_fields=["is_active", "retired_at"])
        row, changes = existing, {"is_active": [False, True]}
    else:
        row = SigningKey(
            fingerprint=fingerprint,
            public_key_pem=keyformat.public_key_pem(public_key),
            source=source,
        )
        row.full_clean()
        row.save()
        changes = {"fingerprint": [None, fingerprint], "source": [None, source]}
    audit_record(
        actor=actor,
        action="licenses.signing_key_registered",
        target=row,
        customer=None,
        changes=changes,
        reason="First use of the configured license signing key",
        metadata={"retired": [r.fingerprint for r in retired]},
    )
    return row


def _active_signing_key():
    from licenses.signing import active_signing_key

    try:
        return active_signing_key()
    except IntegrityError:
        # Another process registered the same key between our lookup and insert; the savepoint
        # of signing_key_register rolled back, so look again.
        return active_signing_key()


# --- Licenses -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LicenseTerms:
    """What a license for a subscription covers, and what it carries over from before."""

    starts_on: date
    expires_on: date
    previous_user_count: int | None = None
    trueup_quantity: int | None = None
    trueup_from: date | None = None
    trueup_to: date | None = None


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a non-leap year
        return day.replace(year=day.year + years, day=28)


def _legacy_periods(term_start: date, term_end: date) -> list[tuple[date, date]]:
    boundaries = [term_start]
    while _add_years(term_start, len(boundaries)) < term_end - LEGACY_REMAINDER_TOLERANCE:
        boundaries.append(_add_years(term_start, len(boundaries)))
    boundaries.append(term_end)
    return list(zip(boundaries, boundaries[1:], strict=False))


def license_terms(*, subscription: Subscription, kind: str, today: date) -> LicenseTerms:
    """Period, previous user count and true-up for the license issued today.

    Cloud licenses cover the whole term; legacy ones the term year that contains ``today``.
    The previous user count is the seat count of the license the customer last installed
    (the previous year's, or the renewed subscription's); the true-up is the peak usage in
    that previous period above it (support-workflows §1.3: 10 seats, peak 15 → true-up 5).
    """
    if kind == LicenseKind.LEGACY:
        periods = _legacy_periods(subscription.term_start, subscription.term_end)
        index = next(
            (i for i, (start, end) in enumerate(periods) if start <= today < end),
            0 if today < subscription.term_start else len(periods) - 1,
        )
    else:
        periods, index = [(subscription.term_start, subscription.term_end)], 0
    starts_on, expires_on = periods[index]

    if index > 0:
        previous_subscription = subscription
        previous_from, previous_to = periods[index - 1]
        previous = (
            License.objects.filter(subscription=subscription, starts_on=previous_from)
            .exclude(status__in=[LicenseStatus.SUPERSEDED, LicenseStatus.REVOKED])
            .order_by("-issued_at")
            .first()
        )
        previous_user_count = previous.user_count if previous else subscription.seats
    elif subscription.renews_id:
        previous_subscription = subscription.renews
        last = (
            License.objects.filter(subscription=previous_subscription)
            .exclude(status__in=[LicenseStatus.SUPERSEDED, LicenseStatus.REVOKED])
            .order_by("-starts_on", "-issued_at")
            .first()
        )
        if last is not None:
            previous_from, previous_to = last.starts_on, last.expires_on
        else:
            previous_from = previous_subscription.term_start
            previous_to = previous_subscription.term_end
        # EE compares against "Users in License" of the license installed before.
        previous_user_count = last.user_count if last else previous_subscription.seats
    else:
        return LicenseTerms(starts_on=starts_on, expires_on=expires_on)

    peak = subscription_peak_users(previous_subscription, start=previous_from, end=previous_to)
    return LicenseTerms(
        starts_on=starts_on,
        expires_on=expires_on,
        previous_user_count=previous_user_count,
        trueup_quantity=max(0, peak - previous_user_count),
        trueup_from=previous_from,
        trueup_to=previous_to,
    )


def _add_on_products(
    subscription: Subscription, terms: LicenseTerms, today: date
) -> tuple[dict, int | None]:
    """Duo add-ons overlapping the license period as ``add_on_products``, and the Duo Pro seats
    in force today for instances that still read ``code_suggestions_seat_count``."""
    products: dict[str, list[dict]] = {}
    duo_pro_today = None
    add_ons = subscription.add_ons.filter(
        kind__in=keyformat.ADD_ON_PRODUCT_NAMES.keys(),
        starts_on__lt=terms.expires_on,
        ends_on__gt=terms.starts_on,
    ).order_by("kind", "starts_on")
    for add_on in add_ons:
        name = keyformat.ADD_ON_PRODUCT_NAMES[add_on.kind]
        products.setdefault(name, []).append(
            keyformat.add_on_product(
                quantity=add_on.quantity,
                started_on=add_on.starts_on,
                expires_on=add_on.ends_on,
                purchase_xid=subscription.name,
                trial=subscription.is_trial,
            )
        )
        if add_on.kind == AddOnKind.DUO_PRO and add_on.starts_on <= today < add_on.ends_on:
            duo_pro_today = add_on.quantity
    return products, duo_pro_today


@transaction.atomic
def license_issue(
    *,
    actor,
    subscription: Subscription,
    kind: str | None = None,
    reason: str,
    ticket_url: str = "",
    today: date | None = None,
) -> License:
    """Issue a license key for the subscription as it stands now.

    A current license of the same subscription and start date is superseded (a seat change or
    a correction); a next-year legacy license stands beside last year's. The kind defaults to
    the subscription's licensing method.
    """
    _require_fix_permission(actor)
    reason = require_reason(reason)
    today = today or timezone.localdate()
    # Locking the subscription serialises issues for it: two clicks cannot both supersede.
    subscription = (
        Subscription.objects.select_for_update().select_related("customer").get(pk=subscription.pk)
    )
    if not subscription.is_self_managed:
        raise ApplicationError(
            f"{subscription.name} is a GitLab.com subscription: it is provisioned on its "
            "namespace and has no license key.",
            code="not_self_managed",
        )
    if subscription.status == SubscriptionStatus.CANCELLED:
        raise ApplicationError(
            f"{subscription.name} is cancelled; it gets no new license.",
            code="subscription_cancelled",
        )
    kind = kind or subscription.licensing_method
    if kind not in LicenseKind.values:
        raise ValidationError({"kind": f"Choose one of {', '.join(LicenseKind.values)}."})
    customer = subscription.customer
    sold_to = customer.contacts.filter(role=ContactRole.SOLD_TO).first()
    if sold_to is None:
        raise ApplicationError(
            f"{customer.name} has no sold-to contact. A license carries the sold-to contact's "
            "name and e-mail (never a reseller's): add the contact, then issue the license.",
            code="no_sold_to_contact",
        )
    signing = _active_signing_key()  # fails loudly, before any write, when no key is set
    terms = license_terms(subscription=subscription, kind=kind, today=today)
    add_on_products, duo_pro_seats = _add_on_products(subscription, terms, today)

    superseded = (
        License.objects.select_for_update()
        .filter(
            subscription=subscription,
            starts_on=terms.starts_on,
            status__in=CURRENT_LICENSE_STATUSES,
        )
        .first()
    )
    superseded_status = superseded.status if superseded else None
    if superseded is not None:
        superseded.status = LicenseStatus.SUPERSEDED
        superseded.save(update_fields=["status"])

    plan = LICENSE_PLAN[subscription.plan]
    online = kind == LicenseKind.ONLINE_CLOUD
    license = License(
        subscription=subscription,
        kind=kind,
        status=LicenseStatus.ISSUED,
        signing_key=signing.row,
        licensee_name=sold_to.full_name,
        licensee_email=sold_to.email,
        licensee_company=customer.name,
        starts_on=terms.starts_on,
        expires_on=terms.expires_on,
        notify_admins_on=terms.expires_on,
        notify_users_on=terms.expires_on,
        block_changes_on=terms.expires_on + keyformat.GRACE_PERIOD,
        plan=plan,
        user_count=subscription.seats,
        previous_user_count=terms.previous_user_count,
        trueup_quantity=terms.trueup_quantity,
        trueup_from=terms.trueup_from,
        trueup_to=terms.trueup_to,
        add_ons=add_on_products,
        trial=subscription.is_trial,
        supersedes=superseded,
        issued_by=actor,
        # Placeholders until the key exists: the key carries the row id (restrictions.id).
        key="",
        key_sha256=f"pending:{secrets.token_hex(28)}",
    )
    license.save()
    license.attributes = keyformat.build_attributes(
        licensee_name=license.licensee_name,
        licensee_email=license.licensee_email,
        licensee_company=license.licensee_company,
        starts_on=license.starts_on,
        expires_on=license.expires_on,
        notify_admins_on=license.notify_admins_on,
        notify_users_on=license.notify_users_on,
        block_changes_on=license.block_changes_on,
        kind=kind,
        plan=plan,
        user_count=license.user_count,
        trial=license.trial,
        # Auto-renewal and quarterly reconciliation run on the daily sync: online cloud only
        # (support-workflows §4.2, §4.5); trials have neither.
        auto_renew=online and subscription.auto_renew and not license.trial,
        seat_reconciliation=online and subscription.quarterly_reconciliation and not license.trial,
        operational_metrics=kind != LicenseKind.LEGACY,
        license_id=license.pk,
        subscription_id=str(subscription.pk),
        subscription_name=subscription.name,
        previous_user_count=license.previous_user_count,
        trueup_quantity=license.trueup_quantity,
        trueup_from=license.trueup_from,
        trueup_to=license.trueup_to,
        code_suggestions_seat_count=duo_pro_seats,
        add_on_products=add_on_products,
    )
    license.key = keyformat.encode_license(license.attributes, signing.private_key)
    license.key_sha256 = keyformat.key_sha256(license.key)
    license.full_clean()
    license.save()

    changes = {"status": [None, LicenseStatus.ISSUED]}
    for field in AUDITED_LICENSE_FIELDS:
        old = getattr(superseded, field) if superseded else None
        new = getattr(license, field)
        if superseded is None or old != new:
            changes[field] = [old, new]
    audit_record(
        actor=actor,
        action="licenses.license_issued",
        target=license,
        customer=customer,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
        metadata={
            "key_sha256": license.key_sha256,
            "signing_key": signing.fingerprint,
            "supersedes": superseded.pk if superseded else None,
        },
    )
    if superseded is not None:
        audit_record(
            actor=actor,
            action="licenses.license_superseded",
            target=superseded,
            customer=customer,
            changes={"status": [superseded_status, LicenseStatus.SUPERSEDED]},
            reason=reason,
            ticket_url=ticket_url,
            metadata={"superseded_by": license.pk},
        )
    _mark_license_issued_steps(actor=actor, subscription=subscription, license=license)
    return license


def _mark_license_issued_steps(*, actor, subscription: Subscription, license: License) -> None:
    from provision.services import provisioning_step_set_state

    open_steps = ProvisioningStep.objects.filter(
        record__subscription=subscription, kind=ProvisioningStepKind.LICENSE_ISSUED
    ).exclude(state__in=[StepState.DONE, StepState.SKIPPED])
    for step in open_steps:
        provisioning_step_set_state(
            actor=actor, step=step, state=StepState.DONE, reason=f"License {license.pk} issued"
        )


@transaction.atomic
def license_revoke(*, actor, license: License, reason: str, ticket_url: str = "") -> License:
    """Withdraw a license. It takes a paying customer's key away, so it needs a support lead."""
    if actor is not None and not permissions.can_approve(actor):
        raise ApplicationError(
            "Revoking a license needs a support lead or an admin.", code="needs_approval"
        )
    reason = require_reason(reason)
    license = (
        License.objects.select_for_update()
        .select_related("subscription__customer")
        .get(pk=license.pk)
    )
    if license.status in (LicenseStatus.REVOKED, LicenseStatus.EXPIRED):
        raise ApplicationError(
            f"License {license.pk} is already {license.get_status_display().lower()}.",
            code="no_change",
        )
    old_status = license.status
    license.status = LicenseStatus.REVOKED
    license.revoked_at = timezone.now()
    license.full_clean()
    license.save(update_fields=["status", "revoked_at"])
    audit_record(
        actor=actor,
        action="licenses.license_revoked",
        target=license,
        customer=license.subscription.customer,
        changes={"status": [old_status, LicenseStatus.REVOKED]},
        reason=reason,
        ticket_url=ticket_url,
        metadata={"key_sha256": license.key_sha256},
    )
    return license


def licenses_mark_expired(*, today: date | None = None) -> int:
    """Mark issued and active licenses past their expiry date expired (system action).

    EE treats a license as expired from 00:00 on its expiry date. Each transition is a
    conditional update on the old status, so overlapping runs cannot audit one change twice.
    """
    today = today or timezone.localdate()
    expired = 0
    candidates = License.objects.filter(
        status__in=CURRENT_LICENSE_STATUSES, expires_on__lte=today
    ).values_list("pk", "status")
    for pk, old_status in candidates.iterator():
        with transaction.atomic():
            updated = License.objects.filter(pk=pk, status=old_status).update(
                status=LicenseStatus.EXPIRED
            )
            if updated != 1:
                continue
            license = License.objects.select_related("subscription__customer").get(pk=pk)
            audit_record(
                actor=None,
                action="licenses.license_expired",
                target=license,
                customer=license.subscription.customer,
                changes={"status": [old_status, LicenseStatus.EXPIRED]},
                reason=f"Expiry date {license.expires_on.isoformat()} reached",
            )
            expired += 1
    return expired


# --- Activation codes ---------------------------------------------------------------------------


@transaction.atomic
def activation_code_generate(
    *, actor, subscription: Subscription, reason: str, ticket_url: str = ""
) -> tuple[ActivationCode, str]:
    """Make a new activation code for the subscription and return it with its plaintext.

    The plaintext exists only in the return value: the row holds its HMAC and last four
    characters. The subscription's previous active code is replaced and stops working; a
    "resend" is a regeneration, since a stored code cannot be revealed.
    """
    _require_fix_permission(actor)
    reason = require_reason(reason)
    subscription = (
        Subscription.objects.select_for_update().select_related("customer").get(pk=subscription.pk)
    )
    if not subscription.is_self_managed:
        raise ApplicationError(
            f"{subscription.name} is a GitLab.com subscription; activation codes are for "
            "self-managed instances.",
            code="not_self_managed",
        )
    if subscription.status in (SubscriptionStatus.CANCELLED, SubscriptionStatus.EXPIRED):
        raise ApplicationError(
            f"{subscription.name} is {subscription.get_status_display().lower()}; it gets no "
            "new activation code.",
            code="subscription_closed",
        )
    now = timezone.now()
    replaced = list(
        ActivationCode.objects.select_for_update().filter(
            subscription=subscription, status=ActivationCodeStatus.ACTIVE
        )
    )
    for old in replaced:
        old.status = ActivationCodeStatus.REPLACED
        old.replaced_at = now
        old.save(update_fields=["status", "replaced_at"])
    code = "".join(secrets.choice(ACTIVATION_CODE_ALPHABET) for _ in range(ACTIVATION_CODE_LENGTH))
    activation_code = ActivationCode(
        subscription=subscription,
        code_hash=activation_code_hash(code),
        code_hint=code[-4:],
        created_by=actor,
    )
    activation_code.full_clean()
    activation_code.save()
    audit_record(
        actor=actor,
        action="licenses.activation_code_generated",
        target=activation_code,
        customer=subscription.customer,
        changes={
            "code_hint": [replaced[0].code_hint if replaced else None, activation_code.code_hint]
        },
        reason=reason,
        ticket_url=ticket_url,
        metadata={"replaced": [old.pk for old in replaced]},
    )
    return activation_code, code
