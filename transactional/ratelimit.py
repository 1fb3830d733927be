"""Shared per-provider rate limits: every worker, process and machine together.

Each provider has one clock, ``next_slot``: the time of its next free send
slot. Reserving ``n`` slots moves it ``n`` intervals ahead in one atomic
statement and tells the caller how long to wait for the first one, so sends
are spaced evenly across all workers: no burst, no bucket to refill. The
clock lives in the database (``ProviderState.next_slot``, read against the
database server's own clock on PostgreSQL, so workers on several machines
agree) or, under ``TASKS_BACKEND=rq``, in Redis (a Lua script on Redis's
clock).

Slots are spaced for SAFETY (97%) of the configured rate: a request reaches
the provider a little after its slot (thread wake-up, the HTTP round trip),
and that jitter must not push any one-second window over the limit.

Amazon SES without a configured limit is held to the account's MaxSendRate,
read with ``GetAccount`` and refreshed every
TRANSACTIONAL_ACCOUNT_RATE_REFRESH_SECONDS.
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from numbers import Real

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from .conf import get_setting
from .models import ProviderState

logger = logging.getLogger(__name__)

#: Fraction of the configured rate the slots are spaced for (see above).
SAFETY = 0.97
#: A call that wakes this much after its slot takes a fresh one instead:
#: half the margin SAFETY leaves in every second (the other half is for the
#: time between waking and the request reaching the provider).
LATE_SECONDS = (1 / SAFETY - 1) / 2
#: After a failed account-rate lookup, try again this much later.
ACCOUNT_RATE_RETRY_SECONDS = 300


def configured_rates() -> dict[str, float]:
    """Return TRANSACTIONAL_RATE_LIMITS as provider -> messages per second (0: unlimited)."""
    rates = get_setting("RATE_LIMITS") or {}
    if not isinstance(rates, dict):
        raise ImproperlyConfigured(
            "TRANSACTIONAL_RATE_LIMITS must be a dict of provider name -> messages per second "
            "(the environment variable of that name is parsed into one: ses=14/s,mailgun=100/s)."
        )
    for name, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, Real) or rate < 0 or rate != rate:
            raise ImproperlyConfigured(
                f"TRANSACTIONAL_RATE_LIMITS[{name!r}] is {rate!r}; give messages per second "
                "as a positive number (0 for no limit)."
            )
    return {name: float(rate) for name, rate in rates.items()}


def rate_for(provider: str) -> float | None:
    """Return the messages per second ``provider`` is held to, or None for no limit."""
    rates = configured_rates()
    if provider in rates:
        return rates[provider] or None
    if provider == "ses":
        return ses_account_rate()
    return None


def ses_account_rate() -> float | None:
    """Return the SES account's MaxSendRate, cached in the database."""
    now = timezone.now()
    state, _ = ProviderState.objects.get_or_create(provider="ses")
    refresh = timedelta(seconds=get_setting("ACCOUNT_RATE_REFRESH_SECONDS"))
    if not state.account_rate:
        refresh = timedelta(seconds=ACCOUNT_RATE_RETRY_SECONDS)
    checked = state.account_rate_checked_at
    if checked and now - checked < refresh:
        return state.account_rate
    rate = _read_ses_max_send_rate(known=state.account_rate)
    if rate is None and state.account_rate:
        rate = state.account_rate  # keep the last known rate through a failed lookup
    ProviderState.objects.filter(pk=state.pk).update(account_rate=rate, account_rate_checked_at=now)
    return rate


def _read_ses_max_send_rate(*, known: float | None = None) -> float | None:
    import boto3
    from anymail.utils import get_anymail_setting
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    session_params = get_anymail_setting("session_params", esp_name="Amazon SES", default={})
    client_params = dict(get_anymail_setting("client_params", esp_name="Amazon SES", default={}))
    if isinstance(client_params.get("config"), dict):
        client_params["config"] = Config(**client_params["config"])
    try:
        client = boto3.session.Session(**session_params).client("sesv2", **client_params)
        quota = client.get_account()["SendQuota"]
        rate = float(quota["MaxSendRate"])
    except (BotoCoreError, ClientError, KeyError, TypeError, ValueError) as error:
        then = f"keeping the last known {known:g}/s" if known else "sending to SES without a rate limit"
        logger.warning(
            "Could not read the Amazon SES account's MaxSendRate (%s: %s); %s. Set "
            "TRANSACTIONAL_RATE_LIMITS=ses=<n>/s, or allow ses:GetAccount.",
            type(error).__name__, error, then,
        )
        return None
    logger.info("Amazon SES account allows %.4g message(s) per second", rate)
    return rate if rate > 0 else None


