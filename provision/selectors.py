"""Reads for the staff console and the API. Selectors own query shape and visibility."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce
from operator import or_

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    FilteredRelation,
    IntegerField,
    JSONField,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, NullIf, RowNumber
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone

from provision import permissions
from provision.choices import (
    ActorKind,
    AuditSource,
    LicensingMethod,
    StepState,
    SubscriptionStatus,
)
from provision.filters import (
    AuditEventFilterSet,
    CustomerFilterSet,
    ProvisioningRecordFilterSet,
    SubscriptionFilterSet,
)
from provision.models import (
    AuditEvent,
    Customer,
    Note,
    ProvisioningRecord,
    ProvisioningStep,
    Subscription,
)


def _require(allowed: bool) -> None:
    if not allowed:
        raise PermissionDenied


def require_staff(actor) -> None:
    """Any Provision role may read; used by every app's list selectors."""
    _require(permissions.is_staff_member(actor))


def customer_list(
    *, actor, filters: dict | None = None
) -> tuple[QuerySet[Customer], CustomerFilterSet]:
    _require(permissions.CustomerPolicy.can_view(actor))
    # A correlated subquery, not a joined Count: PostgreSQL then counts the subscriptions of
    # the page's rows only, instead of grouping every customer before sorting (1.1 s at
    # 200,000 customers), and the list's COUNT needs no join.
    active = (
        Subscription.objects.filter(customer=OuterRef("pk"), status=SubscriptionStatus.ACTIVE)
        .order_by()
        .values("customer")
        .annotate(n=Count("pk"))
        .values("n")
    )
    queryset = (
        Customer.objects.select_related("account_owner", "csm", "partner")
        .annotate(active_subscriptions=Coalesce(Subquery(active, output_field=IntegerField()), 0))
        .order_by("name", "pk")
    )
    filterset = CustomerFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def customer_get(*, actor, pk: int, related: bool = True) -> Customer:
    """One customer; with ``related`` its subscriptions (add-ons, orders) and contacts too.

    The customer page reads through ``customer_page`` instead; its timeline fragment and the
    forms posted from it need the customer row alone (``related=False``)."""
    _require(permissions.CustomerPolicy.can_view(actor))
    if not related:
        return get_object_or_404(Customer, pk=pk)
    subscriptions = Subscription.objects.select_related("partner", "renews").prefetch_related(
        "add_ons",
        Prefetch(
            "provisioning_records",
            queryset=ProvisioningRecord.objects.prefetch_related("steps"),
        ),
    )
    queryset = Customer.objects.select_related("account_owner", "csm", "partner").prefetch_related(
        Prefetch("subscriptions", queryset=subscriptions),
        "contacts",
    )
    return get_object_or_404(queryset, pk=pk)


# --- The customer page: the 360° view ------------------------------------------------------------
#
# Support's page for "what is going on with this customer". It has a dozen sections and a budget
# of fifteen queries including the session and the user's roles, whatever the customer's size
# (tests/provision/test_customer_page.py). So: one-to-one facts are joined (the renewal, the
# active activation code), per-subscription figures are correlated subqueries (latest seat
# report, earlier codes, the instance a code is bound to), every list is one query grouped in
# Python, and the audit events and notes come back in one UNION.

# Licenses listed per subscription (newest first); the license list has the rest.
CUSTOMER_PAGE_LICENSES = 12
# Instances and namespaces listed; more than that is a link to the full list.
CUSTOMER_PAGE_SOURCES = 50
# Timeline entries shown; the audit log pages through everything.
TIMELINE_LIMIT = 50
# A note also writes this audit event; the timeline shows the note itself, once.
NOTE_ACTION = "provision.note_added"


@dataclass(frozen=True)
class TimelineKind:
    """One filter of the customer timeline (``?kind=``): the audit actions it covers, by the
    prefix of their action code, and optionally any event carrying one of ``metadata_keys``."""

    key: str
    label: str
    icon: str
    prefixes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    metadata_keys: tuple[str, ...] = ()

    def covers(self, action: str) -> bool:
        return (
            bool(self.prefixes)
            and action.startswith(self.prefixes)
            and not (self.excludes and action.startswith(self.excludes))
        )


