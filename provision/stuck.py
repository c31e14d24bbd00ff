"""Selectors of the stuck queue: provisioning steps pending (or failed) past their SLA.

One row per order, at the step that holds it up (a step waiting behind an earlier open step is
not listed again), oldest due first. Each row carries its likely cause, worked out for the whole
page at once from what the database already records (contacts, licenses, deliveries, activation
codes and activations, namespaces, usage files): a fixed handful of queries however many rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from provision import permissions
from provision.choices import (
    Channel,
    ContactRole,
    Deployment,
    LicensingMethod,
    ProvisioningStepKind,
    StepState,
    SubscriptionStatus,
)
from provision.filters import StuckQueueFilterSet
from provision.models import Contact, ProvisioningStep

OPEN_STATES = (StepState.PENDING, StepState.FAILED)
# What a row shows besides the step, loaded with it in one query.
QUEUE_RELATED = ("record__subscription__customer__account_owner", "record__subscription__partner")
CLOSED_SUBSCRIPTION_STATUSES = (SubscriptionStatus.EXPIRED, SubscriptionStatus.CANCELLED)
Kind = ProvisioningStepKind


def _require_view(actor) -> None:
    if not permissions.SubscriptionPolicy.can_view(actor):
        raise PermissionDenied


def stuck_steps_queryset(now: datetime | None = None) -> QuerySet[ProvisioningStep]:
    """Steps that hold an order up, oldest due first: failed ones at once (they need a retry
    or a decision), pending ones once past due; only the first open step of each record.

    Orders of expired or cancelled subscriptions stay in (their cause says so): someone has to
    close their steps, and the home page counts them as stuck too. Filtering them out here
    would also cost a join to every stuck step's subscription before the page is cut, which at
    design scale is most of the page's time.
    """
    now = now or timezone.now()
    earlier_open = ProvisioningStep.objects.filter(
        record=OuterRef("record"), position__lt=OuterRef("position"), state__in=OPEN_STATES
    )
    return (
        ProvisioningStep.objects.filter(
            Q(state=StepState.FAILED) | Q(state=StepState.PENDING, due_at__lt=now)
        )
        .filter(~Exists(earlier_open))
        .select_related(*QUEUE_RELATED)
        .order_by("due_at", "pk")
    )


def stuck_queue(
    *, actor, filters: dict | None = None, now: datetime | None = None
) -> tuple[QuerySet[ProvisioningStep], StuckQueueFilterSet]:
    """The stuck queue, filtered (``StuckQueueFilterSet``). Every staff role may read it."""
    _require_view(actor)
    filterset = StuckQueueFilterSet(filters or {}, queryset=stuck_steps_queryset(now))
    return filterset.qs, filterset


# --- Presentation of one row ------------------------------------------------------------------


def format_duration(delta: timedelta) -> str:
    """``3 d 4 h``, ``5 h 12 min``, ``40 min``: the two largest units, for ages and SLAs."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


@dataclass(frozen=True)
class LikelyCause:
    """Why a step is probably stuck, from the data.

    ``code`` is stable (tests and the template key on it); ``tone`` is danger (something must
    be fixed first), warning (waiting on someone) or info (the work looks done, the step was
    not closed). ``fix_url`` is the page where support acts, shown to those who may fix.
    """

    code: str
    text: str
    tone: str = "warning"
    fix_label: str = ""
    fix_url: str = ""


UNKNOWN_CAUSE = LikelyCause(
    code="unknown",
    text="Nothing recorded explains it: look at the audit log of the order.",
    tone="secondary",
)


@dataclass(frozen=True)
class StuckRow:
    """One row of the queue: the stuck step, its record's steps, its clock and its cause."""

    step: ProvisioningStep
    steps: list[ProvisioningStep]
    pending_since: datetime
    sla: timedelta
    now: datetime
    cause: LikelyCause

    @property
    def record(self):
        return self.step.record

    @property
    def subscription(self):
        return self.step.record.subscription

    @property
    def customer(self):
        return self.step.record.subscription.customer

    @property
    def pending_for(self) -> timedelta:
        return self.now - self.pending_since

    @property
    def overdue_by(self) -> timedelta:
        return self.now - self.step.due_at

    @property
    def is_past_due(self) -> bool:
        """False for a failed step listed before its SLA ran out."""
        return self.step.due_at < self.now

    @property
    def pending_for_text(self) -> str:
        return format_duration(self.pending_for)

    @property
    def overdue_by_text(self) -> str:
        return format_duration(self.overdue_by)

    @property
    def sla_text(self) -> str:
        return format_duration(self.sla)


