"""Writes for the licenses app: issuing, superseding, revoking and expiring licenses, activation
codes and signing-key registration.

Every function is keyword-only, runs in one transaction and writes its audit event in that same
transaction (see provision/services.py). Key material never reaches the audit trail: events
carry the key's SHA-256 and an activation code's last four characters, nothing more.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import string
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from licenses import keyformat
from licenses.choices import (
    CURRENT_LICENSE_STATUSES,
    ActivationCodeStatus,
    ActivationStatus,
    DeliveryMethod,
    DeliveryStatus,
    LicenseKind,
    LicenseStatus,
)
from licenses.models import Activation, ActivationCode, License, LicenseDelivery, SigningKey
from licenses.selectors import subscription_peak_users
from licenses.signing import activation_code_hash
from provision import permissions
from provision.audit import audit_record, require_reason
from provision.choices import (
    ActorKind,
    AddOnKind,
    ContactRole,
    LicensingMethod,
    Plan,
    ProvisioningStepKind,
    SubscriptionStatus,
)
from provision.context import four_eyes_granted
from provision.exceptions import ApplicationError
from provision.models import Subscription
from usage.models import Instance

ACTIVATION_CODE_ALPHABET = string.ascii_letters + string.digits
ACTIVATION_CODE_LENGTH = 24
# A legacy license covers one year of a multi-year term (support-workflows §1.8); a remainder of
# up to this long stays with the last year instead of becoming a license of its own.
LEGACY_REMAINDER_TOLERANCE = timedelta(days=31)
# Temporary extensions (support-workflows §1.6): up to a month by request; beyond that, a
# second person approves. A new one waits until the open one has this many days left.
TEMPORARY_EXTENSION_APPROVAL_DAYS = 30
TEMPORARY_EXTENSION_OPEN_DAYS = 5
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
    terms = license_terms(subscription=subscription, kind=kind, today=today)
    license = _license_create(
        actor=actor,
        subscription=subscription,
        kind=kind,
        terms=terms,
        user_count=subscription.seats,
        trial=subscription.is_trial,
        supersede=True,
        reason=reason,
        ticket_url=ticket_url,
        today=today,
    )
    _mark_license_issued_steps(actor=actor, subscription=subscription, license=license)
    return license


def _license_create(
    *,
    actor,
    subscription: Subscription,
    kind: str,
    terms: LicenseTerms,
    user_count: int,
    trial: bool,
    supersede: bool,
    reason: str,
    ticket_url: str,
    today: date,
    metadata: dict | None = None,
) -> License:
    """Sign and store one license for the locked subscription, audited; with ``supersede``, the
    current license of the same start date is superseded in the same transaction."""
    customer = subscription.customer
    sold_to = customer.contacts.filter(role=ContactRole.SOLD_TO).first()
    if sold_to is None:
        raise ApplicationError(
            f"{customer.name} has no sold-to contact. A license carries the sold-to contact's "
            "name and e-mail (never a reseller's): add the contact, then issue the license.",
            code="no_sold_to_contact",
        )
    signing = _active_signing_key()  # fails loudly, before any write, when no key is set
    add_on_products, duo_pro_seats = _add_on_products(subscription, terms, today)

    same_start = (
        License.objects.select_for_update()
        .filter(
            subscription=subscription,
            starts_on=terms.starts_on,
            status__in=CURRENT_LICENSE_STATUSES,
        )
        .first()
    )
    if same_start is not None and not supersede:
        raise ApplicationError(
            f"License {same_start.pk} of {subscription.name} already starts on "
            f"{terms.starts_on:%Y-%m-%d}; re-issue that license instead.",
            code="license_exists",
        )
    superseded = same_start
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
        user_count=user_count,
        previous_user_count=terms.previous_user_count,
        trueup_quantity=terms.trueup_quantity,
        trueup_from=terms.trueup_from,
        trueup_to=terms.trueup_to,
        add_ons=add_on_products,
        trial=trial,
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
            **(metadata or {}),
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
    _crm_changed(subscription.customer_id)
    return license


def _crm_changed(customer_id: int) -> None:
    """The CRMs carry each subscription's license status: queue the customer's push (after
    the commit, debounced; crm_sync.services.crm_sync_request_push)."""
    from crm_sync.services import crm_sync_request_push

    crm_sync_request_push(customer_ids=[customer_id])


def _mark_license_issued_steps(*, actor, subscription: Subscription, license: License) -> None:
    from provision.services import provisioning_steps_complete

    provisioning_steps_complete(
        actor=actor,
        subscription_id=subscription.pk,
        kind=ProvisioningStepKind.LICENSE_ISSUED,
        reason=f"License {license.pk} issued",
    )


@transaction.atomic
def license_temporary_extension(
    *,
    actor,
    subscription: Subscription,
    expires_on: date,
    user_count: int | None = None,
    reason: str,
    ticket_url: str = "",
    today: date | None = None,
) -> License:
    """Extend a self-managed customer's access with a temporary (trial) legacy license from
    today to ``expires_on``, e-mailed to the sold-to contact (support-workflows §1.6).

    A paid license is never extended in place: the extension is a new trial license beside it.
    One extension at a time: while one still has more than 5 days to run, another is refused.
    More than 30 days beyond the current access needs a second person's approval (four-eyes).
    """
    from licenses.selectors import license_access_end

    _require_fix_permission(actor)
    reason = require_reason(reason)
    today = today or timezone.localdate()
    subscription = (
        Subscription.objects.select_for_update().select_related("customer").get(pk=subscription.pk)
    )
    if not subscription.is_self_managed:
        raise ApplicationError(
            f"{subscription.name} is a GitLab.com subscription: it is extended with a trial on "
            "its namespace, not with a license.",
            code="not_self_managed",
        )
    if subscription.status == SubscriptionStatus.CANCELLED or subscription.is_trial:
        raise ApplicationError(
            f"{subscription.name} is {'a trial' if subscription.is_trial else 'cancelled'}; "
            "only a paid subscription gets a temporary extension.",
            code="not_extendable",
        )
    access = license_access_end(subscription=subscription, today=today)
    if access.open_extension is not None and access.open_extension.expires_on > (
        today + timedelta(days=TEMPORARY_EXTENSION_OPEN_DAYS)
    ):
        raise ApplicationError(
            f"Temporary license {access.open_extension.pk} already runs to "
            f"{access.open_extension.expires_on:%Y-%m-%d}; a new extension can be issued once "
            f"it has {TEMPORARY_EXTENSION_OPEN_DAYS} days or fewer left.",
            code="extension_open",
        )
    if expires_on <= access.ends_on:
        raise ValidationError(
            {
                "expires_on": f"Access already runs to {access.ends_on:%Y-%m-%d}; an extension "
                "must end after that."
            }
        )
    extra_days = (expires_on - access.ends_on).days
    if (
        extra_days > TEMPORARY_EXTENSION_APPROVAL_DAYS
        and actor is not None
        and not four_eyes_granted(action="license_extend")
    ):
        raise ApplicationError(
            f"An extension of {extra_days} days (over {TEMPORARY_EXTENSION_APPROVAL_DAYS}) "
            "needs a support lead's approval.",
            code="needs_approval",
        )
    user_count = subscription.seats if user_count is None else user_count
    if user_count < 1:
        raise ValidationError({"user_count": "A license needs at least one user."})
    last = access.paid_license
    terms = LicenseTerms(
        starts_on=today,
        expires_on=expires_on,
        # The instance checks the previous user count and true-up of the license it runs.
        previous_user_count=last.previous_user_count if last else None,
        trueup_quantity=last.trueup_quantity if last else None,
        trueup_from=last.trueup_from if last else None,
        trueup_to=last.trueup_to if last else None,
    )
    license = _license_create(
        actor=actor,
        subscription=subscription,
        kind=LicenseKind.LEGACY,
        terms=terms,
        user_count=user_count,
        trial=True,
        supersede=False,
        reason=reason,
        ticket_url=ticket_url,
        today=today,
        metadata={"temporary_extension": True, "extra_days": extra_days},
    )
    license_send(actor=actor, license=license, reason=reason, ticket_url=ticket_url)
    return license


@transaction.atomic
def subscription_convert_to_cloud(
    *, actor, subscription: Subscription, reason: str, ticket_url: str = ""
) -> tuple[ActivationCode, str, LicenseDelivery]:
    """Move a legacy or offline self-managed subscription to online cloud licensing: set its
    licensing flag and e-mail a new activation code (support-workflows §1.4, "Transition legacy
    to cloud"). The license the customer runs stays valid until the instance activates, which
    issues the cloud license."""
    from provision.audit import diff_fields

    _require_fix_permission(actor)
    reason = require_reason(reason)
    subscription = (
        Subscription.objects.select_for_update().select_related("customer").get(pk=subscription.pk)
    )
    if not subscription.is_self_managed:
        raise ApplicationError(
            f"{subscription.name} is a GitLab.com subscription; it has no license to convert.",
            code="not_self_managed",
        )
    if subscription.licensing_method == LicensingMethod.ONLINE_CLOUD:
        raise ApplicationError(
            f"{subscription.name} already uses cloud licensing.", code="no_change"
        )
    changes = diff_fields(subscription, {"licensing_method": LicensingMethod.ONLINE_CLOUD})
    subscription.licensing_method = LicensingMethod.ONLINE_CLOUD
    subscription.full_clean()
    subscription.save(update_fields=["licensing_method", "updated_at"])
    audit_record(
        actor=actor,
        action="licenses.converted_to_cloud",
        target=subscription,
        customer=subscription.customer,
        changes=changes,
        reason=reason,
        ticket_url=ticket_url,
    )
    _crm_changed(subscription.customer_id)
    return activation_code_send(
        actor=actor, subscription=subscription, reason=reason, ticket_url=ticket_url
    )


@transaction.atomic
def license_revoke(*, actor, license: License, reason: str, ticket_url: str = "") -> License:
    """Withdraw a license. It takes a paying customer's key away, so it needs a second person:
    a support lead approves the request (four-eyes) before it runs."""
    if actor is not None and not permissions.can_approve(actor):
        raise ApplicationError(
            "Revoking a license needs a support lead's approval.", code="needs_approval"
        )
    if actor is not None and not four_eyes_granted(action="license_revoke"):
        raise ApplicationError(
            "Revoking a license needs a second person: request it, and another support lead "
            "approves it.",
            code="needs_approval",
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
    _crm_changed(license.subscription.customer_id)
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
            _crm_changed(license.subscription.customer_id)
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


# --- Deliveries ---------------------------------------------------------------------------------
#
# A delivery row is written with the action that asks for it; the e-mail goes out only after
# that transaction commits (transaction.on_commit), so a rolled-back action never mails, and
# the outcome (sent with its Message-ID, or failed with the reason) is recorded on the row by
# the system. A license file is sent by a Celery task that loads the key from the database.
# An activation code is sent in the same process, straight after commit: its plaintext exists
# only in memory, and passing it through the broker would store it in the queue.

FILE_KINDS = (LicenseKind.OFFLINE_CLOUD, LicenseKind.LEGACY)


def _require_file_license(license: License, verb: str) -> None:
    if license.kind not in FILE_KINDS:
        raise ApplicationError(
            f"License {license.pk} is an online cloud license: GitLab refuses it as an uploaded "
            f"file, and the instance receives it by activation. {verb} the activation code "
            "instead.",
            code="online_cloud_license",
        )
    if license.status not in CURRENT_LICENSE_STATUSES:
        raise ApplicationError(
            f"License {license.pk} is {license.get_status_display().lower()}; only a current "
            "license is handed out.",
            code="license_not_current",
        )


@transaction.atomic
def license_download_record(
    *, actor, license: License, reason: str = "", ticket_url: str = ""
) -> LicenseDelivery:
    """Record that staff downloaded a license file (to attach to a ticket, or to hand over).

    The reason is optional here: a download changes no customer state, and the delivery row
    already says who took the file and when.
    """
    _require_fix_permission(actor)
    license = License.objects.select_related("subscription__customer").get(pk=license.pk)
    _require_file_license(license, "Resend")
    now = timezone.now()
    delivery = LicenseDelivery(
        license=license,
        method=DeliveryMethod.DOWNLOAD,
        status=DeliveryStatus.DOWNLOADED,
        created_by=actor,
        downloaded_at=now,
        created_at=now,
    )
    delivery.full_clean()
    delivery.save()
    audit_record(
        actor=actor,
        action="licenses.license_downloaded",
        target=license,
        customer=license.subscription.customer,
        reason=(reason or "").strip() or "License file downloaded",
        ticket_url=ticket_url,
        metadata={"delivery_id": delivery.pk, "key_sha256": license.key_sha256},
    )
    return delivery


def _queue_delivery(
    *,
    actor,
    target,
    customer,
    reason: str,
    ticket_url: str,
    **fields,
) -> LicenseDelivery:
    delivery = LicenseDelivery(status=DeliveryStatus.QUEUED, created_by=actor, **fields)
    delivery.full_clean()
    delivery.save()
    audit_record(
        actor=actor,
        action="licenses.delivery_queued",
        target=target,
        customer=customer,
        changes={
            "delivery": [None, f"{delivery.get_method_display()} to {delivery.recipient_email}"]
        },
        reason=reason,
        ticket_url=ticket_url,
        metadata={
            "delivery_id": delivery.pk,
            "method": delivery.method,
            "recipient": delivery.recipient_email,
        },
    )
    return delivery


@transaction.atomic
def license_send(*, actor, license: License, reason: str, ticket_url: str = "") -> LicenseDelivery:
    """E-mail a license file to the address in the license (the sold-to contact it was issued
    to), as support-workflows §1.1 says: a file goes to the e-mail in the license."""
    from licenses import tasks
    from provision.context import get_context

    _require_fix_permission(actor)
    reason = require_reason(reason)
    license = License.objects.select_related("subscription__customer").get(pk=license.pk)
    _require_file_license(license, "Send")
    customer = license.subscription.customer
    contact = customer.contacts.filter(
        role=ContactRole.SOLD_TO, email=license.licensee_email.lower()
    ).first()
    delivery = _queue_delivery(
        actor=actor,
        target=license,
        customer=customer,
        reason=reason,
        ticket_url=ticket_url,
        license=license,
        method=DeliveryMethod.EMAIL,
        recipient_email=license.licensee_email,
        recipient_contact=contact,
    )
    delivery_id, request_id = delivery.pk, get_context().request_id
    transaction.on_commit(
        lambda: tasks.license_delivery_send.delay(delivery_id=delivery_id, request_id=request_id),
        robust=True,
    )
    return delivery


@transaction.atomic
def activation_code_send(
    *, actor, subscription: Subscription, reason: str, ticket_url: str = ""
) -> tuple[ActivationCode, str, LicenseDelivery]:
    """Generate a new activation code (the old one stops working) and e-mail it to the sold-to
    contact, or to the partner of a partner-channel subscription.

    Returns the code row, its plaintext (to show once; never stored) and the delivery row,
    which records the outcome once the e-mail has gone out after commit.
    """
    from licenses.selectors import delivery_recipient

    _require_fix_permission(actor)
    reason = require_reason(reason)
    subscription = Subscription.objects.select_related("customer", "partner").get(
        pk=subscription.pk
    )
    method, email, recipient = delivery_recipient(subscription)
    if not email:
        raise ApplicationError(
            f"{subscription.customer.name} has no sold-to contact to send the code to: add the "
            "contact, then send the code.",
            code="no_sold_to_contact",
        )
    activation_code, code = activation_code_generate(
        actor=actor, subscription=subscription, reason=reason, ticket_url=ticket_url
    )
    is_partner = method == DeliveryMethod.PARTNER
    delivery = _queue_delivery(
        actor=actor,
        target=activation_code,
        customer=subscription.customer,
        reason=reason,
        ticket_url=ticket_url,
        activation_code=activation_code,
        method=method,
        recipient_email=email,
        partner=recipient if is_partner else None,
        recipient_contact=None if is_partner else recipient,
    )
    delivery_id = delivery.pk
    transaction.on_commit(
        lambda: license_delivery_attempt(delivery_id=delivery_id, code=code), robust=True
    )
    return activation_code, code, delivery


def license_delivery_attempt(
    *, delivery_id: int, code: str | None = None, final: bool = True
) -> LicenseDelivery:
    """Send one queued delivery and record the outcome (system action).

    Runs outside any transaction: talking to the mail server is slow I/O that must not hold
    row locks. Idempotent: a delivery that is no longer queued is left alone. With
    ``final=False`` a transient failure raises ``mail.DeliveryError`` for the caller to retry.
    """
    from licenses import mail

    delivery = LicenseDelivery.objects.select_related(
        "license__subscription__customer",
        "activation_code__subscription__customer",
        "partner",
        "recipient_contact",
    ).get(pk=delivery_id)
    if delivery.status != DeliveryStatus.QUEUED:
        return delivery
    if delivery.activation_code_id and not code:
        # The plaintext lived only in the process that generated it.
        return license_delivery_mark_failed(
            delivery_id=delivery_id,
            error="The activation code is no longer available to send: generate a new one.",
        )
    try:
        message_id = mail.send_delivery(delivery, code=code)
    except mail.DeliveryError as exc:
        if exc.transient and not final:
            raise
        return license_delivery_mark_failed(delivery_id=delivery_id, error=exc.message)
    return license_delivery_mark_sent(delivery_id=delivery_id, message_id=message_id)


def _delivery_target(delivery: LicenseDelivery):
    if delivery.license_id:
        return delivery.license, delivery.license.subscription
    return delivery.activation_code, delivery.activation_code.subscription


def _locked_delivery(delivery_id: int) -> LicenseDelivery:
    return (
        LicenseDelivery.objects.select_for_update(of=("self",))
        .select_related(
            "license__subscription__customer", "activation_code__subscription__customer"
        )
        .get(pk=delivery_id)
    )


@transaction.atomic
def license_delivery_mark_sent(*, delivery_id: int, message_id: str) -> LicenseDelivery:
    """Queued → sent, with the Message-ID as proof; closes the order's "delivered" step."""
    delivery = _locked_delivery(delivery_id)
    if delivery.status != DeliveryStatus.QUEUED:
        return delivery
    delivery.status = DeliveryStatus.SENT
    delivery.message_id = message_id[:255]
    delivery.sent_at = timezone.now()
    delivery.error = ""
    delivery.save(update_fields=["status", "message_id", "sent_at", "error"])
    target, subscription = _delivery_target(delivery)
    audit_record(
        actor=None,
        action="licenses.delivery_sent",
        target=target,
        customer=subscription.customer,
        changes={"status": [DeliveryStatus.QUEUED, DeliveryStatus.SENT]},
        reason=f"E-mailed to {delivery.recipient_email}",
        metadata={"delivery_id": delivery.pk, "message_id": delivery.message_id},
    )
    from provision.services import provisioning_steps_complete

    what = "License file" if delivery.license_id else "Activation code"
    provisioning_steps_complete(
        actor=None,
        subscription_id=subscription.pk,
        kind=ProvisioningStepKind.DELIVERED,
        reason=f"{what} e-mailed to {delivery.recipient_email}",
    )
    return delivery


@transaction.atomic
def license_delivery_mark_failed(*, delivery_id: int, error: str) -> LicenseDelivery:
    """Queued → failed, keeping the reason for the support person who resends."""
    delivery = _locked_delivery(delivery_id)
    if delivery.status != DeliveryStatus.QUEUED:
        return delivery
    delivery.status = DeliveryStatus.FAILED
    delivery.error = error
    delivery.save(update_fields=["status", "error"])
    target, subscription = _delivery_target(delivery)
    audit_record(
        actor=None,
        action="licenses.delivery_failed",
        target=target,
        customer=subscription.customer,
        changes={"status": [DeliveryStatus.QUEUED, DeliveryStatus.FAILED]},
        reason=f"E-mail to {delivery.recipient_email} failed: {error}"[:2000],
        metadata={"delivery_id": delivery.pk},
    )
    return delivery


# --- Cloud activation (GitLab's cloudActivationActivate) ----------------------------------------

logger = logging.getLogger(__name__)

# The strings GitLab's admin UI recognises (wire protocol §2.3): it matches "invalid activation
# code" as a substring and the other two exactly, and shows a specific alert for each ("The
# activation code is not valid", "Your subscription cannot be located", "Your subscription is
# expired"). Anything else gets its generic alert.
ACTIVATION_ERROR_INVALID_CODE = "invalid activation code"
ACTIVATION_ERROR_NO_CLOUD_SUBSCRIPTION = "without cloud compatible subscription"
ACTIVATION_ERROR_EXPIRED = "This license has already expired."
# Not recognised by the UI, but readable where an admin or support looks: the instance's log,
# the GraphQL explorer workaround, the HAR file.
ACTIVATION_ERROR_CODE_IN_USE = "This activation code has already been used by another instance"
ACTIVATION_ERROR_INSTANCE_IDENTIFIER = (
    "invalid instance identifier: expected the instance's UUID (application_settings.uuid)"
)
ACTIVATION_ERROR_LICENSE_UNAVAILABLE = (
    "The license for this subscription could not be prepared. Please contact support."
)
_ACTIVATION_CODE_SHAPE = re.compile(rf"[A-Za-z0-9]{{{ACTIVATION_CODE_LENGTH}}}")
_UNIQUE_INSTANCE_ID_MAX = 64  # usage.Instance.unique_instance_id


@dataclass(frozen=True)
class ActivationResult:
    """What an activation hands back to the instance, and what it bound."""

    license: License
    activation: Activation
    instance: Instance
    # camelCase, exactly as cloudActivationActivate returns them (wire protocol §2.3).
    future_subscriptions: list[dict]
    new_subscription: bool
    # False for a repeat from the instance the code is already bound to (nothing new bound).
    bound: bool

    @property
    def license_key(self) -> str:
        return self.license.key


def _instance_text(value, max_length: int) -> str:
    """Text an instance reports about itself, safe to store and show: control characters and
    lone surrogates dropped (PostgreSQL refuses NUL, and neither encodes), cut to the column."""
    text = "".join(
        ch for ch in str(value or "") if unicodedata.category(ch) not in ("Cc", "Cs")
    ).strip()
    return text[:max_length]


def _ip_or_none(value) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value).strip())) if value else None
    except ValueError:
        return None


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _check_cloud_subscription(subscription: Subscription, today: date) -> None:
    """Only a self-managed subscription with online cloud licensing activates. A GitLab.com,
    offline or legacy subscription, or a cancelled one, is "without cloud compatible
    subscription" (the admin sees "Your subscription cannot be located"). An expired one gets
    the string GitLab itself uses for an expired license, so the admin sees "Your
    subscription is expired", which is the truth and what they need to act on."""
    if (
        not subscription.is_self_managed
        or subscription.licensing_method != LicensingMethod.ONLINE_CLOUD
        or subscription.status == SubscriptionStatus.CANCELLED
    ):
        raise ApplicationError(ACTIVATION_ERROR_NO_CLOUD_SUBSCRIPTION, code="no_cloud_subscription")
    if subscription.status == SubscriptionStatus.EXPIRED or subscription.term_end <= today:
        raise ApplicationError(ACTIVATION_ERROR_EXPIRED, code="subscription_expired")


