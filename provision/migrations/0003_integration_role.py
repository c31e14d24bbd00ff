"""Create the ``integration`` group: machine accounts (API tokens) that push usage figures."""

from django.db import migrations

ROLE = "integration"


def create_role(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.get_or_create(name=ROLE)


def remove_role(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name=ROLE).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("provision", "0002_roles_and_append_only_audit"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_role, remove_role)]
