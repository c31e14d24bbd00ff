"""Support fixes: every repair L&R support makes, as one small form, one preview, one service call.

A fix (``Fix`` subclass, registered in ``FIXES`` by its key) knows its target model, the extra
fields its form asks for, what it would change (``preview``: fields before → after, licenses
issued or superseded, e-mails sent, CRM pushes), whether it needs a second person's approval
(``approval_rule``, the four-eyes rules of issue 6), and the **one** service call that makes the
change (``apply``). The orchestration — permission, reason, row lock, the preview check that
guards against two agents acting at once, and the four-eyes request — lives in
``provision.services.fix_submit`` / ``fix_request_approve``; the page in ``provision.fix_views``.

Previews are computed from the target as it is *now*, under the row lock when confirming: if
the preview an agent confirms differs from what the same form would preview now (somebody else
changed the subscription in between), the fix is refused as a conflict and the agent sees the
new preview. Nothing is lost and nothing is applied on stale figures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import date

from django import forms
from django.db import models
from django.urls import reverse
from django.utils import timezone

from provision import permissions
from provision.choices import (
    AddOnKind,
    ContactRole,
    Deployment,
    LicensingMethod,
    ReasonCode,
    StepState,
    SubscriptionStatus,
)
from provision.exceptions import ApplicationError
from provision.models import Customer, ProvisioningStep, Subscription

# --- Previews -----------------------------------------------------------------------------------


@dataclass
class Preview:
    """Exactly what a fix will do, shown before it runs and kept on a four-eyes request.

    ``changes`` are ``[what, before, after]`` rows; the lists are sentences. Everything is
    plain text, so the preview can be stored, compared (``digest``) and rendered as is.
    """

    changes: list[list[str]] = field(default_factory=list)
    licenses_issued: list[str] = field(default_factory=list)
    licenses_superseded: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    crm_pushes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def change(self, what: str, before, after) -> None:
        self.changes.append([what, _text(before), _text(after)])

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preview:
        return cls(**{key: list(value) for key, value in (data or {}).items()})

    def digest(self) -> str:
        payload = json.dumps(self.as_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @property
    def is_empty(self) -> bool:
        return not any(self.as_dict().values())


def _text(value) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


@dataclass
class FixResult:
    """What a fix did: the message for the agent and where to go next. A fix that must show a
    secret once (a new activation code) names a template to render instead of redirecting."""

    message: str
    redirect_url: str
    template: str | None = None
    context: dict = field(default_factory=dict)
    # An e-mail queued by the fix goes out after the commit; the page says how that went.
    delivery: object | None = None
    delivered_what: str = ""


# --- The form every fix shares ----------------------------------------------------------------


class FixReasonForm(forms.Form):
    """Reason code from the fixed list, free text, optional ticket link. ``preview_digest``
    carries the preview the agent confirmed. Every fix's page has it; the fix's own fields are
    a separate form (``Fix.params_form_class``)."""

    reason_code = forms.ChoiceField(choices=[("", "Choose a reason…"), *ReasonCode.choices])
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        help_text="Kept in the audit trail. Say why, not what.",
    )
    ticket_url = forms.URLField(
        required=False, label="Ticket link", assume_scheme="https", max_length=500
    )
    preview_digest = forms.CharField(required=False, widget=forms.HiddenInput, max_length=64)


def form_params(form: forms.Form) -> dict:
    """A valid params form's values, JSON-ready (dates as ISO strings) for the request record."""
    return {
        name: (value.isoformat() if isinstance(value, date) else value)
        for name, value in form.cleaned_data.items()
    }


def _crm_note(customer: Customer) -> list[str]:
    from crm_sync.choices import CrmTarget
    from crm_sync.selectors import crm_target_configured

    targets = [t.label for t in CrmTarget if crm_target_configured(t.value)]
    if not targets:
        return []
    return [f"{' and '.join(targets)}: {customer.name} is pushed within a minute of the change."]


def _current_licenses(subscription: Subscription, today: date):
    from licenses.selectors import license_current

    return [
        row
        for row in license_current(subscription).defer("key", "attributes")
        if row.starts_on <= today
    ]


def _reissue_preview(preview: Preview, subscription: Subscription, *, users: int) -> None:
    """Seats and add-ons are written into the key: each current license is re-issued."""
    today = timezone.localdate()
    for current in _current_licenses(subscription, today):
        preview.licenses_issued.append(
            f"New {current.get_kind_display().lower()} for {users} users "
            f"({current.starts_on:%Y-%m-%d} → {current.expires_on:%Y-%m-%d})"
        )
        preview.licenses_superseded.append(
            f"License #{current.pk} ({current.user_count} users) becomes superseded"
        )
        if current.kind == LicensingMethod.ONLINE_CLOUD:
            preview.notes.append("The instance picks the new cloud license up at its next sync.")
        else:
            preview.notes.append(
                "Offline and legacy customers need the new file: e-mail it from the new "
                "license's page."
            )


# --- Fix base class -----------------------------------------------------------------------------


