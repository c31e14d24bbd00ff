"""Reads for the licenses app: current licenses, key and code lookups, decoding keys."""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max, Prefetch, Q, QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from licenses.choices import (
    CURRENT_LICENSE_STATUSES,
    ActivationCodeStatus,
    ActivationStatus,
    DeliveryMethod,
    DeliveryStatus,
    LicenseKind,
    LicenseStatus,
)
from licenses.filters import ActivationFilterSet, LicenseFilterSet
from licenses.keyformat import (
    DecodedLicense,
    LicenseKeyError,
    decode_license,
    key_sha256,
    normalized_key,
)
from licenses.models import Activation, ActivationCode, License, LicenseDelivery, SigningKey
from licenses.signing import activation_code_hash, load_public_key
from provision import permissions
from provision.models import AuditEvent, Customer, Subscription

_public_keys: dict[str, rsa.RSAPublicKey] = {}
_public_keys_lock = threading.Lock()


def signing_keys_for_decoding() -> list[tuple[SigningKey, rsa.RSAPublicKey]]:
    """Every registered signing key, the active one first, then retired ones newest first."""
    rows = list(SigningKey.objects.order_by("-is_active", "-created_at"))
    result = []
    for row in rows:
        # A fingerprint names one public key forever, so the parsed key can be kept.
        key = _public_keys.get(row.fingerprint)
        if key is None:
            key = load_public_key(row.public_key_pem)
            with _public_keys_lock:
                _public_keys[row.fingerprint] = key
        result.append((row, key))
    return result


def license_key_decode(key: str) -> DecodedLicense:
    """Decode a key with Provision's signing keys; raises ``LicenseKeyError`` with a reason."""
    keys = [public_key for _, public_key in signing_keys_for_decoding()]
    if not keys:
        raise LicenseKeyError("unknown_signing_key", "no signing key is registered yet")
    return decode_license(key, keys)


def license_find_by_key(key: str) -> License | None:
    """The license issued as exactly this key (CRLF and trailing newlines forgiven, as EE's
    ``normalized_data`` forgives them)."""
    return (
        License.objects.select_related("subscription")
        .filter(key_sha256__in={key_sha256(key), key_sha256(normalized_key(key))})
        .first()
    )


def license_current(subscription: Subscription, *, starts_on: date | None = None):
    """Current (issued or active) licenses of a subscription, latest start first."""
    qs = License.objects.filter(subscription=subscription, status__in=CURRENT_LICENSE_STATUSES)
    if starts_on is not None:
        qs = qs.filter(starts_on=starts_on)
    return qs.order_by("-starts_on", "-issued_at")


def activation_code_find(code: str) -> ActivationCode | None:
    """The active activation code with this plaintext, or None."""
    return (
        ActivationCode.objects.select_related("subscription")
        .filter(code_hash=activation_code_hash(code), status=ActivationCodeStatus.ACTIVE)
        .first()
    )


def subscription_peak_users(subscription: Subscription, *, start: date, end: date) -> int:
    """The most users any report showed for the subscription between two dates (inclusive):
    EE's historical maximum over a true-up period."""
    from usage.models import SeatReport

    peaks = SeatReport.objects.filter(
        Q(subscription=subscription) & Q(report_date__gte=start) & Q(report_date__lte=end)
    ).aggregate(max_historical=Max("max_historical_users"), billable=Max("billable_users"))
    return max(peaks["max_historical"] or 0, peaks["billable"] or 0)


# --- Staff console and API ----------------------------------------------------------------------

# An instance that has not sent Seat Link for this long is "stale" (as on the customer page).
INSTANCE_STALE_AFTER = timedelta(hours=36)


def _require(allowed: bool) -> None:
    if not allowed:
        raise PermissionDenied


def license_list(
    *, actor, filters: dict | None = None
) -> tuple[QuerySet[License], LicenseFilterSet]:
    _require(permissions.LicensePolicy.can_view(actor))
    queryset = (
        License.objects.select_related("subscription__customer")
        # The key and the attributes are kilobytes per row and no list shows them.
        .defer("key", "attributes")
        .order_by("-issued_at", "-pk")
    )
    filterset = LicenseFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def license_get(*, actor, pk: int) -> License:
    """One license with everything its page shows; 403 before 404, so ids reveal nothing."""
    _require(permissions.LicensePolicy.can_view(actor))
    queryset = License.objects.select_related(
        "subscription__customer",
        "subscription__partner",
        "signing_key",
        "supersedes",
        "superseded_by",
        "issued_by",
    ).prefetch_related(
        Prefetch(
            "activations",
            queryset=Activation.objects.select_related("instance", "activation_code"),
        ),
        Prefetch(
            "deliveries",
            queryset=LicenseDelivery.objects.select_related("created_by", "partner"),
        ),
    )
    return get_object_or_404(queryset, pk=pk)


