"""Handing stored messages to the provider: claim, send concurrently, record.

One delivery run (``deliver_due()``) claims batches of due messages and
sends each batch through a thread pool, one provider connection per thread,
so a single worker keeps TRANSACTIONAL_CONCURRENCY provider calls in flight.
Only the calling thread touches the database: threads build and send.
"""

import logging
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import getaddresses

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from . import events, mailers, metrics, notifications, retries, signals, staging
from .breaker import Breakers
from .conf import get_setting, provider_name, providers
from .exceptions import ProviderConfigurationError, ProvidersUnavailable
from .http_sessions import settle_environment
from .models import Attempt, Message, Recipient, normalize_address
from .ratelimit import LATE_SECONDS, Limiter
from .serialization import deserialize
from .suppression import suppressed_among

logger = logging.getLogger(__name__)

OUTBOX_BACKEND = "transactional.backends.EmailBackend"

#: anymail's per-recipient status -> ours.
ANYMAIL_RECIPIENT_STATUS = {
    "sent": Recipient.Status.SENT,
    "queued": Recipient.Status.SENT,
    "scheduled": Recipient.Status.SENT,
    "unknown": Recipient.Status.SENT,
    "rejected": Recipient.Status.REJECTED,
    "invalid": Recipient.Status.REJECTED,
    "failed": Recipient.Status.FAILED,
}


def require_no_loop() -> None:
    """Refuse a delivery backend that would put mail back into the outbox."""
    looping = [name for name, backend in providers().items() if backend == OUTBOX_BACKEND]
    if looping:
        raise ProviderConfigurationError(
            f"The delivery backend of {', '.join(looping)} (TRANSACTIONAL_DELIVERY_BACKEND or "
            f"TRANSACTIONAL_PROVIDERS) is {OUTBOX_BACKEND!r}, the outbox itself: "
            "mail would loop forever. Set EMAIL_BACKEND to the outbox and "
            "TRANSACTIONAL_DELIVERY_BACKEND to the backend that really sends "
            "(EMAIL_PROVIDER does this for you)."
        )


@dataclass
class Result:
    """What one provider call did (built in a sender thread)."""

    message_id: int
    claimed_at: datetime
    provider: str = ""
    error: BaseException | None = None
    #: The provider was called (False: an error of ours before the call, or a missed slot).
    called: bool = False
    #: Woke too late for its rate-limit slot: nothing sent, it needs a fresh slot.
    missed_slot: bool = False
    #: normalized address -> (our status, ESP message id)
    recipients: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Staging safety: original addresses redirected, or blocked (normalized).
    redirected: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@dataclass
class Claimed:
    """A claimed message and what to send it as (built in the calling thread)."""

    message: Message
    excluded: set[str]
    #: Providers already called for this attempt (failover order).
    tried: list[str] = field(default_factory=list)
    #: The transient failure that moved it on, recorded on its attempt row.
    last_error: "Result | None" = None
    #: Its attempt row still names the provider that failed (not yet moved on).
    move_attempt: bool = False
    #: The HTTP/SMTP status of that failure, as retries.classify() read it.
    last_status_code: int | None = None


#: Set while this thread runs deliver_due(), so an inline (immediate) task
#: backend does not start a nested run.
class _Running(threading.local):
    active = False


RUNNING = _Running()


