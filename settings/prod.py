"""Production settings: DEBUG off, everything per-deployment required.

A missing variable raises ImproperlyConfigured naming every missing one at
once, so a deployment fails at start-up rather than on the first mail.
``manage.py check --deploy`` is clean with a complete environment.
"""

import copy

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import BASE_DIR, LOGGING
from .env import env
from .providers import chosen_providers, email_settings, required_variables

# One provider (EMAIL_PROVIDER) or several in failover order (EMAIL_PROVIDERS).
EMAIL_PROVIDERS = chosen_providers(env)
env.require(
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    *(() if EMAIL_PROVIDERS else (("EMAIL_PROVIDER", "EMAIL_PROVIDERS"),)),
    *(name for provider in EMAIL_PROVIDERS for name in required_variables(provider, env)),
)

# Streams other than "transactional" carry one-click unsubscribe links, which
# must point at this site over https (RFC 8058).
if env.is_set("TRANSACTIONAL_STREAMS"):
    env.require("TRANSACTIONAL_SITE_URL")
    if not env.str("TRANSACTIONAL_SITE_URL").startswith("https://"):
        raise ImproperlyConfigured(
            "TRANSACTIONAL_SITE_URL must be an https:// URL: the one-click unsubscribe links "
            "in mail on TRANSACTIONAL_STREAMS point at it (RFC 8058)."
        )

# GENERAL
# ------------------------------------------------------------------------------
DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

# DATABASES
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections
# SQLite too keeps each gunicorn worker's connection for 60 seconds, as
# base.py does for PostgreSQL. A connection per request (Django's default)
# cost single webhook posts over a quarter of their rate: opening one runs
# the PRAGMAs, and when the last one closes SQLite checkpoints the WAL into
# the database file and deletes it, for the next request to create. (Not in dev:
# runserver serves each request in a thread of its own and closes its
# connections as the thread ends.) docs/webhooks.md, "Throughput".
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES = {"default": {**DATABASES["default"], "CONN_MAX_AGE": 60}}

# EMAIL
# ------------------------------------------------------------------------------
globals().update(email_settings(EMAIL_PROVIDERS, env, base_dir=BASE_DIR))

# SECURITY
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
# The load balancer / reverse proxy terminates TLS and says so in this header.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-ssl-redirect
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Load balancers probe over plain HTTP; a redirect would read as "down".
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
# https://docs.djangoproject.com/en/5.2/ref/settings/#session-cookie-secure
SESSION_COOKIE_SECURE = True
# https://docs.djangoproject.com/en/5.2/ref/settings/#csrf-cookie-secure
CSRF_COOKIE_SECURE = True
# https://docs.djangoproject.com/en/5.2/ref/middleware/#http-strict-transport-security
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True

# STATIC FILES
# ------------------------------------------------------------------------------
# Served by whitenoise from STATIC_ROOT; run `manage.py collectstatic` on release.
# (Dev and test serve straight from the apps' static folders.)
# https://whitenoise.readthedocs.io/en/stable/django.html
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# LOGGING
# ------------------------------------------------------------------------------
# Server errors reach ADMINS through the provider's own backend, never through
# our database-backed outbox: the error being reported may be that the
# database is down.
LOGGING = copy.deepcopy(LOGGING)
LOGGING["handlers"]["mail_admins"] = {
    "class": "django.utils.log.AdminEmailHandler",
    "level": "ERROR",
    "filters": ["require_debug_false"],
    # Django 6.1: the primary provider's MAILERS alias; 5.2: its backend.
    **(
        {"using": EMAIL_PROVIDER}  # noqa: F405
        if "MAILERS" in globals()
        else {"email_backend": TRANSACTIONAL_DELIVERY_BACKEND}  # noqa: F405
    ),
}
LOGGING["loggers"]["django"]["handlers"] = ["mail_admins"]