class Fix:
    """One support fix. Subclasses set the class attributes and implement the hooks."""

    key: str = ""
    # The audit event that records the fix itself; what it sets off (a license re-issued after
    # a seat change) writes its own events, with the same request id and reason code.
    audit_action: str = ""
    label: str = ""
    button: str = ""
    icon: str = "bi-wrench"
    danger: bool = False
    model: type[models.Model] = Customer
    default_reason_code: str = ReasonCode.CUSTOMER_REQUEST
    help: str = ""

    # --- permissions and targets

    def allowed(self, user) -> bool:
        return permissions.can_fix(user)

    def queryset(self):
        return self.model.objects.all()

    def get(self, pk) -> models.Model:
        return self.queryset().get(pk=pk)

    def lock(self, pk) -> models.Model:
        """The target, locked for the rest of the transaction (PostgreSQL row lock)."""
        return self.queryset().select_for_update(of=("self",)).get(pk=pk)

    def customer_of(self, target, params: dict | None = None) -> Customer | None:
        raise NotImplementedError

    def describe(self, target) -> str:
        return str(target)

    def back_url(self, target) -> str:
        return target.get_absolute_url()

    def unavailable(self, target) -> str:
        """Why this fix does not apply to the target at all ("" when it does)."""
        return ""

    # --- the form

    def extra_fields(self, target) -> dict[str, forms.Field]:
        return {}

    def params_form_class(self, target) -> type[forms.Form]:
        return type(f"{type(self).__name__}Form", (forms.Form,), self.extra_fields(target))

    def initial(self, target) -> dict:
        return {}

    # --- preview, approval, apply

    def preview(self, target, params: dict) -> Preview:
        raise NotImplementedError

    def approval_rule(self, target, params: dict, actor) -> str:
        """Why this fix needs a second person's approval ("" when it does not)."""
        return ""

    def apply(self, *, actor, target, params: dict, reason: str, ticket_url: str) -> FixResult:
        raise NotImplementedError

    def url(self, target) -> str:
        return reverse("provision:fix", kwargs={"action": self.key, "pk": target.pk})


def _date_param(params: dict, name: str) -> date:
    value = params[name]
    return value if isinstance(value, date) else date.fromisoformat(value)


# --- Subscription fixes -------------------------------------------------------------------------


class SubscriptionFix(Fix):
    model = Subscription

    def queryset(self):
        return Subscription.objects.select_related("customer", "partner")

    def customer_of(self, target, params=None) -> Customer:
        return target.customer

    def describe(self, target) -> str:
        return f"{target.name} ({target.get_plan_display()}, {target.customer.name})"

    def _open(self, target) -> str:
        if target.status in (SubscriptionStatus.EXPIRED, SubscriptionStatus.CANCELLED):
            return (
                f"{target.name} is {target.get_status_display().lower()}; only a pending or "
                "active subscription can change."
            )
        return ""


class SeatsChange(SubscriptionFix):
    key = "seats_change"
    audit_action = "provision.subscription_seats_changed"
    label = "Change seats"
    button = "Change seats"
    icon = "bi-people"
    default_reason_code = ReasonCode.ORDER_CORRECTION
    help = (
        "Sets the subscription's seat count; current licenses are re-issued with it. An increase "
        "of more than 20% needs a support lead's approval, as does going below the users "
        "already in use this term (it waives a true-up)."
    )

    def unavailable(self, target) -> str:
        return self._open(target)

    def extra_fields(self, target):
        from provision.selectors import subscription_peak_usage

        peak = subscription_peak_usage(subscription=target)
        return {
            "seats": forms.IntegerField(
                min_value=0,
                max_value=10_000_000,
                label="New seats",
                help_text=f"Now {target.seats}; peak usage this term {peak}.",
            )
        }

    def initial(self, target):
        return {"seats": target.seats}

    def preview(self, target, params):
        from provision.selectors import subscription_peak_usage

        seats = params["seats"]
        if seats == target.seats:
            raise ApplicationError(f"{target.name} already has {seats} seats.", code="no_change")
        preview = Preview()
        preview.change(f"{target.name} · seats", target.seats, seats)
        peak = subscription_peak_usage(subscription=target)
        if seats < peak:
            preview.notes.append(
                f"{seats} seats is below the {peak} users in use this term: this waives a true-up."
            )
        if target.is_self_managed:
            _reissue_preview(preview, target, users=seats)
        preview.crm_pushes.extend(_crm_note(target.customer))
        return preview

    def approval_rule(self, target, params, actor):
        from provision.selectors import subscription_peak_usage
        from provision.services import (
            SEAT_INCREASE_APPROVAL_PERCENT,
            seats_increase_needs_approval,
        )

        seats = params["seats"]
        if seats_increase_needs_approval(old_seats=target.seats, seats=seats):
            change = (
                "from 0"
                if not target.seats
                else f"+{(seats - target.seats) * 100 // target.seats}%"
            )
            return (
                f"A seat increase of more than {SEAT_INCREASE_APPROVAL_PERCENT}% ({change}) "
                "needs a support lead's approval."
            )
        if seats < subscription_peak_usage(subscription=target) and not permissions.can_approve(
            actor
        ):
            return "Going below the users in use waives a true-up: a support lead approves it."
        return ""

    def apply(self, *, actor, target, params, reason, ticket_url):
        from provision.services import subscription_seats_change

        old = target.seats
        subscription = subscription_seats_change(
            actor=actor,
            subscription=target,
            seats=params["seats"],
            reason=reason,
            ticket_url=ticket_url,
        )
        return FixResult(
            f"Seats on {subscription.name} changed from {old} to {subscription.seats}.",
            subscription.customer.get_absolute_url(),
        )