def _activation_license(subscription: Subscription, today: date) -> License:
    """The subscription's current online cloud license, issued now if it has none yet."""
    from licenses.selectors import license_for_activation
    from licenses.signing import SigningKeyNotConfigured

    license = license_for_activation(subscription, today=today)
    if license is not None:
        return license
    try:
        return license_issue(
            actor=None,
            subscription=subscription,
            kind=LicenseKind.ONLINE_CLOUD,
            reason="Issued on the subscription's first cloud activation",
            today=today,
        )
    except (ApplicationError, SigningKeyNotConfigured) as exc:
        # The instance cannot fix this (no sold-to contact, no signing key): say so plainly and
        # leave the detail, which names customer data and settings, to the log.
        logger.error("activation of %s could not issue a license: %s", subscription.name, exc)
        raise ApplicationError(
            ACTIVATION_ERROR_LICENSE_UNAVAILABLE, code="license_unavailable"
        ) from exc


def _license_mark_active(license: License) -> list | None:
    """Issued → active, as a conditional update: ``[old, new]`` if this call moved it."""
    if license.status != LicenseStatus.ISSUED:
        return None
    moved = License.objects.filter(pk=license.pk, status=LicenseStatus.ISSUED).update(
        status=LicenseStatus.ACTIVE
    )
    if moved != 1:
        license.refresh_from_db(fields=["status"])
        return None
    license.status = LicenseStatus.ACTIVE
    return [LicenseStatus.ISSUED, LicenseStatus.ACTIVE]


