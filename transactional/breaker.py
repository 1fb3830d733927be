"""Circuit breakers: stop calling a provider that keeps failing, for every worker.

Each provider's breaker is a ``ProviderState`` row, so every worker process
on every machine sees the same state:

- closed: mail goes through it. TRANSACTIONAL_BREAKER_FAILURES transient
  failures within TRANSACTIONAL_BREAKER_WINDOW_SECONDS open it.
- open: skipped (mail goes to the next provider) until
  TRANSACTIONAL_BREAKER_COOLDOWN_SECONDS have passed.
- half-open: one worker won the right to send one probe message through it;
  success (or a permanent error, which proves the provider answers) closes
  the breaker, a transient failure opens it for another cooldown.

A delivery run holds a ``Breakers`` and writes to the rows only when
something changes: a run of successes on closed breakers writes nothing.
"""

import logging
from collections import Counter
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from .conf import get_setting
from .mailers import email_setting
from .models import ProviderState

logger = logging.getLogger(__name__)

State = ProviderState.State


class Breakers:
    """The providers' breakers as one delivery run sees and updates them."""

    def __init__(self, providers: list[str]) -> None:
        self.order = list(providers)
        self._states: dict[str, ProviderState] = {}
        #: Providers whose probe this run won: False until the probe call is sent.
        self._probes: dict[str, bool] = {}
        self._failures: Counter[str] = Counter()
        self._successes: Counter[str] = Counter()
        self._errors: dict[str, str] = {}
        existing = {s.provider for s in ProviderState.objects.filter(provider__in=self.order)}
        ProviderState.objects.bulk_create(
            [ProviderState(provider=p) for p in self.order if p not in existing], ignore_conflicts=True
        )
        self.refresh()

    def refresh(self) -> None:
        self._states = {s.provider: s for s in ProviderState.objects.filter(provider__in=self.order)}

    def state(self, provider: str) -> str:
        return self._states[provider].state

    def usable(self, provider: str) -> bool:
        """Return True if a call may go to ``provider`` now (winning its probe if due)."""
        row = self._states[provider]
        if row.state == State.CLOSED:
            return True
        if provider in self._probes:
            return not self._probes[provider]  # ours, and not sent yet
        if row.retry_at is not None and row.retry_at <= timezone.now():
            return self._win_probe(provider)
        return False

    def choose(self, tried: list[str]) -> str | None:
        """Return the next provider to call for a message that already tried ``tried``."""
        for provider in self.order:
            if provider not in tried and self.usable(provider):
                if provider in self._probes:
                    self._probes[provider] = True  # the one probe call is on its way
                return provider
        return None

    def probing(self, provider: str | None) -> bool:
        """Return True if ``provider`` is usable only for this run's one probe call."""
        return provider is not None and self._states[provider].state != State.CLOSED

    def first_usable(self) -> str | None:
        """Return the provider a new message would go to, without taking a probe call."""
        return next((p for p in self.order if self.usable(p)), None)

    def any_usable(self) -> bool:
        return self.first_usable() is not None

    def not_called(self, provider: str) -> None:
        """A call chosen for ``provider`` did not happen: if it was the probe, it is still to send."""
        if self._probes.get(provider) is True:
            self._probes[provider] = False

    def failed(self, provider: str, error: str) -> None:
        """Count a transient failure of ``provider`` (written by ``flush()``)."""
        self._failures[provider] += 1
        self._errors[provider] = error[:2000]

    def answered(self, provider: str) -> None:
        """Count a call ``provider`` answered: a success, or a permanent error."""
        self._successes[provider] += 1

    def reopens_at(self) -> datetime | None:
        """Return when the first open breaker may be probed."""
        times = [s.retry_at for s in self._states.values() if s.state != State.CLOSED and s.retry_at]
        return min(times) if times else None

    def unavailable_reason(self) -> str:
        """Say why no provider may be called, with each one's last error."""
        parts = [f"{p} ({self._states[p].last_error or self._states[p].state})" for p in self.order]
        return "Every provider's circuit breaker is open: " + "; ".join(parts)

    def flush(self) -> list[str]:
        """Write this run's outcomes into the shared breakers; return the ones that closed."""
        changed = [p for p in self.order if self._failures[p] or (
            self._successes[p] and (self._states[p].state != State.CLOSED or p in self._probes)
        )]
        before = {p: self._states[p].state for p in changed}
        for provider in changed:
            self._apply(provider, self._failures.pop(provider, 0), self._successes.pop(provider, 0))
        self._successes.clear()  # successes on closed breakers change nothing
        if changed:
            self.refresh()
        return [p for p in changed if before[p] != State.CLOSED and self._states[p].state == State.CLOSED]

    def _apply(self, provider: str, failures: int, successes: int) -> None:
        now = timezone.now()
        probing = self._probes.get(provider) is True
        with transaction.atomic():
            row = ProviderState.objects.select_for_update().get(provider=provider)
            if failures:
                row.last_error = self._errors.get(provider, "")
            if row.state == State.HALF_OPEN and probing:
                self._probes.pop(provider)
                if failures:
                    self._open(row, now, "its probe failed")
                else:
                    row.state, row.failures, row.window_started_at = State.CLOSED, 0, None
                    row.opened_at = row.retry_at = None
                    logger.warning("Circuit breaker of %s closed: the probe went through", provider)
            elif row.state == State.CLOSED and failures:
                window = timedelta(seconds=get_setting("BREAKER_WINDOW_SECONDS"))
                if row.window_started_at is None or row.window_started_at < now - window:
                    row.failures, row.window_started_at = 0, now
                row.failures += failures
                if row.failures >= get_setting("BREAKER_FAILURES"):
                    self._open(row, now, f"{row.failures} transient failure(s) since "
                               f"{row.window_started_at:%H:%M:%S}")
            # Results of calls that started before another worker changed the
            # state (open, or its own probe) do not move it.
            row.save()

    def _open(self, row: ProviderState, now: datetime, why: str) -> None:
        row.state, row.opened_at = State.OPEN, now
        row.retry_at = now + timedelta(seconds=get_setting("BREAKER_COOLDOWN_SECONDS"))
        logger.error("Circuit breaker of %s opened (%s): %s; next probe at %s",
                     row.provider, why, row.last_error, row.retry_at.isoformat())

    def _win_probe(self, provider: str) -> bool:
        now = timezone.now()
        # A probe whose worker died frees itself after a cooldown and a call's timeout.
        timeout = email_setting("EMAIL_TIMEOUT") or 30
        lease = timedelta(seconds=get_setting("BREAKER_COOLDOWN_SECONDS") + timeout)
        won = ProviderState.objects.filter(
            provider=provider, state__in=[State.OPEN, State.HALF_OPEN], retry_at__lte=now
        ).update(state=State.HALF_OPEN, retry_at=now + lease, updated_at=now)
        if won:
            self._probes[provider] = False
            logger.info("Circuit breaker of %s half-open: this worker sends one probe", provider)
        self.refresh()
        return bool(won)


def reset(provider: str) -> None:
    """Close ``provider``'s breaker by hand (the admin's action)."""
    ProviderState.objects.filter(provider=provider).update(
        state=State.CLOSED, failures=0, window_started_at=None, opened_at=None, retry_at=None,
        updated_at=timezone.now(),
    )
