"""What the ESP clients share: lists, entries and pages, errors, waits on 429, JSON over HTTP."""

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone

from ..exceptions import TransactionalError
from ..mailers import email_setting
from ..models import Suppression, normalize_address

logger = logging.getLogger(__name__)

#: A 429 is waited out this long at most (Retry-After, or a doubling backoff
#: without one), this many times in a row; then the run stops, resumable.
MAX_WAIT_SECONDS = 60.0
MAX_RETRIES = 5
#: A reply larger than this is refused unread: a page of 1000 entries is ~200 kB.
MAX_BODY_BYTES = 20 * 1024 * 1024
#: The ESP's words kept in a note, and in an error message.
NOTE_MAX_LENGTH = 500
WORDS_MAX_LENGTH = 200
#: An ESP date before this, or in the future, is ignored (the entry is dated now).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
ADDRESS_MAX_LENGTH = Suppression._meta.get_field("address").max_length

Sleep = Callable[[float], None]
T = TypeVar("T")


class SyncError(TransactionalError):
    """A sync or push stopped; the message says why and what to check.

    ``report`` is what the run did before it stopped (a ``SyncReport``).
    """

    report: Any = None


class Unavailable(SyncError):
    """A 5xx, a timeout, a network error, or still rate-limited: running again may work."""


class Malformed(SyncError):
    """A reply that is not what the ESP's API documents."""


class StaleCursor(SyncError):
    """The stored position is not one the ESP (or its settings) accepts now."""


class Throttled(Exception):
    """A 429 (or SES's TooManyRequestsException); ``retry_after``: seconds asked for."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class EspList:
    """One of an ESP's suppression lists, and what its entries are to us."""

    #: The ESP's name for it, as cursors and summaries show it.
    name: str
    #: Our reason for its entries (every stream: see docs/suppression-sync.md).
    reason: str
    #: What each note starts with: "Mailgun bounces".
    label: str


@dataclass(frozen=True)
class Entry:
    """One address on an ESP's list, as the ESP sent it (``valid_address`` checks it)."""

    address: Any
    detail: str = ""
    created_at: datetime | None = None
    #: Overrides the list's reason (SES says it per entry).
    reason: str | None = None


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    #: Where the next page is (the ESP's token, URL or offset); None after the last.
    next_position: str | None


# The ESP's values
# ------------------------------------------------------------------------------


def valid_address(value: Any) -> str | None:
    """Return the normalized address, or None if ``value`` is not one we can store."""
    if not isinstance(value, str) or len(value) > ADDRESS_MAX_LENGTH:
        return None
    if not value.strip().isprintable():  # NUL, control characters, line breaks
        return None
    address = normalize_address(value)
    try:
        validate_email(address)
    except ValidationError:
        return None
    return address if len(address) <= ADDRESS_MAX_LENGTH else None