def step_slas() -> list[tuple[str, str]]:
    """Each step kind that can be stuck with its SLA as configured, for the page's legend."""
    return [
        (kind.label, format_duration(ProvisioningStep.sla(kind)))
        for kind in ProvisioningStepKind
        if kind != ProvisioningStepKind.SUBSCRIPTION_CREATED
    ]


# --- Likely causes, in bulk -------------------------------------------------------------------


def _facts_needed(step: ProvisioningStep) -> set[str]:
    """Which facts the cause of this step is computed from."""
    subscription = step.record.subscription
    method = subscription.licensing_method
    if subscription.status in CLOSED_SUBSCRIPTION_STATUSES:
        return set()
    if step.kind == Kind.LICENSE_ISSUED:
        return {"sold_to", "licenses", "signing_key"}
    if step.kind == Kind.DELIVERED:
        return {"sold_to", "licenses", "deliveries"}
    if step.kind == Kind.ACTIVATED:
        return {"codes"} if method == LicensingMethod.ONLINE_CLOUD else set()
    if step.kind == Kind.NAMESPACE_PROVISIONED:
        return {"namespaces"}
    if step.kind == Kind.FIRST_USAGE:
        if subscription.deployment == Deployment.GITLAB_COM:
            return {"namespaces"}
        return {
            LicensingMethod.ONLINE_CLOUD: {"codes"},
            LicensingMethod.OFFLINE_CLOUD: {"usage_files"},
        }.get(method, set())
    return set()


class _Facts:
    """What the causes are computed from: one query per kind of fact, and only the facts the
    steps on the page need."""

    def __init__(self, steps: list[ProvisioningStep]):
        from licenses.choices import CURRENT_LICENSE_STATUSES
        from licenses.models import ActivationCode, License, LicenseDelivery
        from usage.models import Namespace, UsageFileImport

        needed = set().union(*(_facts_needed(step) for step in steps))
        subscriptions = {step.record.subscription_id: step.record.subscription for step in steps}
        ids = list(subscriptions)
        customer_ids = {s.customer_id for s in subscriptions.values()}

        self.sold_to: dict[int, str] = {}
        if "sold_to" in needed:
            self.sold_to = dict(
                Contact.objects.filter(customer_id__in=customer_ids, role=ContactRole.SOLD_TO)
                .order_by()
                .values_list("customer_id", "email")
            )

        self.licenses: dict[int, list[dict]] = {}
        if "licenses" in needed:
            for row in (
                License.objects.filter(subscription_id__in=ids, status__in=CURRENT_LICENSE_STATUSES)
                .order_by("-issued_at", "-pk")
                .values("pk", "subscription_id", "kind", "issued_at")
            ):
                self.licenses.setdefault(row["subscription_id"], []).append(row)

        self.deliveries: dict[int, dict] = {}
        if "deliveries" in needed:
            for row in (
                LicenseDelivery.objects.filter(
                    Q(license__subscription_id__in=ids)
                    | Q(activation_code__subscription_id__in=ids)
                )
                .order_by("-created_at", "-pk")
                .values(
                    "license_id",
                    "license__subscription_id",
                    "activation_code__subscription_id",
                    "method",
                    "status",
                    "recipient_email",
                    "error",
                    "created_at",
                    "sent_at",
                    "downloaded_at",
                )
            ):
                sub = row["license__subscription_id"] or row["activation_code__subscription_id"]
                self.deliveries.setdefault(sub, row)  # the newest one

        # Activation codes and their activations, one row per (code, activation).
        self.codes: dict[int, list[dict]] = {}
        self.activations: dict[int, list[dict]] = {}
        if "codes" in needed:
            seen_codes = set()
            for row in (
                ActivationCode.objects.filter(subscription_id__in=ids)
                .order_by("-created_at", "-pk", "-activations__activated_at")
                .values(
                    "pk",
                    "subscription_id",
                    "status",
                    "code_hint",
                    "created_at",
                    "replaced_at",
                    "released_at",
                    "activations__status",
                    "activations__activated_at",
                    "activations__deactivated_at",
                    "activations__instance__hostname",
                    "activations__instance__instance_id",
                    "activations__instance__last_sync_at",
                )
            ):
                sub = row["subscription_id"]
                if row["pk"] not in seen_codes:
                    seen_codes.add(row["pk"])
                    self.codes.setdefault(sub, []).append(row)
                if row["activations__activated_at"] is not None:
                    self.activations.setdefault(sub, []).append(
                        {
                            "code_hint": row["code_hint"],
                            "status": row["activations__status"],
                            "activated_at": row["activations__activated_at"],
                            "deactivated_at": row["activations__deactivated_at"],
                            "host": row["activations__instance__hostname"]
                            or str(row["activations__instance__instance_id"]),
                            "last_sync_at": row["activations__instance__last_sync_at"],
                        }
                    )

        self.namespaces: dict[int, list[dict]] = {}
        if "namespaces" in needed:
            for row in (
                Namespace.objects.filter(subscription_id__in=ids)
                .order_by("full_path")
                .values("subscription_id", "full_path", "last_refreshed_at")
            ):
                self.namespaces.setdefault(row["subscription_id"], []).append(row)

        self.usage_files: dict[int, dict] = {}
        if "usage_files" in needed:
            for row in (
                UsageFileImport.objects.filter(subscription_id__in=ids)
                .order_by("-uploaded_at", "-pk")
                .values("subscription_id", "file_name", "status", "rejection_reason", "uploaded_at")
            ):
                self.usage_files.setdefault(row["subscription_id"], row)

        self.signing_key_error = ""
        if "signing_key" in needed:
            from licenses.signing import SigningKeyNotConfigured, configured_key

            try:
                configured_key()  # the settings and a file read, cached per process: no query
            except SigningKeyNotConfigured as exc:
                self.signing_key_error = str(exc)


