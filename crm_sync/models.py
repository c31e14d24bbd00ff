"""What was pushed to which CRM, per customer, and the runs that pushed it."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from crm_sync.choices import CrmTarget, RecordSyncStatus, SyncRunKind, SyncRunStatus, SyncTrigger


class CrmRecordState(models.Model):
    """The last payload pushed for one customer to one CRM: the diff base of incremental syncs."""

    target = models.CharField(max_length=12, choices=CrmTarget.choices)
    customer = models.ForeignKey(
        "provision.Customer", on_delete=models.CASCADE, related_name="crm_states"
    )
    external_id = models.CharField(max_length=64, blank=True)
    payload_hash = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=10, choices=RecordSyncStatus.choices, default=RecordSyncStatus.PENDING
    )
    last_pushed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # When a change to the customer's usage or licenses was first noted and not yet pushed.
    # A run clears it only if it is not later than the moment the run read the payload, so a
    # change made while a run is sending is pushed by the next run, not forgotten.
    dirty_since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["target", "customer"]
        indexes = [models.Index(fields=["target", "status"])]
        constraints = [
            models.UniqueConstraint(fields=["target", "customer"], name="crmstate_unique_target")
        ]

    def __str__(self):
        return f"{self.get_target_display()} · {self.customer_id}"


class SyncRun(models.Model):
    """One sync to one CRM: what triggered it, how it went, and its counts."""

    target = models.CharField(max_length=12, choices=CrmTarget.choices)
    kind = models.CharField(max_length=12, choices=SyncRunKind.choices)
    trigger = models.CharField(max_length=12, choices=SyncTrigger.choices)
    status = models.CharField(
        max_length=10, choices=SyncRunStatus.choices, default=SyncRunStatus.QUEUED
    )
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request_id = models.CharField(max_length=64, blank=True)
    # A push of one customer (staff "push now"); empty = every candidate of the target.
    customer = models.ForeignKey(
        "provision.Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    dry_run = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written after every batch: a running run whose heartbeat is older than
    # CRM_SYNC_STALE_AFTER_SECONDS lost its worker and is taken over.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    considered = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["target", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True) | Q(started_at__isnull=False),
                name="syncrun_finished_after_started",
            ),
            # One run per target at a time, enforced by the database (two workers, two beats).
            models.UniqueConstraint(
                fields=["target"],
                condition=Q(status="running"),
                name="syncrun_one_running_per_target",
            ),
        ]

    def __str__(self):
        return f"{self.get_target_display()} {self.get_kind_display()} #{self.pk}"


class SyncRowError(models.Model):
    """One record the CRM rejected in a run, with the CRM's own error code and message."""

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="row_errors")
    customer = models.ForeignKey(
        "provision.Customer", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    external_id = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=100)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "id"]

    def __str__(self):
        return f"{self.error_code}: {self.message[:60]}"