def license_supersede_chain(*, license: License) -> list[License]:
    """The licenses this one replaced and the ones that replaced it, oldest first.

    A license only ever supersedes one of its own subscription, so one query over the
    subscription's licenses is enough to walk the chain both ways.
    """
    rows = {
        row.pk: row
        for row in License.objects.filter(subscription_id=license.subscription_id).defer(
            "key", "attributes"
        )
    }
    by_predecessor = {row.supersedes_id: row for row in rows.values() if row.supersedes_id}
    chain = [rows.get(license.pk, license)]
    while chain[0].supersedes_id in rows:
        chain.insert(0, rows[chain[0].supersedes_id])
    while chain[-1].pk in by_predecessor:
        chain.append(by_predecessor[chain[-1].pk])
    return chain


def license_audit_events(*, actor, license: License, limit: int = 50) -> list[AuditEvent]:
    _require(permissions.AuditPolicy.can_view(actor))
    return list(
        AuditEvent.objects.filter(target_type="licenses.license", target_id=str(license.pk))
        .select_related("actor")
        .order_by("-created_at", "-id")[:limit]
    )


@dataclass(frozen=True)
class KeyCheck:
    """What decoding a stored key with the registered signing keys gives today."""

    decoded: DecodedLicense | None
    error: str = ""
    reason: str = ""


def license_key_check(*, license: License) -> KeyCheck:
    try:
        return KeyCheck(decoded=license_key_decode(license.key))
    except LicenseKeyError as exc:
        return KeyCheck(decoded=None, error=exc.message, reason=exc.reason)


def activation_list(
    *, actor, filters: dict | None = None
) -> tuple[QuerySet[Activation], ActivationFilterSet]:
    _require(permissions.LicensePolicy.can_view(actor))
    queryset = Activation.objects.select_related(
        "activation_code__subscription", "instance"
    ).order_by("-activated_at", "-pk")
    filterset = ActivationFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def activation_code_get(*, actor, pk: int) -> ActivationCode:
    """One activation code with its subscription and the instance bound to it, if any."""
    _require(permissions.LicensePolicy.can_view(actor))
    queryset = ActivationCode.objects.select_related("subscription__customer").prefetch_related(
        Prefetch(
            "activations",
            queryset=Activation.objects.filter(status=ActivationStatus.ACTIVE).select_related(
                "instance"
            ),
            to_attr="active_activations",
        )
    )
    return get_object_or_404(queryset, pk=pk)


@dataclass(frozen=True)
class SubscriptionLicensing:
    """The licenses and activation codes of one subscription, for its page."""

    licenses: list[License]
    activation_code: ActivationCode | None
    previous_codes: list[ActivationCode]
    activations: list[Activation]
    code_deliveries: list[LicenseDelivery]

    @property
    def bound_activation(self) -> Activation | None:
        """The instance the active code is bound to, if one activated with it."""
        if self.activation_code is None:
            return None
        return next(
            (
                activation
                for activation in self.activations
                if activation.activation_code_id == self.activation_code.pk
                and activation.status == ActivationStatus.ACTIVE
            ),
            None,
        )


def subscription_licensing(
    *, actor, subscription: Subscription, limit: int = 20
) -> SubscriptionLicensing:
    """Four queries whatever the history: licenses, codes, activations, code deliveries."""
    _require(permissions.LicensePolicy.can_view(actor))
    licenses = list(
        License.objects.filter(subscription=subscription)
        .defer("key", "attributes")
        .order_by("-issued_at", "-pk")[:limit]
    )
    codes = list(
        ActivationCode.objects.filter(subscription=subscription)
        .select_related("created_by")
        .order_by("-created_at", "-pk")[:6]
    )
    active = next((code for code in codes if code.status == ActivationCodeStatus.ACTIVE), None)
    activations = list(
        Activation.objects.filter(activation_code__subscription=subscription)
        .select_related("instance", "activation_code")
        .order_by("-activated_at", "-pk")[:limit]
    )
    deliveries = list(
        LicenseDelivery.objects.filter(activation_code__subscription=subscription)
        .select_related("activation_code", "partner", "created_by")
        .order_by("-created_at", "-pk")[:5]
    )
    return SubscriptionLicensing(
        licenses=licenses,
        activation_code=active,
        previous_codes=[code for code in codes if code is not active],
        activations=activations,
        code_deliveries=deliveries,
    )


def delivery_recipient(subscription: Subscription) -> tuple[str, str, object]:
    """Where an activation code for the subscription goes: ``(method, e-mail, who)``.

    The sold-to contact, or the partner for partner-channel subscriptions (the partner passes
    it on). ``who`` is the Contact or Partner, or None when there is nobody to send to.
    """
    from provision.choices import Channel, ContactRole

    if subscription.channel == Channel.PARTNER and subscription.partner_id:
        partner = subscription.partner
        return DeliveryMethod.PARTNER, partner.email, partner
    sold_to = subscription.customer.contacts.filter(role=ContactRole.SOLD_TO).first()
    if sold_to is None:
        return DeliveryMethod.EMAIL, "", None
    return DeliveryMethod.EMAIL, sold_to.email, sold_to