def _fix_url(action: str, pk: int) -> str:
    return reverse("provision:fix", kwargs={"action": action, "pk": pk})


def _resend_code_url(subscription) -> str:
    return _fix_url("activation_code_resend", subscription.pk)


def _ago(now: datetime, then: datetime) -> str:
    return f"{format_duration(now - then)} ago"


def _recipient(subscription, facts: _Facts) -> str:
    if subscription.channel == Channel.PARTNER and subscription.partner_id:
        return f"the partner {subscription.partner.name} ({subscription.partner.email})"
    return facts.sold_to.get(subscription.customer_id, "")


def _license_issued(step, facts: _Facts, now: datetime) -> LikelyCause:
    subscription = step.record.subscription
    customer = subscription.customer
    if subscription.customer_id not in facts.sold_to:
        return LikelyCause(
            code="no_sold_to_contact",
            text=f"{customer.name} has no sold-to contact, and a license carries the sold-to "
            "contact's name and e-mail.",
            tone="danger",
            fix_label="Add the sold-to contact",
            fix_url=customer.get_absolute_url(),
        )
    if facts.signing_key_error:
        return LikelyCause(
            code="no_signing_key",
            text=facts.signing_key_error,
            tone="danger",
            fix_label="Signing key",
            fix_url=reverse("licenses:signing_key"),
        )
    current = facts.licenses.get(subscription.pk)
    if current:
        return LikelyCause(
            code="license_issued_step_open",
            text=f"License #{current[0]['pk']} was issued {_ago(now, current[0]['issued_at'])}, "
            "but the step was not closed.",
            tone="info",
        )
    return LikelyCause(
        code="license_not_issued",
        text="No license has been issued and nothing recorded blocks it.",
        fix_label="Issue the license",
        fix_url=reverse("licenses:license_issue", args=[subscription.pk]),
    )