def deliver_due(*, limit: int | None = None) -> int:
    """Deliver due messages (at most ``limit``); return how many were sent.

    Claims a batch whenever fewer than TRANSACTIONAL_CONCURRENCY calls are
    waiting, so the pool never idles between batches, and records results
    in groups as they complete. A transient failure moves the message to
    the next provider whose circuit breaker is closed; a rate-limited
    provider's calls wait for their slot in the sender threads. A run stops
    claiming after TRANSACTIONAL_RUN_SECONDS and kicks a fresh one if mail
    is still due, so one task never holds a worker (or a shutdown) for long.
    """
    require_no_loop()
    rules = staging.rules()  # a bad allow-list stops here, before anything is claimed
    from .tasks import kick, wake_at

    batch_size, concurrency = get_setting("BATCH_SIZE"), get_setting("CONCURRENCY")
    deadline = time.monotonic() + get_setting("RUN_SECONDS")
    backends = providers()
    breakers = Breakers(list(backends))
    limiter = Limiter(list(backends))
    senders = _Senders(backends, rules)
    unrecorded = _Unrecorded(batch_size)
    handled = 0
    claiming, pending = True, set()
    ready: deque[Claimed] = deque()
    RUNNING.active = True
    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="deliver") as pool:
            while claiming or pending or ready:
                if claiming and not ready and len(pending) < concurrency:
                    if not breakers.any_usable():
                        claiming = False  # nothing may be sent before a breaker's probe
                        if reopens := breakers.reopens_at():
                            wake_at(reopens)
                    elif booked := limiter.saturated(primary := breakers.first_usable()):
                        claiming = False  # its rate limit is booked up: claim when it is not
                        wake_at(timezone.now() + timedelta(seconds=booked))
                    else:
                        # Only a probe may go: one message, not a batch that would wait for it.
                        size = 1 if breakers.probing(primary) else limiter.claim_size(batch_size, primary)
                        size = size if limit is None else min(size, limit - handled)
                        batch = claim(size, provider=primary) if size > 0 else []
                        handled += len(batch)
                        ready.extend(_prepare(batch, rules))
                        if not batch:
                            claiming = False  # nothing more is due now
                        elif len(batch) == size:
                            kick()  # more may be due: let another worker help
                _submit(pool, senders, breakers, limiter, ready, pending, concurrency)
                if pending:
                    done, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
                    unrecorded.add(_judge([future.result() for future in done], breakers, ready))
                    if breakers.flush():
                        kick()  # a probe went through: mail that waited for it may go now
                unrecorded.record(idle=not pending)
                if claiming and time.monotonic() > deadline:
                    claiming = False
                    RUNNING.active = False
                    kick()  # more may be due: continue in a fresh run
    finally:
        RUNNING.active = False
        senders.close()
        unrecorded.record_rest()
    return unrecorded.sent


class _Unrecorded:
    """Finished calls waiting to be recorded, written in groups.

    One transaction per group costs the same for one result as for a
    hundred, so results wait for a full batch, or RECORD_SECONDS, or for
    the pool to go idle. The wait is short next to the lease: a worker that
    dies meanwhile leaves the messages ``sending``, and the sweep sends them
    again after the lease, as it would if it died during the call.
    """

    RECORD_SECONDS = 0.25

    def __init__(self, size: int) -> None:
        self.size = size
        self.results: list[Result] = []
        self.since = 0.0
        self.sent = 0

    def add(self, results: list[Result]) -> None:
        if results and not self.results:
            self.since = time.monotonic()
        self.results.extend(results)

    def record(self, *, idle: bool) -> None:
        """Record the group if it is full, old enough, or the pool is idle."""
        if self.results and (idle or len(self.results) >= self.size
                             or time.monotonic() - self.since >= self.RECORD_SECONDS):
            results, self.results = self.results, []
            self.sent += record_many(results)

    def record_rest(self) -> None:
        """At the end of a run, normal or not: record what is left, if the database lets us."""
        try:
            self.record(idle=True)
        except Exception:
            logger.exception("Could not record finished calls; the sweep returns their messages "
                             "to the queue after TRANSACTIONAL_LEASE_SECONDS")


