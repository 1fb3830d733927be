"""What anymail's tracking views lack, shared by our three subclasses.

anymail authenticates a post and turns it into ``AnymailTrackingEvent``\\ s
(``AnymailCoreWebhookView.post``). ``HardenedTrackingMixin`` adds:

- 503 to every post while this deployment cannot verify them
  (``misconfiguration()``): the ESP retries once it is fixed;
- 400 (413 when too big), never 500, for a post anymail cannot parse, with
  one warning in our log and nothing recorded;
- the ``tracking`` signal for all events of a post sent inside one database
  transaction, so the 2xx goes out only after the receivers' writes commit.
  Authentication, parsing (which may fetch an SNS certificate or confirm a
  subscription) and our recorder's reads (``events.prepare()``) run before
  the transaction opens: on SQLite a transaction takes the write lock as it
  begins.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime
from typing import Any

from anymail.exceptions import (
    AnymailConfigurationError,
    AnymailError,
    AnymailWebhookValidationFailure,
)
from anymail.signals import AnymailTrackingEvent
from anymail.utils import get_anymail_setting
from django.conf import settings
from django.core.exceptions import (
    ImproperlyConfigured,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError

from .. import esps, events
from ..event_queries import write_transaction
from ..models import normalize_address

logger = logging.getLogger("transactional.webhooks")

#: What anymail's parsers raise on a payload of the wrong shape.
PARSE_ERRORS = (
    KeyError,
    IndexError,
    TypeError,
    ValueError,  # includes JSONDecodeError and UnicodeError
    AttributeError,
    OverflowError,  # an epoch timestamp out of datetime's range...
    OSError,  # ...or out of the C library's (EOVERFLOW)
    LookupError,  # a Content-Type charset that is no text encoding ("rot13")
    RecursionError,  # JSON nested deeper than Python reads or writes
    AnymailError,
)

#: Deepest nesting of lists and objects accepted in an event (ESPs send under 10).
MAX_DEPTH = 64

#: A ``\\u`` escape of a UTF-16 surrogate (D800-DFFF), lone or in a pair.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

# Event fields our recorder keys on, and the longest value the Event table takes.
_IDENTITY_FIELDS = {"event_id": 255, "message_id": 255, "recipient": 320}


def webhook_secrets() -> list[str]:
    """Return the basic-auth credentials anymail accepts (``ANYMAIL["WEBHOOK_SECRET"]``)."""
    secrets = get_anymail_setting("webhook_secret", default=[])
    return [secrets] if isinstance(secrets, str) and secrets else list(secrets or [])


class Malformed(Exception):
    """The post is not a payload this ESP sends: answer 400, record nothing."""


class Unavailable(Exception):
    """We cannot handle this post right now: answer 503 so the ESP retries."""


class HardenedTrackingMixin:
    """Put before one of anymail's tracking views; see the module docstring."""

    #: What to check when anymail cannot set the view up (named in the log).
    key_settings = "the ANYMAIL settings"
    #: Whether the post's body was read with ``read_json()`` and found plain.
    plain_body = False

    def __init__(self, **kwargs: Any) -> None:
        self.parsed_events: list[AnymailTrackingEvent] = []
        self.refusal = self.misconfiguration()
        if self.refusal:
            # Skip anymail's set-up: it would warn about (or fail on) the very
            # problem we refuse over, on every request.
            return
        try:
            super().__init__(**kwargs)
        except (ImproperlyConfigured, ValueError) as err:
            # A missing Mailgun key or an unreadable SendGrid key fails here.
            self.refusal = f"anymail cannot set up this webhook; check {self.key_settings}: {err}"

    def misconfiguration(self) -> str | None:
        """Return why this deployment must refuse posts for now, or None."""
        if not settings.DEBUG and not webhook_secrets():
            return (
                "ANYMAIL_WEBHOOK_SECRET is not set, so nothing proves a post comes "
                "from the ESP; webhooks are refused until it is set (see docs/webhooks.md)."
            )
        return None

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if self.refusal:
            logger.error("Refused a %s webhook (503): %s", self.esp_name, self.refusal)
            return _text("This webhook endpoint is not configured yet.", status=503)
        try:
            response = super().post(request, *args, **kwargs)
        except Unavailable as err:
            logger.error("Could not handle a %s webhook (503): %s", self.esp_name, err)
            return _text("Temporarily unavailable, please retry.", status=503)
        except RequestDataTooBig:
            logger.warning(
                "Rejected a %s webhook (413): body over DATA_UPLOAD_MAX_MEMORY_SIZE", self.esp_name
            )
            return _text("Request body too large.", status=413)
        except (Malformed, SuspiciousOperation, MultiPartParserError) as err:
            # AnymailWebhookValidationFailure is a SuspiciousOperation. Answered
            # here rather than by Django, whose django.security logger would
            # mail ADMINS once per bad post.
            logger.warning("Rejected a %s webhook (400): %s", self.esp_name, err)
            return _text(f"Bad webhook request: {err}", status=400)
        if self.parsed_events:
            try:
                self.dispatch_events(events.prepare(self.parsed_events, self.esp_name))
            except IntegrityError:
                # A message deleted between the recorder's reads and its
                # writes (outbox purge): once more, reading inside.
                self.dispatch_events(None)
        return response

    def dispatch_events(self, recording: events.Recording | None) -> None:
        """Send the tracking signal for every parsed event, in one transaction.

        Our recorder writes the whole post in bulk as the events.batch()
        block ends, still inside the transaction, from the ``recording``
        made before it opened (without one, it reads inside).
        """
        with write_transaction(), events.batch(recording):
            for event in self.parsed_events:
                self.signal.send(sender=type(self), event=event, esp_name=self.esp_name)

    def run_validators(self, request: HttpRequest) -> None:
        """Run anymail's checks (400 if they trip over the payload), then ours."""
        try:
            super().run_validators(request)
            self.check_request(request)
        except (AnymailWebhookValidationFailure, Malformed):
            raise
        except PARSE_ERRORS as err:
            raise Malformed(f"unreadable payload ({type(err).__name__})") from err

    def check_request(self, request: HttpRequest) -> None:
        """Raise Malformed or AnymailWebhookValidationFailure; runs after anymail's checks."""

    def parse_events(self, request: HttpRequest) -> list[AnymailTrackingEvent]:
        # anymail's post() sends the signal for what this returns, outside any
        # transaction; keep the events for our post() instead.
        self.parsed_events = self.parse_tracking_events(request)
        return []

    def parse_tracking_events(self, request: HttpRequest) -> list[AnymailTrackingEvent]:
        """Return anymail's events for the post; raise Malformed if it cannot parse them."""
        try:
            parsed = self.anymail_events(request)
            for event in parsed:
                check_event(event, plain=self.plain_body)
        except AnymailWebhookValidationFailure:
            raise  # anymail's own refusal, with its explanation
        except AnymailConfigurationError as err:
            # anymail's "inbound route pointed at the tracking URL" errors: the
            # ESP-side setup is wrong, not our deployment.
            logger.error(
                "%s posted a non-tracking payload to its tracking URL: %s", self.esp_name, err
            )
            raise Malformed("not a tracking event (inbound mail routed here?)") from err
        except PARSE_ERRORS as err:
            raise Malformed(f"unreadable payload ({type(err).__name__})") from err
        return parsed

    def anymail_events(self, request: HttpRequest) -> list[AnymailTrackingEvent]:
        """Return what anymail's ``parse_events()`` makes of the post."""
        return super().parse_events(request)


