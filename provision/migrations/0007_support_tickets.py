"""Support tickets imported from the help desk, and the import runs (the provisioning-ticket
indicator on /indicators/)."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('provision', '0006_fix_requests_and_reason_codes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='SupportTicket',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('external_id', models.CharField(help_text="The help desk's ticket id (Zendesk: Ticket ID).", max_length=40, unique=True)),
                ('created_at', models.DateTimeField(db_index=True, help_text='When the ticket was opened.')),
                ('tags', models.JSONField(blank=True, default=list)),
                ('category', models.CharField(blank=True, help_text='L&R - Category', max_length=255)),
                ('subject', models.CharField(blank=True, max_length=500)),
                ('is_provisioning', models.BooleanField()),
                ('classification_reason', models.CharField(help_text="Which part of the rule decided, e.g. 'tag lnr_saas_link_sub'.", max_length=200)),
                ('rule_version', models.CharField(db_index=True, max_length=16)),
                ('imported_at', models.DateTimeField(help_text='When an import last created or changed it.')),
            ],
            options={
                'ordering': ['-created_at'],
            },
        ),
        migrations.CreateModel(
            name='SupportTicketImport',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('imported_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('file_name', models.CharField(blank=True, max_length=255)),
                ('file_sha256', models.CharField(blank=True, max_length=64)),
                ('rows_total', models.PositiveIntegerField(default=0, help_text='Tickets in the file.')),
                ('created', models.PositiveIntegerField(default=0)),
                ('updated', models.PositiveIntegerField(default=0)),
                ('unchanged', models.PositiveIntegerField(default=0)),
                ('reclassified', models.PositiveIntegerField(default=0, help_text='Stored tickets (not in the file) classified again under the rule.')),
                ('rule_version', models.CharField(max_length=16)),
                ('provisioning', models.PositiveIntegerField(default=0, help_text='Tickets of the file the rule marks provisioning-related.')),
                ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-imported_at', '-id'],
            },
        ),
    ]