@dataclass(frozen=True)
class SigningKeyOverview:
    """The configured signing key, its registered row, and the retired keys."""

    active: SigningKey | None
    retired: list[SigningKey]
    configured_fingerprint: str
    configured_public_key_pem: str
    configured_error: str
    license_counts: dict[int, int]

    @property
    def public_key_pem(self) -> str:
        """What a GitLab instance must trust: the key licenses are signed with from now on."""
        return self.configured_public_key_pem or (self.active.public_key_pem if self.active else "")

    @property
    def fingerprint(self) -> str:
        return self.configured_fingerprint or (self.active.fingerprint if self.active else "")

    @property
    def registered(self) -> bool:
        return bool(self.active) and self.active.fingerprint == self.fingerprint

    @property
    def active_license_count(self) -> int:
        return self.license_counts.get(self.active.pk, 0) if self.active else 0

    @property
    def retired_with_counts(self) -> list[tuple[SigningKey, int]]:
        return [(row, self.license_counts.get(row.pk, 0)) for row in self.retired]


def signing_key_overview(*, actor) -> SigningKeyOverview:
    """Reads only: the row of a newly configured key is registered by the first issue, not by
    looking at this page."""
    from licenses.signing import SigningKeyNotConfigured, configured_key

    _require(permissions.LicensePolicy.can_view(actor))
    rows = list(SigningKey.objects.order_by("-is_active", "-created_at"))
    counts = dict(
        License.objects.values_list("signing_key_id")
        .annotate(n=Count("pk"))
        .values_list("signing_key_id", "n")
    )
    try:
        configured = configured_key()
    except SigningKeyNotConfigured as exc:
        fingerprint, pem, error = "", "", str(exc)
    else:
        fingerprint, pem, error = configured.fingerprint, configured.public_key_pem, ""
    return SigningKeyOverview(
        active=next((row for row in rows if row.is_active), None),
        retired=[row for row in rows if not row.is_active],
        configured_fingerprint=fingerprint,
        configured_public_key_pem=pem,
        configured_error=error,
        license_counts=counts,
    )


# --- Troubleshooting ----------------------------------------------------------------------------

_ACTIVATION_CODE = re.compile(r"^[A-Za-z0-9]{24}$")
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
# Refusals that mean "this is not a license key at all" rather than "a damaged key": short
# text that is not Base64 of a JSON envelope. A long blob that fails the same way is a key that
# lost characters in copy and paste.
_NOT_A_KEY_REASONS = frozenset({"bad_base64", "malformed_envelope", "empty_key"})
_KEY_MIN_CHARS = 200


@dataclass(frozen=True)
class NextAction:
    """A link to the page where the fix is made; ``allowed`` says whether this person may."""

    label: str
    url: str
    allowed: bool = True
    note: str = ""
    requires: str = "a support role"


@dataclass(frozen=True)
class Verdict:
    """The plain-English diagnosis of one pasted identifier.

    ``code`` is stable (tests and the template key on it); ``tone`` is one of success, info,
    warning, danger. Objects are set when they were found, for links.
    """

    code: str
    input_kind: str  # license_key | activation_code | instance_id | unrecognised | empty
    tone: str
    title: str
    explanation: str
    customer: Customer | None = None
    subscription: Subscription | None = None
    license: License | None = None
    current_license: License | None = None
    activation_code: ActivationCode | None = None
    activation: Activation | None = None
    instance: object | None = None
    decoded: DecodedLicense | None = None
    decoder_reason: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    actions: list[NextAction] = field(default_factory=list)
    # What was pasted, safe to show: never a whole activation code.
    input_summary: str = ""

    @property
    def input_label(self) -> str:
        return {
            "license_key": "License key",
            "activation_code": "Activation code",
            "instance_id": "Instance id",
            "unrecognised": "Unrecognised text",
            "empty": "Nothing",
        }[self.input_kind]


def _url(name: str, *args) -> str:
    return reverse(name, args=args)


def _fix_url(action: str, pk: int) -> str:
    """The support fix's page (provision.fixes), where it is previewed and confirmed."""
    return reverse("provision:fix", kwargs={"action": action, "pk": pk})


_KIND_NAMES = {
    LicenseKind.ONLINE_CLOUD: "online cloud license",
    LicenseKind.OFFLINE_CLOUD: "offline cloud license",
    LicenseKind.LEGACY: "legacy license",
}


def _license_label(license: License) -> str:
    return f"{_KIND_NAMES[license.kind]} #{license.pk}"


def _newest_in_chain(license: License) -> License:
    """Follow "superseded by" to the newest license (bounded: chains are short)."""
    current = license
    for _ in range(50):
        following = License.objects.filter(supersedes_id=current.pk).defer("key").first()
        if following is None:
            break
        current = following
    return current


def _current_license_of(subscription: Subscription, *, today: date) -> License | None:
    return (
        license_current(subscription)
        .filter(starts_on__lte=today, expires_on__gt=today)
        .defer("key")
        .first()
        or license_current(subscription).defer("key").first()
    )