def _delivered(step, facts: _Facts, now: datetime) -> LikelyCause:
    subscription = step.record.subscription
    online = subscription.licensing_method == LicensingMethod.ONLINE_CLOUD
    last = facts.deliveries.get(subscription.pk)
    if online:
        send = ("Resend the activation code", _resend_code_url(subscription))
    elif last is not None and last["license_id"]:
        send = ("Resend the license", _fix_url("license_resend", last["license_id"]))
    else:
        send = ("Open the subscription", subscription.get_absolute_url())
    if last is not None:
        to = last["recipient_email"] or "the partner"
        if last["status"] == "failed":
            return LikelyCause(
                code="delivery_failed",
                text=f"The last delivery to {to} failed {_ago(now, last['created_at'])}: "
                f"{last['error'] or 'no reason recorded'}",
                tone="danger",
                fix_label=send[0],
                fix_url=send[1],
            )
        if last["status"] == "queued":
            return LikelyCause(
                code="delivery_queued",
                text=f"A delivery to {to} was queued {_ago(now, last['created_at'])} and has not "
                "gone out: check the worker and the mail server.",
            )
        when = last["downloaded_at"] or last["sent_at"] or last["created_at"]
        return LikelyCause(
            code="delivered_step_open",
            text=f"Delivered to {to} {_ago(now, when)}, but the step was not closed.",
            tone="info",
        )
    recipient = _recipient(subscription, facts)
    if not recipient:
        return LikelyCause(
            code="no_recipient",
            text=f"{subscription.customer.name} has no sold-to contact to deliver to.",
            tone="danger",
            fix_label="Add the sold-to contact",
            fix_url=subscription.customer.get_absolute_url(),
        )
    if online:
        return LikelyCause(
            code="code_never_sent",
            text=f"No activation code has been sent to {recipient}.",
            fix_label="Send an activation code",
            fix_url=send[1],
        )
    current = facts.licenses.get(subscription.pk)
    if not current:
        return LikelyCause(
            code="nothing_to_deliver",
            text="There is no current license to deliver.",
            tone="danger",
            fix_label="Issue the license",
            fix_url=reverse("licenses:license_issue", args=[subscription.pk]),
        )
    return LikelyCause(
        code="license_never_sent",
        text=f"License #{current[0]['pk']} was never sent to {recipient} nor downloaded.",
        fix_label="Send the license",
        fix_url=_fix_url("license_resend", current[0]["pk"]),
    )


def _not_reported(method: str, what: str) -> LikelyCause | None:
    if method == LicensingMethod.LEGACY:
        return LikelyCause(
            code="legacy_not_reported",
            text=f"A legacy license file: GitLab reports no {what}. Confirm with the customer, "
            "then mark the step done.",
            tone="info",
        )
    return None


def _activated(step, facts: _Facts, now: datetime) -> LikelyCause:
    subscription = step.record.subscription
    method = subscription.licensing_method
    if (legacy := _not_reported(method, "activation")) is not None:
        return legacy
    if method == LicensingMethod.OFFLINE_CLOUD:
        return LikelyCause(
            code="offline_not_confirmed",
            text="An offline cloud license: the instance cannot report its activation. Confirm "
            "with the customer that the license file is uploaded, then mark the step done.",
            tone="info",
        )
    send = _resend_code_url(subscription)
    active = [a for a in facts.activations.get(subscription.pk, []) if a["status"] == "active"]
    if active:
        return LikelyCause(
            code="activated_step_open",
            text=f"Instance {active[0]['host']} activated {_ago(now, active[0]['activated_at'])}, "
            "but the step was not closed.",
            tone="info",
        )
    codes = facts.codes.get(subscription.pk, [])
    if not codes:
        return LikelyCause(
            code="no_activation_code",
            text="No activation code has ever been generated for this subscription.",
            tone="danger",
            fix_label="Send an activation code",
            fix_url=send,
        )
    newest = codes[0]
    hint = f"…{newest['code_hint']}"
    if newest["status"] != "active":
        when = newest["replaced_at"] or newest["created_at"]
        return LikelyCause(
            code="activation_code_replaced",
            text=f"Activation code {hint} was {newest['status']} {_ago(now, when)} and no newer "
            "code exists.",
            tone="danger",
            fix_label="Send an activation code",
            fix_url=send,
        )
    if newest["released_at"] is not None:
        return LikelyCause(
            code="activation_code_released",
            text=f"Activation code {hint} was released {_ago(now, newest['released_at'])} for "
            "another instance, which has not activated since.",
        )
    deactivated = facts.activations.get(subscription.pk, [])
    if deactivated:
        return LikelyCause(
            code="activation_deactivated",
            text=f"Instance {deactivated[0]['host']} activated with code …"
            f"{deactivated[0]['code_hint']}, but the activation was deactivated.",
        )
    return LikelyCause(
        code="activation_code_unused",
        text=f"Activation code {hint} was generated {_ago(now, newest['created_at'])} and has "
        "never been used.",
        fix_label="Send a new activation code",
        fix_url=send,
    )


