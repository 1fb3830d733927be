"""Our settings: one accessor, defaults next to the names, read at call time.

``get_setting("MAX_ATTEMPTS")`` returns ``settings.TRANSACTIONAL_MAX_ATTEMPTS``
if set, else the default below. Reading at call time keeps
``override_settings`` working. Every name is documented in
docs/configuration.md.
"""

import re
from typing import Any

from django.conf import settings

STREAM_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")

DEFAULTS: dict[str, Any] = {
    # Delivery and retries
    "MAX_ATTEMPTS": 8,
    "RETRY_BASE_SECONDS": 30.0,
    "RETRY_FACTOR": 2.0,
    "RETRY_CAP_SECONDS": 3600.0,
    "MAX_AGE_SECONDS": 3 * 24 * 3600,
    "LEASE_SECONDS": 300,
    "SWEEP_INTERVAL_SECONDS": 60,
    "BATCH_SIZE": 100,
    "RUN_SECONDS": 60,
    "CONCURRENCY": 16,
    "MAX_MESSAGE_BYTES": 25 * 1024 * 1024,
    "IDEMPOTENCY_WINDOW_SECONDS": 24 * 3600,
    "FAILURE_NOTICE_INTERVAL_SECONDS": 15 * 60,
    #: Dotted path of a function replacing retries.classify()'s rules.
    "CLASSIFIER": None,
    # Several providers (failover order) and their limits; settings/providers.py
    # fills these from EMAIL_PROVIDERS and TRANSACTIONAL_RATE_LIMITS.
    #: Provider name -> dotted backend path. Unset: the one delivery backend.
    "PROVIDERS": None,
    #: Provider name -> messages per second (0: no limit). SES without an
    #: entry is limited to its account's MaxSendRate.
    "RATE_LIMITS": {},
    #: "database", or "redis" (RQ's Redis); None: redis under TASKS_BACKEND=rq.
    "RATE_LIMIT_STORE": None,
    "ACCOUNT_RATE_REFRESH_SECONDS": 3600,
    # The circuit breaker: this many transient failures within the window
    # open it; after the cooldown one probe message may try again.
    "BREAKER_FAILURES": 5,
    "BREAKER_WINDOW_SECONDS": 60,
    "BREAKER_COOLDOWN_SECONDS": 30,
    #: Streams besides "transactional" (e.g. notifications, newsletter): each
    #: gets a one-click unsubscribe, and an unsubscribe stops only its stream.
    "STREAMS": (),
    #: Base of the links in mail (unsubscribe), e.g. https://mail.acme-corp.com.
    "SITE_URL": "",
    #: An address whose inbound mail (anymail's inbound webhook) unsubscribes,
    #: offered as List-Unsubscribe's mailto. Empty: the https link only.
    "UNSUBSCRIBE_MAILTO": "",
    # Staging safety (transactional/staging.py)
    "ALLOWED_RECIPIENTS": (),
    "REDIRECT_TO": (),
    # Webhooks
    "MAILGUN_MAX_AGE_SECONDS": 12 * 3600,
    "SNS_TOPIC_ARNS": (),
    # AWS's signing-certificate URLs: https, an ``sns.<region>`` host, a .pem
    # name. Anchored: trusting any amazonaws.com URL once made a CVE.
    "SNS_CERT_URL_PATTERN": (
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/SimpleNotificationService-[0-9a-f]+\.pem$"
    ),
    # Retention (transactional/retention.py). TRANSACTIONAL_RETENTION names only
    # the classes it changes; the deprecated TRANSACTIONAL_BODY_/METADATA_/
    # TASK_RESULT_RETENTION_DAYS still apply to the classes it leaves out.
    "RETENTION": {
        "messages": "365d",
        "bodies": "30d",
        "attempts": "90d",
        "events": "400d",
        "task_results": "7d",
    },
    #: The sweep purges at most this often (0: never; cron `outbox purge`)...
    "PURGE_INTERVAL_SECONDS": 3600,
    #: ...for at most this long per sweep; a longer backlog goes on next sweep.
    "PURGE_MAX_SECONDS": 10,
    # Rates (fractions) at which Amazon SES reviews / pauses an account; the
    # admin's delivery stats page warns past them.
    "BOUNCE_RATE_REVIEW": 0.05,
    "BOUNCE_RATE_PAUSE": 0.10,
    "COMPLAINT_RATE_REVIEW": 0.001,
    "COMPLAINT_RATE_PAUSE": 0.005,
    # `outbox status --check` thresholds
    "ALERT_OLDEST_DUE_SECONDS": 600,
    "ALERT_FAILED_LAST_HOUR": 10,
}


def get_setting(name: str) -> Any:
    """Return ``TRANSACTIONAL_<name>`` from settings, or its default."""
    if name not in DEFAULTS and not hasattr(settings, f"TRANSACTIONAL_{name}"):
        raise KeyError(f"Unknown setting TRANSACTIONAL_{name}")
    return getattr(settings, f"TRANSACTIONAL_{name}", DEFAULTS.get(name))


def delivery_backend() -> str:
    """Return the dotted path of the backend that really sends."""
    return settings.TRANSACTIONAL_DELIVERY_BACKEND


def provider_name() -> str:
    """Return the primary provider: EMAIL_PROVIDER, or the delivery backend's module name."""
    return getattr(settings, "EMAIL_PROVIDER", "") or delivery_backend().rsplit(".", 2)[-2]


def streams() -> tuple[str, ...]:
    """Return every stream a message may be on, "transactional" first."""
    from django.core.exceptions import ImproperlyConfigured

    from .models import DEFAULT_STREAM

    configured = get_setting("STREAMS") or ()
    if isinstance(configured, str) or not all(isinstance(name, str) for name in configured):
        raise ImproperlyConfigured(
            "TRANSACTIONAL_STREAMS must be a list of stream names, e.g. ['notifications', 'newsletter']."
        )
    if bad := [name for name in configured if not STREAM_NAME.fullmatch(name)]:
        raise ImproperlyConfigured(
            f"TRANSACTIONAL_STREAMS has {', '.join(map(repr, bad))}; a stream name is 1 to 64 "
            "lower-case letters, digits, '-' or '_', starting with a letter."
        )
    return (DEFAULT_STREAM, *dict.fromkeys(name for name in configured if name != DEFAULT_STREAM))


def providers() -> dict[str, str]:
    """Return provider name -> dotted backend path, in failover order (primary first)."""
    configured = get_setting("PROVIDERS")
    if configured:
        return dict(configured)
    return {provider_name(): delivery_backend()}
