"""What the benchmarks on the scale database share: where it is, whether it is there, and how
to run a benchmark script in a ``manage.py shell`` against it and read back its figures.

The scale database is made by ``manage.py seed_scale`` (docs/benchmarks.md says how); set
``BENCH_DATABASE_URL`` to use another one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

from django.conf import settings as django_settings

from tests.support import require_service

DATABASE_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/provision_scale"
)


def scale_env(var_dir, database_url: str = DATABASE_URL) -> dict:
    return {
        **os.environ,
        "PROVISION_ENV": "test",
        "PROVISION_VAR_DIR": str(var_dir),
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
    }


def require_scale_database(database_url: str = DATABASE_URL) -> None:
    """Skip (locally) or fail (in CI) when the scale database is missing or empty."""
    import psycopg

    parts = urlsplit(database_url)
    try:
        with psycopg.connect(parts.geturl(), connect_timeout=5) as conn:
            customers = conn.execute("SELECT count(*) FROM provision_customer").fetchone()[0]
    except psycopg.Error as exc:
        require_service(False, f"the scale database is unavailable ({exc}); see seed_scale")
    require_service(customers >= 1000, "the scale database is not seeded (manage.py seed_scale)")


def run_bench_script(var_dir, script: str, *argv: object, database_url: str = DATABASE_URL) -> dict:
    """Migrate the scale database, run ``script`` in ``manage.py shell`` with ``sys.argv`` set
    to ``argv``, and return the JSON it printed on its ``BENCH-JSON`` line."""
    env = scale_env(var_dir, database_url)
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=django_settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    args = ", ".join(repr(str(a)) for a in ("bench", *argv))
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", f"import sys; sys.argv = [{args}]\n" + script],
        cwd=django_settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("BENCH-JSON "))
    return json.loads(line.removeprefix("BENCH-JSON "))