def _no_namespace(subscription) -> LikelyCause:
    return LikelyCause(
        code="no_namespace",
        text=f"No GitLab.com namespace is linked to {subscription.name}.",
        tone="danger",
        fix_label="Open the subscription",
        fix_url=subscription.get_absolute_url(),
    )


def _namespace_provisioned(step, facts: _Facts, now: datetime) -> LikelyCause:
    subscription = step.record.subscription
    namespaces = facts.namespaces.get(subscription.pk)
    if not namespaces:
        return _no_namespace(subscription)
    return LikelyCause(
        code="namespace_step_open",
        text=f"Namespace {namespaces[0]['full_path']} is linked, but the step was not closed.",
        tone="info",
    )


def _first_usage(step, facts: _Facts, now: datetime) -> LikelyCause:
    subscription = step.record.subscription
    method = subscription.licensing_method
    if subscription.deployment == Deployment.GITLAB_COM:
        namespaces = facts.namespaces.get(subscription.pk)
        if not namespaces:
            return _no_namespace(subscription)
        refreshed = [n for n in namespaces if n["last_refreshed_at"] is not None]
        if refreshed:
            return LikelyCause(
                code="usage_step_open",
                text=f"Seat figures for {refreshed[0]['full_path']} arrived "
                f"{_ago(now, refreshed[0]['last_refreshed_at'])}, but the step was not closed.",
                tone="info",
            )
        return LikelyCause(
            code="no_namespace_figures",
            text=f"Namespace {namespaces[0]['full_path']} is linked, but GitLab.com has sent no "
            "seat figures for it.",
        )
    if (legacy := _not_reported(method, "usage")) is not None:
        return legacy
    if method == LicensingMethod.OFFLINE_CLOUD:
        upload = ("Upload a usage file", reverse(
            "usage:customer_usage_file_upload", args=[subscription.customer_id]
        ))  # fmt: skip
        last = facts.usage_files.get(subscription.pk)
        if last is None:
            return LikelyCause(
                code="no_usage_file",
                text="An offline customer: no usage file (license_usage.csv) has been uploaded.",
                fix_label=upload[0],
                fix_url=upload[1],
            )
        if last["status"] == "rejected":
            return LikelyCause(
                code="usage_file_rejected",
                text=f"The last usage file, {last['file_name']}, uploaded "
                f"{_ago(now, last['uploaded_at'])}, was rejected: {last['rejection_reason']}",
                tone="danger",
                fix_label=upload[0],
                fix_url=upload[1],
            )
        if last["status"] == "pending":
            return LikelyCause(
                code="usage_file_pending",
                text=f"Usage file {last['file_name']}, uploaded "
                f"{_ago(now, last['uploaded_at'])}, is still being imported.",
            )
        return LikelyCause(
            code="usage_step_open",
            text=f"Usage file {last['file_name']} was imported "
            f"{_ago(now, last['uploaded_at'])}, but the step was not closed.",
            tone="info",
        )
    active = [a for a in facts.activations.get(subscription.pk, []) if a["status"] == "active"]
    if not active:
        return LikelyCause(
            code="not_activated",
            text="No instance has activated this subscription yet, so no Seat Link can arrive.",
        )
    synced = [a for a in active if a["last_sync_at"] is not None]
    if synced:
        return LikelyCause(
            code="usage_step_open",
            text=f"Instance {synced[0]['host']} sent Seat Link "
            f"{_ago(now, synced[0]['last_sync_at'])}, but the step was not closed.",
            tone="info",
        )
    return LikelyCause(
        code="no_seat_link",
        text=f"Instance {active[0]['host']} activated {_ago(now, active[0]['activated_at'])} "
        "and has sent no Seat Link since: its outbound HTTPS to Provision may be blocked.",
    )


