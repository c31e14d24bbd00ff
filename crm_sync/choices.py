from django.db import models


class CrmTarget(models.TextChoices):
    SALESFORCE = "salesforce", "Salesforce"
    GAINSIGHT = "gainsight", "Gainsight"


class RecordSyncStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SYNCED = "synced", "Synced"
    FAILED = "failed", "Failed"


class SyncRunKind(models.TextChoices):
    FULL = "full", "Full"
    INCREMENTAL = "incremental", "Incremental"


class SyncTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    ON_CHANGE = "on_change", "On change"
    STAFF = "staff", "Staff"


class SyncRunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partially failed"
    FAILED = "failed", "Failed"