def read_json(body: bytes) -> tuple[Any, bool]:
    """Parse a JSON body; also return whether its text is plain.

    Plain text spells none of what ``check_event()`` otherwise looks for by
    writing each event out again: NaN or Infinity (or a number too big for a
    float), a NUL character or a lone UTF-16 surrogate. In a UTF-8 body
    that JSON reads, the last two can only be ``\\u`` escapes. A false alarm
    (a valid surrogate pair, an escaped backslash before ``u0000``) only
    means the slower check.
    """
    text = body.decode("utf-8")
    unusual: list[str] = []

    def constant(name: str) -> float:
        unusual.append(name)
        return float(name)  # what json itself makes of NaN and Infinity

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            unusual.append(literal)
        return value

    value = json.loads(text, parse_constant=constant, parse_float=number)
    plain = not unusual and "\\u0000" not in text and not _SURROGATE_ESCAPE.search(text)
    return value, plain


def check_event(event: AnymailTrackingEvent, *, plain: bool = False) -> None:
    """Raise TypeError/ValueError unless the event can be stored.

    Only what the recorder keys on must be right. Other fields of an odd
    type (metadata that is not an object, numbers as tags) are stored as well
    as they can be (events._build) rather than losing, say, a hard bounce.
    ``plain``: the event was parsed from a body ``read_json()`` found plain
    (anymail's esp_event, metadata and tags are parts of it).
    """
    for name, max_length in _IDENTITY_FIELDS.items():
        value = getattr(event, name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{name} is not a string")
        if len(value) > max_length:
            raise ValueError(f"{name} is longer than {max_length} characters")
    # Lower-casing may lengthen an address ("İ" becomes two characters).
    if event.recipient and (
        "@" not in event.recipient or len(normalize_address(event.recipient)) > 320
    ):
        raise ValueError("recipient is not an address of at most 320 characters")
    if event.timestamp is not None and not isinstance(event.timestamp, datetime):
        raise TypeError("timestamp is not a date")
    # Python's json reads what no ESP sends and the database refuses: NaN and
    # Infinity, NUL characters, lone UTF-16 surrogates, nesting deep enough
    # to exhaust the stack of whoever writes it out again. Every other text
    # field comes from esp_event (a legacy Mailgun form: all values of each;
    # Mailgun's event id is the signature's token, in esp_event too).
    payload = [esps.plain(event.esp_event), event.metadata, event.tags]
    if _depth(payload) > MAX_DEPTH:
        raise ValueError(f"payload nested more than {MAX_DEPTH} levels deep")
    if plain:
        return
    text = json.dumps(payload, allow_nan=False, ensure_ascii=False)
    if "\\u0000" in text:
        raise ValueError("payload holds NUL characters")
    text.encode()  # UnicodeEncodeError on a lone surrogate


def _depth(value: object) -> int:
    """Return how deep lists and objects nest in ``value`` (without recursing)."""
    depth, level = 0, [value] if isinstance(value, _CONTAINERS) else []
    while level:
        depth += 1
        level = [
            item
            for container in level
            for item in (container.values() if isinstance(container, dict) else container)
            if isinstance(item, _CONTAINERS)
        ]
    return depth


#: What ``_depth()`` looks into (a tuple: isinstance is slower with ``dict | list``).
_CONTAINERS = (dict, list, tuple)


def _text(body: str, *, status: int) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")
