"""Settings shared by every environment (dev, test, prod).

Everything an operator changes per deployment comes from the environment,
through ``settings.env``; see docs/configuration.md for the full list.
"""

from importlib.util import find_spec
from pathlib import Path

import dj_database_url

from transactional.retention import parse_retention  # imports no models

from .env import env
from .providers import PROVIDERS  # noqa: F401  (re-exported for the env modules)

BASE_DIR = Path(__file__).resolve().parent.parent

# The Tasks framework: built into Django 6.0+ (django.tasks); on Django 5.2 the
# django-tasks backport (django_tasks). transactional/tasks.py picks the same.
TASKS_MODULE = "django.tasks" if find_spec("django.tasks") else "django_tasks"


# GENERAL
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#allowed-hosts
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
# https://docs.djangoproject.com/en/5.2/ref/settings/#time-zone
TIME_ZONE = "UTC"
USE_TZ = True
LANGUAGE_CODE = "en-us"
USE_I18N = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"


# DATABASES
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#databases
DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the delivery worker write at once. WAL lets readers
    # run beside a writer; IMMEDIATE takes the write lock when a transaction
    # starts, so two writers queue on `timeout` instead of failing with
    # "database is locked" half-way through. A 32 MiB page cache holds a
    # 1,000-event webhook post's writes (SQLite's 2 MiB default spilled them
    # to the WAL and read them back mid-transaction), and reads go through a
    # memory map instead of a read() per page.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            "PRAGMA cache_size=-32768; PRAGMA mmap_size=268435456;"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
del DATABASE_URL  # it may hold a password; never keep it as a setting


# APPS
# ------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "anymail",
    *(["django_tasks"] if TASKS_MODULE == "django_tasks" else []),
    "django_tasks_db",
    "transactional",
    "birthday",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]


# BACKGROUND DELIVERY (Django Tasks API, django-tasks backport)
# ------------------------------------------------------------------------------
# db: django-tasks-db, run `manage.py delivery_worker` (or `db_worker`);
# rq: RQ on Redis, run `manage.py rqworker default --with-scheduler
#     --job-class django_tasks_rq.backend.Job`;
# immediate: deliver inside the sending process, after its commit.
# https://github.com/RealOrangeOne/django-tasks
TASKS_BACKEND = env.choice("TASKS_BACKEND", ("db", "rq", "immediate"), default="db")
TASK_BACKENDS = {
    "db": "django_tasks_db.DatabaseBackend",
    "rq": "django_tasks_rq.RQBackend",
    "immediate": f"{TASKS_MODULE}.backends.immediate.ImmediateBackend",
}
TASKS = {"default": {"BACKEND": TASK_BACKENDS[TASKS_BACKEND]}}
if TASKS_BACKEND == "rq":
    INSTALLED_APPS.append("django_rq")
    # https://github.com/rq/django-rq#installation
    RQ_QUEUES = {"default": {"URL": env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")}}


# Knobs an operator may change per deployment; every other TRANSACTIONAL_*
# setting keeps its default from transactional/conf.py (docs/configuration.md).
if env.is_set("TRANSACTIONAL_MAX_ATTEMPTS"):
    TRANSACTIONAL_MAX_ATTEMPTS = env.int("TRANSACTIONAL_MAX_ATTEMPTS", default=0, minimum=1)
if env.is_set("TRANSACTIONAL_RETRY_BASE_SECONDS"):
    TRANSACTIONAL_RETRY_BASE_SECONDS = env.float("TRANSACTIONAL_RETRY_BASE_SECONDS", default=0, minimum=0)
# Message streams besides "transactional" (e.g. notifications,newsletter):
# one-click unsubscribe, suppression per stream. docs/configuration.md.
if env.is_set("TRANSACTIONAL_STREAMS"):
    TRANSACTIONAL_STREAMS = [name.lower() for name in env.list("TRANSACTIONAL_STREAMS")]
# Where this site is reached from the internet: the base of unsubscribe links.
if env.is_set("TRANSACTIONAL_SITE_URL"):
    TRANSACTIONAL_SITE_URL = env.str("TRANSACTIONAL_SITE_URL")
if env.is_set("TRANSACTIONAL_UNSUBSCRIBE_MAILTO"):
    TRANSACTIONAL_UNSUBSCRIBE_MAILTO = env.addresses("TRANSACTIONAL_UNSUBSCRIBE_MAILTO")[0][1]
# Staging safety: mail to anyone outside the allow-list (addresses, domains,
# *.subdomains) is redirected to TRANSACTIONAL_REDIRECT_TO, or refused when
# that is unset. transactional/staging.py; `check --deploy` warns while on.
if env.is_set("TRANSACTIONAL_ALLOWED_RECIPIENTS"):
    TRANSACTIONAL_ALLOWED_RECIPIENTS = env.list("TRANSACTIONAL_ALLOWED_RECIPIENTS")
if env.is_set("TRANSACTIONAL_REDIRECT_TO"):
    TRANSACTIONAL_REDIRECT_TO = env.formatted_addresses("TRANSACTIONAL_REDIRECT_TO")
# How long each data class is kept, e.g. bodies=30d,events=400d (off: forever);
# the classes left out keep their defaults. The sweep purges hourly.
if env.is_set("TRANSACTIONAL_RETENTION"):
    TRANSACTIONAL_RETENTION = parse_retention(env.str("TRANSACTIONAL_RETENTION"))
# Metrics: GET /metrics (Prometheus) answers 404 until a bearer token is set
# (several, space-separated, during a rotation); OpenTelemetry instruments
# only where TRANSACTIONAL_METRICS_OTEL is on. docs/configuration.md, "Metrics".
if env.is_set("TRANSACTIONAL_METRICS_TOKEN"):
    TRANSACTIONAL_METRICS_TOKEN = env.str("TRANSACTIONAL_METRICS_TOKEN")
if env.is_set("TRANSACTIONAL_METRICS_OTEL"):
    TRANSACTIONAL_METRICS_OTEL = env.bool("TRANSACTIONAL_METRICS_OTEL", default=False)


# TEMPLATES AND STATIC FILES
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#templates
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
            ],
        },
    },
]
# https://docs.djangoproject.com/en/5.2/ref/settings/#static-files
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]


