"""Customers, subscriptions, orders (provisioning records), the audit trail and notes."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from provision.choices import (
    TRIAL_PLANS,
    ActorKind,
    AddOnKind,
    AuditSource,
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

salesforce_id_validator = RegexValidator(
    r"^[A-Za-z0-9]{18}$", "A Salesforce account id is 18 letters and digits."
)
billing_account_validator = RegexValidator(
    r"^A\d{8}$", "A billing account number looks like A00012345."
)
subscription_name_validator = RegexValidator(
    r"^A-S\d{8}$", "A subscription name looks like A-S00012345."
)
domain_validator = RegexValidator(
    r"^(?=.{1,253}$)([a-z0-9-]+\.)+[a-z]{2,}$", "Enter a lower-case domain such as example.com."
)


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Partner(TimestampedModel):
    """A channel reseller or distributor that receives licenses on a customer's behalf."""

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(
        max_length=20, choices=PartnerKind.choices, default=PartnerKind.RESELLER
    )
    email = models.EmailField(help_text="Where licenses for the partner's customers are sent.")
    salesforce_account_id = models.CharField(
        max_length=18, blank=True, validators=[salesforce_id_validator]
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Customer(TimestampedModel):
    """A paying organisation: one billing account, its contacts and its subscriptions."""

    billing_account_number = models.CharField(
        max_length=9, unique=True, validators=[billing_account_validator]
    )
    name = models.CharField(max_length=200, db_index=True)
    email_domains = models.JSONField(
        default=list, blank=True, help_text="Lower-case e-mail domains that belong to the customer."
    )
    salesforce_account_id = models.CharField(
        max_length=18, null=True, blank=True, unique=True, validators=[salesforce_id_validator]
    )
    gainsight_company_id = models.CharField(max_length=64, null=True, blank=True, unique=True)
    account_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_customers",
        help_text="The account manager whose book this customer is in.",
    )
    csm = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="csm_customers",
        verbose_name="CSM",
    )
    partner = models.ForeignKey(
        Partner, null=True, blank=True, on_delete=models.PROTECT, related_name="customers"
    )
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2.")

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["account_owner", "name"])]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("provision:customer_detail", args=[self.pk])

    def clean(self):
        domains = self.email_domains or []
        if not isinstance(domains, list):
            raise ValidationError({"email_domains": "Give a list of domains."})
        for domain in domains:
            domain_validator(domain)