def _license_actions(
    actor, subscription: Subscription, current: License | None, *, today: date
) -> list[NextAction]:
    """The safe next step for a customer whose pasted key is not the one to use."""
    policy = permissions.LicensePolicy
    if current is not None and current.kind != LicenseKind.ONLINE_CLOUD:
        return [
            NextAction(
                "Download the current license",
                _url("licenses:license_detail", current.pk) + "#actions",
                allowed=policy.can_download(actor),
                note=f"#{current.pk}, expires {current.expires_on:%Y-%m-%d}",
            )
        ]
    if current is not None:
        return [
            NextAction(
                "Resend activation code",
                _fix_url("activation_code_resend", subscription.pk),
                allowed=policy.can_resend(actor),
                note="The instance fetches the current cloud license when it activates.",
            )
        ]
    return [
        NextAction(
            "Issue a license",
            _url("licenses:license_issue", subscription.pk),
            allowed=policy.can_issue(actor),
            note=f"{subscription.name} has no current license.",
        )
    ]


def _diagnose_license_key(actor, text: str, today: date) -> Verdict:
    try:
        decoded = license_key_decode(text)
    except LicenseKeyError as exc:
        if exc.reason in _NOT_A_KEY_REASONS and len(text) < _KEY_MIN_CHARS:
            return _unrecognised(text)
        if exc.reason == "unknown_signing_key" and not signing_keys_for_decoding():
            if len(text) < _KEY_MIN_CHARS:
                return _unrecognised(text)
            return Verdict(
                code="license_unknown_signer",
                input_kind="license_key",
                tone="danger",
                title="Not a license Provision issued",
                explanation=(
                    "Provision has not issued any license yet (no signing key is registered), so "
                    "this key cannot be one of its own. It was most likely issued by GitLab Inc. "
                    "(customers.gitlab.com); an instance pointed at Provision will reject it."
                ),
                decoder_reason=exc.reason,
            )
        if exc.reason == "unknown_signing_key":
            return Verdict(
                code="license_unknown_signer",
                input_kind="license_key",
                tone="danger",
                title="Signed by a key Provision does not know",
                explanation=(
                    "The key is well formed, but none of Provision's signing keys opens it. It "
                    "was most likely issued by GitLab Inc. (customers.gitlab.com) or by another "
                    "Provision installation, or by a signing key that was removed; an instance "
                    "pointed at Provision will reject it. Find the customer and send them a "
                    "license Provision issued."
                ),
                decoder_reason=exc.reason,
                actions=[NextAction("Search licenses", _url("licenses:license_list"))],
            )
        return Verdict(
            code="license_tampered",
            input_kind="license_key",
            tone="danger",
            title="Damaged or altered license key",
            explanation=(
                f"The decoder refused it: {exc.message} GitLab will refuse it too. Usually "
                "characters were lost or changed when it was copied; ask for the file itself "
                "(.gitlab-license) or send the current license again."
            ),
            decoder_reason=exc.reason,
            facts=[("Decoder reason", exc.reason)],
            actions=[NextAction("Search licenses", _url("licenses:license_list"))],
        )

    license = license_find_by_key(text)
    facts = [
        ("Licensee", decoded.licensee.get("Name", "")),
        ("E-mail", decoded.licensee.get("Email", "")),
        ("Company", decoded.licensee.get("Company", "")),
        ("Kind", LicenseKind(decoded.kind).label),
        ("Plan", f"{decoded.plan}{' (trial)' if decoded.trial else ''}"),
        ("Seats", str(decoded.user_count) if decoded.user_count is not None else "unlimited"),
        (
            "Term",
            f"{decoded.starts_on:%Y-%m-%d} → {decoded.expires_on:%Y-%m-%d}"
            if decoded.expires_on
            else "no expiry",
        ),
        ("Signing key", decoded.signing_key_fingerprint[:16] + "…"),
    ]
    if license is None:
        named = (
            Subscription.objects.select_related("customer")
            .filter(name=decoded.subscription_name or "")
            .first()
        )
        actions = []
        if named is not None:
            current = _current_license_of(named, today=today)
            actions = _license_actions(actor, named, current, today=today)
        return Verdict(
            code="license_not_issued",
            input_kind="license_key",
            tone="danger",
            title="Not a license Provision issued",
            explanation=(
                "It decodes with Provision's signing key, but Provision never issued this exact "
                "key: its SHA-256 matches no license on record. Anyone holding the public key "
                "can make such a key, so do not trust what it says"
                + (
                    f"; it names subscription {named.name}, whose current license is linked below."
                    if named
                    else "."
                )
            ),
            customer=named.customer if named else None,
            subscription=named,
            decoded=decoded,
            facts=[*facts, ("SHA-256", key_sha256(normalized_key(text)))],
            actions=actions,
        )

    subscription = license.subscription
    base = {
        "input_kind": "license_key",
        "customer": subscription.customer,
        "subscription": subscription,
        "license": license,
        "decoded": decoded,
    }
    facts.insert(0, ("Issued", f"#{license.pk} on {license.issued_at:%Y-%m-%d %H:%M}"))
    if license.status == LicenseStatus.REVOKED:
        current = _current_license_of(subscription, today=today)
        return Verdict(
            code="license_revoked",
            tone="danger",
            title=f"Revoked license of {subscription.name}",
            explanation=(
                f"This is {_license_label(license)} of {subscription.customer.name}, revoked on "
                f"{license.revoked_at:%Y-%m-%d}. It must not be used; see the audit trail for why."
                + (f" The current license is #{current.pk}." if current else "")
            ),
            current_license=current,
            facts=facts,
            actions=[
                NextAction("Open the revoked license", _url("licenses:license_detail", license.pk)),
                *(_license_actions(actor, subscription, current, today=today) if current else []),
            ],
            **base,
        )
    if license.status == LicenseStatus.SUPERSEDED:
        newest = _newest_in_chain(license)
        direct = license.superseded_by
        return Verdict(
            code="license_superseded",
            tone="warning",
            title=f"Superseded by license #{direct.pk}",
            explanation=(
                f"This is an older {_license_label(license)} of {subscription.name}: license "
                f"#{direct.pk} replaced it on {direct.issued_at:%Y-%m-%d}"
                + (f", and the newest is #{newest.pk}" if newest.pk != direct.pk else "")
                + (
                    ", which is current. "
                    if newest.status in CURRENT_LICENSE_STATUSES
                    else f" (now {newest.get_status_display().lower()}). "
                )
                + (
                    "Online cloud instances pick the new key up at their next Seat Link; if "
                    "this one still shows the old key, it is not syncing."
                    if license.kind == LicenseKind.ONLINE_CLOUD
                    else "The customer should install the newer license file."
                )
            ),
            current_license=newest,
            facts=facts,
            actions=[
                NextAction(
                    f"Open license #{newest.pk}", _url("licenses:license_detail", newest.pk)
                ),
                *(
                    _license_actions(actor, subscription, newest, today=today)
                    if newest.status in CURRENT_LICENSE_STATUSES
                    else []
                ),
            ],
            **base,
        )
    if license.status == LicenseStatus.EXPIRED or license.expires_on <= today:
        renewal = getattr(subscription, "renewed_by", None)
        current = _current_license_of(renewal, today=today) if renewal else None
        if renewal is not None:
            actions = _license_actions(actor, renewal, current, today=today)
            where = f" {subscription.name} was renewed as {renewal.name}."
        else:
            actions = [NextAction("Open the subscription", subscription.get_absolute_url())]
            where = f" {subscription.name} has not been renewed in Provision."
        return Verdict(
            code="license_expired",
            tone="warning",
            title=f"Expired on {license.expires_on:%Y-%m-%d}",
            explanation=(
                f"This is {_license_label(license)} of {subscription.customer.name}. GitLab "
                "allows 14 days of grace after the expiry date, then blocks changes." + where
            ),
            current_license=current,
            facts=facts,
            actions=actions,
            **base,
        )
    future = license.starts_on > today
    return Verdict(
        code="license_valid",
        tone="info" if future else "success",
        title=(
            f"Valid from {license.starts_on:%Y-%m-%d} (future dated)"
            if future
            else f"Valid until {license.expires_on:%Y-%m-%d}"
        ),
        explanation=(
            f"This is the current {_license_label(license)} of {subscription.name} for "
            f"{subscription.customer.name}, issued by Provision and unaltered."
            + (
                " GitLab lists it under future licenses until it starts."
                if future
                else " If GitLab still refuses it, check the instance's user count against "
                f"the {license.user_count} seats and the true-up fields."
            )
        ),
        facts=facts,
        actions=[NextAction("Open the license", _url("licenses:license_detail", license.pk))],
        **base,
    )