# The one place that says which kind an audit event is. Order matters for the badge of an event
# (the first kind that covers its action); filters use the same prefixes. Customer and contact
# edits belong to no filter and show under "all".
TIMELINE_KINDS: tuple[TimelineKind, ...] = (
    TimelineKind(
        "licenses", "Licenses", "bi-file-earmark-lock", ("licenses.license_", "licenses.delivery_")
    ),
    TimelineKind("activation", "Activation", "bi-key", ("licenses.activat",)),
    TimelineKind("subscription", "Seats & subscription", "bi-people", ("provision.subscription_",)),
    TimelineKind("namespaces", "Namespaces", "bi-globe2", ("usage.namespace_",)),
    TimelineKind("usage", "Usage", "bi-graph-up", ("usage.",), excludes=("usage.namespace_",)),
    TimelineKind("provisioning", "Provisioning", "bi-diagram-3", ("provision.provisioning_",)),
    TimelineKind("crm", "CRM", "bi-cloud-arrow-up", ("crm_sync.",)),
    TimelineKind("notes", "Notes", "bi-sticky"),
    # Four-eyes fixes: the request's own events and every event an approved fix wrote.
    TimelineKind(
        "approvals",
        "Approvals",
        "bi-person-check",
        ("provision.fix_request",),
        metadata_keys=("approved_by",),
    ),
)
TIMELINE_KINDS_BY_KEY = {kind.key: kind for kind in TIMELINE_KINDS}


def timeline_kind_of(action: str) -> TimelineKind | None:
    """The timeline kind of an audit action code (None: only under "all")."""
    if action == NOTE_ACTION:
        return TIMELINE_KINDS_BY_KEY["notes"]
    return next((kind for kind in TIMELINE_KINDS if kind.covers(action)), None)


def _timeline_kind_q(kind: TimelineKind) -> Q:
    """The audit events of one timeline kind, as a filter (mirrors ``TimelineKind.covers``)."""
    condition = Q(pk__in=[])
    if kind.prefixes:
        condition = reduce(or_, (Q(action__startswith=prefix) for prefix in kind.prefixes))
        for prefix in kind.excludes:
            condition &= ~Q(action__startswith=prefix)
    for key in kind.metadata_keys:
        condition |= Q(metadata__has_key=key)
    return condition


@dataclass(frozen=True)
class TimelineEntry:
    """One row of the customer timeline: an audit event or a note, in one shape."""

    is_note: bool
    pk: int
    created_at: datetime
    actor_text: str
    actor_kind: str
    action: str
    target_type: str
    target_id: str
    target_text: str
    changes: dict
    reason: str
    reason_code: str
    ticket_url: str
    request_id: str
    source: str
    metadata: dict
    body: str

    @property
    def kind(self) -> TimelineKind | None:
        if self.is_note:
            return TIMELINE_KINDS_BY_KEY["notes"]
        return timeline_kind_of(self.action)

    def get_actor_kind_display(self) -> str:
        return _choice_label(ActorKind, self.actor_kind)

    def get_source_display(self) -> str:
        return _choice_label(AuditSource, self.source)

    @property
    def reason_code_label(self) -> str:
        from provision import choices

        reason_codes = getattr(choices, "ReasonCode", None)
        return _choice_label(reason_codes, self.reason_code) if reason_codes else self.reason_code

    @property
    def requested_by(self) -> str:
        return str((self.metadata or {}).get("requested_by") or "")

    @property
    def approved_by(self) -> str:
        return str((self.metadata or {}).get("approved_by") or "")


def _choice_label(choices, value: str) -> str:
    try:
        return choices(value).label
    except ValueError:
        return value


_TEXT = CharField()


def _timeline_event_columns() -> dict:
    audit_fields = {field.name for field in AuditEvent._meta.concrete_fields}
    return {
        "entry": Value("event", output_field=_TEXT),
        "entry_pk": F("pk"),
        "at": F("created_at"),
        "who": F("actor_text"),
        "who_kind": F("actor_kind"),
        "verb": F("action"),
        "on_type": F("target_type"),
        "on_id": F("target_id"),
        "on_text": F("target_text"),
        "diff": F("changes"),
        "why": F("reason"),
        # Reason codes arrived with the four-eyes fixes (migration 0006).
        "why_code": F("reason_code") if "reason_code" in audit_fields else Value("", _TEXT),
        "ticket": F("ticket_url"),
        "request": F("request_id"),
        "via": F("source"),
        "meta": F("metadata"),
        "text": Value("", output_field=_TEXT),
    }


