"""The Amazon SES account-level suppression list (SES v2: bounces and complaints)."""

from collections.abc import Callable
from typing import Any

from anymail.utils import get_anymail_setting

from ..models import Suppression
from .base import (
    Entry,
    EspList,
    Malformed,
    Page,
    Sleep,
    StaleCursor,
    SyncError,
    Throttled,
    Unavailable,
    ascii_address,
    clean_text,
    expect,
    plausible,
    with_retries,
)

Reason = Suppression.Reason

BOUNCES = EspList("bounces", Reason.BOUNCED, "Amazon SES suppression list (bounce)")
COMPLAINTS = EspList("complaints", Reason.COMPLAINED, "Amazon SES suppression list (complaint)")
#: Our reason <-> SES's.
SES_REASONS = {Reason.BOUNCED: "BOUNCE", Reason.COMPLAINED: "COMPLAINT"}
OUR_REASONS = {ses: ours for ours, ses in SES_REASONS.items()}

#: The largest page ListSuppressedDestinations returns.
PAGE_SIZE = 1000
#: SES adds one address per call; this many calls make one progress step.
PUSH_BATCH_SIZE = 100

#: Error codes of a key, token, signature or policy SES does not accept.
REFUSED = frozenset({
    "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
    "ExpiredTokenException", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "MissingAuthenticationTokenException",
})  # fmt: skip
CREDENTIALS_HINT = (
    "Check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the role), AWS_REGION, and that the "
    "policy allows ses:ListSuppressedDestinations (and ses:PutSuppressedDestination for --push)."
)


class AmazonSes:
    """The account-level suppression list of one SES region."""

    label = "Amazon SES"
    lists = (BOUNCES, COMPLAINTS)
    push_lists = {Reason.BOUNCED: BOUNCES, Reason.COMPLAINED: COMPLAINTS}
    cannot_push = "Amazon SES's suppression list holds bounces and complaints only"
    push_batch_size = PUSH_BATCH_SIZE
    push_note = ""

    def __init__(self, *, sleep: Sleep) -> None:
        self.sleep = sleep
        self.client = _client()

    def page(self, esp_list: EspList, position: str, what: str) -> Page:
        """Return the page at ``position`` (a NextToken; empty: the first page)."""
        params: dict[str, Any] = {"Reasons": [SES_REASONS[esp_list.reason]], "PageSize": PAGE_SIZE}
        if position:
            params["NextToken"] = position
        reply = self._call(self.client.list_suppressed_destinations, what, **params)
        summaries = reply.get("SuppressedDestinationSummaries")
        expected = "SuppressedDestinationSummaries, a list of objects"
        expect(isinstance(summaries, list), "Amazon SES", what, expected)
        expect(all(isinstance(item, dict) for item in summaries), "Amazon SES", what, expected)
        token = reply.get("NextToken")
        expect(token is None or isinstance(token, str), "Amazon SES", what, "NextToken a string")
        entries = [
            Entry(
                item.get("EmailAddress"),
                created_at=plausible(item.get("LastUpdateTime")),
                reason=OUR_REASONS.get(item.get("Reason")),
            )
            for item in summaries
        ]
        return Page(entries, token or None)

    def push(self, esp_list: EspList, rows: list[Suppression], what: str) -> None:
        """Put each of ``rows`` on the list (SES updates an address it has)."""
        for row in rows:
            self._call(
                self.client.put_suppressed_destination,
                what,
                EmailAddress=ascii_address(row.address),
                Reason=SES_REASONS[esp_list.reason],
            )

    def _call(
        self, operation: Callable[..., dict[str, Any]], what: str, **params: Any
    ) -> dict[str, Any]:
        return with_retries(
            lambda: _translated(operation, what, params),
            label=self.label,
            what=what,
            sleep=self.sleep,
        )


def _client() -> Any:
    """Build a sesv2 client from AMAZON_SES_SESSION_PARAMS and _CLIENT_PARAMS, as anymail does."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    session_params = get_anymail_setting("session_params", esp_name="Amazon SES", default={})
    client_params = dict(get_anymail_setting("client_params", esp_name="Amazon SES", default={}))
    if isinstance(client_params.get("config"), dict):
        client_params["config"] = Config(**client_params["config"])
    try:
        return boto3.session.Session(**session_params).client("sesv2", **client_params)
    except BotoCoreError as error:  # NoRegionError, ProfileNotFound, ...
        raise SyncError(
            f"Cannot reach Amazon SES: {error}. Check AWS_REGION and AMAZON_SES_CLIENT_PARAMS."
        ) from error


def _translated(
    operation: Callable[..., dict[str, Any]], what: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Call SES; raise our errors (or Throttled) for botocore's."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    try:
        return operation(**params)
    except ClientError as error:
        raise _client_error(error, what) from error
    except (NoCredentialsError, PartialCredentialsError) as error:
        raise SyncError(f"Amazon SES: {error}. {CREDENTIALS_HINT}") from error
    except (BotoConnectionError, HTTPClientError) as error:
        raise Unavailable(f"Could not reach Amazon SES ({what}): {error}.") from error
    except BotoCoreError as error:
        raise SyncError(f"Amazon SES ({what}): {error}.") from error
    except (ValueError, TypeError, AttributeError, KeyError, RuntimeError) as error:
        # botocore's parser trips on a reply that breaks the API's shapes
        # (a date that is no date, a string for a list).
        raise Malformed(
            f"Amazon SES sent a reply botocore cannot read ({what}): "
            f"{type(error).__name__}: {clean_text(str(error), 200)}."
        ) from error


def _client_error(error: Any, what: str) -> Exception:
    details = error.response.get("Error", {})
    code = str(details.get("Code", ""))
    words = clean_text(details.get("Message", ""), 200) or "(no details)"
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if status == 429 or code in {"TooManyRequestsException", "Throttling", "ThrottlingException"}:
        return Throttled(f"{code}: {words}")
    if code == "InvalidNextTokenException":
        return StaleCursor(f"Amazon SES no longer accepts the stored NextToken ({words})")
    if status in (401, 403) or code in REFUSED:
        return SyncError(
            f"Amazon SES refused the AWS credentials ({code}: {words}). {CREDENTIALS_HINT}"
        )
    if status >= 500:
        return Unavailable(f"Amazon SES answered {status} ({what}): {code}: {words}.")
    return SyncError(f"Amazon SES refused the request ({what}): {code}: {words}.")
