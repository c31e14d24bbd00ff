"""Django settings for Provision.

Everything that differs between a laptop, CI and production comes from environment variables
read through the strict helpers in ``provision.env``; each has one default, documented in
docs/configuration.md and .env.example. ``PROVISION_ENV=production`` switches on the secure
defaults that ``manage.py check --deploy`` expects and makes SECRET_KEY mandatory.
"""

from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from provision.env import env_bool, env_choice, env_int, env_json_object, env_list, env_str
from provision.tickets import DEFAULT_PROVISIONING_TICKET_RULE, validate_ticket_rule

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PROVISION_VAR_DIR", str(BASE_DIR / "var")))
# Local state for the embedded defaults (SQLite file, broker queue, dev signing key).
VAR_DIR.mkdir(parents=True, exist_ok=True)

PROVISION_ENV = env_choice("PROVISION_ENV", "development", ("development", "production", "test"))
IS_PRODUCTION = PROVISION_ENV == "production"

# A fixed key is fine for a laptop; production refuses to start without a real one.
_DEV_SECRET_KEY = "dev-insecure-6c1b0f0b7e0d4f7c9f0a-provision-local-only-key-do-not-deploy"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", "" if IS_PRODUCTION else _DEV_SECRET_KEY)
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is required when PROVISION_ENV=production: set it to 50 or more random "
        "characters, e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
# Previous keys, still accepted for sessions and signed values while a rotation settles in.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
DEBUG = env_bool("DEBUG", not IS_PRODUCTION and PROVISION_ENV != "test")
ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", [] if IS_PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    # API tokens for machine accounts (the integration role), e.g. GitLab.com seat figures.
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "django_htmx",
    "django_celery_beat",
    "axes",
    "health_check",
    "provision",
    "licenses",
    "usage",
    "crm_sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "provision.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "provision.urls"
WSGI_APPLICATION = "provision.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "provision.context_processors.console",
                "crm_sync.context_processors.crm_sync_banner",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'provision.sqlite3'}")
DATABASES = {"default": environ.Env.db_url_config(DATABASE_URL)}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web app, the worker and beat share the demo database without "locked" errors.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not :memory:) so that a real Celery worker process can see the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-provision.sqlite3")}
# PostgreSQL: bind parameters on the server and prepare a statement the fifth time a connection
# runs it, so PostgreSQL plans it once per connection instead of once per execution. Seat Link's
# license lookup took 0.96 ms to plan and 0.21 ms to run (docs/benchmarks.md). Pays off with
# persistent connections (DATABASE_CONN_MAX_AGE > 0); behind PgBouncer it needs transaction
# pooling with max_prepared_statements (1.21+), or set this to false.
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
if DATABASE_PREPARED_STATEMENTS and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        server_side_binding=True, prepare_threshold=5
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "provision",
    }
}
_cache_url = env_str("CACHE_URL", "")
if _cache_url:
    CACHES["default"] = environ.Env.cache_url_config(_cache_url)

# --- Auth -----------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "provision:home"
LOGOUT_REDIRECT_URL = "login"
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = 1  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = env_bool("AXES_ENABLED", True)

# --- I18N -----------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Outside production whitenoise serves straight from the apps' static folders (no collectstatic).
WHITENOISE_USE_FINDERS = not IS_PRODUCTION
WHITENOISE_AUTOREFRESH = not IS_PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if IS_PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Email ----------------------------------------------------------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Provision <licensing@provision.localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Security -------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", IS_PRODUCTION)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", IS_PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", IS_PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if IS_PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
# The preload token alone submits nothing: only an apex domain can be put on the browsers' list,
# so on a subdomain such as provision.example.com it is inert unless the apex opts in.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", IS_PRODUCTION)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SILENCED_SYSTEM_CHECKS = [] if IS_PRODUCTION else []

# Everything is served from our own origin: vendored CSS/JS, no CDN, no inline script.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- django-filter --------------------------------------------------------------------------
# An unset filter means "any value"; django-filter's default "---------" reads as a missing value.
FILTERS_EMPTY_CHOICE_LABEL = "Any"