def _submit(pool: ThreadPoolExecutor, senders: "_Senders", breakers: Breakers, limiter: Limiter,
            ready: deque[Claimed], pending: set, concurrency: int) -> None:
    """Hand ready messages to the pool, each to the provider it should try next.

    A message no provider may take now is recorded as waiting for the
    breakers; one whose provider's rate limit is booked up goes back.
    """
    calls: dict[str, list[Claimed]] = {}
    unavailable = []
    while ready and len(pending) + sum(map(len, calls.values())) < concurrency:
        item = ready.popleft()
        provider = breakers.choose(item.tried)
        if provider is None:
            unavailable.append(item)
        else:
            calls.setdefault(provider, []).append(item)
    for provider, items in calls.items():
        size = limiter.group_size(provider, len(items))
        for start in range(0, len(items), size):
            group = items[start:start + size]
            slots = limiter.reserve(provider, len(group))
            if not slots.starts:
                breakers.not_called(provider)
                _release(items[start:], slots.retry_in)
                break
            if failovers := [item for item in group if item.move_attempt]:
                _fail_over(failovers, provider)  # their attempt rows move to this provider
            limited = limiter.limited(provider)
            for item, slot in zip(group, slots.starts):
                item.tried.append(provider)
                pending.add(pool.submit(senders.send, item, provider, slot if limited else None))
    if unavailable:
        error = ProvidersUnavailable(breakers.unavailable_reason(), retry_at=breakers.reopens_at())
        # A message that failed over to nobody keeps the failure it had.
        record_many([
            i.last_error or Result(i.message.pk, i.message.claimed_at, provider_name(), error)
            for i in unavailable
        ])


def _judge(results: list[tuple[Result, Claimed]], breakers: Breakers, ready: deque[Claimed]) -> list[Result]:
    """Count each call on its provider's breaker; fail over transient failures.

    Returns the results to record: successes, permanent failures, and
    transient ones with no provider left to try.
    """
    finished = []
    for result, item in results:
        if not result.called:
            breakers.not_called(result.provider)  # a probe that did not go is still to go
        if result.missed_slot:
            item.tried.pop()  # not tried after all: it goes again, on a fresh slot
            ready.appendleft(item)
            continue
        if result.called and result.error is None:
            breakers.answered(result.provider)
        if not result.called or result.error is None:
            # Sent, nobody left to send to, or an error of ours before the
            # call (a broken stored message): nothing to count or fail over.
            finished.append(result)
            continue
        verdict = retries.classify(result.error)
        if not verdict.transient:
            breakers.answered(result.provider)
            finished.append(result)
            continue
        breakers.failed(result.provider, _error_text(result.error))
        if len(item.tried) < len(breakers.order):
            item.last_error, item.move_attempt = result, True  # recorded when it moves on
            item.last_status_code = verdict.status_code
            ready.appendleft(item)
        else:
            finished.append(result)
    return finished


def _release(items: list[Claimed], retry_in: float) -> None:
    """Give back messages whose provider's rate limit is booked up for now.

    A fresh message returns to the queue as if never claimed (no attempt
    used); one that failed over keeps its failure and is retried.
    """
    retry_at = timezone.now() + timedelta(seconds=retry_in)
    fresh = [item.message.pk for item in items if not item.tried]
    if fresh:
        with transaction.atomic():
            Attempt.objects.filter(message_id__in=fresh, outcome=Attempt.Outcome.SENDING).delete()
            Message.objects.filter(pk__in=fresh, status=Message.Status.SENDING).update(
                status=Message.Status.QUEUED, claimed_at=None, next_attempt_at=retry_at,
                attempts=F("attempts") - 1, updated_at=timezone.now(),
            )
        logger.info("Rate limit booked up: %d message(s) wait until %s", len(fresh), retry_at.isoformat())
        from .tasks import wake_at

        wake_at(retry_at)
    record_many([item.last_error for item in items if item.tried])


def _fail_over(items: list[Claimed], provider: str) -> None:
    """Close each message's attempt row on the provider that failed; open one on ``provider``."""
    now = timezone.now()
    with transaction.atomic():
        for item in items:
            failed = item.last_error
            Attempt.objects.filter(message_id=item.message.pk, outcome=Attempt.Outcome.SENDING).update(
                outcome=Attempt.Outcome.FAILOVER, finished_at=now, provider=failed.provider,
                error_type=type(failed.error).__name__, error=_error_text(failed.error),
                status_code=item.last_status_code,
            )
            logger.warning("Message %s: %s failed (%s); trying %s", item.message.pk,
                           failed.provider, _error_text(failed.error), provider)
        for item in items:
            item.move_attempt = False
        Attempt.objects.bulk_create(
            Attempt(message_id=i.message.pk, number=i.message.attempts, provider=provider, started_at=now)
            for i in items
        )


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


