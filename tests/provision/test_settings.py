"""Settings: the production profile passes ``check --deploy``, the env helpers are strict, and
every response carries a request id."""

import os
import re
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from provision.env import env_bool, env_choice, env_int, env_list, env_str

# Set by the test harness itself (tests/e2e/conftest.py), never by a deployment.
HARNESS_ONLY = ("DJANGO_ALLOW_ASYNC_UNSAFE",)


def _manage(*args, env_overrides: dict[str, str], drop=(), tmp_path) -> subprocess.CompletedProcess:
    """Run manage.py in a fresh interpreter, so settings are read from this environment."""
    env = {k: v for k, v in os.environ.items() if k not in (*drop, *HARNESS_ONLY)}
    env.update({"PROVISION_VAR_DIR": str(tmp_path / "var")}, **env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION = {
    "PROVISION_ENV": "production",
    "ALLOWED_HOSTS": "provision.example.com",
}
# Variables a developer may have exported that would weaken the production profile under test.
PRODUCTION_OVERRIDABLE = (
    "DEBUG",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_PRELOAD",
)


def test_production_profile_passes_check_deploy_without_any_warning(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_overrides={**PRODUCTION, "SECRET_KEY": secrets.token_urlsafe(50)},
        drop=PRODUCTION_OVERRIDABLE,
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_check_deploy_fails_on_the_development_profile(tmp_path):
    """The check above can fail: the development defaults (DEBUG, no HSTS) are flagged."""
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_overrides={"PROVISION_ENV": "development"},
        drop=("SECRET_KEY", *PRODUCTION_OVERRIDABLE),
        tmp_path=tmp_path,
    )
    assert result.returncode != 0
    assert "security.W018" in result.stderr  # DEBUG is on


def test_production_without_secret_key_stops_with_a_readable_message(tmp_path):
    result = _manage(
        "check",
        env_overrides=PRODUCTION,
        drop=("SECRET_KEY",),
        tmp_path=tmp_path,
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "SECRET_KEY is required when PROVISION_ENV=production" in last_line
    assert "secrets.token_urlsafe" in last_line  # says how to make one


def test_env_bool_refuses_yes(monkeypatch):
    monkeypatch.setenv("PROVISION_TEST_FLAG", "yes")
    with pytest.raises(ImproperlyConfigured, match="PROVISION_TEST_FLAG must be 'true' or 'false'"):
        env_bool("PROVISION_TEST_FLAG", False)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("False", False), (" TRUE ", True)])
def test_env_bool_reads_true_and_false_in_any_case(monkeypatch, raw, expected):
    monkeypatch.setenv("PROVISION_TEST_FLAG", raw)
    assert env_bool("PROVISION_TEST_FLAG", not expected) is expected


def test_env_int_refuses_a_non_number(monkeypatch):
    monkeypatch.setenv("PROVISION_TEST_NUMBER", "x")
    with pytest.raises(ImproperlyConfigured, match="PROVISION_TEST_NUMBER must be an integer"):
        env_int("PROVISION_TEST_NUMBER", 3)


def test_env_helpers_use_the_default_when_unset_or_empty(monkeypatch):
    monkeypatch.delenv("PROVISION_TEST_NUMBER", raising=False)
    assert env_int("PROVISION_TEST_NUMBER", 3) == 3
    monkeypatch.setenv("PROVISION_TEST_NUMBER", "")
    assert env_int("PROVISION_TEST_NUMBER", 3) == 3
    monkeypatch.setenv("PROVISION_TEST_NUMBER", "42")
    assert env_int("PROVISION_TEST_NUMBER", 3) == 42


def test_env_str_without_default_is_required(monkeypatch):
    monkeypatch.delenv("PROVISION_TEST_REQUIRED", raising=False)
    with pytest.raises(ImproperlyConfigured, match="PROVISION_TEST_REQUIRED is required"):
        env_str("PROVISION_TEST_REQUIRED")


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("PROVISION_TEST_HOSTS", "a.example.com, b.example.com,,")
    assert env_list("PROVISION_TEST_HOSTS", []) == ["a.example.com", "b.example.com"]


def test_env_choice_refuses_an_unknown_value(monkeypatch):
    monkeypatch.setenv("PROVISION_TEST_ENV", "staging")
    with pytest.raises(ImproperlyConfigured, match="must be one of development, production"):
        env_choice("PROVISION_TEST_ENV", "development", ("development", "production"))


REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


@pytest.mark.django_db
def test_every_response_carries_a_request_id(client):
    first = client.get(reverse("login"))
    second = client.get(reverse("login"))
    assert REQUEST_ID.match(first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.django_db
def test_a_valid_incoming_request_id_is_echoed(client):
    response = client.get(reverse("login"), headers={"X-Request-ID": "lb-3f9a2c71.req_01"})
    assert response["X-Request-ID"] == "lb-3f9a2c71.req_01"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bogus",
    ["short", "has spaces in it", "x" * 65, "inject\nlevel=ERROR", "<script>alert(1)</script>"],
)
def test_a_bogus_incoming_request_id_is_replaced(client, bogus):
    response = client.get(reverse("login"), headers={"X-Request-ID": bogus})
    assert response["X-Request-ID"] != bogus
    assert REQUEST_ID.match(response["X-Request-ID"])


def _variables_read_by_settings() -> set[str]:
    source = (settings.BASE_DIR / "provision" / "settings.py").read_text()
    return set(
        re.findall(r'env_(?:str|bool|int|list|choice|json_object)\(\s*"([A-Z][A-Z0-9_]*)"', source)
    )


def test_settings_read_the_variables_this_meta_test_looks_for():
    names = _variables_read_by_settings()
    assert {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "LICENSE_PRIVATE_KEY_FILE"} <= names


@pytest.mark.parametrize("document", ["docs/configuration.md", ".env.example"])
def test_every_environment_variable_is_documented(document):
    text = (settings.BASE_DIR / document).read_text()
    if document.endswith(".md"):
        missing = {name for name in _variables_read_by_settings() if f"`{name}`" not in text}
    else:
        defined = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
        missing = _variables_read_by_settings() - defined
    assert not missing, f"{document} does not document {sorted(missing)}"