# --- REST framework -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
        # Integration accounts; staff endpoints then refuse them by role (403).
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["provision.api.permissions.IsStaffRole"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "provision.api.pagination.ProvisionPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "provision.api.schema.ProvisionAutoSchema",
    "EXCEPTION_HANDLER": "provision.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + ([] if IS_PRODUCTION else ["rest_framework.renderers.BrowsableAPIRenderer"]),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Provision API",
    "DESCRIPTION": "Customers, subscriptions, licenses, usage and CRM sync state.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The license list and detail serializers share these fields; name their enums once.
    "ENUM_NAME_OVERRIDES": {
        "LicenseStatusEnum": "licenses.choices.LicenseStatus",
        "LicenseKindEnum": "licenses.choices.LicenseKind",
    },
}

# --- Celery ---------------------------------------------------------------------------------
# The default broker is kombu's filesystem transport: no server to install for `make demo`.
# (The host part means nothing to this transport; naming one stops kombu warning about it.)
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost//")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery-broker"
    # kombu does not create these folders, and its control folder (exchange bindings) would
    # otherwise land in whatever directory the process was started from.
    for _folder in ("queue", "processed", "control"):
        (_queue_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "usage.tasks.*": {"queue": "ingest"},
    "crm_sync.tasks.*": {"queue": "crm"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# The one place that declares periodic jobs. django-celery-beat copies these into the database
# at start-up, where admins may change intervals or pause a job.
CELERY_BEAT_SCHEDULE = {
    "subscriptions-expire": {
        "task": "provision.tasks.subscriptions_expire",
        "schedule": crontab(minute=5),
    },
    "licenses-expire": {
        "task": "licenses.tasks.licenses_expire",
        "schedule": crontab(minute=10),
    },
    "license-deliveries-requeue": {
        "task": "licenses.tasks.license_deliveries_requeue",
        "schedule": crontab(minute="*/15"),
    },
    # Seat Link reports reach the daily rollups through this (usage files and GitLab.com
    # figures roll up inline; for them it is the safety net). Incremental: reports received
    # since the previous run. Expires so that a backlog never queues duplicate runs.
    # CRM sync (docs/crm.md): only what changed every 15 minutes, everything diffed nightly.
    # Each target on its own entry, so an admin can pause or move one in the admin.
    "crm-sync-salesforce-incremental": {
        "task": "crm_sync.tasks.crm_sync_target",
        "schedule": crontab(minute="*/15"),
        "kwargs": {"target": "salesforce", "kind": "incremental"},
        "options": {"expires": 14 * 60},
    },
    "crm-sync-gainsight-incremental": {
        "task": "crm_sync.tasks.crm_sync_target",
        "schedule": crontab(minute="7,22,37,52"),
        "kwargs": {"target": "gainsight", "kind": "incremental"},
        "options": {"expires": 14 * 60},
    },
    "crm-sync-salesforce-full": {
        "task": "crm_sync.tasks.crm_sync_target",
        "schedule": crontab(hour=2, minute=30),
        "kwargs": {"target": "salesforce", "kind": "full"},
        "options": {"expires": 3600},
    },
    "crm-sync-gainsight-full": {
        "task": "crm_sync.tasks.crm_sync_target",
        "schedule": crontab(hour=3, minute=30),
        "kwargs": {"target": "gainsight", "kind": "full"},
        "options": {"expires": 3600},
    },
    "usage-rollup-recent": {
        "task": "usage.tasks.usage_rollup_recent",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
}

# --- Provision ------------------------------------------------------------------------------
# How long a provisioning step may stay pending before the record counts as stuck: hours per
# step kind, counted from when the step before it completed (a delivery's clock starts when
# the license is issued). A step not named here gets PROVISIONING_STEP_SLA_HOURS. Setting the
# variable replaces the whole mapping; "{}" gives every step the same SLA.
PROVISIONING_STEP_SLA_HOURS = env_int("PROVISIONING_STEP_SLA_HOURS", 24)
if PROVISIONING_STEP_SLA_HOURS < 1:
    raise ImproperlyConfigured(
        f"PROVISIONING_STEP_SLA_HOURS must be 1 or more, got {PROVISIONING_STEP_SLA_HOURS}"
    )
PROVISIONING_STEP_SLA_HOURS_BY_STEP = env_json_object(
    "PROVISIONING_STEP_SLA_HOURS_BY_STEP",
    {"license_issued": 1, "delivered": 4, "activated": 72, "namespace_provisioned": 24,
     "first_usage": 48},
)  # fmt: skip


def _check_step_slas(slas: dict) -> None:
    from provision.choices import ProvisioningStepKind

    name = "PROVISIONING_STEP_SLA_HOURS_BY_STEP"
    unknown = sorted(set(slas) - set(ProvisioningStepKind.values))
    if unknown:
        raise ImproperlyConfigured(
            f"{name}: unknown step kind {', '.join(map(repr, unknown))}; the step kinds are "
            f"{', '.join(ProvisioningStepKind.values)}"
        )
    for kind, hours in slas.items():
        # NaN fails both comparisons; JSON's Infinity fails the upper bound.
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= 8760:
            raise ImproperlyConfigured(
                f"{name}: the SLA of {kind!r} must be a positive number of hours (at most 8760, "
                f"a year), got {hours!r}"
            )


_check_step_slas(PROVISIONING_STEP_SLA_HOURS_BY_STEP)
# An instance with an active online cloud license that has not sent Seat Link for this many
# days has "gone dark" (Seat Link is daily; GitLab retries a failed one for about two days).
INSTANCE_DARK_AFTER_DAYS = env_int("INSTANCE_DARK_AFTER_DAYS", 3)
if INSTANCE_DARK_AFTER_DAYS < 1:
    raise ImproperlyConfigured(
        f"INSTANCE_DARK_AFTER_DAYS must be 1 or more, got {INSTANCE_DARK_AFTER_DAYS}"
    )
# Which imported support tickets count as provisioning-related (the third indicator on
# /indicators/): JSON with exclude_categories, tags_any, categories and keywords, checked here
# (docs/indicators.md). Setting it replaces the whole default rule from provision/tickets.py.
PROVISIONING_TICKET_RULE = validate_ticket_rule(
    env_json_object("PROVISIONING_TICKET_RULE", DEFAULT_PROVISIONING_TICKET_RULE)
)
# How long /indicators/ reuses the computed figures of a week that may still change (seconds);
# a week that ended more than two days ago is kept for a day. 0 computes them on every request.
INDICATORS_CACHE_SECONDS = env_int("INDICATORS_CACHE_SECONDS", 300)
if INDICATORS_CACHE_SECONDS < 0:
    raise ImproperlyConfigured(
        f"INDICATORS_CACHE_SECONDS must be 0 or more, got {INDICATORS_CACHE_SECONDS}"
    )
# Demo data: logins printed by seed_demo. Never used outside development.
DEMO_PASSWORD = env_str("DEMO_PASSWORD", "provision-demo")

# The RSA private key licenses are signed with: PEM text, or a PEM file (the text wins when both
# are set). Development defaults to a key made by `manage.py license_dev_key`; production has no
# default, and issuing a license fails with a clear error until one is configured.
LICENSE_PRIVATE_KEY = env_str("LICENSE_PRIVATE_KEY", "")
LICENSE_PRIVATE_KEY_FILE = env_str(
    "LICENSE_PRIVATE_KEY_FILE", "" if IS_PRODUCTION else str(VAR_DIR / "dev-license-key.pem")
)
# Activation codes are stored as HMAC-SHA256 under this key. Empty = derived from SECRET_KEY;
# set it in production so that rotating SECRET_KEY does not invalidate every unused code.
ACTIVATION_CODE_HMAC_KEY = env_str("ACTIVATION_CODE_HMAC_KEY", "")
# Activation attempts (POST /graphql) allowed per minute per client address and per activation
# code; 0 = no limit. Counted in the cache: several processes need a shared one (CACHE_URL).
ACTIVATION_RATE_LIMIT_PER_IP = env_int("ACTIVATION_RATE_LIMIT_PER_IP", 30)
ACTIVATION_RATE_LIMIT_PER_CODE = env_int("ACTIVATION_RATE_LIMIT_PER_CODE", 10)
# Seat Link posts (POST /api/v1/seat_links) allowed per minute per client address; 0 = no limit.
# An instance sends one a day plus retries; many instances may share one egress address.
SEAT_LINK_RATE_LIMIT_PER_IP = env_int("SEAT_LINK_RATE_LIMIT_PER_IP", 60)
# Proxies in front of the app that append the client address to X-Forwarded-For. 0 = trust
# only the socket address (REMOTE_ADDR); more than the real number lets clients forge it.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
for _name, _value in (
    ("ACTIVATION_RATE_LIMIT_PER_IP", ACTIVATION_RATE_LIMIT_PER_IP),
    ("ACTIVATION_RATE_LIMIT_PER_CODE", ACTIVATION_RATE_LIMIT_PER_CODE),
    ("SEAT_LINK_RATE_LIMIT_PER_IP", SEAT_LINK_RATE_LIMIT_PER_IP),
    ("TRUSTED_PROXY_COUNT", TRUSTED_PROXY_COUNT),
):
    if _value < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 or more, got {_value}")

# --- CRM sync (docs/crm.md) ------------------------------------------------------------------
# Salesforce: the org's instance URL and one way to authenticate, tried in this order: a ready
# session (SALESFORCE_ACCESS_TOKEN), the JWT bearer flow (SALESFORCE_CONSUMER_KEY + a private
# key), or username + password + security token. No credentials = the target is not configured
# and runs of it fail with a clear error.
SALESFORCE_INSTANCE_URL = env_str("SALESFORCE_INSTANCE_URL", "")
SALESFORCE_ACCESS_TOKEN = env_str("SALESFORCE_ACCESS_TOKEN", "")
SALESFORCE_USERNAME = env_str("SALESFORCE_USERNAME", "")
SALESFORCE_PASSWORD = env_str("SALESFORCE_PASSWORD", "")
SALESFORCE_SECURITY_TOKEN = env_str("SALESFORCE_SECURITY_TOKEN", "")
SALESFORCE_CONSUMER_KEY = env_str("SALESFORCE_CONSUMER_KEY", "")
SALESFORCE_PRIVATE_KEY = env_str("SALESFORCE_PRIVATE_KEY", "")
SALESFORCE_PRIVATE_KEY_FILE = env_str("SALESFORCE_PRIVATE_KEY_FILE", "")
# "login", "test" (sandboxes) or "<mydomain>.my": where password and JWT logins go.
SALESFORCE_DOMAIN = env_str("SALESFORCE_DOMAIN", "login")
# Pinned: sObject Collections upsert needs 46.0 or later; simple-salesforce's default moves.
SALESFORCE_API_VERSION = env_str("SALESFORCE_API_VERSION", "59.0")
# Seconds before any one HTTP call to Salesforce gives up (simple-salesforce sets none).
SALESFORCE_TIMEOUT_SECONDS = env_int("SALESFORCE_TIMEOUT_SECONDS", 30)
# Plain http:// instance URLs are refused unless this is true: for the test doubles only.
SALESFORCE_ALLOW_HTTP = env_bool("SALESFORCE_ALLOW_HTTP", False)
# A run sending more rows than this to one object uses Bulk API 2.0; fewer go through sObject
# Collections (200 a call), as Salesforce advises below 2,000 rows.
SALESFORCE_BULK_THRESHOLD = env_int("SALESFORCE_BULK_THRESHOLD", 2000)
# Seconds simple-salesforce waits before its first poll of a Bulk API 2.0 job (then it polls
# every ≤ 2 s until the job ends).
SALESFORCE_BULK_WAIT_SECONDS = env_int("SALESFORCE_BULK_WAIT_SECONDS", 1)
# Gainsight: tenant base URL and access key (header `accesskey`). http:// only for test doubles.
GAINSIGHT_BASE_URL = env_str("GAINSIGHT_BASE_URL", "")
GAINSIGHT_ACCESS_KEY = env_str("GAINSIGHT_ACCESS_KEY", "")
GAINSIGHT_ALLOW_HTTP = env_bool("GAINSIGHT_ALLOW_HTTP", False)
GAINSIGHT_TIMEOUT_SECONDS = env_int("GAINSIGHT_TIMEOUT_SECONDS", 30)
# Client-side budget, kept under Gainsight's fixed windows of 100 calls/min and 50,000/day.
GAINSIGHT_CALLS_PER_MINUTE = env_int("GAINSIGHT_CALLS_PER_MINUTE", 90)
GAINSIGHT_CALLS_PER_DAY = env_int("GAINSIGHT_CALLS_PER_DAY", 45000)
# The sync engine (crm_sync.services): field mapping overrides merged over the defaults in
# crm_sync/mapping.py (JSON, see docs/crm.md); customers per batch sent in one go (a batch is
# committed before the next starts, so a crash loses at most one batch's bookkeeping); how
# long after the first change a change-triggered push waits for more changes; how long a run
# may go without a heartbeat before another run takes over its target (a killed worker).
CRM_FIELD_MAPPING = env_json_object("CRM_FIELD_MAPPING", {})
# Where staff reach this Provision: links pushed to the CRM (the customer's console page).
PROVISION_PUBLIC_URL = env_str("PROVISION_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
CRM_SYNC_BATCH_CUSTOMERS = env_int("CRM_SYNC_BATCH_CUSTOMERS", 5000)
CRM_PUSH_DEBOUNCE_SECONDS = env_int("CRM_PUSH_DEBOUNCE_SECONDS", 60)
CRM_SYNC_STALE_AFTER_SECONDS = env_int("CRM_SYNC_STALE_AFTER_SECONDS", 900)
# First delay of a sync task retrying a transient CRM failure; it doubles per retry (with
# jitter) up to 15 minutes. Tests set it to 1 so a retry comes back within seconds.
CRM_SYNC_RETRY_BACKOFF_SECONDS = env_int("CRM_SYNC_RETRY_BACKOFF_SECONDS", 30)
for _name, _value in (
    ("CRM_SYNC_BATCH_CUSTOMERS", CRM_SYNC_BATCH_CUSTOMERS),
    ("CRM_SYNC_STALE_AFTER_SECONDS", CRM_SYNC_STALE_AFTER_SECONDS),
    ("CRM_SYNC_RETRY_BACKOFF_SECONDS", CRM_SYNC_RETRY_BACKOFF_SECONDS),
    ("SALESFORCE_TIMEOUT_SECONDS", SALESFORCE_TIMEOUT_SECONDS),
    ("SALESFORCE_BULK_THRESHOLD", SALESFORCE_BULK_THRESHOLD),
    ("GAINSIGHT_TIMEOUT_SECONDS", GAINSIGHT_TIMEOUT_SECONDS),
    ("GAINSIGHT_CALLS_PER_MINUTE", GAINSIGHT_CALLS_PER_MINUTE),
    ("GAINSIGHT_CALLS_PER_DAY", GAINSIGHT_CALLS_PER_DAY),
):
    if _value < 1:
        raise ImproperlyConfigured(f"{_name} must be 1 or more, got {_value}")

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "provision.middleware.RequestIdLogFilter"}},
    "formatters": {
        "structured": {
            "format": "%(asctime)s level=%(levelname)s logger=%(name)s "
            "request_id=%(request_id)s %(message)s"
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "structured",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "axes": {"level": "WARNING"},
    },
}