def _instance_record_activation(
    *,
    instance: Instance | None,
    instance_uuid: uuid.UUID,
    subscription: Subscription,
    hostname: str,
    gitlab_version: str,
    unique_instance_id: str,
    now,
) -> tuple[Instance, bool, dict]:
    """Find or create the instance and record what it said about itself. Returns the instance,
    whether it is new, and ``{field: [old, new]}`` for the audit event.

    Last-seen and version updates are telemetry (Seat Link writes them daily too), so they are
    not audited on their own; the activation's event carries them.
    """
    created = False
    if instance is None:
        # get_or_create absorbs the race of two first activations of one instance (two codes).
        instance, created = Instance.objects.get_or_create(
            instance_id=instance_uuid, defaults={"first_seen_at": now}
        )
    values = {
        "customer_id": subscription.customer_id,
        "subscription_id": subscription.pk,
        "last_seen_at": now,
    }
    if hostname:
        values["hostname"] = hostname
    if gitlab_version:
        values["version"] = gitlab_version
    if unique_instance_id:
        values["unique_instance_id"] = unique_instance_id
    changes = {
        field.removesuffix("_id"): [getattr(instance, field), value]
        for field, value in values.items()
        if field != "last_seen_at" and getattr(instance, field) != value
    }
    for field, value in values.items():
        setattr(instance, field, value)
    # The foreign keys come from rows this transaction has just read: no need to look again.
    instance.full_clean(exclude=["customer", "subscription"], validate_unique=False)
    instance.save(update_fields=list(values))
    return instance, created, changes