class Contact(TimestampedModel):
    """A person at a customer. Licenses go to the sold-to contact; there is at most one."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="contacts")
    role = models.CharField(max_length=20, choices=ContactRole.choices)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    email = models.EmailField(db_index=True)
    phone = models.CharField(max_length=40, blank=True)

    class Meta:
        ordering = ["role", "last_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer"],
                condition=Q(role=ContactRole.SOLD_TO),
                name="contact_one_sold_to_per_customer",
            ),
        ]

    def __str__(self):
        return f"{self.full_name} <{self.email}>"

    def save(self, *args, **kwargs):
        # E-mail lookups from the search box are exact and case-insensitive.
        self.email = self.email.lower()
        super().save(*args, **kwargs)

    @property
    def full_name(self):
        return f"{self.first_name} {self.last_name}".strip()


class Subscription(TimestampedModel):
    """A contract for a plan and a number of seats over a term, self-managed or GitLab.com."""

    name = models.CharField(max_length=11, unique=True, validators=[subscription_name_validator])
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.CharField(max_length=20, choices=Plan.choices)
    deployment = models.CharField(max_length=20, choices=Deployment.choices)
    status = models.CharField(
        max_length=20, choices=SubscriptionStatus.choices, default=SubscriptionStatus.ACTIVE
    )
    term_start = models.DateField()
    term_end = models.DateField()
    seats = models.PositiveIntegerField()
    channel = models.CharField(max_length=20, choices=Channel.choices)
    partner = models.ForeignKey(
        Partner, null=True, blank=True, on_delete=models.PROTECT, related_name="subscriptions"
    )
    licensing_method = models.CharField(
        max_length=20,
        choices=LicensingMethod.choices,
        blank=True,
        help_text="Self-managed only. New subscriptions default to online cloud licensing.",
    )
    auto_renew = models.BooleanField(default=True)
    quarterly_reconciliation = models.BooleanField(default=True)
    contract_overages_allowed = models.BooleanField(default=True)
    renews = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="renewed_by",
        help_text="The subscription this one renews.",
    )

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["customer", "status"]),
            models.Index(fields=["status", "term_end"]),
            models.Index(fields=["deployment", "status"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(term_end__gt=F("term_start")), name="subscription_term_end_after_start"
            ),
            models.CheckConstraint(condition=Q(seats__gte=0), name="subscription_seats_gte_0"),
            models.CheckConstraint(
                condition=(
                    Q(deployment=Deployment.GITLAB_COM, licensing_method="")
                    | (Q(deployment=Deployment.SELF_MANAGED) & ~Q(licensing_method=""))
                ),
                name="subscription_licensing_method_matches_deployment",
            ),
            models.CheckConstraint(
                condition=~Q(channel=Channel.PARTNER) | Q(partner__isnull=False),
                name="subscription_partner_channel_has_partner",
            ),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("provision:subscription_detail", args=[self.pk])

    @property
    def is_trial(self) -> bool:
        return self.plan in TRIAL_PLANS

    @property
    def is_self_managed(self) -> bool:
        return self.deployment == Deployment.SELF_MANAGED

    def clean(self):
        errors = {}
        if self.term_start and self.term_end and self.term_end <= self.term_start:
            errors["term_end"] = "The term must end after it starts."
        if self.deployment == Deployment.GITLAB_COM and self.licensing_method:
            errors["licensing_method"] = "GitLab.com subscriptions have no license file."
        if self.deployment == Deployment.SELF_MANAGED and not self.licensing_method:
            errors["licensing_method"] = "Choose how the self-managed license is delivered."
        if self.channel == Channel.PARTNER and not self.partner_id:
            errors["partner"] = "A partner-channel subscription needs its partner."
        if errors:
            raise ValidationError(errors)


class SubscriptionAddOn(TimestampedModel):
    """An add-on bought with a subscription (Duo seats, compute minutes, storage) for a period."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="add_ons")
    kind = models.CharField(max_length=20, choices=AddOnKind.choices)
    quantity = models.PositiveIntegerField()
    starts_on = models.DateField()
    ends_on = models.DateField()

    class Meta:
        ordering = ["kind", "starts_on"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "kind", "starts_on"], name="addon_unique_kind_start"
            ),
            models.CheckConstraint(condition=Q(quantity__gte=0), name="addon_quantity_gte_0"),
            models.CheckConstraint(
                condition=Q(ends_on__gt=F("starts_on")), name="addon_end_after_start"
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} × {self.quantity}"


class SeatLedgerEntry(models.Model):
    """One change of a subscription's seat count. Append-only; the latest row is current."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="seat_ledger"
    )
    seats = models.PositiveIntegerField()
    previous_seats = models.PositiveIntegerField(null=True, blank=True)
    effective_at = models.DateTimeField(default=timezone.now)
    audit_event = models.ForeignKey(
        "AuditEvent", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-effective_at", "-id"]
        indexes = [models.Index(fields=["subscription", "-effective_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(seats__gte=0), name="seatledger_seats_gte_0")
        ]
        verbose_name_plural = "seat ledger entries"

    def __str__(self):
        return f"{self.subscription} → {self.seats} seats"


class ProvisioningRecord(TimestampedModel):
    """One order and how far it got: created → licensed → delivered → activated → first usage."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="provisioning_records"
    )
    order_reference = models.CharField(max_length=40, unique=True)
    kind = models.CharField(max_length=20, choices=OrderKind.choices, default=OrderKind.NEW)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["subscription", "-created_at"])]

    def __str__(self):
        return self.order_reference


class ProvisioningStepQuerySet(models.QuerySet):
    def stuck(self, now=None):
        return self.filter(state=StepState.PENDING, due_at__lt=now or timezone.now())