def _closed(subscription) -> LikelyCause:
    return LikelyCause(
        code="subscription_closed",
        text=f"{subscription.name} is {subscription.get_status_display().lower()}: nothing is "
        "left to provision. Mark the step done to close the order.",
        tone="info",
    )


def _cause(step, facts: _Facts, now: datetime) -> LikelyCause:
    subscription = step.record.subscription
    if subscription.status in CLOSED_SUBSCRIPTION_STATUSES:
        return _closed(subscription)
    compute = _CAUSES.get(step.kind)
    return compute(step, facts, now) if compute else UNKNOWN_CAUSE


_CAUSES = {
    Kind.LICENSE_ISSUED: _license_issued,
    Kind.DELIVERED: _delivered,
    Kind.ACTIVATED: _activated,
    Kind.NAMESPACE_PROVISIONED: _namespace_provisioned,
    Kind.FIRST_USAGE: _first_usage,
}


def stuck_queue_rows(
    *, actor, steps: Iterable[ProvisioningStep], now: datetime | None = None
) -> list[StuckRow]:
    """The queue's rows for ``steps`` (one page of ``stuck_queue``), each with its record's
    steps, its clock and its likely cause: one query for the records' steps and at most six
    for the causes, whatever the number of rows."""
    _require_view(actor)
    steps = list(steps)
    if not steps:
        return []
    now = now or timezone.now()
    by_record: dict[int, list[ProvisioningStep]] = {}
    for sibling in ProvisioningStep.objects.filter(
        record_id__in={step.record_id for step in steps}
    ).order_by("record_id", "position"):
        by_record.setdefault(sibling.record_id, []).append(sibling)
    facts = _Facts(steps)
    rows = []
    for step in steps:
        siblings = by_record.get(step.record_id, [step])
        finished = [
            s.completed_at
            for s in siblings
            if s.position < step.position and s.completed_at is not None
        ]
        sla = ProvisioningStep.sla(step.kind)
        # Waiting since the step before it completed; never less than its SLA and the time
        # past due (a due date moved back by hand or by the seed commands says it waited longer).
        started = max(finished, default=step.record.created_at)
        rows.append(
            StuckRow(
                step=step,
                steps=siblings,
                pending_since=min(started, step.due_at - sla),
                sla=sla,
                now=now,
                cause=_cause(step, facts, now),
            )
        )
    return rows


@dataclass(frozen=True)
class StuckQueuePage:
    """One page of the filtered queue: the paginator's page (of step ids), its rows and the
    FilterSet (for the form)."""

    page: Page
    rows: list[StuckRow]
    filterset: StuckQueueFilterSet


def stuck_queue_page(
    *,
    actor,
    filters: dict | None = None,
    page: str | int | None = None,
    size: int = 25,
    now: datetime | None = None,
) -> StuckQueuePage:
    """A page of the queue in a fixed number of queries.

    The whole filtered queue is read once as ordered step ids (a few thousand at design scale),
    which gives both the count and the page: the joins a filter needs run once instead of twice
    (``COUNT(*)`` and then the page). The page's steps are then loaded by primary key with their
    record, subscription and customer, and get their rows.
    """
    now = now or timezone.now()
    steps, filterset = stuck_queue(actor=actor, filters=filters, now=now)
    ids = list(steps.values_list("pk", flat=True))
    page_obj = Paginator(ids, size).get_page(page)
    loaded = steps.model.objects.select_related(*QUEUE_RELATED).in_bulk(page_obj.object_list)
    rows = stuck_queue_rows(
        actor=actor, steps=[loaded[pk] for pk in page_obj.object_list if pk in loaded], now=now
    )
    return StuckQueuePage(page=page_obj, rows=rows, filterset=filterset)