# PASSWORDS
# ------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]


# EMAIL ADDRESSES
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#default-from-email
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="webmaster@localhost")
# https://docs.djangoproject.com/en/5.2/ref/settings/#server-email
# Error mail to ADMINS comes from here; "root@localhost" (Django's default)
# is refused by every ESP, so fall back to the site's sender.
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
# https://docs.djangoproject.com/en/5.2/ref/settings/#admins
ADMINS = env.addresses("ADMINS")
# https://docs.djangoproject.com/en/5.2/ref/settings/#managers
MANAGERS = env.addresses("MANAGERS")
# https://docs.djangoproject.com/en/5.2/ref/settings/#email-subject-prefix
EMAIL_SUBJECT_PREFIX = "[transactional] "

# django-anymail has dropped official support for SendGrid (anymail.W003 and
# an AnymailNotSupportedWarning on every SendGrid backend and webhook).
# We keep supporting it with our own tests against SendGrid's documented API
# and payloads; see docs/configuration.md, "SendGrid".
SILENCED_SYSTEM_CHECKS = ["anymail.W003"]
# Checks a deployment accepts on purpose, e.g. transactional.W010 on staging,
# so the release step's `check --deploy --fail-level WARNING` passes.
SILENCED_SYSTEM_CHECKS += env.list("SILENCED_SYSTEM_CHECKS")


# SECURITY
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#default-exception-reporter-filter
DEFAULT_EXCEPTION_REPORTER_FILTER = "transactional.error_reports.SecretSafeReporterFilter"
X_FRAME_OPTIONS = "DENY"


# LOGGING
# ------------------------------------------------------------------------------
# One line per record on stdout: time, level, logger name, message.
# https://docs.djangoproject.com/en/5.2/topics/logging/
LOG_LEVEL = env.choice(
    "LOG_LEVEL", ("debug", "info", "warning", "error", "critical"), default="info"
).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "filters": {
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "line",
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Replace Django's defaults (console only when DEBUG, its own
        # runserver format) so everything goes through the one handler.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
    },
}
