from django.db import models


class LicenseKind(models.TextChoices):
    ONLINE_CLOUD = "online_cloud", "Cloud license (online)"
    OFFLINE_CLOUD = "offline_cloud", "Offline cloud license"
    LEGACY = "legacy", "Legacy license"


class LicenseStatus(models.TextChoices):
    ISSUED = "issued", "Issued"
    ACTIVE = "active", "Active"
    SUPERSEDED = "superseded", "Superseded"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"


CURRENT_LICENSE_STATUSES = (LicenseStatus.ISSUED, LicenseStatus.ACTIVE)


class ActivationCodeStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REPLACED = "replaced", "Replaced by a newer code"
    REVOKED = "revoked", "Revoked"


class ActivationStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DEACTIVATED = "deactivated", "Deactivated"


class DeliveryMethod(models.TextChoices):
    EMAIL = "email", "E-mail"
    PARTNER = "partner", "Via partner"
    DOWNLOAD = "download", "Download"


class DeliveryStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    DOWNLOADED = "downloaded", "Downloaded"


class SigningKeySource(models.TextChoices):
    ENVIRONMENT = "environment", "From the environment"
    GENERATED = "generated", "Generated development key"
