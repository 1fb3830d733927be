"""Fixtures shared by the whole suite."""

import os

import pytest

# The two plugins we ship, enabled as docs/webhooks.md and README tell users to.
pytest_plugins = ["transactional.testing.pytest_plugin", "transactional.testing.webhooks"]

OUTBOX = "transactional.backends.EmailBackend"


@pytest.fixture
def outbox(settings):
    """Route send_mail() through the outbox backend (Django's runner swaps in locmem)."""
    settings.EMAIL_BACKEND = OUTBOX
    return settings


@pytest.fixture
def deliver(django_capture_on_commit_callbacks):
    """Run a delivery run as the worker does, its commit hooks (signals, notices) included.

    ``deliver(limit=10)`` passes on to ``deliver_due()``; returns what it does.
    """
    from transactional.delivery import deliver_due

    def run(**kwargs) -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return deliver_due(**kwargs)

    return run


@pytest.fixture
def mail_settings(settings):
    """Apply a provider's settings as ``settings.prod`` would build them.

    ``mail_settings("mailgun", MAILGUN_API_KEY="key", ...)`` runs the real
    provider table (settings/providers.py) on the given environment. Mail
    goes straight to the provider (EMAIL_BACKEND = the delivery backend);
    combine with the ``outbox`` fixture to go through the outbox.
    """
    from settings.env import Env
    from settings.providers import email_settings

    def apply(provider: str, **environ: str) -> dict:
        values = email_settings(provider, Env(environ), base_dir=settings.BASE_DIR, use_mailers=False)
        for name, value in values.items():
            setattr(settings, name, value)
        settings.EMAIL_BACKEND = values["TRANSACTIONAL_DELIVERY_BACKEND"]
        return values

    return apply


#: A Redis database of its own, flushed around each test that uses it.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def test_redis():
    """Return a connection to the test Redis (``TEST_REDIS_URL``), emptied; skip without one."""
    redis = pytest.importorskip("redis")
    connection = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        connection.ping()
    except redis.ConnectionError as error:
        pytest.skip(f"Redis is not reachable at {TEST_REDIS_URL}: {error}")
    connection.flushdb()
    yield connection
    connection.flushdb()
