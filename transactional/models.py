"""The outbox: every message, its recipients and attempts, and the suppression list."""

import hashlib
from collections.abc import Iterable
from datetime import datetime

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone


#: The stream every message is on unless it says otherwise: mail a person
#: needs (receipts, password resets), never given a one-click unsubscribe.
DEFAULT_STREAM = "transactional"


def normalize_address(address: str) -> str:
    """Return the form addresses are compared and stored in.

    Trimmed, lower-case, and an internationalized domain in Unicode: Amazon
    SES reports ``ann@xn--bcher-kva.example`` for mail sent to
    ``ann@bücher.example``.
    """
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if at and "xn--" in domain:
        address = f"{local}@{'.'.join(map(_label_in_unicode, domain.split('.')))}"
    return address


def _label_in_unicode(label: str) -> str:
    if not label.startswith("xn--"):
        return label
    try:
        decoded = label[4:].encode("ascii").decode("punycode").lower()
        decoded.encode()  # no lone surrogates
    except UnicodeError:
        return label  # not valid punycode: compared as it is
    return decoded if decoded.isprintable() else label


def address_hash(address: str) -> str:
    """Return the SHA-256 of the normalized address (kept after `forget`)."""
    return hashlib.sha256(normalize_address(address).encode()).hexdigest()


class MessageQuerySet(models.QuerySet):
    def due(self, now: datetime | None = None) -> "MessageQuerySet":
        """Messages a worker may claim now: higher priority first, then oldest due."""
        now = now or timezone.now()
        return self.filter(
            status__in=Message.WAITING, next_attempt_at__lte=now
        ).order_by("priority", "next_attempt_at", "pk")

    def queued(self) -> "MessageQuerySet":
        return self.filter(status=Message.Status.QUEUED)

    def failed(self) -> "MessageQuerySet":
        return self.filter(status=Message.Status.FAILED)

    def stuck(self, claimed_before: datetime) -> "MessageQuerySet":
        """Messages claimed before ``claimed_before`` and still not finished."""
        return self.filter(status=Message.Status.SENDING, claimed_at__lt=claimed_before)


