"""Read a domain's Amazon SES identity: its custom MAIL FROM domain and Easy DKIM tokens.

The client is built exactly as anymail's SES backend builds it (the ANYMAIL
``AMAZON_SES_SESSION_PARAMS`` and ``AMAZON_SES_CLIENT_PARAMS`` settings), so
the command sees the account and region that send the mail.
"""

from dataclasses import dataclass
from typing import Any

import boto3
from anymail.backends.amazon_ses import _get_anymail_boto3_params
from botocore.exceptions import BotoCoreError, ClientError


@dataclass(frozen=True)
class SesIdentity:
    """What SES knows about a domain identity."""

    region: str
    #: The custom MAIL FROM domain, e.g. ``bounce.acme.com``; "" if none is set.
    mail_from_domain: str = ""
    #: ``SUCCESS``, ``PENDING``, ``FAILED`` or ``TEMPORARY_FAILURE``.
    mail_from_status: str = ""
    #: Easy DKIM tokens, each published as ``<token>._domainkey.<domain>``.
    dkim_tokens: tuple[str, ...] = ()


class SesUnavailable(Exception):
    """The SES API could not describe the identity; ``region`` may still be known."""

    def __init__(self, reason: str, region: str = "") -> None:
        super().__init__(reason)
        self.region = region


def client() -> Any:
    """Return a boto3 ``sesv2`` client configured like anymail's SES backend."""
    # anymail keeps this helper private, but it is the one place that turns
    # the settings into boto3 arguments (config dict -> botocore Config).
    session_params, client_params = _get_anymail_boto3_params()
    return boto3.session.Session(**session_params).client("sesv2", **client_params)


def read_identity(domain: str) -> SesIdentity:
    """Return the SES identity for ``domain``; raise SesUnavailable saying why not."""
    region = ""
    try:
        ses = client()
        region = ses.meta.region_name or ""
        response = ses.get_email_identity(EmailIdentity=domain)
    except ClientError as err:
        raise SesUnavailable(_client_error(err, domain, region), region) from err
    except BotoCoreError as err:  # no credentials, no region, endpoint unreachable...
        raise SesUnavailable(str(err), region) from err
    return _identity(response, region)


def _identity(response: dict[str, Any], region: str) -> SesIdentity:
    mail_from = response.get("MailFromAttributes") or {}
    dkim = response.get("DkimAttributes") or {}
    return SesIdentity(
        region=region,
        mail_from_domain=(mail_from.get("MailFromDomain") or "").lower(),
        mail_from_status=mail_from.get("MailFromDomainStatus", ""),
        dkim_tokens=tuple(dkim.get("Tokens") or ()),
    )


def _client_error(err: ClientError, domain: str, region: str) -> str:
    error = err.response.get("Error", {})
    if error.get("Code") == "NotFoundException":
        return f"{domain} is not a verified identity in SES region {region or '(unknown)'}"
    return f"{error.get('Code', 'error')}: {error.get('Message', err)}"