def _close_activated_steps(*, subscription: Subscription, instance_uuid: uuid.UUID) -> None:
    from provision.services import provisioning_steps_complete

    provisioning_steps_complete(
        actor=None,
        actor_kind=ActorKind.INSTANCE,
        subscription_id=subscription.pk,
        kind=ProvisioningStepKind.ACTIVATED,
        reason=f"Instance {instance_uuid} activated",
    )


@transaction.atomic
def activation_activate(
    *,
    activation_code: str,
    instance_identifier: str,
    unique_instance_id: str = "",
    automated: bool = False,
    gitlab_version: str = "",
    hostname: str = "",
    client_ip: str | None,
    today: date | None = None,
) -> ActivationResult:
    """Redeem an activation code for a GitLab instance and hand it the subscription's current
    online cloud license (``cloudActivationActivate``; wire protocol §2).

    A code binds one instance. The bound instance may activate again (an admin re-running
    activation, ``automated`` re-activations) and gets the same stored key; another instance is
    refused until staff release the code (``activation_code_release``), and then takes it over.
    Refusals raise ``ApplicationError`` whose message is the string to send back to GitLab, and
    write nothing. The actor is the instance itself (audit actor kind "instance").
    """
    code = activation_code.strip() if isinstance(activation_code, str) else ""
    if not _ACTIVATION_CODE_SHAPE.fullmatch(code):
        # Not something Provision could have made: refused without a database lookup.
        raise ApplicationError(ACTIVATION_ERROR_INVALID_CODE, code="invalid_activation_code")
    try:
        instance_uuid = uuid.UUID(str(instance_identifier).strip())
    except ValueError:
        raise ApplicationError(
            ACTIVATION_ERROR_INSTANCE_IDENTIFIER, code="invalid_instance_identifier"
        ) from None
    today = today or timezone.localdate()
    now = timezone.now()
    hostname = _instance_text(hostname, Activation._meta.get_field("hostname").max_length)
    gitlab_version = _instance_text(
        gitlab_version, Activation._meta.get_field("gitlab_version").max_length
    )
    # An identifier is kept whole or not at all: a cut one would name a different instance.
    unique_instance_id = _instance_text(unique_instance_id, 10 * _UNIQUE_INSTANCE_ID_MAX)
    if len(unique_instance_id) > _UNIQUE_INSTANCE_ID_MAX:
        unique_instance_id = ""
    client_ip = _ip_or_none(client_ip)

    # The code row is locked for the rest of the transaction, so two instances racing with the
    # same code are serialised: the second one finds the first one's activation.
    activation_code_row = (
        ActivationCode.objects.select_for_update(of=("self",))
        .select_related("subscription__customer")
        .filter(code_hash=activation_code_hash(code))
        .first()
    )
    if activation_code_row is None or activation_code_row.status != ActivationCodeStatus.ACTIVE:
        # A replaced or revoked code is as unknown to the customer as a mistyped one.
        raise ApplicationError(ACTIVATION_ERROR_INVALID_CODE, code="invalid_activation_code")
    subscription = activation_code_row.subscription
    customer = subscription.customer
    _check_cloud_subscription(subscription, today)

    bound = (
        activation_code_row.activations.filter(status=ActivationStatus.ACTIVE)
        .select_related("instance")
        .first()
    )
    instance = Instance.objects.filter(instance_id=instance_uuid).first()
    repeat = bound is not None and instance is not None and bound.instance_id == instance.pk
    if bound is not None and not repeat and activation_code_row.released_at is None:
        raise ApplicationError(ACTIVATION_ERROR_CODE_IN_USE, code="activation_code_in_use")

    license = _activation_license(subscription, today)
    instance, instance_created, instance_changes = _instance_record_activation(
        instance=instance,
        instance_uuid=instance_uuid,
        subscription=subscription,
        hostname=hostname,
        gitlab_version=gitlab_version,
        unique_instance_id=unique_instance_id,
        now=now,
    )
    license_status = _license_mark_active(license)
    from licenses.selectors import subscription_future_entries

    future_subscriptions = [
        {_camel(key): value for key, value in entry.items()}
        for entry in subscription_future_entries(subscription, today=today, exclude=license)
    ]

    if repeat:
        activation = bound
        if activation.license_id != license.pk:
            # The license changed since (seats, add-ons, a correction): the repeat delivers the
            # new one, so the activation now points at it.
            old_license_id = activation.license_id
            activation.license = license
            activation.save(update_fields=["license"])
            changes = {"license": [old_license_id, license.pk]}
            if license_status:
                changes["license_status"] = license_status
            audit_record(
                actor=None,
                actor_kind=ActorKind.INSTANCE,
                action="licenses.activation_refreshed",
                target=activation,
                customer=customer,
                changes=changes,
                reason=f"Instance {instance_uuid} activated again and received license "
                f"{license.pk}",
                metadata={"key_sha256": license.key_sha256, "automated": bool(automated)},
            )
        return ActivationResult(
            license=license,
            activation=activation,
            instance=instance,
            future_subscriptions=future_subscriptions,
            new_subscription=False,
            bound=False,
        )

    new_subscription = not Activation.objects.filter(
        activation_code__subscription=subscription
    ).exists()
    previous = None
    if bound is not None:
        # Staff released the code: the instance that held it lets go, the new one takes over,
        # and the release is used up (a third instance needs another release).
        previous = bound
        previous.status = ActivationStatus.DEACTIVATED
        previous.deactivated_at = now
        previous.save(update_fields=["status", "deactivated_at"])
        released_at = activation_code_row.released_at
        activation_code_row.released_at = None
        activation_code_row.save(update_fields=["released_at"])
        audit_record(
            actor=None,
            actor_kind=ActorKind.INSTANCE,
            action="licenses.activation_deactivated",
            target=previous,
            customer=customer,
            changes={"status": [ActivationStatus.ACTIVE, ActivationStatus.DEACTIVATED]},
            reason=f"Instance {instance_uuid} took over the released activation code "
            f"…{activation_code_row.code_hint}",
            metadata={"released_at": released_at.isoformat()},
        )
    activation = Activation(
        activation_code=activation_code_row,
        license=license,
        instance=instance,
        gitlab_version=gitlab_version,
        hostname=hostname,
        automated=bool(automated),
        client_ip=client_ip,
        activated_at=now,
    )
    activation.full_clean(exclude=["activation_code", "license", "instance"])
    activation.save()
    changes = {
        "instance": [str(previous.instance.instance_id) if previous else None, str(instance_uuid)]
    }
    if license_status:
        changes["license_status"] = license_status
    changes.update({f"instance_{key}": value for key, value in instance_changes.items()})
    audit_record(
        actor=None,
        actor_kind=ActorKind.INSTANCE,
        action="licenses.activated",
        target=activation,
        customer=customer,
        changes=changes,
        reason=f"Activation code …{activation_code_row.code_hint} redeemed by "
        f"{hostname or instance_uuid}",
        metadata={
            "instance_id": str(instance_uuid),
            "instance_created": instance_created,
            "hostname": hostname,
            "gitlab_version": gitlab_version,
            "automated": bool(automated),
            "client_ip": client_ip,
            "license": license.pk,
            "key_sha256": license.key_sha256,
            "new_subscription": new_subscription,
            "previous_activation": previous.pk if previous else None,
        },
    )
    _close_activated_steps(subscription=subscription, instance_uuid=instance_uuid)
    return ActivationResult(
        license=license,
        activation=activation,
        instance=instance,
        future_subscriptions=future_subscriptions,
        new_subscription=new_subscription,
        bound=True,
    )