class AddOnChange(SubscriptionFix):
    key = "add_on_change"
    audit_action = "provision.subscription_add_on_changed"
    label = "Add or remove an add-on"
    button = "Set add-on"
    icon = "bi-puzzle"
    default_reason_code = ReasonCode.ORDER_CORRECTION
    help = (
        "Sets an add-on's quantity from today to the end of the term (0 removes it). The "
        "earlier quantity stays in the history; current licenses are re-issued."
    )

    def unavailable(self, target):
        return self._open(target)

    def extra_fields(self, target):
        return {
            "kind": forms.ChoiceField(choices=AddOnKind.choices, label="Add-on"),
            "quantity": forms.IntegerField(
                min_value=0, max_value=10_000_000, help_text="0 removes the add-on from today."
            ),
        }

    def _current(self, target, kind: str, start: date):
        return (
            target.add_ons.filter(kind=kind, starts_on__lte=start, ends_on__gt=start)
            .order_by("-starts_on")
            .first()
        )

    def preview(self, target, params):
        kind, quantity = params["kind"], params["quantity"]
        start = max(timezone.localdate(), target.term_start)
        current = self._current(target, kind, start)
        old = current.quantity if current else 0
        label = AddOnKind(kind).label
        if quantity == old:
            raise ApplicationError(f"{target.name} already has {old} × {label}.", code="no_change")
        preview = Preview()
        preview.change(f"{target.name} · {label}", old, quantity)
        preview.change(
            "Effective",
            "—",
            f"{start:%Y-%m-%d} → {target.term_end:%Y-%m-%d}" if quantity else start,
        )
        if target.is_self_managed:
            _reissue_preview(preview, target, users=target.seats)
        preview.crm_pushes.extend(_crm_note(target.customer))
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from provision.services import subscription_add_on_set

        subscription_add_on_set(
            actor=actor,
            subscription=target,
            kind=params["kind"],
            quantity=params["quantity"],
            reason=reason,
            ticket_url=ticket_url,
        )
        return FixResult(
            f"{AddOnKind(params['kind']).label} on {target.name} set to {params['quantity']}.",
            target.customer.get_absolute_url(),
        )


class LicenseExtend(SubscriptionFix):
    key = "license_extend"
    audit_action = "licenses.license_issued"
    label = "Temporary extension"
    button = "Issue temporary license"
    icon = "bi-calendar-plus"
    default_reason_code = ReasonCode.LATE_RENEWAL
    help = (
        "Issues a temporary (trial) legacy license from today to the date you choose and e-mails "
        "it to the sold-to contact; the paid license is not changed. More than 30 days beyond the "
        "current access needs a support lead's approval."
    )

    def unavailable(self, target):
        if not target.is_self_managed:
            return "GitLab.com subscriptions are extended with a trial on their namespace."
        if target.is_trial:
            return "Trial subscriptions get no temporary extension."
        if target.status == SubscriptionStatus.CANCELLED:
            return f"{target.name} is cancelled."
        return ""

    def extra_fields(self, target):
        return {
            "expires_on": forms.DateField(
                label="Access until", widget=forms.DateInput(attrs={"type": "date"})
            ),
            "user_count": forms.IntegerField(
                min_value=1,
                max_value=10_000_000,
                required=False,
                help_text="Defaults to the subscription's seats.",
            ),
        }

    def initial(self, target):
        return {"user_count": target.seats}

    def _access(self, target):
        from licenses.selectors import license_access_end

        return license_access_end(subscription=target, today=timezone.localdate())

    def preview(self, target, params):
        expires_on = _date_param(params, "expires_on")
        users = params.get("user_count") or target.seats
        access = self._access(target)
        if expires_on <= access.ends_on:
            raise ApplicationError(
                f"Access already runs to {access.ends_on:%Y-%m-%d}; choose a later date.",
                code="no_change",
            )
        today = timezone.localdate()
        preview = Preview()
        preview.change(f"{target.name} · access until", access.ends_on, expires_on)
        preview.change("Days added", 0, (expires_on - access.ends_on).days)
        preview.licenses_issued.append(
            f"Temporary legacy license (trial) for {users} users, {today:%Y-%m-%d} → "
            f"{expires_on:%Y-%m-%d}; the paid license stays as it is"
        )
        sold_to = target.customer.contacts.filter(role=ContactRole.SOLD_TO).first()
        if sold_to is None:
            raise ApplicationError(
                f"{target.customer.name} has no sold-to contact: a license carries the sold-to "
                "contact's name and e-mail.",
                code="no_sold_to_contact",
            )
        preview.emails.append(f"The temporary license file to {sold_to.email}")
        if access.open_extension is not None:
            preview.notes.append(
                f"Temporary license #{access.open_extension.pk} (to "
                f"{access.open_extension.expires_on:%Y-%m-%d}) stays until it expires."
            )
        preview.crm_pushes.extend(_crm_note(target.customer))
        return preview

    def approval_rule(self, target, params, actor):
        from licenses.services import TEMPORARY_EXTENSION_APPROVAL_DAYS

        days = (_date_param(params, "expires_on") - self._access(target).ends_on).days
        if days > TEMPORARY_EXTENSION_APPROVAL_DAYS:
            return (
                f"An extension of {days} days (more than {TEMPORARY_EXTENSION_APPROVAL_DAYS}) "
                "needs a support lead's approval."
            )
        return ""

    def apply(self, *, actor, target, params, reason, ticket_url):
        from licenses.services import license_temporary_extension

        license = license_temporary_extension(
            actor=actor,
            subscription=target,
            expires_on=_date_param(params, "expires_on"),
            user_count=params.get("user_count") or None,
            reason=reason,
            ticket_url=ticket_url,
        )
        return FixResult(
            f"Temporary license {license.pk} issued to {license.expires_on:%Y-%m-%d} and queued "
            f"for e-mail to {license.licensee_email}.",
            license.get_absolute_url(),
        )


