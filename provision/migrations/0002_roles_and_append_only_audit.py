"""Create the staff role groups and make the audit table append-only in the database itself."""

from django.db import migrations

ROLES = ("support", "support_lead", "account_manager", "admin")

POSTGRES_FORWARD = """
CREATE OR REPLACE FUNCTION provision_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER provision_auditevent_append_only
    BEFORE UPDATE OR DELETE ON provision_auditevent
    FOR EACH ROW EXECUTE FUNCTION provision_auditevent_append_only();
"""
POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS provision_auditevent_append_only ON provision_auditevent;
DROP FUNCTION IF EXISTS provision_auditevent_append_only();
"""
# SQLite refuses UPDATE only: Django's test flush empties tables with DELETE on SQLite (on
# PostgreSQL it uses TRUNCATE, which row triggers do not see). The ORM refuses deletes anyway.
SQLITE_FORWARD = """
CREATE TRIGGER provision_auditevent_append_only
BEFORE UPDATE ON provision_auditevent
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only (UPDATE refused)');
END;
"""
SQLITE_REVERSE = "DROP TRIGGER IF EXISTS provision_auditevent_append_only;"


def create_roles(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for role in ROLES:
        Group.objects.get_or_create(name=role)


def add_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_FORWARD, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_FORWARD)


def remove_trigger(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_REVERSE, params=None)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_REVERSE)


class Migration(migrations.Migration):
    dependencies = [
        ("provision", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
        migrations.RunPython(add_trigger, remove_trigger),
    ]
