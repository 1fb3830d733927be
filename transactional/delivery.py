"""Handing stored messages to the provider: claim, send concurrently, record.

One delivery run (``deliver_due()``) claims batches of due messages and
sends each batch through a thread pool, one provider connection per thread,
so a single worker keeps TRANSACTIONAL_CONCURRENCY provider calls in flight.
Only the calling thread touches the database: threads build and send.
"""

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import getaddresses

from django.core.mail import get_connection
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from . import events, notifications, retries
from .conf import delivery_backend, get_setting, provider_name
from .exceptions import ProviderConfigurationError
from .models import Attempt, Message, Recipient, normalize_address
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
    if delivery_backend() == OUTBOX_BACKEND:
        raise ProviderConfigurationError(
            f"TRANSACTIONAL_DELIVERY_BACKEND is {OUTBOX_BACKEND!r}, the outbox itself: "
            "mail would loop forever. Set EMAIL_BACKEND to the outbox and "
            "TRANSACTIONAL_DELIVERY_BACKEND to the backend that really sends "
            "(EMAIL_PROVIDER does this for you)."
        )


@dataclass
class Result:
    """What one provider call did (built in a sender thread)."""

    message_id: int
    claimed_at: datetime
    error: BaseException | None = None
    #: normalized address -> (our status, ESP message id)
    recipients: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Claimed:
    """A claimed message and what to send it as (built in the calling thread)."""

    message: Message
    excluded: set[str]


#: Set while this thread runs deliver_due(), so an inline (immediate) task
#: backend does not start a nested run.
class _Running(threading.local):
    active = False


RUNNING = _Running()


def deliver_due(*, limit: int | None = None) -> int:
    """Deliver due messages (at most ``limit``); return how many were sent.

    Claims a batch whenever fewer than TRANSACTIONAL_CONCURRENCY calls are
    waiting, so the pool never idles between batches, and records results
    in groups as they complete. A run stops claiming after
    TRANSACTIONAL_RUN_SECONDS and kicks a fresh one if mail is still due, so
    one task never holds a worker (or a shutdown) for long.
    """
    require_no_loop()
    from .tasks import kick

    batch_size, concurrency = get_setting("BATCH_SIZE"), get_setting("CONCURRENCY")
    deadline = time.monotonic() + get_setting("RUN_SECONDS")
    senders = _Senders()
    sent = handled = 0
    claiming, pending = True, set()
    RUNNING.active = True
    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="deliver") as pool:
            while claiming or pending:
                if claiming and len(pending) < concurrency:
                    size = batch_size if limit is None else min(batch_size, limit - handled)
                    batch = claim(size) if size > 0 else []
                    handled += len(batch)
                    pending |= {pool.submit(senders.send, item) for item in _prepare(batch)}
                    if not batch:
                        claiming = False  # nothing more is due now
                    elif len(batch) == size:
                        kick()  # more may be due: let another worker help
                if not pending:
                    continue
                done, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
                sent += record_many([future.result() for future in done])
                if claiming and time.monotonic() > deadline:
                    claiming = False
                    RUNNING.active = False
                    kick()  # more may be due: continue in a fresh run
    finally:
        RUNNING.active = False
        senders.close()
    return sent


def claim(limit: int) -> list[Message]:
    """Atomically move up to ``limit`` due messages to ``sending``; return them."""
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
            .order_by("next_attempt_at", "pk")
        )
        provider = provider_name()
        Attempt.objects.bulk_create(
            Attempt(message=m, number=m.attempts, provider=provider, started_at=now) for m in messages
        )
    return messages


def _prepare(batch: list[Message]) -> list[Claimed]:
    """Re-check the suppression list (a complaint may have come in since enqueue)."""
    addresses = {r.address for m in batch if not m.bypass_suppression for r in m.recipients.all()}
    newly = suppressed_among(addresses)
    claimed = []
    for message in batch:
        recipients = list(message.recipients.all())
        excluded = {r.address for r in recipients if r.status == Recipient.Status.SUPPRESSED}
        if not message.bypass_suppression:
            fresh = [r for r in recipients if r.address in newly and r.address not in excluded]
            if fresh:
                Recipient.objects.filter(pk__in=[r.pk for r in fresh]).update(
                    status=Recipient.Status.SUPPRESSED
                )
                excluded |= {r.address for r in fresh}
        claimed.append(Claimed(message, excluded))
    return claimed