def _activation_code_result(subscription, activation_code, code, delivery, message) -> FixResult:
    return FixResult(
        message,
        subscription.get_absolute_url(),
        template="licenses/activation_code_sent.html",
        context={
            "subscription": subscription,
            "activation_code": activation_code,
            "code": code,
            "delivery": delivery,
        },
        delivery=delivery,
        delivered_what=f"New activation code …{activation_code.code_hint}",
    )


class ActivationCodeResend(SubscriptionFix):
    key = "activation_code_resend"
    audit_action = "licenses.activation_code_generated"
    label = "Resend activation code"
    button = "Regenerate and send code"
    icon = "bi-key"
    default_reason_code = ReasonCode.DELIVERY_PROBLEM
    help = (
        "A stored code cannot be shown again, so resending makes a new code (the old one stops "
        "working) and e-mails it. Instances already activated keep their license."
    )

    def unavailable(self, target):
        if not target.is_self_managed:
            return "GitLab.com subscriptions have no activation code."
        return self._open(target)

    def preview(self, target, params):
        from licenses.models import ActivationCode
        from licenses.selectors import delivery_recipient

        current = (
            ActivationCode.objects.filter(subscription=target, status="active")
            .order_by("-created_at")
            .first()
        )
        _method, email, _who = delivery_recipient(target)
        if not email:
            raise ApplicationError(
                f"{target.customer.name} has no sold-to contact to send the code to.",
                code="no_sold_to_contact",
            )
        preview = Preview()
        preview.change(
            f"{target.name} · activation code",
            f"…{current.code_hint} (active)" if current else None,
            "a new code, shown to you once",
        )
        if current:
            preview.notes.append(f"Code …{current.code_hint} stops working at once.")
        preview.emails.append(f"The new activation code to {email}")
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from licenses.services import activation_code_send

        activation_code, code, delivery = activation_code_send(
            actor=actor, subscription=target, reason=reason, ticket_url=ticket_url
        )
        return _activation_code_result(
            target,
            activation_code,
            code,
            delivery,
            f"New activation code …{activation_code.code_hint} queued for "
            f"{delivery.recipient_email}.",
        )


class ConvertToCloud(SubscriptionFix):
    key = "convert_to_cloud"
    audit_action = "licenses.converted_to_cloud"
    label = "Convert to cloud licensing"
    button = "Convert and send code"
    icon = "bi-cloud-arrow-up"
    default_reason_code = ReasonCode.CLOUD_LICENSING_TRANSITION
    help = (
        "Switches a legacy or offline subscription to online cloud licensing and e-mails an "
        "activation code. The license the customer runs stays valid until the instance "
        "activates, which issues the cloud license."
    )

    def unavailable(self, target):
        if not target.is_self_managed:
            return "GitLab.com subscriptions have no license."
        if target.licensing_method == LicensingMethod.ONLINE_CLOUD:
            return f"{target.name} already uses cloud licensing."
        return self._open(target)

    def preview(self, target, params):
        from licenses.selectors import delivery_recipient

        _method, email, _who = delivery_recipient(target)
        if not email:
            raise ApplicationError(
                f"{target.customer.name} has no sold-to contact to send the code to.",
                code="no_sold_to_contact",
            )
        preview = Preview()
        preview.change(
            f"{target.name} · licensing",
            target.get_licensing_method_display(),
            LicensingMethod.ONLINE_CLOUD.label,
        )
        preview.emails.append(f"A new activation code to {email}")
        preview.licenses_issued.append("A cloud license, when the instance activates with the code")
        preview.notes.append("The current license stays valid until then.")
        preview.crm_pushes.extend(_crm_note(target.customer))
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from licenses.services import subscription_convert_to_cloud

        activation_code, code, delivery = subscription_convert_to_cloud(
            actor=actor, subscription=target, reason=reason, ticket_url=ticket_url
        )
        return _activation_code_result(
            target,
            activation_code,
            code,
            delivery,
            f"{target.name} now uses cloud licensing; activation code "
            f"…{activation_code.code_hint} queued for {delivery.recipient_email}.",
        )


# --- License fixes ------------------------------------------------------------------------------


class LicenseFix(Fix):
    @property
    def model(self):
        from licenses.models import License

        return License

    def queryset(self):
        from licenses.models import License

        return License.objects.select_related("subscription__customer").defer("key")

    def lock(self, pk):
        from licenses.models import License

        # The subscription first, as license_issue and the seat changes lock it: one order.
        subscription_id = License.objects.values_list("subscription_id", flat=True).get(pk=pk)
        Subscription.objects.select_for_update().filter(pk=subscription_id).first()
        return self.queryset().select_for_update(of=("self",)).get(pk=pk)

    def customer_of(self, target, params=None):
        return target.subscription.customer

    def describe(self, target):
        return f"License #{target.pk} · {target.get_kind_display()} · {target.subscription.name}"