def clean_text(value: Any, limit: int = NOTE_MAX_LENGTH) -> str:
    """Return an ESP's words fit for a note: text, on one line, printable, cut short."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(value)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def from_epoch(value: Any) -> datetime | None:
    """Read epoch seconds (SendGrid's ``created``); None if not a plausible date."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return plausible(datetime.fromtimestamp(value, tz=UTC))
    except (OverflowError, OSError, ValueError):
        return None


def from_text(value: Any) -> datetime | None:
    """Read an RFC 2822 date (Mailgun's ``created_at``) or ISO 8601; None if not plausible."""
    if not isinstance(value, str) or len(value) > 100:
        return None
    for parse in (parsedate_to_datetime, datetime.fromisoformat):
        try:
            return plausible(parse(value))
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
    return None


def plausible(moment: Any) -> datetime | None:
    """Return ``moment`` in UTC if it is a date the ESP could have recorded, else None."""
    if not isinstance(moment, datetime):
        return None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return moment if EARLIEST <= moment <= timezone.now() + timedelta(days=1) else None


def expect(condition: bool, label: str, what: str, expected: str) -> None:
    """Raise Malformed unless ``condition``: the reply is not what the API documents."""
    if not condition:
        raise Malformed(f"{label} sent an unexpected reply ({what}): expected {expected}.")


# Waiting out rate limits
# ------------------------------------------------------------------------------


def with_retries(call: Callable[[], T], *, label: str, what: str, sleep: Sleep) -> T:
    """Return ``call()``, waiting and calling again while it raises Throttled (bounded)."""
    for attempt in range(MAX_RETRIES + 1):
        try:
            return call()
        except Throttled as throttled:
            if attempt == MAX_RETRIES:
                raise Unavailable(
                    f"{label} was still rate-limiting ({what}) after {MAX_RETRIES} waits: "
                    f"{throttled}."
                ) from None
            wait = _wait(throttled.retry_after, attempt)
            logger.warning(
                "%s is rate-limiting (%s); waiting %.0f s (%d of %d)",
                label,
                what,
                wait,
                attempt + 1,
                MAX_RETRIES,
            )
            sleep(wait)
    raise AssertionError("unreachable")


def _wait(retry_after: float | None, attempt: int) -> float:
    if retry_after is None or not math.isfinite(retry_after) or retry_after < 0:
        retry_after = 2.0**attempt  # 1, 2, 4, 8, 16 s
    return min(retry_after, MAX_WAIT_SECONDS)


def parse_retry_after(value: str | None) -> float | None:
    """Read a Retry-After header: seconds, or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return (parsedate_to_datetime(value) - timezone.now()).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# JSON over HTTP (Mailgun, SendGrid)
# ------------------------------------------------------------------------------


class HttpApi:
    """One ESP's JSON API: EMAIL_TIMEOUT, waits on 429, errors that name the setting to check."""

    def __init__(
        self,
        label: str,
        session: requests.Session,
        *,
        key_setting: str,
        refused_hint: str,
        not_found_hint: str = "",
        sleep: Sleep,
    ) -> None:
        self.label = label
        self.session = session
        self.key_setting = key_setting
        self.refused_hint = refused_hint
        self.not_found_hint = not_found_hint
        self.sleep = sleep
        self.timeout = float(email_setting("EMAIL_TIMEOUT") or 30)

    def get(self, url: str, *, params: dict[str, Any] | None = None, what: str) -> Any:
        return self._request("GET", url, what, params=params)

    def post(self, url: str, body: Any, *, what: str) -> Any:
        return self._request("POST", url, what, json=body)

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        return with_retries(
            lambda: self._once(method, url, what, **kwargs),
            label=self.label,
            what=what,
            sleep=self.sleep,
        )

    def _once(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        label = self.label
        try:
            # No redirects: an API answers where it is asked; a redirect would
            # carry our key wherever it points.
            response = self.session.request(
                method, url, timeout=self.timeout, allow_redirects=False, stream=True, **kwargs
            )
            with response:
                body = _read(response, label, what)
        except requests.Timeout as error:
            raise Unavailable(
                f"{label} did not answer within {self.timeout:g} s ({what}; EMAIL_TIMEOUT)."
            ) from error
        except requests.RequestException as error:
            raise Unavailable(
                f"Could not reach {label} ({what}): {clean_text(str(error), WORDS_MAX_LENGTH)}."
            ) from error
        status, reason = response.status_code, response.reason or ""
        words = esp_words(body)
        if status == 429:
            raise Throttled(
                f"429 {reason}: {words}", parse_retry_after(response.headers.get("Retry-After"))
            )
        if status in (401, 403):
            raise SyncError(
                f"{label} refused {self.key_setting} ({status} {reason}): {words}. {self.refused_hint}"
            )
        if status == 404 and self.not_found_hint:
            raise SyncError(
                f"{label} answered 404 {reason} ({what}): {words}. {self.not_found_hint}"
            )
        if status >= 500:
            raise Unavailable(f"{label} answered {status} {reason} ({what}): {words}.")
        if not 200 <= status < 300:
            raise SyncError(f"{label} answered {status} {reason} ({what}): {words}.")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            start = clean_text(body[:80].decode("utf-8", "replace"))
            raise Malformed(f"{label} sent a reply that is not JSON ({what}): {start!r}.") from None


def _read(response: requests.Response, label: str, what: str) -> bytes:
    """Return the body, refusing one over MAX_BODY_BYTES without reading it all."""
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Malformed(f"{label} sent a reply over {MAX_BODY_BYTES // 2**20} MB ({what}).")
        chunks.append(chunk)
    return b"".join(chunks)


def esp_words(body: bytes) -> str:
    """Return what an error reply says: Mailgun's message, SendGrid's errors, or the text."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"]
    elif isinstance(data, dict) and isinstance(data.get("errors"), list):
        text = "; ".join(
            str(error.get("message")) for error in data["errors"] if isinstance(error, dict)
        )
    else:
        text = body[:1000].decode("utf-8", "replace")
    return clean_text(text, WORDS_MAX_LENGTH) or "(no details)"


def ascii_address(address: str) -> str:
    """Return ``address`` with its domain in punycode, as ESPs expect it (we store Unicode)."""
    local, _, domain = address.rpartition("@")
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address
