"""The ESPs' side of the wire, for the delivery tests.

Canned replies in each ESP's documented shape, readers for what anymail put on
the wire, and the one message every ESP test sends. Plain functions only: each
test module builds its own fixtures from them (``intercept_requests``,
``stand_in_for_ses``).
"""

import base64
import email
import email.policy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage as MIMEMessage
from io import BytesIO
from typing import Any

import boto3.session
import pytest
import requests
import responses
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.client import BaseClient
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.core.mail import EmailMultiAlternatives
from django.http import QueryDict
from django.http.multipartparser import MultiPartParser
from django.utils.datastructures import MultiValueDict

MAILGUN_US = "https://api.mailgun.net/v3"
MAILGUN_EU = "https://api.eu.mailgun.net/v3"
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
MAILGUN_DOMAIN = "mg.acme-mail.com"
MAILGUN_MESSAGE_ID = "<20260314093012.1.5B4D2A7E8C1F3A09@mg.acme-mail.com>"

SENDGRID_API = "https://api.sendgrid.com/v3/"
SENDGRID_KEY = "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"
SENDGRID_X_MESSAGE_ID = "W86EgYT6SQKk0lRflfLRsA"

SES_MESSAGE_ID = "0102018e3a1f2b4c-5d6e7f80-91a2-4b3c-8d4e-5f6a7b8c9d0e-000000"
SES_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}

# What full_message() sends, spelled as the tests expect to see it.
FROM = "Acme Billing <billing@acme-mail.com>"
TO = ["Ann Example <ann@example.com>", "bob@example.com"]
CC = ["carol@example.com"]
BCC = ["audit@acme-mail.com"]
REPLY_TO = ["Acme Support <support@acme-mail.com>"]
SUBJECT = "Your invoice INV-1042"
TEXT = "Hi Ann,\n\nYour invoice INV-1042 is attached.\n"
HTML = "<p>Hi Ann,</p><p>Your invoice <b>INV-1042</b> is attached.</p>"
ATTACHMENT = ("invoice-1042.pdf", b"%PDF-1.4\n% not really a PDF\n%%EOF\n", "application/pdf")
TAGS = ["invoice", "billing"]
METADATA = {"invoice_id": "INV-1042", "customer_id": 42}
ALL_RECIPIENTS = ["ann@example.com", "bob@example.com", "carol@example.com", "audit@acme-mail.com"]


def full_message() -> EmailMultiAlternatives:
    """Build an invoice mail using every field the ESP tests check."""
    message = EmailMultiAlternatives(
        subject=SUBJECT, body=TEXT, from_email=FROM, to=TO, cc=CC, bcc=BCC, reply_to=REPLY_TO
    )
    message.attach_alternative(HTML, "text/html")
    message.attach(*ATTACHMENT)
    message.tags = TAGS
    message.metadata = METADATA
    return message


def plain_message() -> EmailMultiAlternatives:
    """Build a one-recipient text mail with no attachment."""
    return EmailMultiAlternatives(
        subject="Welcome", body="Welcome aboard.\n", from_email=FROM, to=["ann@example.com"]
    )


# -- HTTP ESPs (requests) ----------------------------------------------------


def intercept_requests() -> responses.RequestsMock:
    """Return a requests interceptor that fails if a registered reply was never requested."""
    return responses.RequestsMock(assert_all_requests_are_fired=True)


def mailgun_accepts(
    rsps: responses.RequestsMock,
    domain: str = MAILGUN_DOMAIN,
    *,
    api_url: str = MAILGUN_US,
    message_id: str = MAILGUN_MESSAGE_ID,
) -> None:
    """Answer POST {api_url}/{domain}/messages as Mailgun does when it queues a message."""
    rsps.post(
        f"{api_url}/{domain}/messages",
        json={"id": message_id, "message": "Queued. Thank you."},
    )


def mailgun_refuses(
    rsps: responses.RequestsMock,
    status: int,
    body: dict[str, Any] | str,
    domain: str = MAILGUN_DOMAIN,
    *,
    api_url: str = MAILGUN_US,
) -> None:
    """Answer Mailgun's send endpoint with an error (JSON ``{"message": ...}`` or plain text)."""
    url = f"{api_url}/{domain}/messages"
    if isinstance(body, str):
        rsps.post(url, status=status, body=body, content_type="text/plain")
    else:
        rsps.post(url, status=status, json=body)


def sendgrid_accepts(
    rsps: responses.RequestsMock,
    *,
    api_url: str = SENDGRID_API,
    x_message_id: str = SENDGRID_X_MESSAGE_ID,
) -> None:
    """Answer POST {api_url}mail/send as SendGrid does: 202, empty body, X-Message-Id."""
    rsps.post(f"{api_url}mail/send", status=202, body="", headers={"X-Message-Id": x_message_id})


def sendgrid_refuses(
    rsps: responses.RequestsMock,
    status: int,
    message: str,
    *,
    field: str | None = None,
    api_url: str = SENDGRID_API,
) -> None:
    """Answer SendGrid's send endpoint with its documented ``{"errors": [...]}`` body."""
    rsps.post(
        f"{api_url}mail/send",
        status=status,
        json={"errors": [{"message": message, "field": field, "help": None}]},
    )


def only_request(rsps: responses.RequestsMock) -> requests.PreparedRequest:
    """Return the single request anymail made (it never retries)."""
    assert len(rsps.calls) == 1, [call.request.url for call in rsps.calls]
    return rsps.calls[0].request


