"""With these settings, tests run faster and no mail leaves the process.

pytest uses this module (see pyproject.toml). Mail goes to the in-memory
outbox (``mailoutbox``); ESP tests switch provider with ``override_settings``.
"""

from .base import *  # noqa: F403
from .base import BASE_DIR, PROVIDERS
from .env import env
from .providers import email_settings

DEBUG = False
SECRET_KEY = "django-insecure-test-only"

# https://docs.djangoproject.com/en/5.2/ref/settings/#password-hashers
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# EMAIL
# ------------------------------------------------------------------------------
EMAIL_PROVIDER = env.choice("EMAIL_PROVIDER", PROVIDERS, default="locmem")
globals().update(email_settings(EMAIL_PROVIDER, env, base_dir=BASE_DIR))

DEFAULT_FROM_EMAIL = "Acme <no-reply@acme.test>"
SERVER_EMAIL = "server@acme.test"
ADMINS = [("Acme Admin", "admin@acme.test")]
MANAGERS = ADMINS