def _code_actions(actor, subscription: Subscription) -> list[NextAction]:
    return [
        NextAction(
            "Resend activation code",
            _fix_url("activation_code_resend", subscription.pk),
            allowed=permissions.LicensePolicy.can_resend(actor),
            note="Makes a new code (this one stops working) and e-mails it.",
        )
    ]


def _release_action(actor, activation_code: ActivationCode) -> list[NextAction]:
    return [
        NextAction(
            "Release the code",
            _fix_url("activation_code_release", activation_code.pk),
            allowed=permissions.LicensePolicy.can_release(actor),
            note="Lets one other instance activate with it; the bound one keeps its license.",
            requires="a support lead",
        )
    ]


def _diagnose_activation_code(actor, text: str, today: date) -> Verdict:
    code = (
        ActivationCode.objects.select_related("subscription__customer")
        .filter(code_hash=activation_code_hash(text))
        .first()
    )
    hint = f"…{text[-4:]}"
    if code is None:
        return Verdict(
            code="code_unknown",
            input_kind="activation_code",
            tone="danger",
            title=f"Unknown activation code {hint}",
            explanation=(
                "No activation code Provision made matches it. Codes are case-sensitive: check "
                "for a mistyped character, or it came from customers.gitlab.com rather than "
                "Provision."
            ),
            facts=[("Code", hint)],
            actions=[NextAction("Search licenses", _url("licenses:license_list"))],
        )
    subscription = code.subscription
    base = {
        "input_kind": "activation_code",
        "customer": subscription.customer,
        "subscription": subscription,
        "activation_code": code,
    }
    facts = [
        ("Code", f"…{code.code_hint}"),
        ("Created", f"{code.created_at:%Y-%m-%d %H:%M}"),
        ("Subscription status", subscription.get_status_display()),
    ]
    if code.status != ActivationCodeStatus.ACTIVE:
        replaced = code.status == ActivationCodeStatus.REPLACED
        newer = (
            ActivationCode.objects.filter(
                subscription=subscription, status=ActivationCodeStatus.ACTIVE
            )
            .only("code_hint", "created_at")
            .first()
        )
        return Verdict(
            code="code_replaced" if replaced else "code_revoked",
            tone="danger",
            title=(
                f"Replaced on {code.replaced_at:%Y-%m-%d}: this code no longer works"
                if replaced and code.replaced_at
                else "Revoked: this code no longer works"
            ),
            explanation=(
                f"This was an activation code of {subscription.name} ({subscription.customer.name})"
                + (
                    f". A newer code (…{newer.code_hint}, made {newer.created_at:%Y-%m-%d}) "
                    "replaced it; the customer should use that one, or get a new one."
                    if newer
                    else ". No code is active for the subscription now."
                )
            ),
            facts=facts,
            actions=_code_actions(actor, subscription),
            **base,
        )
    bound = (
        code.activations.filter(status=ActivationStatus.ACTIVE).select_related("instance").first()
    )
    if bound is not None:
        instance = bound.instance
        if code.released_at is not None:
            next_step = (
                f" Staff released it on {code.released_at:%Y-%m-%d %H:%M}: the next instance "
                "that activates with it takes it over from this one."
            )
        else:
            next_step = (
                " A code activates one instance; another instance using it is refused. To move "
                "the subscription to a new instance, release the code or send a new one."
            )
        return Verdict(
            code="code_in_use",
            tone="info" if code.released_at else "warning",
            title=f"Already used by instance {instance.hostname or instance.instance_id}",
            explanation=(
                f"This active code of {subscription.name} was redeemed on "
                f"{bound.activated_at:%Y-%m-%d %H:%M} by instance {instance.instance_id}"
                + (f" ({instance.hostname})" if instance.hostname else "")
                + "."
                + next_step
            ),
            activation=bound,
            instance=instance,
            facts=[
                *facts,
                ("Instance", str(instance.instance_id)),
                ("GitLab version", bound.gitlab_version or instance.version or "—"),
            ],
            actions=[
                *([] if code.released_at else _release_action(actor, code)),
                *_code_actions(actor, subscription),
            ],
            **base,
        )
    closed = subscription.status not in ("active", "pending")
    current = license_current(subscription).filter(kind=LicenseKind.ONLINE_CLOUD).first()
    if closed or current is None:
        problem = (
            f"{subscription.name} is {subscription.get_status_display().lower()}"
            if closed
            else f"{subscription.name} has no current online cloud license to hand out"
        )
        return Verdict(
            code="code_active_no_license",
            tone="warning",
            title=f"Active code, but activation will fail: {problem}",
            explanation=(
                "The code is valid and unused, but activating returns the subscription's "
                f"current cloud license, and {problem}."
            ),
            facts=facts,
            actions=(
                [
                    NextAction(
                        "Issue a license",
                        _url("licenses:license_issue", subscription.pk),
                        allowed=permissions.LicensePolicy.can_issue(actor),
                    )
                ]
                if not closed
                else [NextAction("Open the subscription", subscription.get_absolute_url())]
            ),
            **base,
        )
    return Verdict(
        code="code_active",
        tone="success",
        title="Active and not used yet",
        explanation=(
            f"This is the current activation code of {subscription.name} "
            f"({subscription.customer.name}). It activates one instance, which then receives "
            f"license #{current.pk}. If activation still fails, the instance probably cannot "
            "reach Provision (CUSTOMER_PORTAL_URL, proxy, or blocked local requests)."
        ),
        current_license=current,
        facts=facts,
        actions=[NextAction("Open the subscription", subscription.get_absolute_url())],
        **base,
    )