class LicenseResend(LicenseFix):
    key = "license_resend"
    audit_action = "licenses.delivery_queued"
    label = "Resend license file"
    button = "Send license file"
    icon = "bi-envelope"
    default_reason_code = ReasonCode.DELIVERY_PROBLEM
    help = (
        "E-mails the license file to the address in the license (the sold-to contact it was "
        "issued to). A paid license goes nowhere else."
    )

    def unavailable(self, target):
        from licenses.choices import CURRENT_LICENSE_STATUSES, LicenseKind

        if target.kind == LicenseKind.ONLINE_CLOUD:
            return "An online cloud license is not a file: resend the activation code instead."
        if target.status not in CURRENT_LICENSE_STATUSES:
            return f"License #{target.pk} is {target.get_status_display().lower()}."
        return ""

    def preview(self, target, params):
        from licenses.mail import license_filename

        preview = Preview()
        preview.emails.append(f"{license_filename(target)} to {target.licensee_email}")
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from licenses.mail import license_filename
        from licenses.services import license_send

        delivery = license_send(actor=actor, license=target, reason=reason, ticket_url=ticket_url)
        return FixResult(
            f"{license_filename(target)} queued for e-mail to {delivery.recipient_email}.",
            f"{target.get_absolute_url()}#deliveries",
            delivery=delivery,
            delivered_what=f"License file {license_filename(target)}",
        )


class LicenseReissue(LicenseFix):
    key = "license_reissue"
    audit_action = "licenses.license_issued"
    label = "Re-issue license"
    button = "Issue new license"
    icon = "bi-arrow-repeat"
    default_reason_code = ReasonCode.DATA_CORRECTION
    help = "Issues a new license of the same kind from the subscription as it stands now."

    def unavailable(self, target):
        subscription = target.subscription
        if subscription.status == SubscriptionStatus.CANCELLED:
            return f"{subscription.name} is cancelled; it gets no new license."
        return ""

    def preview(self, target, params):
        from licenses.selectors import license_current
        from licenses.services import license_terms

        subscription = target.subscription
        terms = license_terms(
            subscription=subscription, kind=target.kind, today=timezone.localdate()
        )
        replaces = license_current(subscription, starts_on=terms.starts_on).defer("key").first()
        preview = Preview()
        preview.change("Users", target.user_count, subscription.seats)
        preview.change(
            "Term",
            f"{target.starts_on:%Y-%m-%d} → {target.expires_on:%Y-%m-%d}",
            f"{terms.starts_on:%Y-%m-%d} → {terms.expires_on:%Y-%m-%d}",
        )
        preview.change("Previous users", target.previous_user_count, terms.previous_user_count)
        preview.change("True-up", target.trueup_quantity, terms.trueup_quantity)
        preview.licenses_issued.append(
            f"New {target.get_kind_display().lower()} for {subscription.seats} users"
        )
        if replaces is not None:
            preview.licenses_superseded.append(f"License #{replaces.pk} becomes superseded")
        if target.kind == LicensingMethod.ONLINE_CLOUD:
            preview.notes.append("The instance picks the new key up at its next sync.")
        else:
            preview.notes.append("E-mail or download the new file from the new license's page.")
        preview.crm_pushes.extend(_crm_note(subscription.customer))
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from licenses.services import license_issue

        new = license_issue(
            actor=actor,
            subscription=target.subscription,
            kind=target.kind,
            reason=reason,
            ticket_url=ticket_url,
        )
        replaced = f"; it supersedes license {new.supersedes_id}" if new.supersedes_id else ""
        return FixResult(f"License {new.pk} issued{replaced}.", new.get_absolute_url())


class LicenseRevoke(LicenseFix):
    key = "license_revoke"
    audit_action = "licenses.license_revoked"
    label = "Revoke license"
    button = "Revoke license"
    icon = "bi-x-octagon"
    danger = True
    default_reason_code = ReasonCode.SECURITY
    help = (
        "Withdraws the key: Provision stops handing it out and Seat Link reports it revoked. It "
        "cannot be undone, so a second person (a support lead) approves every revoke."
    )

    def unavailable(self, target):
        from licenses.choices import LicenseStatus

        if target.status in (LicenseStatus.REVOKED, LicenseStatus.EXPIRED):
            return f"License #{target.pk} is already {target.get_status_display().lower()}."
        return ""

    def preview(self, target, params):
        from licenses.choices import LicenseStatus

        preview = Preview()
        preview.change(f"License #{target.pk} · status", target.get_status_display(), "Revoked")
        preview.licenses_superseded.append(
            f"License #{target.pk} ({target.user_count} users, to {target.expires_on:%Y-%m-%d}) "
            "is revoked"
        )
        if target.kind == LicensingMethod.ONLINE_CLOUD:
            preview.notes.append("An instance running it keeps it until its next sync.")
        else:
            preview.notes.append(
                "An installed file keeps working offline until it expires; Provision cannot "
                "reach into an offline instance."
            )
        if target.status == LicenseStatus.ACTIVE:
            preview.notes.append("This license is active on an instance now.")
        preview.crm_pushes.extend(_crm_note(target.subscription.customer))
        return preview

    def approval_rule(self, target, params, actor):
        return "Every revoke needs a second person: a support lead approves it."

    def apply(self, *, actor, target, params, reason, ticket_url):
        from licenses.services import license_revoke

        license_revoke(actor=actor, license=target, reason=reason, ticket_url=ticket_url)
        return FixResult(f"License {target.pk} revoked.", target.get_absolute_url())