def claim(limit: int, *, provider: str | None = None) -> list[Message]:
    """Atomically move up to ``limit`` due messages to ``sending``; return them.

    Higher priority first. Each gets an attempt row on ``provider`` (the one
    it will most likely go to; a failover adds another row).
    """
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Message.objects.due(now)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []
        Message.objects.filter(pk__in=ids, status__in=Message.WAITING).update(
            status=Message.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1
        )
        messages = list(
            Message.objects.filter(pk__in=ids, status=Message.Status.SENDING, claimed_at=now)
            .prefetch_related("recipients")
            .order_by("priority", "next_attempt_at", "pk")
        )
        provider = provider or provider_name()
        Attempt.objects.bulk_create(
            Attempt(message=m, number=m.attempts, provider=provider, started_at=now) for m in messages
        )
    return messages


def _prepare(batch: list[Message], rules: "staging.Rules | None" = None) -> list[Claimed]:
    """Re-check the suppression list (a complaint may have come in since enqueue).

    Staging safety is decided here, at the last moment, so mail queued
    before it was switched on (or restored from a production dump) obeys it.
    """
    recipients_of = {message.pk: list(message.recipients.all()) for message in batch}  # prefetched
    by_stream: dict[str, set[str]] = {}
    for message in batch:
        if not message.bypass_suppression:
            by_stream.setdefault(message.stream, set()).update(r.address for r in recipients_of[message.pk])
    newly = {stream: suppressed_among(addresses, stream=stream) for stream, addresses in by_stream.items()}
    claimed = []
    for message in batch:
        recipients = recipients_of[message.pk]
        excluded = {r.address for r in recipients if r.status == Recipient.Status.SUPPRESSED}
        if not message.bypass_suppression:
            listed = newly.get(message.stream, set())
            fresh = [r for r in recipients if r.address in listed and r.address not in excluded]
            if fresh:
                moved = Recipient.objects.filter(pk__in=[r.pk for r in fresh])
                signals.announce_moving(moved, Recipient.Status.SUPPRESSED)
                moved.update(status=Recipient.Status.SUPPRESSED)
                excluded |= {r.address for r in fresh}
        claimed.append(Claimed(message, excluded))
    return claimed


class _Senders:
    """One open connection per provider and thread, closed at the end of the run."""

    def __init__(self, backends: dict[str, str], rules: "staging.Rules | None" = None) -> None:
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()
        self.backends = backends
        self.rules = rules

    def connection(self, provider: str):
        connections = self._local.__dict__.setdefault("connections", {})
        connection = connections.get(provider)
        if connection is None:
            connection = mailers.provider_connection(provider, self.backends[provider])
            connection.open()
            settle_environment(connection)
            connections[provider] = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def send(self, claimed: Claimed, provider: str, slot: float | None) -> tuple[Result, Claimed]:
        """Call ``provider`` for the message, at its rate-limit ``slot`` (``time.monotonic()``) if any."""
        message = claimed.message
        result = Result(message.pk, message.claimed_at, provider)
        try:
            email = _rebuild(message, claimed.excluded)
            if email is not None and self.rules is not None:
                outcome = staging.apply(email, self.rules)
                email, result.redirected, result.blocked = outcome.email, outcome.redirected, outcome.blocked
        except Exception as error:  # a stored message we cannot rebuild: recorded, retried
            result.error = error
            return result, claimed
        if email is None:
            return result, claimed  # nobody left to send to
        if slot is not None:
            if (delay := slot - time.monotonic()) > 0:
                time.sleep(delay)
            if time.monotonic() - slot > LATE_SECONDS:
                # A pause (GC, a busy CPU) made this call late: sent now it
                # would bunch up with the next slots' calls, over the limit.
                result.missed_slot = True
                return result, claimed
        result.called = True
        try:
            self.connection(provider).send_messages([email])
        except Exception as error:  # classified by retries.classify() when judged
            result.error = error
            self._local.__dict__.get("connections", {}).pop(provider, None)  # may be broken
            return result, claimed
        result.recipients = _recipient_results(email, message)
        return result, claimed

    def close(self) -> None:
        for open_connection in self._connections:
            try:
                open_connection.close()
            except Exception:  # closing a broken connection is best effort
                logger.debug("Error closing %s", type(open_connection).__name__, exc_info=True)