def _diagnose_instance(actor, text: str, today: date) -> Verdict:
    from usage.models import Instance

    instance_id = uuid.UUID(text)
    instance = (
        Instance.objects.select_related("customer", "subscription__customer")
        .filter(instance_id=instance_id)
        .first()
    )
    if instance is None:
        return Verdict(
            code="instance_unknown",
            input_kind="instance_id",
            tone="warning",
            title="No instance with this id has contacted Provision",
            explanation=(
                "The instance has neither activated nor sent Seat Link. Check that it can reach "
                "Provision: CUSTOMER_PORTAL_URL, the network path to port 443, and, for a "
                "Provision on a private network, 'Allow requests to the local network'."
            ),
            facts=[("Instance id", str(instance_id))],
        )
    activation = (
        instance.activations.select_related("activation_code__subscription__customer", "license")
        .order_by("-activated_at")
        .first()
    )
    subscription = instance.subscription or (
        activation.activation_code.subscription if activation else None
    )
    customer = instance.customer or (subscription.customer if subscription else None)
    now = timezone.now()
    stale = instance.last_sync_at is None or instance.last_sync_at < now - INSTANCE_STALE_AFTER
    facts = [
        ("Hostname", instance.hostname or "—"),
        ("GitLab version", instance.version or "—"),
        ("First seen", f"{instance.first_seen_at:%Y-%m-%d}"),
        (
            "Last Seat Link",
            f"{instance.last_sync_at:%Y-%m-%d %H:%M}" if instance.last_sync_at else "never",
        ),
    ]
    if activation is not None:
        facts.append(
            (
                "Activation",
                f"code …{activation.activation_code.code_hint} on "
                f"{activation.activated_at:%Y-%m-%d} ({activation.get_status_display().lower()})",
            )
        )
    actions = []
    if subscription is not None:
        actions.append(NextAction("Open the subscription", subscription.get_absolute_url()))
    if instance.air_gapped:
        code, tone, title = "instance_air_gapped", "info", "Air-gapped instance"
        explanation = (
            "It does not sync; its usage arrives as uploaded license usage files, and it needs an "
            "offline cloud or legacy license file."
        )
    elif stale:
        code, tone = "instance_stale", "warning"
        title = (
            "Never sent Seat Link"
            if instance.last_sync_at is None
            else f"Not syncing since {instance.last_sync_at:%Y-%m-%d}"
        )
        explanation = (
            "Online cloud instances sync daily. No Seat Link for more than 36 hours usually "
            "means the instance cannot reach Provision (DNS, proxy, TLS interception, or "
            "CUSTOMER_PORTAL_URL), or it runs a license that is not online cloud."
        )
        if activation is not None and activation.activation_code.status != "active":
            explanation += " Its activation code has since been replaced."
    else:
        code, tone = "instance_syncing", "success"
        title = f"Syncing: last Seat Link {instance.last_sync_at:%Y-%m-%d %H:%M}"
        explanation = "The instance reports daily and receives the current license with each sync."
    who = (
        f"{subscription.name} ({customer.name})" if subscription and customer else "no subscription"
    )
    return Verdict(
        code=code,
        input_kind="instance_id",
        tone=tone,
        title=title,
        explanation=f"Instance of {who}. {explanation}",
        customer=customer,
        subscription=subscription,
        license=activation.license if activation else None,
        activation_code=activation.activation_code if activation else None,
        activation=activation,
        instance=instance,
        facts=facts,
        actions=actions,
    )