def _timeline_note_columns() -> dict:
    return {
        "entry": Value("note", output_field=_TEXT),
        "entry_pk": F("pk"),
        "at": F("created_at"),
        "who": F("author_text"),
        "who_kind": Value(ActorKind.STAFF.value, output_field=_TEXT),
        "verb": Value(NOTE_ACTION, output_field=_TEXT),
        "on_type": F("target_type"),
        "on_id": F("target_id"),
        "on_text": Value("", output_field=_TEXT),
        "diff": Value({}, output_field=JSONField()),
        "why": Value("", output_field=_TEXT),
        "why_code": Value("", output_field=_TEXT),
        "ticket": Value("", output_field=_TEXT),
        "request": Value("", output_field=_TEXT),
        "via": Value(AuditSource.UI.value, output_field=_TEXT),
        "meta": Value({}, output_field=JSONField()),
        "text": F("body"),
    }


@dataclass(frozen=True)
class Timeline:
    """The timeline card's entries, and the newest notes for the notes card beside it."""

    entries: list[TimelineEntry]
    recent_notes: list[TimelineEntry]


def customer_timeline(
    *,
    actor,
    customer: Customer,
    kind: str = "all",
    limit: int = TIMELINE_LIMIT,
    recent_notes: int = 0,
) -> Timeline:
    """The customer's audit events and notes, newest first, in one query.

    ``kind`` is a ``TIMELINE_KINDS`` key ("notes": notes only) or "all" (anything else reads
    as "all"). ``recent_notes`` also returns that many newest notes whatever the kind, from
    the same query. Each side of the UNION is first cut to its newest rows by an
    ``IN (… ORDER BY created_at DESC LIMIT n)`` subquery on its (customer, -created_at) index:
    without it PostgreSQL sorts every event of the customer (100 ms at 100,000 events), and
    SQLite refuses LIMIT inside a UNION's parts. At most ``2 × limit`` rows come back.
    """
    _require(permissions.AuditPolicy.can_view(actor))
    selected = TIMELINE_KINDS_BY_KEY.get(kind)
    notes_in_timeline = selected is None or selected.key == "notes"
    parts = []
    if selected is None or selected.key != "notes":
        events = AuditEvent.objects.filter(customer=customer).exclude(action=NOTE_ACTION)
        if selected is not None:
            events = events.filter(_timeline_kind_q(selected))
        newest = events.order_by("-created_at", "-pk").values("pk")[:limit]
        parts.append(
            AuditEvent.objects.filter(pk__in=Subquery(newest))
            .order_by()
            .values(**_timeline_event_columns())
        )
    notes_wanted = max(limit if notes_in_timeline else 0, recent_notes)
    if notes_wanted:
        newest = Note.objects.filter(customer=customer).order_by("-created_at", "-pk")
        parts.append(
            Note.objects.filter(pk__in=Subquery(newest.values("pk")[:notes_wanted]))
            .order_by()
            .values(**_timeline_note_columns())
        )
    rows = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
    entries = [_timeline_entry(row) for row in rows.order_by("-at", "-entry_pk")]
    return Timeline(
        entries=[row for row in entries if notes_in_timeline or not row.is_note][:limit],
        recent_notes=[row for row in entries if row.is_note][:recent_notes],
    )


def _timeline_entry(row: dict) -> TimelineEntry:
    return TimelineEntry(
        is_note=row["entry"] == "note",
        pk=row["entry_pk"],
        created_at=row["at"],
        actor_text=row["who"],
        actor_kind=row["who_kind"],
        action=row["verb"],
        target_type=row["on_type"],
        target_id=row["on_id"],
        target_text=row["on_text"],
        changes=row["diff"] or {},
        reason=row["why"],
        reason_code=row["why_code"] or "",
        ticket_url=row["ticket"],
        request_id=row["request"],
        source=row["via"],
        metadata=row["meta"] or {},
        body=row["text"],
    )


