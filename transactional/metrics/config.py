"""The metrics settings: defaults next to the names, read at call time.

Like ``conf.get_setting()``: ``TRANSACTIONAL_<name>`` if set, else the
default below (docs/configuration.md, "Metrics").
"""

import re
from importlib.util import find_spec
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .counters import KEEP_DAYS

DEFAULTS: dict[str, Any] = {
    #: Bearer token(s) of GET /metrics, space-separated during a rotation. Empty: 404.
    "METRICS_TOKEN": "",
    #: Register OpenTelemetry observable instruments at start-up (opentelemetry-api).
    "METRICS_OTEL": False,
    #: UTC days (today included) the bounce and complaint rates are taken over.
    "METRICS_RATE_DAYS": 7,
}

#: secrets.token_urlsafe(32) is 43 characters; anything under 32 is guessable in time.
MIN_TOKEN_LENGTH = 32
#: RFC 6750's b64token: what an ``Authorization: Bearer`` header can carry.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
TOKEN_SETTING = "TRANSACTIONAL_METRICS_TOKEN"


def setting(name: str) -> Any:
    """Return ``TRANSACTIONAL_<name>`` from settings, or its default."""
    return getattr(settings, f"TRANSACTIONAL_{name}", DEFAULTS[name])


def tokens() -> list[str]:
    """Return the bearer tokens /metrics accepts; none means the endpoint is off."""
    value = setting("METRICS_TOKEN") or ""
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        value = " ".join(value)
    if not isinstance(value, str):
        raise ImproperlyConfigured(
            f"{TOKEN_SETTING} must be a string (several tokens: separated by spaces)."
        )
    return value.split()


def token_problem() -> str | None:
    """Describe what is wrong with the configured tokens, or return None."""
    try:
        configured = tokens()
    except ImproperlyConfigured as error:
        return str(error)
    for number, token in enumerate(configured, start=1):
        which = f"token {number} of {len(configured)}" if len(configured) > 1 else "the token"
        if not B64TOKEN.fullmatch(token):
            return (
                f"{TOKEN_SETTING}: {which} has characters a Bearer header cannot carry "
                "(letters, digits and - . _ ~ + / only, then = padding)."
            )
        if len(token) < MIN_TOKEN_LENGTH:
            return (
                f"{TOKEN_SETTING}: {which} is {len(token)} characters long; use at least "
                f"{MIN_TOKEN_LENGTH} random ones."
            )
    return None


def rate_days() -> int:
    """Return how many UTC days, today included, the rates are taken over."""
    days = setting("METRICS_RATE_DAYS")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= KEEP_DAYS:
        raise ImproperlyConfigured(
            f"TRANSACTIONAL_METRICS_RATE_DAYS is {days!r}; use a whole number of days "
            f"from 1 to {KEEP_DAYS}."
        )
    return days


def otel_wanted() -> bool:
    return bool(setting("METRICS_OTEL"))


def otel_available() -> bool:
    return find_spec("opentelemetry") is not None and find_spec("opentelemetry.metrics") is not None