def _unrecognised(text: str) -> Verdict:
    near_code = re.fullmatch(r"[A-Za-z0-9]{16,32}", text) is not None
    return Verdict(
        code="unrecognised",
        input_kind="unrecognised",
        tone="secondary",
        title="Not a license key, activation code or instance id",
        explanation=(
            (
                f"An activation code has exactly 24 letters and digits; this has {len(text)}: "
                "a character was probably lost or added in copying. "
                if near_code
                else ""
            )
            + "Paste one of: a license key (the whole .gitlab-license file, several lines of "
            "Base64), an activation code (24 letters and digits) or an instance id (a UUID, "
            "from Admin › Subscription or the Seat Link logs)."
        ),
    )


def license_troubleshoot(*, actor, text: str, today: date | None = None) -> Verdict:
    """Say what a pasted license key, activation code or instance id is, what is wrong with
    it, and the next safe action. Reads only; the pasted text is never stored or logged."""
    _require(permissions.LicensePolicy.can_troubleshoot(actor))
    today = today or timezone.localdate()
    text = (text or "").strip()
    if not text:
        return Verdict(
            code="empty",
            input_kind="empty",
            tone="secondary",
            title="Paste something to check",
            explanation="A license key, an activation code or an instance id.",
        )
    if _ACTIVATION_CODE.match(text):
        verdict = _diagnose_activation_code(actor, text, today)
        summary = f"…{text[-4:]}"
    elif _UUID.match(text):
        verdict = _diagnose_instance(actor, text, today)
        summary = str(uuid.UUID(text))
    else:
        verdict = _diagnose_license_key(actor, text, today)
        summary = f"{len(text):,} characters, SHA-256 {key_sha256(normalized_key(text))[:12]}…"
    return replace(verdict, input_summary=summary)


# --- Cloud activation ---------------------------------------------------------------------------


def license_for_activation(subscription: Subscription, *, today: date) -> License | None:
    """The online cloud license an activation hands out: the current one in force today, or,
    for a subscription whose term has not begun, the current one that starts first."""
    from licenses.choices import LicenseKind as _LicenseKind

    current = list(
        License.objects.filter(
            subscription=subscription,
            kind=_LicenseKind.ONLINE_CLOUD,
            status__in=CURRENT_LICENSE_STATUSES,
        ).order_by("starts_on", "-issued_at")
    )
    started = [row for row in current if row.starts_on <= today]
    if started:
        return max(started, key=lambda row: row.starts_on)
    return current[0] if current else None