@dataclass(frozen=True)
class FixLink:
    """A support fix offered on the page: its key (``provision.fixes.FIXES``) and its URL."""

    key: str
    label: str
    icon: str
    danger: bool
    url: str


def _fix_links(actor, target, keys, *, check: bool = True) -> list[FixLink]:
    """The fixes among ``keys`` the actor may start on ``target``. ``check`` asks each fix
    whether it applies (``Fix.unavailable``, which reads only the loaded target); without it
    the caller has decided."""
    from provision.fixes import FIXES

    links = []
    for key in keys:
        fix = FIXES.get(key)
        if fix is None or not fix.allowed(actor) or (check and fix.unavailable(target)):
            continue
        links.append(
            FixLink(key=key, label=fix.label, icon=fix.icon, danger=fix.danger, url=fix.url(target))
        )
    return links


SUBSCRIPTION_FIXES = (
    "seats_change",
    "add_on_change",
    "license_extend",
    "activation_code_resend",
    "convert_to_cloud",
)
LICENSE_FIXES = ("license_resend", "license_reissue", "license_revoke")
NAMESPACE_FIXES = (
    "namespace_associate",
    "namespace_force_associate",
    "namespace_disassociate",
    "namespace_reset_max_seats",
)
STEP_FIXES = ("step_retry", "step_mark_done")
CUSTOMER_FIXES = ("crm_push",)


@dataclass
class CustomerPage:
    """Everything the customer page shows except the timeline, the chart and the CRM cards.

    Subscriptions carry their sections as attributes: ``add_ons`` (prefetched), ``usage_*``
    (latest seat report), ``active_code`` and ``code_bound_*``, ``license_rows`` and
    ``license_total``, ``records`` (provisioning records with ``step_list``), ``renewal`` and,
    when fixes are on, ``fixes``. Licenses, namespaces, steps and the customer likewise carry
    ``fixes``."""

    customer: Customer
    contacts: list
    subscriptions: list[Subscription]
    instances: list
    more_instances: bool
    namespaces: list
    more_namespaces: bool
    stale_before: datetime

    @property
    def licenses(self) -> list:
        return [row for subscription in self.subscriptions for row in subscription.license_rows]

    @property
    def records(self) -> list[ProvisioningRecord]:
        return [row for subscription in self.subscriptions for row in subscription.records]

    @property
    def self_managed(self) -> list[Subscription]:
        return [row for row in self.subscriptions if row.is_self_managed]

    @property
    def code_subscriptions(self) -> list[Subscription]:
        """Self-managed subscriptions that had a code, or run on one (online cloud, open)."""
        running = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PENDING)
        return [
            row
            for row in self.self_managed
            if row.active_code is not None
            or row.earlier_codes
            or (row.licensing_method == LicensingMethod.ONLINE_CLOUD and row.status in running)
        ]

    @property
    def has_gitlab_com(self) -> bool:
        return any(not row.is_self_managed for row in self.subscriptions)

    @property
    def alerts(self) -> list[PageAlert]:
        """What needs a look, worst first, from what the page already loaded (no queries)."""
        alerts = []
        dark = [row for row in self.instances if row.sync_state == "dark"]
        if dark:
            alerts.append(
                PageAlert(
                    "danger",
                    "bi-wifi-off",
                    f"{_count(len(dark), 'instance')} dark: an online cloud license and no "
                    f"Seat Link for {settings.INSTANCE_DARK_AFTER_DAYS} days or more",
                    "instances",
                )
            )
        steps = [step for record in self.records for step in record.step_list]
        failed = [step for step in steps if step.state == StepState.FAILED]
        if failed:
            alerts.append(
                PageAlert(
                    "danger",
                    "bi-x-octagon",
                    f"{_count(len(failed), 'provisioning step')} failed "
                    f"({', '.join(sorted({step.get_kind_display() for step in failed}))})",
                    "provisioning",
                )
            )
        stuck = [step for step in steps if step.stuck]
        if stuck:
            alerts.append(
                PageAlert(
                    "warning",
                    "bi-exclamation-triangle",
                    f"{_count(len(stuck), 'provisioning step')} stuck past its due time",
                    "provisioning",
                )
            )
        for row in self.subscriptions:
            if row.usage_billable is not None and row.usage_billable > row.seats:
                alerts.append(
                    PageAlert(
                        "warning",
                        "bi-people",
                        f"{row.name} has {row.usage_billable:,} billable users for "
                        f"{row.seats:,} seats",
                        f"subscription-{row.pk}",
                    )
                )
        owed = sum(row.seats_owed for row in self.namespaces)
        if owed:
            alerts.append(
                PageAlert(
                    "warning",
                    "bi-globe2",
                    f"{_count(owed, 'seat')} owed on GitLab.com",
                    "namespaces",
                )
            )
        stale = [row for row in self.instances if row.sync_state == "stale"]
        if stale:
            alerts.append(
                PageAlert(
                    "info",
                    "bi-hourglass-split",
                    f"{_count(len(stale), 'instance')} without a Seat Link for 36 hours",
                    "instances",
                )
            )
        return alerts