class Message(models.Model):
    """One outbound email as the caller built it, and where it is now."""

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        """Stored, waiting for a worker (or for ``send_at``)."""
        SENDING = "sending", "sending"
        """Claimed by a worker that is talking to the provider."""
        RETRYING = "retrying", "retrying"
        """A transient failure; waiting for ``next_attempt_at``."""
        SENT = "sent", "sent"
        """The provider accepted it."""
        FAILED = "failed", "failed"
        """A permanent failure, or out of attempts; see ``last_error``."""
        SUPPRESSED = "suppressed", "suppressed"
        """Every recipient is on the suppression list; never sent."""
        CANCELLED = "cancelled", "cancelled"
        """Cancelled by an operator before it was sent."""
        BLOCKED = "blocked", "blocked"
        """Every recipient is outside TRANSACTIONAL_ALLOWED_RECIPIENTS (staging); never sent."""

    class Priority(models.IntegerChoices):
        """Claim order: a password reset goes out before a queue of newsletters."""

        HIGH = 0, "high"
        NORMAL = 1, "normal"
        LOW = 2, "low"

    #: Statuses a worker may claim from.
    WAITING = (Status.QUEUED, Status.RETRYING)
    #: Statuses nothing will change any more.
    FINISHED = (Status.SENT, Status.FAILED, Status.SUPPRESSED, Status.CANCELLED, Status.BLOCKED)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # db_default too: web processes of the release before keep storing mail
    # while the migration has run and they have not restarted yet.
    priority = models.PositiveSmallIntegerField(
        choices=Priority.choices, default=Priority.NORMAL, db_default=Priority.NORMAL
    )
    stream = models.CharField(
        max_length=64, default=DEFAULT_STREAM, db_default=DEFAULT_STREAM,
        help_text="transactional, or a configured stream (TRANSACTIONAL_STREAMS).",
    )
    provider = models.CharField(
        max_length=32, blank=True, help_text="The provider that sent it (or was tried last)."
    )
    from_email = models.TextField()
    subject = models.TextField(blank=True)
    message_id = models.CharField(
        "Message-ID", max_length=255, db_index=True, help_text="Fixed at enqueue, reused by every attempt."
    )
    payload = models.JSONField(null=True, help_text="The message as built; emptied by `outbox purge`.")
    size = models.PositiveBigIntegerField(
        default=0, help_text="Encoded size in bytes: an upper bound, exact near the size limit."
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    send_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    bypass_suppression = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)  # delivery stats
    purged_at = models.DateTimeField(null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(
                fields=["priority", "next_attempt_at", "id"],
                condition=Q(status__in=["queued", "retrying"]),
                name="message_due_priority_idx",
            ),
            models.Index(
                fields=["claimed_at"], condition=Q(status="sending"), name="message_sending_idx"
            ),
            models.Index(fields=["status", "created_at"], name="message_status_created_idx"),
            models.Index(fields=["stream", "sent_at"], name="message_stream_sent_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.subject[:60]}"


class Recipient(models.Model):
    """One address of a message, with what happened to it."""

    class Kind(models.TextChoices):
        TO = "to", "to"
        CC = "cc", "cc"
        BCC = "bcc", "bcc"

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        SENT = "sent", "sent"
        DEFERRED = "deferred", "deferred"
        DELIVERED = "delivered", "delivered"
        OPENED = "opened", "opened"
        CLICKED = "clicked", "clicked"
        BOUNCED = "bounced", "bounced"
        COMPLAINED = "complained", "complained"
        UNSUBSCRIBED = "unsubscribed", "unsubscribed"
        REJECTED = "rejected", "rejected"
        FAILED = "failed", "failed"
        SUPPRESSED = "suppressed", "suppressed"
        REDIRECTED = "redirected", "redirected (staging)"
        BLOCKED = "blocked", "blocked (staging)"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    address = models.CharField(max_length=320, db_index=True, help_text="Normalized address.")
    kind = models.CharField(max_length=3, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    esp_message_id = models.CharField("ESP message id", max_length=255, blank=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.address}"


class Attempt(models.Model):
    """One provider call for a message.

    ``number`` is the delivery attempt it belongs to: a transient failure that
    fails over to the next provider adds a row with the same number.
    """

    class Outcome(models.TextChoices):
        SENDING = "sending", "in progress"
        SENT = "sent", "sent"
        RETRY = "retry", "transient failure, will retry"
        FAILOVER = "failover", "transient failure, tried the next provider"
        FAILED = "failed", "permanent failure"
        SUPPRESSED = "suppressed", "all recipients suppressed"
        ABANDONED = "abandoned", "lease expired (worker died?)"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    provider = models.CharField(max_length=32)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SENDING)
    error_type = models.CharField(max_length=128, blank=True)
    error = models.TextField(blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["message", "number"]

    def __str__(self) -> str:
        return f"#{self.message_id} attempt {self.number}: {self.outcome}"


class Event(models.Model):
    """One ESP tracking event for one address, as anymail normalized it."""

    class ESP(models.TextChoices):
        MAILGUN = "mailgun", "Mailgun"
        SENDGRID = "sendgrid", "SendGrid"
        AMAZON_SES = "amazon_ses", "Amazon SES"

    esp = models.CharField("ESP", max_length=16, choices=ESP.choices)
    event_id = models.CharField(max_length=255, help_text="The ESP's id, or a hash of the raw event.")
    address = models.CharField(max_length=320, blank=True, help_text="Normalized recipient address.")
    event_type = models.CharField(max_length=32, help_text="anymail's normalized type.")
    # Indexed only while unlinked (event_unlinked_idx): linked events are
    # found through their message.
    esp_message_id = models.CharField("ESP message id", max_length=255, blank=True)
    timestamp = models.DateTimeField(null=True, blank=True, help_text="When the ESP says it happened.")
    # Indexed only once linked (event_message_idx): a full index on it would
    # tempt SQLite into reading every unlinked event to find a few.
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="events", db_index=False
    )
    recipient = models.ForeignKey(
        Recipient, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    reject_reason = models.CharField(max_length=32, blank=True)
    description = models.TextField(blank=True)
    mta_response = models.TextField(blank=True)
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    user_agent = models.TextField(blank=True)
    click_url = models.TextField(blank=True)
    raw = models.JSONField(
        null=True, blank=True, encoder=DjangoJSONEncoder, help_text="The ESP's payload for this event."
    )
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-timestamp", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["esp", "event_id", "address"], name="event_unique_per_address"),
        ]
        indexes = [
            models.Index(fields=["address"], name="event_address_idx"),
            models.Index(fields=["event_type", "timestamp"], name="event_type_time_idx"),
            models.Index(
                fields=["esp_message_id"], condition=Q(message__isnull=True), name="event_unlinked_idx"
            ),
            models.Index(fields=["message"], condition=Q(message__isnull=False), name="event_message_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.esp} {self.event_type} {self.address}"


class SuppressionQuerySet(models.QuerySet):
    def for_addresses(self, addresses: Iterable[str]) -> "SuppressionQuerySet":
        """Rows listing any of ``addresses``: by address, or by hash once forgotten."""
        wanted = {normalize_address(a) for a in addresses}
        hashes = {address_hash(a) for a in wanted}
        return self.filter(Q(address__in=wanted) | Q(address_hash__in=hashes))

    def for_stream(self, stream: str) -> "SuppressionQuerySet":
        """Rows that stop mail on ``stream``: those for every stream, and its own."""
        return self.filter(stream__in=[Suppression.EVERY_STREAM, stream])


class Suppression(models.Model):
    """An address we never mail again (unless a message bypasses the list)."""

    class Reason(models.TextChoices):
        BOUNCED = "bounced", "hard bounce"
        COMPLAINED = "complained", "spam complaint"
        UNSUBSCRIBED = "unsubscribed", "unsubscribed"
        REJECTED = "rejected", "rejected as invalid"
        MANUAL = "manual", "added by hand"

    #: ``stream`` of a row that stops every stream (bounces, complaints, ...).
    EVERY_STREAM = ""

    address = models.CharField(max_length=320)
    address_hash = models.CharField(max_length=64, db_index=True, editable=False, default="")
    stream = models.CharField(
        max_length=64, blank=True, default="", db_default="",
        help_text="Empty: every stream (a bounce, a complaint). A stream's name: only that "
        "stream (an unsubscribe from it).",
    )
    reason = models.CharField(max_length=16, choices=Reason.choices, default=Reason.MANUAL)
    source = models.CharField(max_length=64, blank=True, help_text='Where it came from: "admin", "import", an ESP.')
    note = models.TextField(blank=True)
    event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="suppressions",
        help_text="The ESP event that caused it, if any.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["address", "stream"], name="suppression_unique_per_stream",
                violation_error_message="This address is on the suppression list for this stream already.",
            ),
        ]

    def save(self, *args, **kwargs) -> None:
        self.address = normalize_address(self.address)
        if not self.address_hash:
            self.address_hash = address_hash(self.address)
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return f"{self.address} ({self.stream})" if self.stream else self.address


class OutboxState(models.Model):
    """One row of coordination between web processes and workers."""

    kick_pending = models.BooleanField(
        default=False, help_text="A delivery run is enqueued and has not started yet."
    )
    sweep_due_at = models.DateTimeField(null=True, blank=True)
    wake_at = models.DateTimeField(
        null=True, blank=True,
        help_text="A delivery run is booked for then: a breaker's probe, or a booked-up rate limit.",
    )
    failure_notice_at = models.DateTimeField(null=True, blank=True)
    failures_since_notice = models.PositiveIntegerField(default=0)
    purge_due_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the sweep purges old data next (TRANSACTIONAL_RETENTION).",
    )

    class Meta:
        verbose_name = "outbox state"

    @classmethod
    def get(cls) -> "OutboxState":
        state, _ = cls.objects.get_or_create(pk=1)
        return state


class ProviderState(models.Model):
    """One provider's circuit breaker and rate-limit clock, shared by every worker."""

    class State(models.TextChoices):
        CLOSED = "closed", "closed: sending"
        """Healthy: mail goes through it."""
        OPEN = "open", "open: skipped"
        """Too many transient failures: skipped until ``retry_at``."""
        HALF_OPEN = "half_open", "half-open: one probe"
        """One worker is sending one message to see whether it recovered."""

    provider = models.CharField(max_length=32, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED)
    failures = models.PositiveIntegerField(default=0, help_text="Transient failures in the current window.")
    window_started_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(
        null=True, blank=True, help_text="Open: when a probe may go. Half-open: when the probe's lease ends."
    )
    last_error = models.TextField(blank=True)
    # The rate limiter's clock: epoch seconds (database clock) of the next free slot.
    next_slot = models.FloatField(default=0.0)
    account_rate = models.FloatField(
        null=True, blank=True, help_text="Messages per second the provider account allows (SES MaxSendRate)."
    )
    account_rate_checked_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider"]
        verbose_name = "provider"

    def __str__(self) -> str:
        return f"{self.provider} ({self.state})"


class SyncCursor(models.Model):
    """How far `suppression sync` got in one ESP list, so that an interrupted run resumes."""

    provider = models.CharField(max_length=32, help_text="The provider's name in EMAIL_PROVIDERS.")
    list_name = models.CharField(max_length=32, help_text="The ESP's list: bounces, complaints, ...")
    position = models.TextField(
        blank=True, help_text="The next page: the ESP's token, URL or offset. Empty: the first page."
    )
    pages = models.PositiveIntegerField(default=0, help_text="Pages merged in this pass.")
    fetched = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    already_listed = models.PositiveIntegerField(default=0)
    skipped_invalid = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="Set once the last page is merged: the next sync starts over."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "list_name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "list_name"], name="sync_cursor_unique_per_list"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.list_name}"


class MetricCount(models.Model):
    """One slice of a counter that every process adds to; metrics report the sums.

    A counter is the sum of its rows with the same ``name`` and labels. Each
    UTC ``day`` has its own rows, so rates can be taken over recent days;
    ``shard`` spreads concurrent writers over several rows on PostgreSQL.
    ``metrics.counters.compact()`` folds the rows of past days into fewer.
    """

    name = models.CharField(max_length=32)
    provider = models.CharField(max_length=32, blank=True, default="")
    stream = models.CharField(max_length=64, blank=True, default="")
    esp = models.CharField("ESP", max_length=16, blank=True, default="")
    label = models.CharField(
        max_length=32, blank=True, default="", help_text="A message status, an event type, a bucket."
    )
    day = models.DateField(help_text="UTC day of the increments; 1970-01-01: every day before the window.")
    shard = models.PositiveSmallIntegerField(default=0)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["name", "provider", "stream", "esp", "label", "day", "shard"],
                name="metric_count_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.provider}{self.stream}{self.esp}{self.label} {self.day}: {self.value}"