# Renewals of renewals are followed this far, and no further, when listing future terms.
FUTURE_RENEWAL_DEPTH = 5


def _future_entry(
    *, licensing: str, plan: str, name: str, email: str, company: str, starts, expires, users
):
    """One future term as GitLab stores it (``application_settings.future_subscriptions``)."""
    from licenses.choices import LicenseKind as _LicenseKind

    return {
        "cloud_license_enabled": licensing
        in (_LicenseKind.ONLINE_CLOUD, _LicenseKind.OFFLINE_CLOUD),
        "offline_cloud_license_enabled": licensing == _LicenseKind.OFFLINE_CLOUD,
        "plan": plan,
        "name": name,
        "company": company,
        "email": email,
        "starts_at": starts.isoformat(),
        "expires_at": expires.isoformat(),
        "users_in_license_count": users,
    }


def _future_entry_from_license(license: License) -> dict:
    return _future_entry(
        licensing=license.kind,
        plan=license.plan,
        name=license.licensee_name,
        email=license.licensee_email,
        company=license.licensee_company,
        starts=license.starts_on,
        expires=license.expires_on,
        users=license.user_count,
    )


def _future_entry_from_subscription(subscription: Subscription) -> dict:
    """A renewal that has no license yet: what its license will say, from the subscription."""
    from licenses.services import LICENSE_PLAN
    from provision.choices import ContactRole

    customer = subscription.customer
    sold_to = customer.contacts.filter(role=ContactRole.SOLD_TO).first()
    return _future_entry(
        licensing=subscription.licensing_method,
        plan=LICENSE_PLAN.get(subscription.plan, subscription.plan),
        name=sold_to.full_name if sold_to else "",
        email=sold_to.email if sold_to else "",
        company=customer.name,
        starts=subscription.term_start,
        expires=subscription.term_end,
        users=subscription.seats,
    )


def subscription_future_entries(
    subscription: Subscription, *, today: date, exclude: License | None = None
) -> list[dict]:
    """Terms that start after today, for GitLab's "future subscriptions" list (snake_case keys,
    as the instance stores them; the activation answer camel-cases them).

    Two sources: current licenses of this subscription that start later (a multi-year term's
    next license), and renewal subscriptions that start later, from their current license or,
    before one is issued, from the renewal itself. Cancelled renewals are left out.
    """
    from provision.choices import SubscriptionStatus

    entries = [
        _future_entry_from_license(row)
        for row in License.objects.filter(
            subscription=subscription, status__in=CURRENT_LICENSE_STATUSES, starts_on__gt=today
        )
        .exclude(pk=exclude.pk if exclude else None)
        .order_by("starts_on", "-issued_at")
    ]
    seen = {subscription.pk}
    previous = subscription
    for _ in range(FUTURE_RENEWAL_DEPTH):
        renewal = Subscription.objects.filter(renews=previous).select_related("customer").first()
        if renewal is None or renewal.pk in seen:
            break
        seen.add(renewal.pk)
        previous = renewal
        if renewal.status == SubscriptionStatus.CANCELLED or not renewal.is_self_managed:
            continue
        if renewal.term_start <= today:
            continue
        licenses = list(
            License.objects.filter(
                subscription=renewal, status__in=CURRENT_LICENSE_STATUSES
            ).order_by("starts_on", "-issued_at")
        )
        if licenses:
            entries.extend(_future_entry_from_license(row) for row in licenses)
        else:
            entries.append(_future_entry_from_subscription(renewal))
    return entries


def license_deliveries_stuck(*, older_than: timedelta) -> list[int]:
    """Ids of license-file e-mails still queued well after they were queued."""
    return list(
        LicenseDelivery.objects.filter(
            status=DeliveryStatus.QUEUED,
            method=DeliveryMethod.EMAIL,
            license__isnull=False,
            activation_code__isnull=True,
            created_at__lt=timezone.now() - older_than,
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:500]
    )


@dataclass(frozen=True)
class LicenseAccess:
    """How long a self-managed subscription's licenses let it run, for temporary extensions."""

    ends_on: date
    paid_license: License | None
    open_extension: License | None


def license_access_end(*, subscription: Subscription, today: date) -> LicenseAccess:
    """The last day the customer's current licenses (paid or temporary) cover, at least today.

    The paid license is the latest current non-trial one; the open extension the latest current
    trial license. Two queries' worth of rows at most (one subscription's current licenses).
    """
    current = list(license_current(subscription).defer("key", "attributes"))
    paid = next((row for row in current if not row.trial), None)
    extension = max(
        (row for row in current if row.trial), key=lambda row: row.expires_on, default=None
    )
    ends_on = max([today, *(row.expires_on for row in current)])
    if not current:
        ends_on = max(today, subscription.term_end)
    return LicenseAccess(ends_on=ends_on, paid_license=paid, open_extension=extension)