@transaction.atomic
def activation_code_release(
    *, actor, activation_code: ActivationCode, reason: str, ticket_url: str = ""
) -> ActivationCode:
    """Let one other instance activate with this code (a customer moving to a new server).

    The bound instance keeps its activation until another instance activates with the code;
    that activation then deactivates it and uses the release up. Nothing changes for the
    customer until then, so a release made by mistake costs nothing. It still lets a bearer
    secret move to another machine, so, like revoke, it needs a lead.
    """
    if actor is not None and not permissions.LicensePolicy.can_release(actor):
        raise ApplicationError(
            "Releasing an activation code needs a support lead.", code="forbidden"
        )
    reason = require_reason(reason)
    code = (
        ActivationCode.objects.select_for_update(of=("self",))
        .select_related("subscription__customer")
        .get(pk=activation_code.pk)
    )
    if code.status != ActivationCodeStatus.ACTIVE:
        raise ApplicationError(
            f"Activation code …{code.code_hint} is {code.get_status_display().lower()}; only "
            "the subscription's active code can be released.",
            code="code_not_active",
        )
    bound = code.activations.filter(status=ActivationStatus.ACTIVE).select_related("instance")
    bound = bound.first()
    if bound is None:
        raise ApplicationError(
            f"Activation code …{code.code_hint} has not been used by any instance yet: there "
            "is nothing to release.",
            code="no_change",
        )
    if code.released_at is not None:
        raise ApplicationError(
            f"Activation code …{code.code_hint} was already released on "
            f"{code.released_at:%Y-%m-%d %H:%M}; the next instance to activate with it takes "
            "it over.",
            code="no_change",
        )
    code.released_at = timezone.now()
    code.full_clean()
    code.save(update_fields=["released_at"])
    audit_record(
        actor=actor,
        action="licenses.activation_code_released",
        target=code,
        customer=code.subscription.customer,
        changes={"released_at": [None, code.released_at]},
        reason=reason,
        ticket_url=ticket_url,
        metadata={
            "activation": bound.pk,
            "instance_id": str(bound.instance.instance_id),
            "hostname": bound.instance.hostname,
        },
    )
    return code