def _rebuild(message: Message, excluded: set[str]):
    email = deserialize(message.payload)
    # The outbox held the message until send_at; the provider sends it now.
    if hasattr(email, "send_at"):
        del email.send_at
    if excluded:
        for kind in ("to", "cc", "bcc"):
            kept = [a for a in getattr(email, kind) if _address(a) not in excluded]
            setattr(email, kind, kept)
    return email if email.recipients() else None


def _address(value: str) -> str:
    pairs = getaddresses([value])
    return normalize_address(pairs[0][1] if pairs else value)


def _recipient_results(email, message: Message) -> dict[str, tuple[str, str]]:
    status = getattr(email, "anymail_status", None)
    if status is None or not status.recipients:
        # Django's own backends: the Message-ID is the only id there is.
        return {_address(a): (Recipient.Status.SENT, message.message_id) for a in email.recipients()}
    return {
        normalize_address(address): (
            ANYMAIL_RECIPIENT_STATUS.get(recipient.status or "unknown", Recipient.Status.SENT),
            recipient.message_id or "",
        )
        for address, recipient in status.recipients.items()
    }


def record_many(results: list[Result]) -> int:
    """Store the outcomes of several provider calls; return how many were sent.

    Successes, the common case, are written together in one transaction;
    failures and suppressions one by one.
    """
    successes, others = [], []
    for result in results:
        (successes if result.error is None and result.recipients else others).append(result)
    return _record_successes(successes) + sum(record(result) for result in others)


def _record_successes(results: list[Result]) -> int:
    if not results:
        return 0
    now = timezone.now()
    claims = dict(
        Message.objects.filter(
            pk__in=[r.message_id for r in results], status=Message.Status.SENDING
        ).values_list("pk", "claimed_at")
    )
    live = []
    for result in results:
        if claims.get(result.message_id) == result.claimed_at:
            live.append(result)
        else:
            logger.warning("Message %s was re-claimed before its result was recorded", result.message_id)
    if not live:
        return 0
    by_provider: dict[str, list[int]] = {}
    for result in live:
        by_provider.setdefault(result.provider, []).append(result.message_id)
    ids = [r.message_id for r in live]
    by_message = {r.message_id: r for r in live}
    with transaction.atomic():
        for provider, provider_ids in by_provider.items():
            Message.objects.filter(pk__in=provider_ids, status=Message.Status.SENDING).update(
                status=Message.Status.SENT, sent_at=now, last_error="", next_attempt_at=None,
                claimed_at=None, provider=provider, updated_at=now,
            )
            Attempt.objects.filter(message_id__in=provider_ids, outcome=Attempt.Outcome.SENDING).update(
                outcome=Attempt.Outcome.SENT, finished_at=now, provider=provider
            )
        rows = list(Recipient.objects.filter(message_id__in=ids).only("pk", "message_id", "address", "status"))
        before = signals.statuses(rows)  # {} unless someone listens
        recipients = _apply_results(rows, by_message)
        _update_recipients(recipients, now)
        signals.announce_sent(live, recipients, before)
        events.link_pending([r for r in recipients if r.esp_message_id])  # webhooks that beat this commit
        metrics.count_sent(ids)
    for result in live:
        logger.info("Sent message %s via %s", result.message_id, result.provider)
    return len(live)


