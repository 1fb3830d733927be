"""With these settings, tests run faster and no mail leaves the process.

pytest uses this module (see pyproject.toml). Mail goes to the in-memory
outbox (``mailoutbox``); ESP tests switch provider with ``override_settings``.
"""

import os
import tempfile
from pathlib import Path

from .base import *  # noqa: F403
from .base import BASE_DIR, TASKS_MODULE
from .env import Env
from .providers import email_settings

DEBUG = False
SECRET_KEY = "django-insecure-test-only"

# https://docs.djangoproject.com/en/5.2/ref/settings/#password-hashers
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A file, not SQLite's shared in-memory database: tests that race two
# delivery runs need real SQLite locking (busy timeout, WAL), which shared
# cache mode replaces with instant "table is locked" errors.
# One file per test process, so two runs at once never share it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(Path(tempfile.gettempdir()) / f"transactional-test-{os.getpid()}.sqlite3")
    }

# The environment (or a .env file) must not change how the suite runs.
INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "django_rq"]  # noqa: F405
for _knob in (
    "TRANSACTIONAL_MAX_ATTEMPTS",
    "TRANSACTIONAL_RETRY_BASE_SECONDS",
    "TRANSACTIONAL_ALLOWED_RECIPIENTS",
    "TRANSACTIONAL_STREAMS",
    "TRANSACTIONAL_SITE_URL",
    "TRANSACTIONAL_UNSUBSCRIBE_MAILTO",
    "TRANSACTIONAL_REDIRECT_TO",
    "TRANSACTIONAL_RETENTION",
):
    globals().pop(_knob, None)
SILENCED_SYSTEM_CHECKS = ["anymail.W003"]  # not the environment's

# Delivery runs in the test process, right after the sending transaction
# commits (``django_capture_on_commit_callbacks(execute=True)`` in tests).
TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.immediate.ImmediateBackend"}}

# EMAIL
# ------------------------------------------------------------------------------
# Fixed, whatever the environment or .env says: no test mail leaves the process.
EMAIL_PROVIDER = "locmem"
# The EMAIL_* settings even on Django 6.1 (not MAILERS): tests still switch
# backends with settings.EMAIL_BACKEND. tests/test_mailers.py covers MAILERS.
globals().update(email_settings(EMAIL_PROVIDER, Env({}), base_dir=BASE_DIR, use_mailers=False))
# Django's test runner replaces EMAIL_BACKEND with locmem anyway; tests of
# the outbox switch it on with the `outbox` fixture (tests/conftest.py).
EMAIL_BACKEND = TRANSACTIONAL_DELIVERY_BACKEND  # noqa: F405

DEFAULT_FROM_EMAIL = "Acme <no-reply@acme.test>"
SERVER_EMAIL = "server@acme.test"
ADMINS = [("Acme Admin", "admin@acme.test")]
MANAGERS = ADMINS

# The base of links in mail (one-click unsubscribe).
TRANSACTIONAL_SITE_URL = "https://mail.acme.test"
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "mail.acme.test"]  # noqa: F405