# --- Activation code fixes ----------------------------------------------------------------------


class ActivationCodeRelease(Fix):
    key = "activation_code_release"
    audit_action = "licenses.activation_code_released"
    label = "Release activation code"
    button = "Release code"
    icon = "bi-unlock"
    default_reason_code = ReasonCode.ACTIVATION_PROBLEM
    help = (
        "Lets one other instance activate with this code (a customer moving to a new server). "
        "The bound instance keeps its activation until then. Support leads only."
    )

    def allowed(self, user):
        return permissions.LicensePolicy.can_release(user)

    @property
    def model(self):
        from licenses.models import ActivationCode

        return ActivationCode

    def queryset(self):
        from licenses.models import ActivationCode

        return ActivationCode.objects.select_related("subscription__customer")

    def customer_of(self, target, params=None):
        return target.subscription.customer

    def describe(self, target):
        return f"Activation code …{target.code_hint} · {target.subscription.name}"

    def back_url(self, target):
        return target.subscription.customer.get_absolute_url()

    def _bound(self, target):
        return target.activations.filter(status="active").select_related("instance").first()

    def unavailable(self, target):
        if target.status != "active":
            return f"Code …{target.code_hint} is {target.get_status_display().lower()}."
        if target.released_at is not None:
            return (
                f"Code …{target.code_hint} was already released on {target.released_at:%Y-%m-%d}."
            )
        if self._bound(target) is None:
            return f"Code …{target.code_hint} is not bound to any instance yet."
        return ""

    def preview(self, target, params):
        bound = self._bound(target)
        preview = Preview()
        preview.change(f"Code …{target.code_hint}", f"bound to {bound.instance}", "released")
        preview.notes.append(
            f"{bound.instance} keeps its activation until another instance activates with the "
            "code; that activation then deactivates it."
        )
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from licenses.services import activation_code_release

        activation_code_release(
            actor=actor, activation_code=target, reason=reason, ticket_url=ticket_url
        )
        return FixResult(
            f"Activation code …{target.code_hint} released: the next instance that activates "
            "with it takes it over.",
            target.subscription.customer.get_absolute_url(),
        )


# --- Namespace fixes ----------------------------------------------------------------------------


class NamespaceFix(Fix):
    @property
    def model(self):
        from usage.models import Namespace

        return Namespace

    def queryset(self):
        from usage.models import Namespace

        return Namespace.objects.select_related("subscription__customer")

    def customer_of(self, target, params=None):
        return target.subscription.customer if target.subscription_id else None

    def describe(self, target):
        linked = target.subscription.name if target.subscription_id else "not linked"
        return f"Namespace {target.full_path} ({linked})"

    def back_url(self, target):
        if target.subscription_id:
            return target.subscription.customer.get_absolute_url()
        return reverse("provision:customer_list")


def _subscription_by_name(name: str) -> Subscription:
    subscription = (
        Subscription.objects.select_related("customer").filter(name=name.strip().upper()).first()
    )
    if subscription is None:
        raise ApplicationError(f"No subscription is named {name}.", code="not_found")
    return subscription


class NamespaceAssociate(NamespaceFix):
    key = "namespace_associate"
    audit_action = "usage.namespace_associated"
    label = "Associate namespace"
    button = "Link namespace"
    icon = "bi-link-45deg"
    default_reason_code = ReasonCode.PROVISIONING_FAILURE
    force = False
    help = (
        "Links this GitLab.com group to a GitLab.com subscription. A subscription has one group: "
        "its previous group is unlinked. A group linked to another active subscription needs "
        "Force associate."
    )

    def extra_fields(self, target):
        return {
            "subscription": forms.RegexField(
                regex=r"^\s*[Aa]-[Ss]\d{8}\s*$",
                label="Subscription",
                help_text="The GitLab.com subscription's name, e.g. A-S00012345.",
                error_messages={"invalid": "A subscription name looks like A-S00012345."},
            )
        }

    def customer_of(self, target, params=None):
        if params and params.get("subscription"):
            subscription = Subscription.objects.filter(
                name=str(params["subscription"]).strip().upper()
            ).select_related("customer")
            if subscription:
                return subscription[0].customer
        return super().customer_of(target, params)

    def _occupied_by(self, target):
        from usage.services import _OPEN_SUBSCRIPTION_STATUSES

        previous = target.subscription
        if previous is not None and previous.status in _OPEN_SUBSCRIPTION_STATUSES:
            return previous
        return None

    def preview(self, target, params):
        from usage.services import _seats_owed

        subscription = _subscription_by_name(params["subscription"])
        if subscription.deployment != Deployment.GITLAB_COM:
            raise ApplicationError(
                f"{subscription.name} is self-managed; only GitLab.com subscriptions are linked "
                "to a namespace.",
                code="not_gitlab_com",
            )
        if target.subscription_id == subscription.pk:
            raise ApplicationError(
                f"{target.full_path} is already linked to {subscription.name}.", code="no_change"
            )
        occupied = self._occupied_by(target)
        if occupied is not None and not self.force:
            raise ApplicationError(
                f"{target.full_path} is linked to {occupied.name} ({occupied.customer.name}), "
                "which is still open: use Force associate.",
                code="namespace_occupied",
                extra={"linked_subscription": occupied.name},
            )
        preview = Preview()
        preview.change(
            f"{target.full_path} · subscription",
            target.subscription.name if target.subscription_id else None,
            f"{subscription.name} ({subscription.customer.name})",
        )
        preview.change(
            "Seats owed",
            target.seats_owed,
            _seats_owed(max_seats_used=target.max_seats_used, subscription=subscription),
        )
        if occupied is not None:
            preview.notes.append(
                f"{occupied.name} ({occupied.customer.name}) loses the group: it drops to Free "
                "for that subscription."
            )
        for other in subscription.namespaces.exclude(pk=target.pk):
            preview.notes.append(f"{other.full_path} is unlinked from {subscription.name}.")
        preview.crm_pushes.extend(_crm_note(subscription.customer))
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from usage.services import namespace_associate

        subscription = _subscription_by_name(params["subscription"])
        namespace_associate(
            actor=actor,
            namespace=target,
            subscription=subscription,
            reason=reason,
            ticket_url=ticket_url,
            force=self.force,
        )
        return FixResult(
            f"{target.full_path} is now linked to {subscription.name}.",
            subscription.customer.get_absolute_url(),
        )


