from django.db import models


class SeatReportSource(models.TextChoices):
    SEAT_LINK = "seat_link", "Seat Link"
    USAGE_FILE = "usage_file", "Usage file"
    SAAS = "saas", "GitLab.com"
    MANUAL = "manual", "Manual entry"


class UsageFileImportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    IMPORTED = "imported", "Imported"
    REJECTED = "rejected", "Rejected"
