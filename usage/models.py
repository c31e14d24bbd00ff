"""GitLab instances, their seat reports, usage-file imports, SaaS namespaces and daily rollups."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from usage.choices import SeatReportSource, UsageFileImportStatus


class Instance(models.Model):
    """One self-managed GitLab installation, known by the UUID it sends."""

    instance_id = models.UUIDField(unique=True, default=uuid.uuid4)
    unique_instance_id = models.CharField(max_length=64, blank=True, db_index=True)
    customer = models.ForeignKey(
        "provision.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="instances",
    )
    subscription = models.ForeignKey(
        "provision.Subscription",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="instances",
        help_text="The subscription its current license belongs to.",
    )
    hostname = models.CharField(max_length=255, blank=True, db_index=True)
    version = models.CharField(max_length=40, blank=True)
    air_gapped = models.BooleanField(default=False)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_sync_at = models.DateTimeField(null=True, blank=True, help_text="Last Seat Link received.")

    class Meta:
        ordering = ["hostname"]
        indexes = [
            models.Index(fields=["last_sync_at"]),
            models.Index(fields=["customer", "last_sync_at"]),
        ]

    def __str__(self):
        return self.hostname or str(self.instance_id)


class Namespace(models.Model):
    """A GitLab.com top-level group linked to a subscription, with its seat figures."""

    gitlab_namespace_id = models.BigIntegerField(unique=True)
    full_path = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=255)
    subscription = models.ForeignKey(
        "provision.Subscription",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="namespaces",
    )
    seats_in_use = models.PositiveIntegerField(default=0)
    max_seats_used = models.PositiveIntegerField(default=0)
    max_seats_used_changed_at = models.DateTimeField(null=True, blank=True)
    seats_owed = models.PositiveIntegerField(default=0)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["full_path"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_seats_used__gte=0) & Q(seats_in_use__gte=0) & Q(seats_owed__gte=0),
                name="namespace_seat_figures_gte_0",
            )
        ]

    def __str__(self):
        return self.full_path


class SeatReport(models.Model):
    """One day's seat counts for a subscription from one instance or namespace. Upserted on
    (subscription, instance or namespace, report date): a resent report replaces, never doubles."""

    # The single-column foreign-key indexes are left out on purpose: at ~36M rows a year they
    # cost ~750 MB and the composite indexes below already serve every lookup by these columns.
    subscription = models.ForeignKey(
        "provision.Subscription",
        on_delete=models.PROTECT,
        related_name="seat_reports",
        db_index=False,
    )
    instance = models.ForeignKey(
        Instance,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="seat_reports",
        db_index=False,
    )
    namespace = models.ForeignKey(
        Namespace,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="seat_reports",
        db_index=False,
    )
    report_date = models.DateField()
    billable_users = models.PositiveIntegerField()
    max_historical_users = models.PositiveIntegerField()
    add_on_metrics = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=12, choices=SeatReportSource.choices)
    raw_payload = models.JSONField(default=dict, blank=True)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-report_date"]
        indexes = [
            models.Index(fields=["subscription", "-report_date"]),
            models.Index(fields=["instance", "-report_date"]),
            # The minute rollup reads the reports received since its previous run.
            models.Index(fields=["received_at"], name="seatreport_received_at"),
            models.Index(
                fields=["namespace", "-report_date"],
                condition=Q(namespace__isnull=False),
                name="seatreport_namespace_date",
            ),
        ]
        constraints = [
            # Plain (not partial) unique constraints, so that the upserts' ON CONFLICT can
            # name their columns without repeating a predicate. Rows from the other source have
            # NULL here, and NULLs never conflict in a unique index (PostgreSQL and SQLite).
            models.UniqueConstraint(
                fields=["subscription", "instance", "report_date"],
                name="seatreport_one_per_subscription_instance_day",
            ),
            models.UniqueConstraint(
                fields=["subscription", "namespace", "report_date"],
                name="seatreport_one_per_subscription_namespace_day",
            ),
            models.CheckConstraint(
                condition=(Q(instance__isnull=False) & Q(namespace__isnull=True))
                | (Q(instance__isnull=True) & Q(namespace__isnull=False)),
                name="seatreport_from_instance_xor_namespace",
            ),
            models.CheckConstraint(
                condition=Q(billable_users__gte=0) & Q(max_historical_users__gte=0),
                name="seatreport_counts_gte_0",
            ),
        ]

    def __str__(self):
        return f"{self.subscription_id} {self.report_date}: {self.billable_users}"


class UsageFileImport(models.Model):
    """An uploaded license_usage.csv from an air-gapped customer, and what became of it."""

    subscription = models.ForeignKey(
        "provision.Subscription",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="usage_file_imports",
    )
    license = models.ForeignKey(
        "licenses.License", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    uploaded_at = models.DateTimeField(default=timezone.now)
    file_name = models.CharField(max_length=255)
    file_sha256 = models.CharField(max_length=64, db_index=True)
    content = models.TextField()
    status = models.CharField(
        max_length=10, choices=UsageFileImportStatus.choices, default=UsageFileImportStatus.PENDING
    )
    rejection_reason = models.TextField(blank=True)
    rows_total = models.PositiveIntegerField(default=0)
    rows_imported = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-uploaded_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rows_imported__lte=models.F("rows_total")),
                name="usagefile_imported_lte_total",
            ),
            models.CheckConstraint(
                condition=~Q(status=UsageFileImportStatus.REJECTED) | ~Q(rejection_reason=""),
                name="usagefile_rejection_has_reason",
            ),
        ]

    def __str__(self):
        return f"{self.file_name} ({self.get_status_display()})"


class SubscriptionUsageDaily(models.Model):
    """A subscription's seat usage on one day, rolled up from its seat reports; what the
    dashboards and the CRM sync read."""

    # Covered by the (subscription, date) unique constraint; no separate index.
    subscription = models.ForeignKey(
        "provision.Subscription",
        on_delete=models.CASCADE,
        related_name="usage_daily",
        db_index=False,
    )
    date = models.DateField()
    seats = models.PositiveIntegerField()
    billable_users = models.PositiveIntegerField()
    max_users = models.PositiveIntegerField()
    overage = models.PositiveIntegerField(help_text="max(0, max_users - seats)")
    utilization = models.DecimalField(
        max_digits=7, decimal_places=4, help_text="billable_users / seats"
    )
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-date"]
        verbose_name_plural = "subscription usage (daily)"
        indexes = [
            models.Index(fields=["date"]),
            # The cockpit's "max used this term" and latest-billable reads come from the index
            # alone (PostgreSQL; SQLite has no covering indexes and skips it).
            models.Index(
                fields=["subscription", "date"],
                include=["billable_users", "max_users"],
                name="usagedaily_sub_date_cover",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "date"], name="usagedaily_unique_day"),
            models.CheckConstraint(condition=Q(utilization__gte=0), name="usagedaily_util_gte_0"),
        ]

    def __str__(self):
        return f"{self.subscription_id} {self.date}"
