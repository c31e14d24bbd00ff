"""License keys, activation codes, activations, deliveries and the signing keys."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
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
    SigningKeySource,
)
from provision.choices import Plan


class SigningKey(models.Model):
    """An RSA key pair that licenses are encrypted with. Only the public half is stored here:
    the private key comes from the environment (LICENSE_PRIVATE_KEY or its _FILE)."""

    fingerprint = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the DER key.")
    public_key_pem = models.TextField()
    source = models.CharField(max_length=20, choices=SigningKeySource.choices)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="signingkey_one_active"
            )
        ]

    def __str__(self):
        return f"{self.fingerprint[:16]}… ({'active' if self.is_active else 'retired'})"


class License(models.Model):
    """One issued license key, stored exactly as issued and returned byte-for-byte."""

    subscription = models.ForeignKey(
        "provision.Subscription", on_delete=models.PROTECT, related_name="licenses"
    )
    kind = models.CharField(max_length=20, choices=LicenseKind.choices)
    status = models.CharField(
        max_length=20, choices=LicenseStatus.choices, default=LicenseStatus.ISSUED
    )
    key = models.TextField(help_text="The exact key string given to the customer.")
    key_sha256 = models.CharField(max_length=64, unique=True)
    signing_key = models.ForeignKey(SigningKey, on_delete=models.PROTECT, related_name="licenses")
    licensee_name = models.CharField(max_length=200)
    licensee_email = models.EmailField()
    licensee_company = models.CharField(max_length=200)
    starts_on = models.DateField()
    expires_on = models.DateField()
    notify_admins_on = models.DateField(null=True, blank=True)
    notify_users_on = models.DateField(null=True, blank=True)
    block_changes_on = models.DateField(null=True, blank=True)
    plan = models.CharField(max_length=20, choices=Plan.choices)
    user_count = models.PositiveIntegerField(help_text="restrictions.active_user_count")
    previous_user_count = models.PositiveIntegerField(null=True, blank=True)
    trueup_quantity = models.PositiveIntegerField(null=True, blank=True)
    trueup_from = models.DateField(null=True, blank=True)
    trueup_to = models.DateField(null=True, blank=True)
    add_ons = models.JSONField(default=dict, blank=True)
    trial = models.BooleanField(default=False)
    attributes = models.JSONField(default=dict, help_text="The plaintext attributes as encoded.")
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    issued_at = models.DateTimeField(default=timezone.now)
    issued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-issued_at"]
        indexes = [
            models.Index(fields=["subscription", "status"]),
            models.Index(fields=["status", "expires_on"]),
            models.Index(fields=["kind", "status"]),
            # The license list (page and API) shows the newest first.
            models.Index(fields=["issued_at", "id"], name="license_issued_at"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(expires_on__gt=F("starts_on")), name="license_expires_after_start"
            ),
            models.CheckConstraint(condition=Q(user_count__gte=0), name="license_users_gte_0"),
            # One current license per subscription and term start; a next-year license of a
            # multi-year subscription starts later, so it may stand beside this year's.
            models.UniqueConstraint(
                fields=["subscription", "starts_on"],
                condition=Q(status__in=CURRENT_LICENSE_STATUSES),
                name="license_one_current_per_subscription_start",
            ),
            models.CheckConstraint(
                condition=Q(status=LicenseStatus.REVOKED) | Q(revoked_at__isnull=True),
                name="license_revoked_at_only_when_revoked",
            ),
        ]

    def __str__(self):
        return (
            f"{self.get_kind_display()} for {self.subscription.name} ({self.get_status_display()})"
        )

    def get_absolute_url(self):
        return reverse("licenses:license_detail", args=[self.pk])


class ActivationCode(models.Model):
    """A 24-character bearer secret bound to a subscription. Only a keyed hash is stored; the
    code itself is shown once. Regenerating replaces it, and the old code stops working."""

    subscription = models.ForeignKey(
        "provision.Subscription", on_delete=models.PROTECT, related_name="activation_codes"
    )
    code_hash = models.CharField(max_length=64, unique=True, help_text="HMAC-SHA256, hex.")
    code_hint = models.CharField(max_length=4, help_text="Last four characters, for support.")
    status = models.CharField(
        max_length=10, choices=ActivationCodeStatus.choices, default=ActivationCodeStatus.ACTIVE
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    replaced_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(
        null=True, blank=True, help_text="Staff released it so another instance may activate."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription"],
                condition=Q(status=ActivationCodeStatus.ACTIVE),
                name="activationcode_one_active_per_subscription",
            )
        ]

    def __str__(self):
        return f"…{self.code_hint} for {self.subscription_id} ({self.get_status_display()})"


class Activation(models.Model):
    """An activation code redeemed by one GitLab instance."""

    activation_code = models.ForeignKey(
        ActivationCode, on_delete=models.PROTECT, related_name="activations"
    )
    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="activations")
    instance = models.ForeignKey(
        "usage.Instance", on_delete=models.PROTECT, related_name="activations"
    )
    status = models.CharField(
        max_length=12, choices=ActivationStatus.choices, default=ActivationStatus.ACTIVE
    )
    gitlab_version = models.CharField(max_length=40, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
    automated = models.BooleanField(default=False)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    activated_at = models.DateTimeField(default=timezone.now)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-activated_at"]
        indexes = [models.Index(fields=["instance", "-activated_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["activation_code"],
                condition=Q(status=ActivationStatus.ACTIVE),
                name="activation_one_active_instance_per_code",
            )
        ]

    def __str__(self):
        return f"{self.activation_code} on {self.instance_id}"


class LicenseDelivery(models.Model):
    """Who received which license or activation code, how, when, and the proof of it."""

    license = models.ForeignKey(
        License, null=True, blank=True, on_delete=models.PROTECT, related_name="deliveries"
    )
    activation_code = models.ForeignKey(
        ActivationCode, null=True, blank=True, on_delete=models.PROTECT, related_name="deliveries"
    )
    method = models.CharField(max_length=10, choices=DeliveryMethod.choices)
    status = models.CharField(
        max_length=12, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED
    )
    recipient_email = models.EmailField(blank=True)
    recipient_contact = models.ForeignKey(
        "provision.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    partner = models.ForeignKey(
        "provision.Partner", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    message_id = models.CharField(max_length=255, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    downloaded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "license deliveries"
        indexes = [models.Index(fields=["status", "created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(license__isnull=False) | Q(activation_code__isnull=False),
                name="delivery_has_something_to_deliver",
            ),
            models.CheckConstraint(
                condition=~Q(method=DeliveryMethod.EMAIL) | ~Q(recipient_email=""),
                name="delivery_email_has_recipient",
            ),
        ]

    def __str__(self):
        return f"{self.get_method_display()} to {self.recipient_email or self.partner_id}"

    def clean(self):
        if self.method == DeliveryMethod.PARTNER and not self.partner_id:
            raise ValidationError({"partner": "A partner delivery needs the partner."})