@dataclass(frozen=True)
class PageAlert:
    """One line of the customer page's "needs a look" card, linking to its section."""

    level: str  # danger, warning or info (Tabler colours)
    icon: str
    text: str
    anchor: str


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _subscription_page_annotations() -> dict:
    """Per subscription: its latest seat-report day summed over sources (as the usage chart
    does), and the instance its active activation code is bound to."""
    from licenses.choices import ActivationCodeStatus, ActivationStatus
    from licenses.models import Activation, ActivationCode
    from usage.models import SeatReport

    latest_day = (
        SeatReport.objects.filter(subscription=OuterRef("pk"))
        .order_by("-report_date")
        .values("report_date")[:1]
    )
    outer_latest_day = (
        SeatReport.objects.filter(subscription=OuterRef(OuterRef("pk")))
        .order_by("-report_date")
        .values("report_date")[:1]
    )
    on_latest_day = (
        SeatReport.objects.filter(
            subscription=OuterRef("pk"), report_date=Subquery(outer_latest_day)
        )
        .order_by()
        .values("subscription")
    )
    bound = Activation.objects.filter(
        activation_code__subscription=OuterRef("pk"),
        activation_code__status=ActivationCodeStatus.ACTIVE,
        status=ActivationStatus.ACTIVE,
    ).order_by("-activated_at", "-pk")
    earlier_codes = (
        ActivationCode.objects.filter(subscription=OuterRef("pk"))
        .exclude(status=ActivationCodeStatus.ACTIVE)
        .order_by()
        .values("subscription")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return {
        "usage_last_date": Subquery(latest_day),
        "usage_billable": Subquery(
            on_latest_day.annotate(total=Sum("billable_users")).values("total")
        ),
        "usage_peak": Subquery(
            on_latest_day.annotate(total=Sum("max_historical_users")).values("total")
        ),
        "code_bound_instance": Subquery(bound.values("instance_id")[:1]),
        "code_bound_host": Subquery(
            bound.values(
                host=Coalesce(
                    NullIf("hostname", Value("")), NullIf("instance__hostname", Value(""))
                )
            )[:1]
        ),
        "earlier_codes": Coalesce(Subquery(earlier_codes), 0),
    }


def _subscription_order():
    """Running subscriptions first, then the newest term."""
    running = Case(
        When(status=SubscriptionStatus.ACTIVE, then=Value(0)),
        When(status=SubscriptionStatus.PENDING, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return (running, F("term_end").desc(), "name")


def customer_page(*, actor, pk: int, with_fixes: bool = False, now=None) -> CustomerPage:
    """The customer page's sections, in eight queries whatever the customer's size.

    1 customer + contacts (a LEFT JOIN: one row per contact), 2 subscriptions with their
    renewal, active activation code and latest usage, 3 their add-ons, 4 licenses (the newest
    ``CUSTOMER_PAGE_LICENSES`` per subscription, without the key; skipped when nothing is
    self-managed), 5 provisioning steps with their records, 6 instances with sync health and
    latest activation, 7 namespaces. ``with_fixes`` attaches the support fixes the actor may
    start on each object (no queries: the fixes judge the loaded rows).
    """
    from licenses.choices import CURRENT_LICENSE_STATUSES, ActivationCodeStatus
    from licenses.models import Activation, License
    from licenses.selectors import INSTANCE_STALE_AFTER
    from usage.models import Instance, Namespace
    from usage.selectors import instance_health, instance_health_annotate

    _require(permissions.CustomerPolicy.can_view(actor))
    now = now or timezone.now()
    today = timezone.localdate(now)

    rows = list(
        Customer.objects.filter(pk=pk)
        .select_related("account_owner", "csm", "partner")
        .annotate(contact=FilteredRelation("contacts"))
        .select_related("contact")
        .order_by("contact__role", "contact__last_name", "contact__pk")
    )
    if not rows:
        raise Http404("No such customer.")
    customer = rows[0]
    contacts = [row.contact for row in rows if getattr(row, "contact", None) is not None]

    subscriptions = list(
        Subscription.objects.filter(customer=customer)
        .annotate(
            active_code=FilteredRelation(
                "activation_codes",
                condition=Q(activation_codes__status=ActivationCodeStatus.ACTIVE),
            ),
            **_subscription_page_annotations(),
        )
        .select_related("partner", "renews", "renewed_by", "active_code")
        .prefetch_related("add_ons")
        .order_by(*_subscription_order())
    )
    by_id = {subscription.pk: subscription for subscription in subscriptions}
    for subscription in subscriptions:
        subscription.customer = customer
        try:
            subscription.renewal = subscription.renewed_by
        except Subscription.DoesNotExist:
            subscription.renewal = None
        subscription.active_code = getattr(subscription, "active_code", None)
        subscription.license_rows, subscription.license_total = [], 0
        subscription.records = []

    if any(subscription.is_self_managed for subscription in subscriptions):
        licenses = (
            License.objects.filter(subscription__customer=customer)
            .defer("key", "attributes")
            .annotate(
                position=Window(
                    RowNumber(),
                    partition_by=[F("subscription_id")],
                    order_by=[F("issued_at").desc(), F("pk").desc()],
                ),
                in_subscription=Window(Count("pk"), partition_by=[F("subscription_id")]),
            )
            .filter(position__lte=CUSTOMER_PAGE_LICENSES)
            .order_by("subscription_id", "-issued_at", "-pk")
        )
        licenses = list(licenses)
        successors = {row.supersedes_id: row for row in licenses if row.supersedes_id}
        for row in licenses:
            subscription = by_id[row.subscription_id]
            row.subscription = subscription
            row.is_current = row.status in CURRENT_LICENSE_STATUSES
            row.starts_in_future = row.starts_on > today
            row.successor = successors.get(row.pk)
            subscription.license_rows.append(row)
            subscription.license_total = row.in_subscription

    steps = (
        ProvisioningStep.objects.filter(record__subscription__customer=customer)
        .select_related("record")
        .order_by("-record__created_at", "record_id", "position")
    )
    records: dict[int, ProvisioningRecord] = {}
    for step in steps:
        record = records.get(step.record_id)
        if record is None:
            record = records[step.record_id] = step.record
            record.subscription = by_id[record.subscription_id]
            record.step_list = []
            record.subscription.records.append(record)
        step.record = record
        step.stuck = step.is_stuck
        record.step_list.append(step)
    for record in records.values():
        record.stuck = any(step.stuck for step in record.step_list)
        record.failed = any(step.state == StepState.FAILED for step in record.step_list)
        # Finished orders fold into one line of badges; open ones list their steps.
        record.open = any(
            step.state in (StepState.PENDING, StepState.FAILED) for step in record.step_list
        )

    latest_activation = Activation.objects.filter(instance=OuterRef("pk")).order_by(
        "-activated_at", "-pk"
    )
    instances = list(
        instance_health_annotate(
            Instance.objects.filter(customer=customer)
            .select_related("subscription")
            .annotate(
                activation_at=Subquery(latest_activation.values("activated_at")[:1]),
                activation_status=Subquery(latest_activation.values("status")[:1]),
                activation_code_hint=Subquery(
                    latest_activation.values("activation_code__code_hint")[:1]
                ),
            )
            .order_by(F("last_sync_at").desc(nulls_last=True), "hostname", "pk"),
            today=today,
        )[: CUSTOMER_PAGE_SOURCES + 1]
    )
    stale_before = now - INSTANCE_STALE_AFTER
    for instance in instances:
        instance.health = instance_health(instance, now=now)
        instance.sync_state = _instance_sync_state(instance, stale_before=stale_before)

    namespaces = list(
        Namespace.objects.filter(subscription__customer=customer).order_by("full_path", "pk")[
            : CUSTOMER_PAGE_SOURCES + 1
        ]
    )
    for namespace in namespaces:
        namespace.subscription = by_id[namespace.subscription_id]

    page = CustomerPage(
        customer=customer,
        contacts=contacts,
        subscriptions=subscriptions,
        instances=instances[:CUSTOMER_PAGE_SOURCES],
        more_instances=len(instances) > CUSTOMER_PAGE_SOURCES,
        namespaces=namespaces[:CUSTOMER_PAGE_SOURCES],
        more_namespaces=len(namespaces) > CUSTOMER_PAGE_SOURCES,
        stale_before=stale_before,
    )
    if with_fixes:
        _attach_fixes(actor, page)
    return page


def _instance_sync_state(instance, *, stale_before: datetime) -> str:
    """How the instance reports: ``usage_file`` (air-gapped, by file), ``dark`` (an online
    cloud license and no Seat Link for ``INSTANCE_DARK_AFTER_DAYS``), ``stale`` (none for 36
    hours) or ``syncing``."""
    if instance.air_gapped and not instance.last_sync_at:
        return "usage_file"
    if instance.health.dark:
        return "dark"
    if not instance.last_sync_at or instance.last_sync_at < stale_before:
        return "stale"
    return "syncing"


def _attach_fixes(actor, page: CustomerPage) -> None:
    from licenses.choices import ActivationCodeStatus

    page.customer.fixes = _fix_links(actor, page.customer, CUSTOMER_FIXES)
    for subscription in page.subscriptions:
        subscription.fixes = _fix_links(actor, subscription, SUBSCRIPTION_FIXES)
        for row in subscription.license_rows:
            row.fixes = _fix_links(actor, row, LICENSE_FIXES) if row.is_current else []
        code = subscription.active_code
        if code is not None:
            # Fix.unavailable reads the code's activations; the page already knows them.
            releasable = (
                code.status == ActivationCodeStatus.ACTIVE
                and code.released_at is None
                and subscription.code_bound_instance is not None
            )
            code.subscription = subscription
            code.fixes = (
                _fix_links(actor, code, ("activation_code_release",), check=False)
                if releasable
                else []
            )
        for record in subscription.records:
            for step in record.step_list:
                step.fixes = _fix_links(actor, step, STEP_FIXES)
    for namespace in page.namespaces:
        namespace.fixes = _fix_links(actor, namespace, NAMESPACE_FIXES)


def subscription_list(*, actor, filters: dict | None = None):
    _require(permissions.SubscriptionPolicy.can_view(actor))
    queryset = (
        Subscription.objects.select_related("customer", "partner")
        .prefetch_related("add_ons")
        .order_by("name")
    )
    filterset = SubscriptionFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def subscription_get(*, actor, pk: int) -> Subscription:
    _require(permissions.SubscriptionPolicy.can_view(actor))
    queryset = Subscription.objects.select_related(
        "customer", "partner", "renews"
    ).prefetch_related(
        "add_ons",
        "seat_ledger",
        Prefetch(
            "provisioning_records", queryset=ProvisioningRecord.objects.prefetch_related("steps")
        ),
    )
    return get_object_or_404(queryset, pk=pk)


def provisioning_record_list(*, actor, filters: dict | None = None):
    _require(permissions.SubscriptionPolicy.can_view(actor))
    queryset = (
        ProvisioningRecord.objects.select_related("subscription__customer")
        .prefetch_related("steps")
        .order_by("-created_at", "-pk")
    )
    filterset = ProvisioningRecordFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def audit_event_list(*, actor, filters: dict | None = None):
    _require(permissions.AuditPolicy.can_view(actor))
    queryset = AuditEvent.objects.select_related("actor").order_by("-created_at", "-pk")
    filterset = AuditEventFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


@dataclass(frozen=True)
class HomeCounts:
    customers: int
    active_subscriptions: int
    licenses_by_kind: dict[str, int]
    instances_synced_24h: int
    instances_total: int
    stuck_records: int


def home_counts(*, actor) -> HomeCounts:
    """The live figures on the home page, in a handful of aggregate queries."""
    from licenses.choices import CURRENT_LICENSE_STATUSES, LicenseKind
    from licenses.models import License
    from usage.models import Instance

    _require(permissions.is_staff_member(actor))
    now = timezone.now()
    by_kind = dict(
        License.objects.filter(status__in=CURRENT_LICENSE_STATUSES)
        .values_list("kind")
        .annotate(n=Count("pk"))
        .values_list("kind", "n")
    )
    instances = Instance.objects.aggregate(
        total=Count("pk"), synced=Count("pk", filter=Q(last_sync_at__gte=now - timedelta(hours=24)))
    )
    from provision.stuck import stuck_steps_queryset

    # The stuck queue's own definition: one row per held-up order.
    stuck = stuck_steps_queryset(now).order_by().count()
    return HomeCounts(
        customers=Customer.objects.count(),
        active_subscriptions=Subscription.objects.filter(status=SubscriptionStatus.ACTIVE).count(),
        licenses_by_kind={kind.label: by_kind.get(kind.value, 0) for kind in LicenseKind},
        instances_synced_24h=instances["synced"],
        instances_total=instances["total"],
        stuck_records=stuck,
    )


def stuck_steps(*, actor, limit: int = 10) -> list[ProvisioningStep]:
    """The oldest rows of the stuck queue (provision.stuck), for the home page."""
    from provision.stuck import stuck_steps_queryset

    _require(permissions.is_staff_member(actor))
    return list(stuck_steps_queryset()[:limit])


def subscription_peak_usage(*, subscription: Subscription) -> int:
    """The most users the subscription is known to have had this term (seat reports, namespaces)."""
    from usage.models import Namespace, SeatReport

    reported = (
        SeatReport.objects.filter(
            subscription=subscription, report_date__gte=subscription.term_start
        ).aggregate(peak=Max("max_historical_users"))["peak"]
        or 0
    )
    namespace_peak = (
        Namespace.objects.filter(subscription=subscription).aggregate(peak=Max("max_seats_used"))[
            "peak"
        ]
        or 0
    )
    return max(reported, namespace_peak)


# --- Four-eyes fix requests ---------------------------------------------------------------------


def fix_request_list(*, actor, filters: dict | None = None):
    """Requests, pending first (oldest waiting at the top), then the decided ones, newest first."""
    from django.db.models import Case, IntegerField, Value, When

    from provision.choices import FixRequestState
    from provision.filters import FixRequestFilterSet
    from provision.models import FixRequest

    _require(permissions.is_staff_member(actor))
    pending_first = Case(
        When(state=FixRequestState.PENDING, then=Value(0)),
        default=Value(1),
        output_field=IntegerField(),
    )
    queryset = (
        FixRequest.objects.select_related("customer", "requested_by", "decided_by")
        .annotate(pending_first=pending_first)
        .order_by("pending_first", "requested_at", "pk")
    )
    filterset = FixRequestFilterSet(filters or {}, queryset=queryset)
    return filterset.qs, filterset


def fix_request_get(*, actor, pk: int):
    from provision.models import FixRequest

    _require(permissions.is_staff_member(actor))
    return get_object_or_404(
        FixRequest.objects.select_related("customer", "requested_by", "decided_by"), pk=pk
    )


def fix_requests_pending_count(*, actor) -> int:
    """For the nav badge of leads: how many requests wait for a decision."""
    from provision.choices import FixRequestState
    from provision.models import FixRequest

    if not permissions.can_approve(actor):
        return 0
    return FixRequest.objects.filter(state=FixRequestState.PENDING).count()
