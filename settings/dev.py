"""Settings for a developer's laptop: DEBUG on, mail lands in sent_emails/."""

from .base import *  # noqa: F403
from .base import BASE_DIR
from .env import env
from .providers import chosen_providers, email_settings

# GENERAL
# ------------------------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#debug
DEBUG = env.bool("DEBUG", default=True)
# https://docs.djangoproject.com/en/5.2/ref/settings/#secret-key
SECRET_KEY = env.str(
    "SECRET_KEY", default="django-insecure-dev-only-5u7q0m3n0t-for-production"
)

# EMAIL
# ------------------------------------------------------------------------------
# Nothing leaves the machine by default: mail is written to EMAIL_FILE_PATH.
# EMAIL_PROVIDERS=ses,mailgun sends through several, in failover order.
EMAIL_PROVIDERS = chosen_providers(env, default="file")
globals().update(email_settings(EMAIL_PROVIDERS, env, base_dir=BASE_DIR))

DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Acme <no-reply@acme.test>")
SERVER_EMAIL = env.str("SERVER_EMAIL", default=DEFAULT_FROM_EMAIL)
ADMINS = env.addresses("ADMINS", default="Acme Admin <admin@acme.test>")
MANAGERS = env.addresses("MANAGERS", default="Acme Admin <admin@acme.test>")

# One-click unsubscribe links point at the dev server.
TRANSACTIONAL_SITE_URL = env.str("TRANSACTIONAL_SITE_URL", default="http://127.0.0.1:8000")
