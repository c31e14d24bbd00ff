"""The seat-report unique constraints become plain (no ``WHERE ... IS NOT NULL``), same names.

Seat Link stores a report with ``INSERT ... ON CONFLICT (subscription_id, instance_id,
report_date) DO UPDATE`` (``bulk_create(update_conflicts=True)``). PostgreSQL only infers a
*partial* unique index as the conflict arbiter when the statement repeats the index predicate,
which Django cannot express, and SQLite needs the same. A NULL never conflicts in a unique
index on either database, so the plain constraints allow exactly the rows the partial ones did.

Cost, measured in docs/benchmarks.md: each index now also holds an entry for every row of the
other source (NULL in its second column). On a large table this migration rebuilds both indexes
under an exclusive lock; run it in a maintenance window there.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("provision", "0002_roles_and_append_only_audit"),
        ("usage", "0002_seat_report_lean_indexes"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="seatreport",
            name="seatreport_one_per_subscription_instance_day",
        ),
        migrations.RemoveConstraint(
            model_name="seatreport",
            name="seatreport_one_per_subscription_namespace_day",
        ),
        migrations.AddConstraint(
            model_name="seatreport",
            constraint=models.UniqueConstraint(
                fields=("subscription", "instance", "report_date"),
                name="seatreport_one_per_subscription_instance_day",
            ),
        ),
        migrations.AddConstraint(
            model_name="seatreport",
            constraint=models.UniqueConstraint(
                fields=("subscription", "namespace", "report_date"),
                name="seatreport_one_per_subscription_namespace_day",
            ),
        ),
    ]
