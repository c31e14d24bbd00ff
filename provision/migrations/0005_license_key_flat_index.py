"""Index license keys through a function whose COST tells the planner what flattening costs.

``0004_search_indexes`` indexed ``replace(key, E'\\n', '')``, and the search filtered on exactly
that expression, yet on ``provision_scale`` (10,000 keys of ~2.6 kB) the planner scanned the
table for a key fragment (~90 ms) instead of using the trigram index (~2 ms). The index matched;
the cost model was wrong: a key is stored out of line (TOAST) and PostgreSQL charges nothing for
fetching it, so 10,000 ``replace()`` calls looked as cheap as one page each, about the price
of the index scan, and the choice flipped from one ``ANALYZE`` to the next.

``licenses_license_key_flat(key)`` is the same ``replace`` in a PL/pgSQL function (PL/pgSQL
so it is never inlined back into the cheap built-in) declared ``COST 1000``: 2.5 cost units a
row, about what reading a key's TOAST chunks really costs. A sequential scan now costs what it
takes, and the index wins from a few hundred licenses up. ``provision/search.py`` filters on
the same function call, so the index expression still matches.

Built ``CONCURRENTLY`` (not atomic) like 0004; the old index is dropped after the new one is
ready. Nothing on SQLite.
"""

from django.db import migrations

FUNCTION = "licenses_license_key_flat"
NEW_INDEX = "licenses_license_key_flat_trgm"
OLD_INDEX = "licenses_license_key_trgm"

CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}(key text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE COST 1000
AS $$ BEGIN RETURN replace(key, E'\\n', ''); END $$
"""


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(CREATE_FUNCTION)
        cursor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {NEW_INDEX} ON licenses_license "
            f"USING gin ({FUNCTION}(key) gin_trgm_ops)"
        )
        cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {OLD_INDEX}")
        cursor.execute("ANALYZE licenses_license")


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {OLD_INDEX} ON licenses_license "
            "USING gin (replace(key, E'\\n', '') gin_trgm_ops)"
        )
        cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NEW_INDEX}")
        cursor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}(text)")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("provision", "0004_search_indexes")]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
