"""Reason codes on audit events, and four-eyes fix requests.

On SQLite, adding a NOT NULL column rebuilds the audit table, which drops its append-only
trigger (0002); the trigger is created again right after.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

SQLITE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS provision_auditevent_append_only
BEFORE UPDATE ON provision_auditevent
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)');
END;
"""


def restore_sqlite_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(SQLITE_TRIGGER)


class Migration(migrations.Migration):
    dependencies = [
        ("provision", "0005_license_key_flat_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="reason_code",
            field=models.CharField(
                blank=True,
                choices=[
                    ("customer_request", "Customer request"),
                    ("internal_request", "Internal request (AE / CSM)"),
                    ("order_correction", "Order or quote correction"),
                    ("provisioning_failure", "Provisioning failure"),
                    ("delivery_problem", "License or code not received"),
                    ("activation_problem", "Activation or sync problem"),
                    ("late_renewal", "Late renewal (temporary extension)"),
                    ("true_up_waiver", "Approved true-up waiver"),
                    ("ownership_change", "Ownership or contact change"),
                    ("cloud_transition", "Transition to cloud licensing"),
                    ("security", "Security or abuse"),
                    ("data_correction", "Data correction (our error)"),
                ],
                help_text="The fixed-list reason of a support fix; blank for system changes.",
                max_length=30,
            ),
        ),
        migrations.RunPython(restore_sqlite_trigger, migrations.RunPython.noop),
        migrations.CreateModel(
            name="FixRequest",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "action",
                    models.CharField(
                        help_text="The fix's key, e.g. license_revoke.", max_length=40
                    ),
                ),
                ("target_type", models.CharField(help_text="app_label.model", max_length=60)),
                ("target_id", models.CharField(max_length=64)),
                ("target_text", models.CharField(max_length=200)),
                (
                    "params",
                    models.JSONField(blank=True, default=dict, help_text="The fix form's values."),
                ),
                (
                    "preview",
                    models.JSONField(
                        default=dict, help_text="The preview the requester confirmed."
                    ),
                ),
                ("preview_digest", models.CharField(max_length=64)),
                (
                    "why_approval",
                    models.CharField(help_text="Which four-eyes rule applies.", max_length=300),
                ),
                (
                    "reason_code",
                    models.CharField(
                        choices=[
                            ("customer_request", "Customer request"),
                            ("internal_request", "Internal request (AE / CSM)"),
                            ("order_correction", "Order or quote correction"),
                            ("provisioning_failure", "Provisioning failure"),
                            ("delivery_problem", "License or code not received"),
                            ("activation_problem", "Activation or sync problem"),
                            ("late_renewal", "Late renewal (temporary extension)"),
                            ("true_up_waiver", "Approved true-up waiver"),
                            ("ownership_change", "Ownership or contact change"),
                            ("cloud_transition", "Transition to cloud licensing"),
                            ("security", "Security or abuse"),
                            ("data_correction", "Data correction (our error)"),
                        ],
                        max_length=30,
                    ),
                ),
                ("reason", models.TextField()),
                ("ticket_url", models.URLField(blank=True, max_length=500)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Waiting for approval"),
                            ("done", "Approved and done"),
                            ("rejected", "Rejected"),
                            ("withdrawn", "Withdrawn"),
                        ],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("requested_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("decided_at", models.DateTimeField(blank=True, null=True)),
                ("decision_note", models.TextField(blank=True)),
                (
                    "outcome",
                    models.TextField(
                        blank=True, help_text="What the fix did, or why it was refused."
                    ),
                ),
                (
                    "customer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="fix_requests",
                        to="provision.customer",
                    ),
                ),
                (
                    "decided_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "requested_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-requested_at", "-id"],
                "indexes": [
                    models.Index(
                        fields=["state", "requested_at"], name="provision_f_state_a4da7b_idx"
                    ),
                    models.Index(
                        fields=["customer", "-requested_at"], name="provision_f_custome_564644_idx"
                    ),
                    models.Index(
                        fields=["target_type", "target_id", "state"],
                        name="provision_f_target__44ec69_idx",
                    ),
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            ("state", "pending"),
                            models.Q(("decided_at__isnull", False), ("decided_by__isnull", False)),
                            _connector="OR",
                        ),
                        name="fixrequest_decided_has_who_and_when",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("decided_by", models.F("requested_by")), _negated=True),
                            ("state", "withdrawn"),
                            _connector="OR",
                        ),
                        name="fixrequest_four_eyes",
                    ),
                ],
            },
        ),
    ]