class NamespaceForceAssociate(NamespaceAssociate):
    key = "namespace_force_associate"
    label = "Force associate namespace"
    button = "Force associate"
    danger = True
    force = True
    help = (
        "Takes the group from the subscription it is linked to and links it here. The other "
        "subscription's group drops to Free. A second person (a support lead) approves it, and "
        "the ticket link is required."
    )

    def approval_rule(self, target, params, actor):
        if self._occupied_by(target) is not None:
            return (
                "Force associate takes a group from an open subscription: a support lead "
                "approves it."
            )
        return ""


class NamespaceDisassociate(NamespaceFix):
    key = "namespace_disassociate"
    audit_action = "usage.namespace_disassociated"
    label = "Disassociate namespace"
    button = "Unlink namespace"
    icon = "bi-link-45deg"
    danger = True
    default_reason_code = ReasonCode.PROVISIONING_FAILURE
    help = "Unlinks the group from its subscription (Clear Subscription): it drops to Free."

    def unavailable(self, target):
        return "" if target.subscription_id else f"{target.full_path} is not linked."

    def preview(self, target, params):
        preview = Preview()
        preview.change(f"{target.full_path} · subscription", target.subscription.name, None)
        preview.change("Seats owed", target.seats_owed, 0)
        preview.notes.append(f"{target.full_path} drops to the Free plan on GitLab.com.")
        preview.crm_pushes.extend(_crm_note(target.subscription.customer))
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from usage.services import namespace_disassociate

        customer = target.subscription.customer
        namespace_disassociate(actor=actor, namespace=target, reason=reason, ticket_url=ticket_url)
        return FixResult(f"{target.full_path} unlinked.", customer.get_absolute_url())


class NamespaceResetMaxSeats(NamespaceFix):
    key = "namespace_reset_max_seats"
    audit_action = "usage.namespace_max_seats_reset"
    label = "Reset max seats used"
    button = "Reset max seats"
    icon = "bi-arrow-counterclockwise"
    danger = True
    default_reason_code = ReasonCode.TRUE_UP_WAIVER
    help = (
        "Lowers the maximum seats used, which waives the seats owed above it. Support leads "
        "only, with the link to the documented approval (Chatter or SFDC case)."
    )

    def allowed(self, user):
        return permissions.NamespacePolicy.can_reset_max_seats(user)

    def unavailable(self, target):
        if target.max_seats_used <= target.seats_in_use:
            return f"{target.full_path}'s maximum already equals the seats in use."
        return ""

    def extra_fields(self, target):
        return {
            "max_seats_used": forms.IntegerField(
                min_value=0,
                required=False,
                label="New maximum",
                help_text="Defaults to the seats in use.",
            ),
            "approval_url": forms.URLField(
                label="Approval link", assume_scheme="https", max_length=500
            ),
        }

    def initial(self, target):
        return {"max_seats_used": target.seats_in_use}

    def preview(self, target, params):
        from usage.services import _seats_owed

        value = params.get("max_seats_used")
        value = target.seats_in_use if value is None else value
        if value < target.seats_in_use or value >= target.max_seats_used:
            raise ApplicationError(
                f"Choose a maximum from {target.seats_in_use} (in use) to "
                f"{target.max_seats_used - 1}.",
                code="out_of_range",
            )
        preview = Preview()
        preview.change(f"{target.full_path} · max seats used", target.max_seats_used, value)
        preview.change(
            "Seats owed",
            target.seats_owed,
            _seats_owed(max_seats_used=value, subscription=target.subscription),
        )
        if target.subscription_id:
            preview.crm_pushes.extend(_crm_note(target.subscription.customer))
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from usage.services import namespace_max_seats_reset

        namespace = namespace_max_seats_reset(
            actor=actor,
            namespace=target,
            reason=reason,
            approval_url=params["approval_url"],
            ticket_url=ticket_url,
            max_seats_used=params.get("max_seats_used"),
        )
        return FixResult(
            f"Max seats used on {namespace.full_path} reset to {namespace.max_seats_used}.",
            self.back_url(namespace),
        )


# --- Provisioning step fixes --------------------------------------------------------------------