def _apply_results(rows: list[Recipient], by_message: dict[int, Result]) -> list[Recipient]:
    """Set each recipient's status and ESP id from its call; return the rows to write.

    A staging redirect target that is not a recipient yet gets a row, so its
    ESP events link to it.
    """
    changed, seen = [], set()
    for row in rows:
        result = by_message[row.message_id]
        seen.add((row.message_id, row.address))
        if row.address in result.recipients:
            row.status, row.esp_message_id = result.recipients[row.address]
        elif row.address in result.redirected:
            row.status, row.esp_message_id = Recipient.Status.REDIRECTED, ""
        elif row.address in result.blocked:
            row.status, row.esp_message_id = Recipient.Status.BLOCKED, ""
        else:
            continue
        changed.append(row)
    added = [
        Recipient(message_id=result.message_id, address=address, kind=Recipient.Kind.TO,
                  status=status, esp_message_id=esp_id)
        for result in by_message.values()
        for address, (status, esp_id) in result.recipients.items()
        if (result.message_id, address) not in seen
    ]
    return changed + Recipient.objects.bulk_create(added)


def _update_recipients(recipients: list[Recipient], now: datetime) -> None:
    """Write each recipient's status and ESP id with one executemany.

    ``bulk_update`` builds a CASE expression per row, which costs more CPU
    than the whole provider call at high rates.
    """
    table = connection.ops.quote_name(Recipient._meta.db_table)
    updated_at = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET status = %s, esp_message_id = %s, updated_at = %s WHERE id = %s",
            [(r.status, r.esp_message_id, updated_at, r.pk) for r in recipients],
        )


def record(result: Result) -> int:
    """Store the outcome of one provider call; return 1 if the message was sent."""
    if result.error is None and result.recipients:
        return _record_successes([result])
    now = timezone.now()
    claim_filter = {"pk": result.message_id, "status": Message.Status.SENDING, "claimed_at": result.claimed_at}
    message = Message.objects.filter(**claim_filter).first()
    if message is None:
        logger.warning("Message %s was re-claimed before its result was recorded", result.message_id)
        return 0
    with transaction.atomic():
        if result.error is None:
            _record_nobody_left(message, result, now)
        else:
            _record_failure(message, result.error, now, provider=result.provider)
    return 0


def _record_nobody_left(message: Message, result: Result, now: datetime) -> None:
    """Every recipient was suppressed, or blocked by staging safety: nothing was sent."""
    if result.blocked:
        blocked = Recipient.objects.filter(message=message, address__in=result.blocked)
        signals.announce_moving(blocked, Recipient.Status.BLOCKED)
        blocked.update(status=Recipient.Status.BLOCKED, updated_at=now)
        error = ("Every recipient is suppressed or outside TRANSACTIONAL_ALLOWED_RECIPIENTS "
                 f"(blocked: {', '.join(result.blocked)}).")
        _finish(message, Message.Status.BLOCKED, Attempt.Outcome.SUPPRESSED, now, error=error,
                provider=result.provider)
        logger.warning("Message %s not sent: %s", message.pk, error)
        return
    _finish(message, Message.Status.SUPPRESSED, Attempt.Outcome.SUPPRESSED, now,
            error="Every recipient is on the suppression list.", provider=result.provider)


def _verdict(error: BaseException) -> retries.Verdict:
    if isinstance(error, ProvidersUnavailable):
        wait = (error.retry_at - timezone.now()).total_seconds() if error.retry_at else None
        return retries.Verdict(transient=True, retry_after=max(wait or 0.0, 1.0))
    return retries.classify(error)