class ProvisioningStep(models.Model):
    """One step of a provisioning record: state, time and last error. Stuck = pending past due."""

    record = models.ForeignKey(ProvisioningRecord, on_delete=models.CASCADE, related_name="steps")
    kind = models.CharField(max_length=30, choices=ProvisioningStepKind.choices)
    position = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=10, choices=StepState.choices, default=StepState.PENDING)
    due_at = models.DateTimeField(help_text="When a still-pending step counts as stuck.")
    completed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ProvisioningStepQuerySet.as_manager()

    class Meta:
        ordering = ["record", "position"]
        constraints = [
            models.UniqueConstraint(fields=["record", "kind"], name="step_unique_kind_per_record"),
            models.CheckConstraint(
                condition=Q(state__in=[StepState.DONE, StepState.SKIPPED])
                | Q(completed_at__isnull=True),
                name="step_completed_only_when_finished",
            ),
        ]
        indexes = [models.Index(fields=["state", "due_at"])]

    def __str__(self):
        return f"{self.record} · {self.get_kind_display()}: {self.get_state_display()}"

    @property
    def is_stuck(self) -> bool:
        return self.state == StepState.PENDING and self.due_at < timezone.now()

    @staticmethod
    def sla(kind: str) -> timedelta:
        """How long a step of this kind may stay pending once the step before it is done."""
        if kind not in ProvisioningStepKind.values:
            raise ValueError(f"not a provisioning step kind: {kind!r}")
        hours = settings.PROVISIONING_STEP_SLA_HOURS_BY_STEP.get(
            kind, settings.PROVISIONING_STEP_SLA_HOURS
        )
        return timedelta(hours=hours)

    @staticmethod
    def default_due_at(kind: str, start=None):
        """When a step of ``kind`` whose clock starts at ``start`` (default now) becomes stuck."""
        return (start or timezone.now()) + ProvisioningStep.sla(kind)


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Audit events are append-only and cannot be updated.")

    def delete(self):
        raise TypeError("Audit events are append-only and cannot be deleted.")

    def bulk_update(self, *args, **kwargs):
        raise TypeError("Audit events are append-only and cannot be updated.")


class AuditEvent(models.Model):
    """One state change, by whom, why and from where. Append-only: never edited or deleted.

    Written by the service that makes the change, in the same transaction. On PostgreSQL a
    trigger also refuses UPDATE and DELETE; on SQLite a trigger refuses UPDATE.
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # No database constraint: the row must outlive the user, and actor_text keeps the name.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_text = models.CharField(max_length=150)
    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    action = models.CharField(max_length=60, db_index=True, help_text="e.g. licenses.revoked")
    target_type = models.CharField(max_length=60, help_text="app_label.model")
    target_id = models.CharField(max_length=64)
    target_text = models.CharField(max_length=200)
    customer = models.ForeignKey(
        Customer,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="audit_events",
        help_text="The customer this event belongs to, for the customer timeline.",
    )
    changes = models.JSONField(default=dict, blank=True, help_text="{field: [old, new]}")
    reason_code = models.CharField(
        max_length=30,
        choices=ReasonCode.choices,
        blank=True,
        help_text="The fixed-list reason of a support fix; blank for system changes.",
    )
    reason = models.TextField(blank=True)
    ticket_url = models.URLField(blank=True, max_length=500)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    source = models.CharField(max_length=10, choices=AuditSource.choices)
    metadata = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id", "-created_at"]),
            models.Index(fields=["customer", "-created_at"]),
        ]

    def __str__(self):
        return (
            f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_text} {self.action} {self.target_text}"
        )

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("Audit events are append-only and cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Audit events are append-only and cannot be deleted.")


class Note(TimestampedModel):
    """A human note on a customer (or one of its objects), kept beside the audit trail."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="notes")
    target_type = models.CharField(max_length=60, default="provision.customer")
    target_id = models.CharField(max_length=64)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    author_text = models.CharField(max_length=150)
    body = models.TextField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["customer", "-created_at"])]

    def __str__(self):
        return f"Note by {self.author_text} on {self.created_at:%Y-%m-%d}"


