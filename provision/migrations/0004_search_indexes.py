"""PostgreSQL indexes for the universal search (provision/search.py); nothing on SQLite.

Each index serves one lookup the search runs, in the exact expression the ORM writes, so the
planner can match it (confirmed with EXPLAIN on provision_scale; docs/benchmarks.md):

* customer name: ``UPPER(name) LIKE UPPER('%q%')`` (``icontains``) and
  ``UPPER(name) %> UPPER('q')`` (word similarity) → trigram GIN on ``UPPER(name)``;
* customer e-mail domains: ``email_domains @> '["acme.com"]'`` → GIN ``jsonb_path_ops``;
* a 15-character Salesforce id: ``LEFT(salesforce_account_id, 15) = 'q'`` → B-tree;
* contact e-mail prefix and ``@domain`` suffix: ``email LIKE 'q%'`` / ``LIKE '%@d'`` (stored
  lower-case) → trigram GIN on ``email``;
* instance hostname and namespace path prefixes: ``UPPER(col) LIKE UPPER('q%')`` → trigram GIN;
* a license key fragment: ``REPLACE(key, E'\\n', '') LIKE '%q%'`` (keys are stored in 60-column
  lines; a fragment may span one) → trigram GIN.

The exact lookups (billing account, subscription name, key SHA-256, activation code HMAC,
instance UUID, namespace id and path, Salesforce and Gainsight ids, contact e-mail) use the
unique or ``db_index`` B-trees the models already declare.

Indexes are built ``CONCURRENTLY`` (the migration is not atomic), so a live database keeps
taking writes while they build; ``IF NOT EXISTS`` makes a re-run after an interruption safe
(drop an index left INVALID by an interrupted build first). ``pg_trgm`` is a trusted
extension (PostgreSQL 13+): the database owner may create it.
"""

from django.db import migrations

INDEXES = [
    ("provision_customer", "provision_customer_name_trgm", "gin (upper(name) gin_trgm_ops)"),
    (
        "provision_customer",
        "provision_customer_domains_gin",
        "gin (email_domains jsonb_path_ops)",
    ),
    (
        "provision_customer",
        "provision_customer_sfid15",
        "btree (left(salesforce_account_id, 15))",
    ),
    ("provision_contact", "provision_contact_email_trgm", "gin (email gin_trgm_ops)"),
    ("usage_instance", "usage_instance_hostname_trgm", "gin (upper(hostname) gin_trgm_ops)"),
    ("usage_namespace", "usage_namespace_path_trgm", "gin (upper(full_path) gin_trgm_ops)"),
    (
        "licenses_license",
        "licenses_license_key_trgm",
        "gin (replace(key, E'\\n', '') gin_trgm_ops)",
    ),
]


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for table, name, definition in INDEXES:
            cursor.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} USING {definition}"
            )
            cursor.execute(f"ANALYZE {table}")


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for _table, name, _definition in INDEXES:
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        # pg_trgm stays: other objects may use it, and it costs nothing unused.


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("provision", "0003_integration_role"),
        ("licenses", "0002_initial"),
        ("usage", "0005_usage_file_content_lz4"),
    ]

    operations = [migrations.RunPython(create_indexes, drop_indexes, elidable=False)]