def _record_failure(message: Message, error: BaseException, now: datetime, *, provider: str = "") -> None:
    verdict = _verdict(error)
    text = _error_text(error)
    out_of_attempts = message.attempts >= get_setting("MAX_ATTEMPTS")
    too_old = message.created_at < now - timedelta(seconds=get_setting("MAX_AGE_SECONDS"))
    attempt = {"error_type": type(error).__name__, "status_code": verdict.status_code, "provider": provider}
    if verdict.transient and not out_of_attempts and not too_old:
        retry_at = retries.next_attempt_at(message.attempts, retry_after=verdict.retry_after)
        _finish(message, Message.Status.RETRYING, Attempt.Outcome.RETRY, now, error=text,
                next_attempt_at=retry_at, **attempt)
        logger.warning("Message %s attempt %s failed (%s); retrying at %s",
                       message.pk, message.attempts, text, retry_at.isoformat())
        from .tasks import kick_at

        kick_at(retry_at)
        return
    reason = "permanent error" if not verdict.transient else (
        f"gave up after {message.attempts} attempt(s)" if out_of_attempts else "too old to retry"
    )
    _finish(message, Message.Status.FAILED, Attempt.Outcome.FAILED, now, error=text, **attempt)
    signals.announce_failed(message, error, reason)  # reads the recipients before they change
    message.recipients.exclude(status=Recipient.Status.SUPPRESSED).update(
        status=Recipient.Status.FAILED, updated_at=now
    )
    logger.error("Message %s failed (%s): %s", message.pk, reason, text)
    transaction.on_commit(lambda: notifications.delivery_failed(message, reason=reason, error=text))


def _finish(message: Message, status: str, outcome: str, now: datetime, *, error: str = "",
            next_attempt_at: datetime | None = None, sent_at: datetime | None = None,
            error_type: str = "", status_code: int | None = None, provider: str = "") -> None:
    provider = provider or provider_name()
    fields = {"status": status, "last_error": error, "next_attempt_at": next_attempt_at,
              "claimed_at": None, "provider": provider, "updated_at": now}
    if sent_at:
        fields["sent_at"] = sent_at
    if Message.objects.filter(pk=message.pk, status=Message.Status.SENDING, claimed_at=message.claimed_at).update(**fields):
        metrics.count_messages(status, provider=provider, stream=message.stream)
    Attempt.objects.filter(message=message, number=message.attempts, outcome=Attempt.Outcome.SENDING).update(
        outcome=outcome, finished_at=now, error_type=error_type, error=error if outcome != "sent" else "",
        status_code=status_code, provider=provider,
    )


def sweep() -> dict[str, int]:
    """Return stuck messages to the queue and make sure due ones get a run."""
    now = timezone.now()
    lease = timedelta(seconds=get_setting("LEASE_SECONDS"))
    with transaction.atomic():
        stuck = list(Message.objects.stuck(now - lease).select_for_update(skip_locked=True)
                     .values_list("pk", flat=True))
        if stuck:
            Message.objects.filter(pk__in=stuck, status=Message.Status.SENDING).update(
                status=Message.Status.QUEUED, claimed_at=None, next_attempt_at=now, updated_at=now
            )
            Attempt.objects.filter(message_id__in=stuck, outcome=Attempt.Outcome.SENDING).update(
                outcome=Attempt.Outcome.ABANDONED, finished_at=now,
                error="Lease expired: the worker stopped before recording a result.",
            )
            logger.warning("Returned %d message(s) stuck in sending to the queue", len(stuck))
    linked = events.link_pending()
    due = Message.objects.due(now).count()
    if due:
        from .tasks import kick

        kick(force=True)
    _purge_if_due(now)
    return {"requeued": len(stuck), "due": due, "linked": linked}


def _purge_if_due(now: datetime) -> None:
    """Apply the retention periods if due (hourly, time-boxed; operations.purge_if_due)."""
    from .operations import purge_if_due

    try:
        purge_if_due(now=now)
    except Exception:
        # A bad TRANSACTIONAL_RETENTION or a database error must not stop the
        # sweep (stuck messages, its own rescheduling); nothing was removed
        # past what the log says, and a later sweep tries again.
        logger.exception("The sweep could not purge old data")