class DatabaseClock:
    """Slots reserved with one UPDATE on the provider's ProviderState row."""

    def reserve(self, provider: str, count: int, interval: float, max_wait: float) -> tuple[bool, float]:
        """Take ``count`` slots unless the first is over ``max_wait`` away.

        Returns (taken, seconds until the first slot): refused, nothing is
        taken, so a saturated provider's queue of reservations stays short.
        """
        table = connection.ops.quote_name(ProviderState._meta.db_table)
        span = count * interval
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # The database server's clock, shared by every machine.
                now = "EXTRACT(EPOCH FROM clock_timestamp())::float8"
                cursor.execute(
                    f"WITH c AS (SELECT {now} AS now) "
                    f"UPDATE {table} SET next_slot = GREATEST(next_slot, c.now) + %s FROM c "
                    f"WHERE provider = %s AND next_slot - c.now <= %s "
                    f"RETURNING next_slot - %s - c.now",
                    [span, provider, max_wait, span],
                )
                if row := cursor.fetchone():
                    return True, max(0.0, row[0])
                cursor.execute(f"SELECT next_slot - {now} FROM {table} WHERE provider = %s", [provider])
                return False, cursor.fetchone()[0]
            now = time.time()  # SQLite: one machine, one clock
            cursor.execute(
                f"UPDATE {table} SET next_slot = MAX(next_slot, %s) + %s "
                f"WHERE provider = %s AND next_slot - %s <= %s RETURNING next_slot",
                [now, span, provider, now, max_wait],
            )
            if row := cursor.fetchone():
                return True, max(0.0, row[0] - span - now)
            cursor.execute(f"SELECT next_slot FROM {table} WHERE provider = %s", [provider])
            return False, cursor.fetchone()[0] - now

    def prepare(self, provider: str) -> None:
        ProviderState.objects.get_or_create(provider=provider)


#: KEYS[1]: the clock; ARGV: span (s), max wait (s), lifetime (ms). Returns {taken, wait as text}.
_REDIS_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
if start - now > tonumber(ARGV[2]) then
  return {0, string.format('%.6f', start - now)}
end
redis.call('SET', KEYS[1], string.format('%.6f', start + tonumber(ARGV[1])), 'PX', ARGV[3])
return {1, string.format('%.6f', start - now)}
"""


class RedisClock:
    """Slots reserved by a Lua script on Redis's clock (RQ's Redis)."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._script = self._redis.register_script(_REDIS_RESERVE)

    def reserve(self, provider: str, count: int, interval: float, max_wait: float) -> tuple[bool, float]:
        span = count * interval
        # The key outlives every slot it hands out by a minute.
        lifetime_ms = int((span + max_wait + 60) * 1000)
        key = f"transactional:rate:{provider}"
        taken, wait = self._script(keys=[key], args=[span, max_wait, lifetime_ms])
        return bool(taken), max(0.0, float(wait))

    def prepare(self, provider: str) -> None:
        pass


def clock() -> "DatabaseClock | RedisClock":
    """Return the store the limits are kept in (TRANSACTIONAL_RATE_LIMIT_STORE)."""
    store = get_setting("RATE_LIMIT_STORE")
    queues = getattr(settings, "RQ_QUEUES", {})
    if store is None:
        store = "redis" if "RQBackend" in settings.TASKS["default"]["BACKEND"] else "database"
    if store == "database":
        return DatabaseClock()
    if store == "redis":
        url = queues.get("default", {}).get("URL")
        if not url:
            raise ImproperlyConfigured(
                "TRANSACTIONAL_RATE_LIMIT_STORE is redis but RQ_QUEUES['default']['URL'] is not "
                "set (TASKS_BACKEND=rq and REDIS_URL set it)."
            )
        return RedisClock(url)
    raise ImproperlyConfigured(
        f"TRANSACTIONAL_RATE_LIMIT_STORE={store!r} is not supported; use 'database' or 'redis'."
    )


@dataclass
class Slots:
    """Start times (``time.monotonic()``) of reserved calls, or how long until there are any."""

    starts: list[float]
    retry_in: float = 0.0


class Limiter:
    """Per delivery run: reserves send slots for each limited provider.

    A slot is taken only while the provider's queue of reservations is
    shorter than a quarter of TRANSACTIONAL_LEASE_SECONDS, so no claimed
    message waits for its slot until its lease runs out (and is sent twice),
    however many workers share a slow rate.
    """

    def __init__(self, providers: list[str]) -> None:
        self.rates = {name: rate for name in providers if (rate := rate_for(name))}
        self._clock = clock() if self.rates else None
        self._refused_until: dict[str, float] = {}
        for name in self.rates:
            self._clock.prepare(name)
        self.max_wait = get_setting("LEASE_SECONDS") / 4

    def limited(self, provider: str) -> bool:
        return provider in self.rates

    def group_size(self, provider: str, wanted: int) -> int:
        """Return how many calls to reserve at once (their slots fit in the wait bound)."""
        rate = self.rates.get(provider)
        return wanted if rate is None else max(1, min(wanted, int(rate * SAFETY * self.max_wait)))

    def reserve(self, provider: str, count: int) -> Slots:
        """Reserve ``count`` calls to ``provider``; all or none."""
        if provider not in self.rates or count <= 0:
            return Slots([time.monotonic()] * count)
        interval = 1.0 / (self.rates[provider] * SAFETY)
        taken, wait = self._clock.reserve(provider, count, interval, self.max_wait)
        # The wait is counted from the store's clock as it took the slots; the
        # local clock is read once the answer is back, so a slow round trip
        # (Redis loading its script, a busy database) can only make the slots
        # later, never closer together than the interval.
        now = time.monotonic()
        if not taken:
            retry_in = max(1.0, wait - self.max_wait / 2)
            self._refused_until[provider] = now + retry_in
            return Slots([], retry_in)
        first = now + wait
        return Slots([first + i * interval for i in range(count)])

    def saturated(self, provider: str | None) -> float:
        """Return seconds until ``provider`` takes reservations again (0: it does now)."""
        if provider is None:
            return 0.0
        return max(0.0, self._refused_until.get(provider, 0.0) - time.monotonic())

    def claim_size(self, batch_size: int, provider: str | None) -> int:
        """Claim no more than ~10 s of sending at ``provider``'s rate (leases stay short)."""
        rate = self.rates.get(provider) if provider else None
        return batch_size if rate is None else max(1, min(batch_size, int(rate * 10)))