def request_timeout(request: requests.PreparedRequest) -> Any:
    """Return the ``timeout`` passed to requests for this request."""
    # responses records the kwargs of Session.send() on the request it hands back.
    return request.req_kwargs["timeout"]  # type: ignore[attr-defined]


def basic_auth(request: requests.PreparedRequest) -> tuple[str, str]:
    """Decode the request's HTTP basic credentials."""
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    return user, password


def posted_form(request: requests.PreparedRequest) -> tuple[QueryDict, MultiValueDict]:
    """Parse a form POST body the way a Django server would: (fields, files)."""
    content_type = request.headers["Content-Type"]
    body = request.body if isinstance(request.body, bytes) else request.body.encode()
    if content_type == "application/x-www-form-urlencoded":
        return QueryDict(body), MultiValueDict()
    meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body))}
    parser = MultiPartParser(meta, BytesIO(body), [MemoryFileUploadHandler()])
    return parser.parse()


def form_lists(fields: QueryDict) -> dict[str, list[str]]:
    """Return every form field with all its values, for exact comparison."""
    return {name: fields.getlist(name) for name in fields}


def posted_json(request: requests.PreparedRequest) -> Any:
    """Decode a JSON request body."""
    assert request.headers["Content-Type"] == "application/json"
    return json.loads(request.body)


# -- Amazon SES (boto3) ------------------------------------------------------


class _Body(BytesIO):
    """A raw HTTP body in the shape botocore reads (``.stream()``)."""

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.read()


@dataclass
class SesApi:
    """Amazon SES v2 on the wire, as seen by the boto3 clients anymail creates.

    Every ``sesv2`` client created during the test is kept in ``clients`` and
    answered at botocore's ``before-send`` hook: after parameter validation,
    serialization, signing and inside the retry loop, so ``requests`` holds
    exactly what would have gone to AWS, one entry per attempt.
    """

    replies: list[tuple[int, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    requests: list[AWSPreparedRequest] = field(default_factory=list)
    clients: list[BaseClient] = field(default_factory=list)
    #: GetAccount's reply (the outbox reads MaxSendRate for its rate limit).
    account: tuple[int, dict[str, Any], dict[str, str]] = (
        200, {"SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0}}, {}
    )
    account_requests: list[AWSPreparedRequest] = field(default_factory=list)
    account_clients: list[BaseClient] = field(default_factory=list)

    def accepts(self, message_id: str = SES_MESSAGE_ID) -> None:
        """Queue SendEmail's success reply."""
        self.replies.append((200, {"MessageId": message_id}, {}))

    def refuses(self, status: int, error_type: str, message: str) -> None:
        """Queue an SES v2 error reply (restJson: x-amzn-ErrorType header, message body)."""
        self.replies.append((status, {"message": message}, {"x-amzn-ErrorType": f"{error_type}:"}))

    def attach(self, client: BaseClient) -> None:
        """Answer this client's requests from the queued replies."""
        self.clients.append(client)
        client.meta.events.register("before-send.sesv2", lambda request, **kw: self._reply(client, request))

    def only_client(self) -> BaseClient:
        """Return the single sesv2 client that sent mail (anymail's)."""
        senders = [c for c in self.clients if c not in self.account_clients]
        assert len(senders) == 1, senders
        return senders[0]

    def only_request(self) -> AWSPreparedRequest:
        """Return the single HTTP request sent to SES."""
        assert len(self.requests) == 1, [r.url for r in self.requests]
        return self.requests[0]

    def assert_all_replies_used(self) -> None:
        """Fail if a queued reply was never requested."""
        assert not self.replies, f"SES replies never requested: {self.replies}"

    def _reply(self, client: BaseClient, request: AWSPreparedRequest) -> AWSResponse:
        if request.method == "GET" and request.url.endswith("/v2/email/account"):
            self.account_requests.append(request)
            self.account_clients.append(client)
            status, body, headers = self.account
        else:
            self.requests.append(request)
            assert self.replies, f"unexpected SES request {request.method} {request.url}"
            status, body, headers = self.replies.pop(0)
        headers = {"Content-Type": "application/json", **headers}
        return AWSResponse(request.url, status, headers, _Body(json.dumps(body).encode()))


def stand_in_for_ses(monkeypatch: pytest.MonkeyPatch) -> SesApi:
    """Stand in for Amazon SES; boto3 sees only the settings and fake env credentials."""
    for name in (
        "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    # boto3 reads the credentials from the process environment, never from settings.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", SES_ENV["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SES_ENV["AWS_SECRET_ACCESS_KEY"])

    api = SesApi()
    create_client = boto3.session.Session.client

    def client(self: boto3.session.Session, service_name: str, *args: Any, **kwargs: Any):
        created = create_client(self, service_name, *args, **kwargs)
        if service_name == "sesv2":
            api.attach(created)
        return created

    monkeypatch.setattr(boto3.session.Session, "client", client)
    return api


def sent_raw_message(request: AWSPreparedRequest) -> MIMEMessage:
    """Decode the MIME message inside a SendEmail request (Content.Raw.Data)."""
    raw = base64.b64decode(json.loads(request.body)["Content"]["Raw"]["Data"])
    return email.message_from_bytes(raw, policy=email.policy.default)


def sent_params(request: AWSPreparedRequest) -> dict[str, Any]:
    """Decode a SendEmail request body, leaving out the raw message data."""
    params = json.loads(request.body)
    params["Content"]["Raw"]["Data"] = "<raw MIME>"
    return params
