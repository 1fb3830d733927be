"""Which failures are worth another try, and when.

``classify()`` is the one place that decides transient versus permanent. It
knows anymail's errors (HTTP status, wrapped requests and boto errors), SMTP
reply codes and socket errors. Replace it with TRANSACTIONAL_CLASSIFIER
(a dotted path to a function of the same signature) if your provider needs
different rules.
"""

import random
import smtplib
import socket
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime

from django.utils import timezone
from django.utils.module_loading import import_string

from .conf import get_setting

#: SES / AWS error codes that mean "slow down" or "try again".
TRANSIENT_AWS_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "LimitExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


@dataclass(frozen=True)
class Verdict:
    transient: bool
    #: Seconds the provider asked us to wait (Retry-After), if it said.
    retry_after: float | None = None
    status_code: int | None = None


def classify(error: BaseException) -> Verdict:
    """Decide whether ``error`` from a provider call is worth retrying."""
    custom = get_setting("CLASSIFIER")
    if custom:
        return import_string(custom)(error)
    return _classify(error)


def _classify(error: BaseException) -> Verdict:
    from anymail.exceptions import (
        AnymailError,
        AnymailInvalidAddress,
        AnymailRecipientsRefused,
        AnymailUnsupportedFeature,
    )

    if isinstance(error, (AnymailInvalidAddress, AnymailRecipientsRefused, AnymailUnsupportedFeature)):
        return Verdict(transient=False)
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        return Verdict(transient=bool(codes) and all(400 <= code < 500 for code in codes))
    if isinstance(error, smtplib.SMTPResponseException):
        return Verdict(transient=400 <= error.smtp_code < 500, status_code=error.smtp_code)
    if isinstance(error, (smtplib.SMTPServerDisconnected, socket.timeout, ConnectionError, TimeoutError)):
        return Verdict(transient=True)
    if isinstance(error, AnymailError):
        return _classify_anymail(error)
    if isinstance(error, OSError):  # DNS failure, refused connection, ...
        return Verdict(transient=True)
    # Unknown errors are retried: a bounded number of retries costs little,
    # and giving up on a message because of a surprise would lose it.
    return Verdict(transient=True)


def _classify_anymail(error) -> Verdict:
    import requests

    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return Verdict(transient=True)
    aws = _aws_error(error)
    if aws is not None:
        return aws
    status = getattr(error, "status_code", None)
    if status is None:
        return Verdict(transient=True)
    retry_after = _retry_after(getattr(error, "response", None))
    return Verdict(transient=status in (408, 429) or status >= 500, retry_after=retry_after, status_code=status)


def _aws_error(error) -> Verdict | None:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return None
    cause = error.__cause__
    if isinstance(cause, ClientError):
        code = cause.response.get("Error", {}).get("Code", "")
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        transient = code in TRANSIENT_AWS_CODES or (status is not None and (status == 429 or status >= 500))
        return Verdict(transient=transient, status_code=status)
    if isinstance(cause, BotoCoreError):  # endpoint unreachable, timeouts
        return Verdict(transient=True)
    return None


def _retry_after(response) -> float | None:
    header = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(header) - timezone.now()).total_seconds())
    except (TypeError, ValueError):
        return None


def backoff_seconds(attempt: int, *, retry_after: float | None = None) -> float:
    """Return the wait before retry number ``attempt`` (1 = after the first failure).

    Exponential with "equal jitter": half the step is fixed, half random, so
    a burst of failures does not retry in lock-step. A provider's
    Retry-After is a floor.
    """
    base = float(get_setting("RETRY_BASE_SECONDS"))
    step = min(float(get_setting("RETRY_CAP_SECONDS")), base * float(get_setting("RETRY_FACTOR")) ** (attempt - 1))
    delay = step / 2 + random.uniform(0, step / 2)
    return max(delay, retry_after or 0.0)


def next_attempt_at(attempt: int, *, retry_after: float | None = None):
    return timezone.now() + timedelta(seconds=backoff_seconds(attempt, retry_after=retry_after))