class StepFix(Fix):
    model = ProvisioningStep
    default_reason_code = ReasonCode.PROVISIONING_FAILURE

    def queryset(self):
        return ProvisioningStep.objects.select_related("record__subscription__customer")

    def customer_of(self, target, params=None):
        return target.record.subscription.customer

    def describe(self, target):
        return (
            f"{target.get_kind_display()} of {target.record.order_reference} "
            f"({target.record.subscription.name})"
        )

    def back_url(self, target):
        return target.record.subscription.customer.get_absolute_url()

    def unavailable(self, target):
        if target.state in (StepState.DONE, StepState.SKIPPED):
            return f"This step is already {target.get_state_display().lower()}."
        return ""


class StepRetry(StepFix):
    key = "step_retry"
    audit_action = "provision.provisioning_step_retried"
    label = "Retry provisioning step"
    button = "Retry step"
    icon = "bi-arrow-clockwise"
    help = (
        "Runs the step's action again — issue the license, send the file or the activation "
        "code — and restarts its SLA clock."
    )

    def unavailable(self, target):
        from provision.services import RETRYABLE_STEPS

        if target.kind not in RETRYABLE_STEPS:
            return (
                f"{target.get_kind_display()} waits on the customer or GitLab.com; there is "
                "nothing to resend. Fix the cause, or mark the step done with evidence."
            )
        return super().unavailable(target)

    def preview(self, target, params):
        from provision.services import provisioning_step_retry_plan

        plan = provisioning_step_retry_plan(step=target)
        preview = Preview()
        preview.change(
            f"{target.get_kind_display()} · state", target.get_state_display(), "Pending"
        )
        preview.change("Attempts", target.attempts, target.attempts + 1)
        preview.change(
            "Due", f"{target.due_at:%Y-%m-%d %H:%M}", f"{plan.due_at:%Y-%m-%d %H:%M} (new SLA)"
        )
        preview.licenses_issued.extend(plan.licenses_issued)
        preview.licenses_superseded.extend(plan.licenses_superseded)
        preview.emails.extend(plan.emails)
        preview.notes.extend(plan.notes)
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from provision.services import provisioning_step_retry

        outcome = provisioning_step_retry(
            actor=actor, step=target, reason=reason, ticket_url=ticket_url
        )
        return FixResult(outcome, self.back_url(target))


class StepMarkDone(StepFix):
    key = "step_mark_done"
    audit_action = "provision.provisioning_step_marked_done"
    label = "Mark step done"
    button = "Mark done"
    icon = "bi-check2-circle"
    help = "Closes a step that is done outside Provision, with the evidence that it is."

    def extra_fields(self, target):
        return {
            "evidence": forms.CharField(
                max_length=2000,
                widget=forms.Textarea(attrs={"rows": 2}),
                help_text="What shows it is done: a Mailgun log line, a screenshot link, the "
                "customer's confirmation.",
            )
        }

    def preview(self, target, params):
        record = target.record
        open_steps = [
            step
            for step in record.steps.all()
            if step.pk != target.pk and step.state not in (StepState.DONE, StepState.SKIPPED)
        ]
        preview = Preview()
        preview.change(f"{target.get_kind_display()} · state", target.get_state_display(), "Done")
        if not open_steps:
            preview.change(f"Order {record.order_reference}", "open", "complete")
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from provision.services import provisioning_step_mark_done

        provisioning_step_mark_done(
            actor=actor,
            step=target,
            evidence=params["evidence"],
            reason=reason,
            ticket_url=ticket_url,
        )
        return FixResult(f"{target.get_kind_display()} marked done.", self.back_url(target))


# --- Customer fixes -----------------------------------------------------------------------------


class CrmPush(Fix):
    key = "crm_push"
    audit_action = "crm_sync.customer_push_requested"
    label = "Push to the CRM now"
    button = "Push now"
    icon = "bi-cloud-upload"
    default_reason_code = ReasonCode.DATA_CORRECTION
    help = "Sends this customer's account and usage to every configured CRM straight away."

    def customer_of(self, target, params=None):
        return target

    def preview(self, target, params):
        from crm_sync.choices import CrmTarget
        from crm_sync.selectors import crm_target_configured

        preview = Preview()
        for crm in CrmTarget:
            if crm_target_configured(crm.value):
                preview.crm_pushes.append(f"{crm.label}: {target.name}'s account and usage rows")
            else:
                preview.notes.append(f"{crm.label} is not configured; nothing is sent there.")
        return preview

    def apply(self, *, actor, target, params, reason, ticket_url):
        from crm_sync.services import crm_customer_push

        crm_customer_push(actor=actor, customer=target, reason=reason, ticket_url=ticket_url)
        return FixResult(
            f"{target.name} queued for an immediate CRM push.", f"{target.get_absolute_url()}#crm"
        )


FIXES: dict[str, Fix] = {
    fix.key: fix
    for fix in (
        SeatsChange(),
        AddOnChange(),
        LicenseExtend(),
        ActivationCodeResend(),
        ConvertToCloud(),
        LicenseResend(),
        LicenseReissue(),
        LicenseRevoke(),
        ActivationCodeRelease(),
        NamespaceAssociate(),
        NamespaceForceAssociate(),
        NamespaceDisassociate(),
        NamespaceResetMaxSeats(),
        StepRetry(),
        StepMarkDone(),
        CrmPush(),
    )
}


def fix_get(key: str) -> Fix:
    """The fix registered under ``key``; ``KeyError`` when there is none."""
    return FIXES[key]
