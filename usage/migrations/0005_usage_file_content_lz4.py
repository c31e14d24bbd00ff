"""Store uploaded usage files with lz4 TOAST compression on PostgreSQL.

PostgreSQL compresses long text with pglz by default, which took ~40 ms of a 4 MB file's
import; lz4 (PostgreSQL 14+, built in on Debian and the official images) compresses at
several times the speed for a similar size on CSV text. Only new values use it; SQLite has
no such setting, so the migration does nothing there.
"""

from django.db import migrations


def _set_compression(method):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        with schema_editor.connection.cursor() as cursor:
            # A server built without lz4 (or older than 14) keeps pglz.
            cursor.execute(
                "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'"
                " AND %s = ANY(enumvals)",
                [method],
            )
            if cursor.fetchone() is None:
                return
        schema_editor.execute(
            f"ALTER TABLE usage_usagefileimport ALTER COLUMN content SET COMPRESSION {method}"
        )

    return apply


class Migration(migrations.Migration):
    dependencies = [("usage", "0004_seat_report_received_at_index")]

    operations = [
        migrations.RunPython(_set_compression("lz4"), _set_compression("pglz")),
    ]