class FixRequest(models.Model):
    """A risky support fix waiting for a second person (four-eyes), and what became of it.

    It holds what the requester asked (the action, its target and parameters, the reason) and
    the preview they confirmed, so the approver judges exactly that. Approving runs the fix in
    the approver's transaction; the fix's audit event names both people.
    """

    action = models.CharField(max_length=40, help_text="The fix's key, e.g. license_revoke.")
    target_type = models.CharField(max_length=60, help_text="app_label.model")
    target_id = models.CharField(max_length=64)
    target_text = models.CharField(max_length=200)
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="fix_requests")
    params = models.JSONField(default=dict, blank=True, help_text="The fix form's values.")
    preview = models.JSONField(default=dict, help_text="The preview the requester confirmed.")
    preview_digest = models.CharField(max_length=64)
    why_approval = models.CharField(max_length=300, help_text="Which four-eyes rule applies.")
    reason_code = models.CharField(max_length=30, choices=ReasonCode.choices)
    reason = models.TextField()
    ticket_url = models.URLField(blank=True, max_length=500)
    state = models.CharField(
        max_length=10, choices=FixRequestState.choices, default=FixRequestState.PENDING
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    outcome = models.TextField(blank=True, help_text="What the fix did, or why it was refused.")

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [
            models.Index(fields=["state", "requested_at"]),
            models.Index(fields=["customer", "-requested_at"]),
            models.Index(fields=["target_type", "target_id", "state"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(state=FixRequestState.PENDING)
                | Q(decided_at__isnull=False, decided_by__isnull=False),
                name="fixrequest_decided_has_who_and_when",
            ),
            models.CheckConstraint(
                condition=~Q(decided_by=F("requested_by")) | Q(state=FixRequestState.WITHDRAWN),
                name="fixrequest_four_eyes",
            ),
        ]

    def __str__(self):
        return f"Fix request #{self.pk}: {self.action} on {self.target_text}"

    def get_absolute_url(self):
        return reverse("provision:fixrequest_detail", args=[self.pk])


# --- Support tickets (the provisioning-ticket indicator) ------------------------------------


class SupportTicketImport(models.Model):
    """One run of ``tickets_import``: the file read, who ran it, and what it changed.

    A run that only re-classified stored tickets under a changed rule has no file name. Dry
    runs and refused files store no row (a refused file is an error on the command line).
    """

    imported_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    file_name = models.CharField(max_length=255, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    rows_total = models.PositiveIntegerField(default=0, help_text="Tickets in the file.")
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    reclassified = models.PositiveIntegerField(
        default=0, help_text="Stored tickets (not in the file) classified again under the rule."
    )
    rule_version = models.CharField(max_length=16)
    provisioning = models.PositiveIntegerField(
        default=0, help_text="Tickets of the file the rule marks provisioning-related."
    )

    class Meta:
        ordering = ["-imported_at", "-id"]

    def __str__(self):
        what = self.file_name or "re-classification"
        return f"Ticket import {what} ({self.imported_at:%Y-%m-%d %H:%M})"


class SupportTicket(models.Model):
    """One License & Renewals support ticket imported from the help desk's CSV export, and
    whether the rule in ``PROVISIONING_TICKET_RULE`` calls it provisioning-related.

    The classification is stored, not computed when read: the rule can read the subject's key
    words, which SQL cannot match portably, each ticket keeps *why* it was classified (the
    audit trail support-workflows §3.4 asks for), and the weekly indicator is then a plain
    ``GROUP BY``. ``rule_version`` names the rule a ticket was classified under; after the rule
    changes, ``tickets_import --reclassify`` (or any import) classifies the others again, and
    /indicators/ warns until it has.
    """

    external_id = models.CharField(
        max_length=40, unique=True, help_text="The help desk's ticket id (Zendesk: Ticket ID)."
    )
    created_at = models.DateTimeField(db_index=True, help_text="When the ticket was opened.")
    tags = models.JSONField(default=list, blank=True)
    category = models.CharField(max_length=255, blank=True, help_text="L&R - Category")
    subject = models.CharField(max_length=500, blank=True)
    is_provisioning = models.BooleanField()
    classification_reason = models.CharField(
        max_length=200, help_text="Which part of the rule decided, e.g. 'tag lnr_saas_link_sub'."
    )
    rule_version = models.CharField(max_length=16, db_index=True)
    imported_at = models.DateTimeField(help_text="When an import last created or changed it.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Ticket {self.external_id}"