class _Senders:
    """One open provider connection per thread, closed at the end of the run."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._connections: list = []
        self._lock = threading.Lock()
        self.backend = delivery_backend()

    def connection(self):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = get_connection(self.backend, fail_silently=False)
            connection.open()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def send(self, claimed: Claimed) -> Result:
        message = claimed.message
        result = Result(message.pk, message.claimed_at)
        try:
            email = _rebuild(message, claimed.excluded)
            if email is None:
                return result  # nobody left to send to
            self.connection().send_messages([email])
        except Exception as error:  # classified by retries.classify() when recorded
            result.error = error
            self._local.connection = None  # a failed connection may be broken
            return result
        result.recipients = _recipient_results(email, message)
        return result

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.close()
            except Exception:  # closing a broken connection is best effort
                logger.debug("Error closing %s connection", self.backend, exc_info=True)


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
    ids = [r.message_id for r in live]
    by_message = {r.message_id: r.recipients for r in live}
    with transaction.atomic():
        Message.objects.filter(pk__in=ids, status=Message.Status.SENDING).update(
            status=Message.Status.SENT, sent_at=now, last_error="", next_attempt_at=None,
            claimed_at=None, provider=provider_name(), updated_at=now,
        )
        Attempt.objects.filter(message_id__in=ids, outcome=Attempt.Outcome.SENDING).update(
            outcome=Attempt.Outcome.SENT, finished_at=now
        )
        recipients = [
            r for r in Recipient.objects.filter(message_id__in=ids).only("pk", "message_id", "address")
            if r.address in by_message[r.message_id]
        ]
        for recipient in recipients:
            recipient.status, recipient.esp_message_id = by_message[recipient.message_id][recipient.address]
        _update_recipients(recipients, now)
        events.link_pending(recipients)  # webhooks that beat this commit
    for message_id in ids:
        logger.info("Sent message %s via %s", message_id, provider_name())
    return len(live)


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
        if result.error is None and not result.recipients:
            _finish(message, Message.Status.SUPPRESSED, Attempt.Outcome.SUPPRESSED, now,
                    error="Every recipient is on the suppression list.")
            return 0
        _record_failure(message, result.error, now)
    return 0


def _record_failure(message: Message, error: BaseException, now: datetime) -> None:
    verdict = retries.classify(error)
    text = f"{type(error).__name__}: {error}".strip()
    out_of_attempts = message.attempts >= get_setting("MAX_ATTEMPTS")
    too_old = message.created_at < now - timedelta(seconds=get_setting("MAX_AGE_SECONDS"))
    attempt = {"error_type": type(error).__name__, "status_code": verdict.status_code}
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
    message.recipients.exclude(status=Recipient.Status.SUPPRESSED).update(
        status=Recipient.Status.FAILED, updated_at=now
    )
    logger.error("Message %s failed (%s): %s", message.pk, reason, text)
    transaction.on_commit(lambda: notifications.delivery_failed(message, reason=reason, error=text))


def _finish(message: Message, status: str, outcome: str, now: datetime, *, error: str = "",
            next_attempt_at: datetime | None = None, sent_at: datetime | None = None,
            error_type: str = "", status_code: int | None = None) -> None:
    fields = {"status": status, "last_error": error, "next_attempt_at": next_attempt_at,
              "claimed_at": None, "provider": provider_name(), "updated_at": now}
    if sent_at:
        fields["sent_at"] = sent_at
    Message.objects.filter(pk=message.pk, status=Message.Status.SENDING, claimed_at=message.claimed_at).update(**fields)
    Attempt.objects.filter(message=message, number=message.attempts).update(
        outcome=outcome, finished_at=now, error_type=error_type, error=error if outcome != "sent" else "",
        status_code=status_code,
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
    return {"requeued": len(stuck), "due": due, "linked": linked}
