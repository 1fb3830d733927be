"""`manage.py suppression sync`: the ESPs' own suppression lists merged into ours, ours pushed."""

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import boto3.session
import pytest
import requests
import responses
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from django.core.management import CommandError, call_command
from django.utils import timezone
from responses import matchers

from tests.esp import (
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    MAILGUN_US,
    SENDGRID_API,
    SENDGRID_KEY,
    SES_ENV,
    basic_auth,
    intercept_requests,
    posted_json,
    request_timeout,
)
from transactional.erasure import forget, placeholder_for
from transactional.models import Suppression, SyncCursor, address_hash
from transactional.suppression_sync import SyncError, base, push, sync

pytestmark = pytest.mark.django_db

MAILGUN_LISTS = f"{MAILGUN_US}/{MAILGUN_DOMAIN}"
WHEN = "Fri, 14 Mar 2025 09:30:00 UTC"
WHEN_PARSED = datetime(2025, 3, 14, 9, 30, tzinfo=UTC)
EPOCH_2025 = 1741944600  # 2025-03-14 09:30 UTC


def run(*args: str, stdout: io.StringIO | None = None, stderr: io.StringIO | None = None):
    out, err = stdout or io.StringIO(), stderr or io.StringIO()
    call_command("suppression", "sync", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def listed() -> list[tuple[str, str, str]]:
    rows = Suppression.objects.order_by("address", "stream")
    return list(rows.values_list("address", "stream", "reason"))


def cursor(provider: str, list_name: str) -> SyncCursor:
    return SyncCursor.objects.get(provider=provider, list_name=list_name)


# Mailgun
# ------------------------------------------------------------------------------


@pytest.fixture
def mailgun(mail_settings) -> Iterator[responses.RequestsMock]:
    """Configure Mailgun as production does; answer its API from registered replies."""
    mail_settings("mailgun", MAILGUN_API_KEY=MAILGUN_KEY, MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN)
    with intercept_requests() as rsps:
        yield rsps


def mailgun_url(name: str, page: int = 1) -> str:
    """The URL of a page: the first as we ask for it, the others as paging.next gives them."""
    if page == 1:
        return f"{MAILGUN_LISTS}/{name}?limit=1000"
    return f"{MAILGUN_LISTS}/{name}?page=next&address=last{page}%40example.com&limit=1000"


def mailgun_pages(rsps: responses.RequestsMock, name: str, *pages: list[dict], start: int = 1):
    """Answer Mailgun's list ``name`` with these pages, then the empty page after the last."""
    for number, items in enumerate([*pages, []], start=start):
        paging = {"first": mailgun_url(name), "next": mailgun_url(name, number + 1)}
        rsps.get(mailgun_url(name, number), json={"items": items, "paging": paging})


def mailgun_empty(rsps: responses.RequestsMock, *names: str) -> None:
    for name in names:
        mailgun_pages(rsps, name)


def bounce(address: str, error: str = "No such mailbox", created_at: Any = WHEN) -> dict:
    return {"address": address, "code": "550", "error": error, "created_at": created_at}


def test_mailgun_lists_are_merged_page_by_page_for_every_stream(mailgun):
    mailgun_pages(
        mailgun,
        "bounces",
        [bounce("Ann@Example.com"), bounce("bob@example.com")],
        [bounce("cy@example.com", error="Mailbox full, over quota")],
    )
    mailgun_pages(mailgun, "complaints", [{"address": "dee@example.com", "created_at": WHEN}])
    mailgun_pages(
        mailgun,
        "unsubscribes",
        [
            {"address": "eve@example.com", "tags": ["*"], "created_at": WHEN},
            {"address": "fay@example.com", "tags": ["newsletter"], "created_at": WHEN},
        ],
    )

    out, _ = run()

    assert listed() == [
        ("ann@example.com", "", "bounced"),
        ("bob@example.com", "", "bounced"),
        ("cy@example.com", "", "bounced"),
        ("dee@example.com", "", "complained"),
        ("eve@example.com", "", "unsubscribed"),
        ("fay@example.com", "", "unsubscribed"),
    ]
    notes = dict(Suppression.objects.values_list("address", "note"))
    assert notes["ann@example.com"] == "Mailgun bounces: 550 No such mailbox"
    assert notes["dee@example.com"] == "Mailgun complaints"
    assert notes["eve@example.com"] == "Mailgun unsubscribes"
    assert notes["fay@example.com"] == "Mailgun unsubscribes: only tags newsletter"
    assert set(Suppression.objects.values_list("source", flat=True)) == {"esp-sync"}
    assert set(Suppression.objects.values_list("created_at", flat=True)) == {WHEN_PARSED}
    assert out.splitlines() == [
        "mailgun bounces: fetched 3, added 3, already listed 0, skipped invalid 0",
        "mailgun complaints: fetched 1, added 1, already listed 0, skipped invalid 0",
        "mailgun unsubscribes: fetched 2, added 2, already listed 0, skipped invalid 0",
    ]
    first = mailgun.calls[0].request
    assert basic_auth(first) == ("api", MAILGUN_KEY)
    assert request_timeout(first) == 10.0  # EMAIL_TIMEOUT


def test_a_second_sync_adds_nothing_and_starts_each_list_from_its_first_page(mailgun):
    for _ in range(2):
        mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")], [bounce("bob@example.com")])
        mailgun_empty(mailgun, "complaints", "unsubscribes")

    run()
    out, _ = run()

    assert Suppression.objects.count() == 2
    assert "mailgun bounces: fetched 2, added 0, already listed 2, skipped invalid 0" in out
    done = cursor("mailgun", "bounces")
    assert (done.position, done.pages, done.already_listed) == ("", 3, 2)
    assert done.finished_at is not None


def test_a_sync_stopped_by_a_500_resumes_at_the_failed_page(mailgun):
    mailgun.get(mailgun_url("bounces"), json={
        "items": [bounce("ann@example.com")], "paging": {"next": mailgun_url("bounces", 2)},
    })  # fmt: skip
    mailgun.get(mailgun_url("bounces", 2), status=500, json={"message": "Internal error"})

    with pytest.raises(CommandError) as stopped:
        run()

    assert str(stopped.value) == (
        "Mailgun answered 500 Internal Server Error (bounces, page 2): Internal error. "
        "Page 1 is merged, nothing from page 2 of mailgun bounces: run the same command "
        "again (without --restart) to resume there."
    )
    assert listed() == [("ann@example.com", "", "bounced")]
    assert cursor("mailgun", "bounces").position == mailgun_url("bounces", 2)

    mailgun_pages(mailgun, "bounces", [bounce("bob@example.com")], start=2)
    mailgun_empty(mailgun, "complaints", "unsubscribes")
    out, _ = run()

    assert [address for address, _, _ in listed()] == ["ann@example.com", "bob@example.com"]
    assert (
        "mailgun bounces: fetched 1, added 1, already listed 0, skipped invalid 0 (resumed at page 2)"
        in out
    )
    assert cursor("mailgun", "bounces").fetched == 2  # over the whole pass
    assert mailgun.calls[2].request.url == mailgun_url("bounces", 2)


def test_a_network_error_on_page_3_keeps_pages_1_and_2_and_the_place(mailgun):
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")], [bounce("bob@example.com")])
    mailgun.replace(
        responses.GET, mailgun_url("bounces", 3), body=requests.ConnectionError("connection reset")
    )

    with pytest.raises(
        CommandError,
        match=r"Could not reach Mailgun \(bounces, page 3\): connection reset\. Pages 1-2 are merged, nothing from page 3 of mailgun bounces: run",
    ):
        run()

    assert Suppression.objects.count() == 2
    assert cursor("mailgun", "bounces").position == mailgun_url("bounces", 3)


def test_a_timeout_names_email_timeout(mailgun, settings):
    mailgun.get(mailgun_url("bounces"), body=requests.ReadTimeout("read timed out"))
    settings.EMAIL_TIMEOUT = 2.5

    with pytest.raises(
        CommandError,
        match=r"Mailgun did not answer within 2\.5 s \(bounces, page 1; EMAIL_TIMEOUT\)",
    ):
        run()


def test_a_refused_key_names_the_setting(mailgun):
    mailgun.get(mailgun_url("bounces"), status=401, body="Forbidden", content_type="text/plain")

    with pytest.raises(CommandError) as refused:
        run()

    assert str(refused.value).startswith(
        "Mailgun refused MAILGUN_API_KEY (401 Unauthorized): Forbidden. Check the key"
    )
    assert not SyncCursor.objects.exclude(position="").exists()


def test_an_unknown_domain_names_mailgun_sender_domain(mailgun):
    mailgun.get(
        mailgun_url("bounces"), status=404, json={"message": "Domain not found: mg.acme-mail.com"}
    )

    with pytest.raises(
        CommandError, match="Domain not found: mg.acme-mail.com. Check MAILGUN_SENDER_DOMAIN"
    ):
        run()


def test_a_missing_api_key_names_the_setting(mailgun, settings):
    settings.ANYMAIL = {"MAILGUN_SENDER_DOMAIN": MAILGUN_DOMAIN}

    with pytest.raises(
        CommandError, match="mailgun: You must set ANYMAIL = {'MAILGUN_API_KEY': ...}"
    ):
        run()


def test_mailgun_without_a_sender_domain_says_which_setting_is_missing(mailgun, settings):
    settings.ANYMAIL = {"MAILGUN_API_KEY": MAILGUN_KEY}

    with pytest.raises(CommandError, match="Set MAILGUN_SENDER_DOMAIN: Mailgun keeps"):
        run()


def test_a_reply_that_is_not_json_writes_nothing(mailgun):
    mailgun.get(
        mailgun_url("bounces"), body="<html>502 Bad Gateway</html>", content_type="text/html"
    )

    with pytest.raises(
        CommandError, match=r"Mailgun sent a reply that is not JSON \(bounces, page 1\): '<html>502"
    ):
        run()

    assert not Suppression.objects.exists()
    assert cursor("mailgun", "bounces").pages == 0


@pytest.mark.parametrize(
    "body, expected",
    [
        ([bounce("ann@example.com")], 'an object with an "items" list'),
        ({"items": {"address": "ann@example.com"}}, 'an object with an "items" list'),
        ({"items": [bounce("ann@example.com"), "bob@example.com"]}, "each item an object"),
        ({"items": [bounce("ann@example.com")], "paging": {"next": 42}}, "paging.next a URL"),
    ],
)
def test_a_reply_of_another_shape_writes_nothing_from_its_page(mailgun, body, expected):
    mailgun.get(mailgun_url("bounces"), json=body)

    with pytest.raises(
        CommandError,
        match=f"Mailgun sent an unexpected reply \\(bounces, page 1\\): expected {expected}",
    ):
        run()

    assert not Suppression.objects.exists()


def test_paging_next_to_another_host_is_refused_and_the_key_never_goes_there(mailgun):
    mailgun.get(mailgun_url("bounces"), json={
        "items": [bounce("ann@example.com")],
        "paging": {"next": "https://collector.example.net/v3/mg.acme-mail.com/bounces?page=next"},
    })  # fmt: skip

    with pytest.raises(
        CommandError,
        match="expected paging.next under https://api.mailgun.net/v3/mg.acme-mail.com/bounces",
    ):
        run()

    assert len(mailgun.calls) == 1
    assert not Suppression.objects.exists()


def test_a_redirect_is_not_followed(mailgun):
    mailgun.get(
        mailgun_url("bounces"), status=302, headers={"Location": "https://elsewhere.example.net/"}
    )

    with pytest.raises(CommandError, match=r"Mailgun answered 302 Found \(bounces, page 1\)"):
        run()

    assert len(mailgun.calls) == 1


def test_a_reply_larger_than_the_limit_is_refused(mailgun, monkeypatch):
    monkeypatch.setattr(base, "MAX_BODY_BYTES", 1000)
    mailgun.get(
        mailgun_url("bounces"), json={"items": [bounce(f"u{n}@example.com") for n in range(50)]}
    )

    with pytest.raises(CommandError, match="Mailgun sent a reply over 0 MB"):
        run()


def test_a_stored_page_url_for_another_api_url_starts_the_list_over(mailgun):
    SyncCursor.objects.create(
        provider="mailgun", list_name="bounces", pages=4,
        position="https://api.eu.mailgun.net/v3/mg.acme-mail.com/bounces?page=next",
    )  # fmt: skip
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")])
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    out, _ = run()

    assert listed() == [("ann@example.com", "", "bounced")]
    assert "mailgun bounces: the stored Mailgun page URL is not under " in out
    assert "started the list over" in out


# Rate limits
# ------------------------------------------------------------------------------


def test_a_429_is_waited_out_per_retry_after_then_the_sync_goes_on(mailgun):
    waits: list[float] = []
    mailgun.get(
        mailgun_url("bounces"),
        status=429,
        headers={"Retry-After": "7"},
        json={"message": "slow down"},
    )
    mailgun.get(mailgun_url("bounces"), status=429, headers={"Retry-After": "3600"}, json={})
    mailgun.get(mailgun_url("bounces"), status=429, json={})
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")])
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    report = sync(sleep=waits.append)

    assert waits == [7.0, 60.0, 4.0]  # as asked; at most a minute; doubling without a header
    assert listed() == [("ann@example.com", "", "bounced")]
    assert report.lists[0].added == 1


def test_still_rate_limited_after_five_waits_stops_resumably(mailgun):
    waits: list[float] = []
    for _ in range(6):
        mailgun.get(mailgun_url("bounces"), status=429, headers={"Retry-After": "1"}, body="")

    with pytest.raises(
        SyncError,
        match=r"Mailgun was still rate-limiting \(bounces, page 1\) after 5 waits: 429 Too Many Requests: \(no details\)\. Nothing from mailgun bounces was written\.",
    ):
        sync(sleep=waits.append)

    assert waits == [1.0] * 5


def test_retry_after_as_an_http_date_is_understood():
    soon = timezone.now().replace(microsecond=0) + timezone.timedelta(seconds=30)
    header = soon.strftime("%a, %d %b %Y %H:%M:%S GMT")

    assert 25 < base.parse_retry_after(header) <= 30
    assert base.parse_retry_after("soon") is None


# SendGrid
# ------------------------------------------------------------------------------


@pytest.fixture
def sendgrid(mail_settings) -> Iterator[responses.RequestsMock]:
    mail_settings("sendgrid", SENDGRID_API_KEY=SENDGRID_KEY)
    with intercept_requests() as rsps:
        yield rsps


def sendgrid_page(rsps: responses.RequestsMock, name: str, items: list, offset: int = 0, **kwargs):
    """Answer one page of SendGrid's list ``name`` (``json=`` and ``status=`` for an error)."""
    rsps.get(
        f"{SENDGRID_API}suppression/{name}",
        match=[matchers.query_param_matcher({"limit": "500", "offset": str(offset)})],
        **{"json": items, **kwargs},
    )


def sendgrid_entry(address: str, **fields: Any) -> dict:
    return {"email": address, "created": EPOCH_2025, **fields}


def test_sendgrid_lists_are_read_by_offset_and_merged(sendgrid):
    page = [
        sendgrid_entry(f"u{n}@example.com", reason="550 unknown", status="5.1.1")
        for n in range(500)
    ]
    sendgrid_page(sendgrid, "bounces", page[:500])
    sendgrid_page(
        sendgrid, "bounces", [sendgrid_entry(f"v{n}@example.com") for n in range(500)], 500
    )
    sendgrid_page(sendgrid, "bounces", [sendgrid_entry("w@example.com")], 1000)
    sendgrid_page(
        sendgrid,
        "blocks",
        [sendgrid_entry("blocked@example.com", reason="IP listed at Spamhaus", status="5.7.1")],
    )
    sendgrid_page(sendgrid, "spam_reports", [sendgrid_entry("spam@example.com", ip="192.0.2.1")])
    sendgrid_page(sendgrid, "unsubscribes", [sendgrid_entry("unsub@example.com")])

    out, _ = run()

    assert Suppression.objects.count() == 1004
    rows = {
        row.address: row
        for row in Suppression.objects.filter(
            address__in=[
                "u0@example.com",
                "blocked@example.com",
                "spam@example.com",
                "unsub@example.com",
            ]
        )
    }
    assert (rows["u0@example.com"].reason, rows["u0@example.com"].note) == (
        "bounced",
        "SendGrid bounces: 5.1.1 550 unknown",
    )
    assert rows["blocked@example.com"].reason == "bounced"
    assert rows["blocked@example.com"].note == (
        "SendGrid blocks (may be temporary: the server refused a message): 5.7.1 IP listed at Spamhaus"
    )
    assert (rows["spam@example.com"].reason, rows["spam@example.com"].note) == (
        "complained",
        "SendGrid spam reports",
    )
    assert (rows["unsub@example.com"].reason, rows["unsub@example.com"].stream) == (
        "unsubscribed",
        "",
    )
    assert rows["unsub@example.com"].created_at == datetime.fromtimestamp(EPOCH_2025, tz=UTC)
    assert "sendgrid bounces: fetched 1001, added 1001, already listed 0, skipped invalid 0" in out
    assert sendgrid.calls[0].request.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"


def test_sendgrid_refusing_the_key_names_the_setting_and_the_permission(sendgrid):
    sendgrid_page(
        sendgrid,
        "bounces",
        [],
        status=403,
        json={"errors": [{"field": None, "message": "access forbidden"}]},
    )

    with pytest.raises(
        CommandError,
        match=r"SendGrid refused SENDGRID_API_KEY \(403 Forbidden\): access forbidden\. Check the key and its Suppressions permission",
    ):
        run()


def test_sendgrid_sending_an_object_instead_of_a_list_is_refused(sendgrid):
    sendgrid.get(f"{SENDGRID_API}suppression/bounces", json={"result": []})

    with pytest.raises(
        CommandError, match="SendGrid sent an unexpected reply .*expected a list of entries"
    ):
        run()


def test_a_resumed_sendgrid_list_continues_at_the_stored_offset(sendgrid):
    SyncCursor.objects.create(provider="sendgrid", list_name="bounces", position="500", pages=1)
    sendgrid_page(sendgrid, "bounces", [sendgrid_entry("w@example.com")], 500)
    for name in ("blocks", "spam_reports", "unsubscribes"):
        sendgrid_page(sendgrid, name, [])

    out, _ = run()

    assert listed() == [("w@example.com", "", "bounced")]
    assert "(resumed at page 2)" in out


# Amazon SES
# ------------------------------------------------------------------------------


class _Body(BytesIO):
    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.read()


@dataclass
class SesDouble:
    """Amazon SES v2 at botocore's before-send hook: queued raw replies, recorded requests."""

    replies: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)
    requests: list[AWSPreparedRequest] = field(default_factory=list)

    def answer(self, body: Any, status: int = 200, error_type: str = "") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"x-amzn-ErrorType": f"{error_type}:"} if error_type else {}
        self.replies.append((status, raw, headers))

    def page(
        self,
        *addresses: str,
        reason: str = "BOUNCE",
        token: str | None = None,
        when: Any = 1741944600,
    ) -> None:
        summaries = [
            {"EmailAddress": a, "Reason": reason, "LastUpdateTime": when} for a in addresses
        ]
        self.answer(
            {"SuppressedDestinationSummaries": summaries, **({"NextToken": token} if token else {})}
        )

    def refuses(self, status: int, error_type: str, message: str) -> None:
        self.answer({"message": message}, status, error_type)

    def reply(self, request: AWSPreparedRequest, **kwargs: Any) -> AWSResponse:
        self.requests.append(request)
        assert self.replies, f"unexpected SES request {request.method} {request.url}"
        status, raw, headers = self.replies.pop(0)
        return AWSResponse(
            request.url, status, {"Content-Type": "application/json", **headers}, _Body(raw)
        )


@pytest.fixture
def ses(mail_settings, monkeypatch) -> Iterator[SesDouble]:
    """Configure Amazon SES as production does (eu-west-1); answer it from queued replies."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    for name, value in SES_ENV.items():
        monkeypatch.setenv(name, value)
    mail_settings("ses", **SES_ENV, AWS_REGION="eu-west-1")
    double = SesDouble()
    create_client = boto3.session.Session.client

    def client(self: boto3.session.Session, service_name: str, *args: Any, **kwargs: Any):
        created = create_client(self, service_name, *args, **kwargs)
        created.meta.events.register(f"before-send.{service_name}", double.reply)
        return created

    monkeypatch.setattr(boto3.session.Session, "client", client)
    yield double
    assert not double.replies, f"SES replies never requested: {double.replies}"


def test_the_ses_account_list_is_read_by_next_token_and_merged(ses):
    ses.page("ann@example.com", "bob@example.com", token="t1")
    ses.page("cy@xn--bcher-kva.example", token="t2")
    ses.page()
    ses.page("dee@example.com", reason="COMPLAINT")

    out, _ = run()

    assert listed() == [
        ("ann@example.com", "", "bounced"),
        ("bob@example.com", "", "bounced"),
        ("cy@bücher.example", "", "bounced"),
        ("dee@example.com", "", "complained"),
    ]
    ann = Suppression.objects.get(address="ann@example.com")
    assert (ann.source, ann.note) == ("esp-sync", "Amazon SES suppression list (bounce)")
    assert ann.created_at == datetime.fromtimestamp(1741944600, tz=UTC)
    urls = [request.url for request in ses.requests]
    assert (
        urls[0]
        == "https://email.eu-west-1.amazonaws.com/v2/email/suppression/addresses?Reason=BOUNCE&PageSize=1000"
    )
    assert urls[1].endswith("NextToken=t1") and urls[2].endswith("NextToken=t2")
    assert "Reason=COMPLAINT" in urls[3]
    assert "ses bounces: fetched 3, added 3, already listed 0, skipped invalid 0" in out


def test_an_ses_sync_stopped_by_a_500_resumes_with_the_stored_token(ses):
    ses.page("ann@example.com", token="t1")
    ses.refuses(500, "InternalFailure", "We encountered an internal error")

    with pytest.raises(
        CommandError, match=r"Amazon SES answered 500 \(bounces, page 2\).* resume there"
    ):
        run()

    assert cursor("ses", "bounces").position == "t1"
    ses.page("bob@example.com")
    ses.page(reason="COMPLAINT")
    run()

    assert ses.requests[2].url.endswith("NextToken=t1")
    assert [address for address, _, _ in listed()] == ["ann@example.com", "bob@example.com"]


def test_ses_refusing_the_credentials_names_them(ses):
    ses.refuses(
        403, "UnrecognizedClientException", "The security token included in the request is invalid."
    )

    with pytest.raises(
        CommandError,
        match=r"Amazon SES refused the AWS credentials \(UnrecognizedClientException: The security token .*\)\. Check AWS_ACCESS_KEY_ID",
    ):
        run()


def test_ses_throttling_is_waited_out_with_a_doubling_backoff(ses):
    waits: list[float] = []
    ses.refuses(429, "TooManyRequestsException", "Too Many Requests")
    ses.refuses(429, "TooManyRequestsException", "Too Many Requests")
    ses.page("ann@example.com")
    ses.page(reason="COMPLAINT")

    sync(sleep=waits.append)

    assert waits == [1.0, 2.0]
    assert listed() == [("ann@example.com", "", "bounced")]


def test_an_expired_ses_token_starts_the_list_over(ses):
    SyncCursor.objects.create(provider="ses", list_name="bounces", position="expired", pages=3)
    ses.refuses(400, "InvalidNextTokenException", "The token is invalid")
    ses.page("ann@example.com")
    ses.page(reason="COMPLAINT")

    out, _ = run()

    assert "NextToken" not in ses.requests[1].url
    assert "ses bounces: fetched 1, added 1" in out
    assert "Amazon SES no longer accepts the stored NextToken" in out


def test_an_esp_refusing_every_position_stops_instead_of_starting_over_for_ever(ses):
    SyncCursor.objects.create(provider="ses", list_name="bounces", position="expired", pages=3)
    ses.refuses(400, "InvalidNextTokenException", "The token is invalid")
    ses.page("ann@example.com", token="t1")
    ses.refuses(400, "InvalidNextTokenException", "The token is invalid")

    with pytest.raises(CommandError, match="no longer accepts the stored NextToken"):
        run()

    assert listed() == [("ann@example.com", "", "bounced")]


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            {
                "SuppressedDestinationSummaries": [
                    {"EmailAddress": "a@example.com", "LastUpdateTime": "yesterday"}
                ]
            },
            "Amazon SES sent a reply botocore cannot read",
        ),
        (
            {"SuppressedDestinationSummaries": "a@example.com"},
            "Amazon SES sent a reply botocore cannot read",
        ),
        (b"<html>not json</html>", "expected SuppressedDestinationSummaries, a list of objects"),
    ],
)
def test_an_ses_reply_of_another_shape_writes_nothing(ses, body, expected):
    ses.answer(body)

    with pytest.raises(CommandError, match=expected):
        run()

    assert not Suppression.objects.exists()


# What an ESP may send
# ------------------------------------------------------------------------------


def test_invalid_addresses_are_skipped_and_counted(mailgun):
    mailgun_pages(mailgun, "bounces", [
        bounce("ann@example.com"),
        bounce("no-at-sign.example.com"),
        bounce("x" * 310 + "@example.com"),
        bounce("nul\x00@example.com"),
        bounce("tab\t@example.com"),
        bounce("line\nbreak@example.com"),
        {"address": 42, "created_at": WHEN},
        {"address": None},
        {"code": "550"},
        {"address": ["bob@example.com"]},
    ])  # fmt: skip
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    out, _ = run()

    assert listed() == [("ann@example.com", "", "bounced")]
    assert "mailgun bounces: fetched 10, added 1, already listed 0, skipped invalid 9" in out
    assert cursor("mailgun", "bounces").skipped_invalid == 9


def test_huge_notes_are_cut_and_control_characters_dropped(mailgun):
    mailgun_pages(mailgun, "bounces", [
        bounce("ann@example.com", error="x" * 100_000),
        bounce("bob@example.com", error="550\x00 5.1.1\r\n\x1b[31mgone"),
        {"address": "cy@example.com", "code": {"nested": True}, "error": ["a", "list"]},
    ])  # fmt: skip
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    run()

    notes = dict(Suppression.objects.values_list("address", "note"))
    assert len(notes["ann@example.com"]) == 500 and notes["ann@example.com"].endswith("x…")
    assert notes["bob@example.com"] == "Mailgun bounces: 550 550 5.1.1 [31mgone"
    assert notes["cy@example.com"] == "Mailgun bounces"


@pytest.mark.parametrize(
    "created_at",
    [
        "yesterday",
        "Fri, 14 Mar 2999 09:30:00 UTC",
        "Sat, 01 Jan 1994 00:00:00 UTC",
        1741944600,
        "",
        None,
        "9" * 200,
    ],
)
def test_a_date_that_is_no_date_or_out_of_range_is_ignored(mailgun, created_at):
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com", created_at=created_at)])
    mailgun_empty(mailgun, "complaints", "unsubscribes")
    before = timezone.now()

    run()

    assert Suppression.objects.get().created_at >= before


@pytest.mark.parametrize("created", [-1, 0, 10**20, float("nan"), True, "1741944600", 4102444800])
def test_a_sendgrid_timestamp_out_of_range_is_ignored(sendgrid, created):
    sendgrid.get(
        f"{SENDGRID_API}suppression/bounces",
        body=json.dumps([{"email": "ann@example.com", "created": created}]),
    )
    for name in ("blocks", "spam_reports", "unsubscribes"):
        sendgrid_page(sendgrid, name, [])
    before = timezone.now()

    run()

    assert Suppression.objects.get().created_at >= before


def test_a_forgotten_address_does_not_come_back_in_clear(mailgun):
    Suppression.objects.create(address="ann@example.com", reason="bounced")
    forget("ann@example.com")
    for _ in range(2):
        mailgun_pages(mailgun, "bounces", [bounce("Ann@Example.com")])
        mailgun_empty(mailgun, "complaints", "unsubscribes")

    dry, _ = run("--dry-run")
    out, _ = run()

    assert list(Suppression.objects.values_list("address", "address_hash")) == [
        (placeholder_for("ann@example.com"), address_hash("ann@example.com"))
    ]
    assert "would add 0, already listed 1" in dry
    assert "added 0, already listed 1" in out


def test_an_esp_bounce_of_an_address_unsubscribed_from_one_stream_stops_every_stream(
    mailgun, settings
):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    Suppression.objects.create(
        address="ann@example.com", reason="unsubscribed", stream="newsletter"
    )
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")])
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    run()

    assert listed() == [
        ("ann@example.com", "", "bounced"),
        ("ann@example.com", "newsletter", "unsubscribed"),
    ]


def test_an_address_we_list_already_keeps_its_entry(mailgun):
    Suppression.objects.create(
        address="ann@example.com", reason="complained", source="admin", note="by phone"
    )
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")])
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    run()

    assert list(Suppression.objects.values_list("reason", "source", "note")) == [
        ("complained", "admin", "by phone")
    ]


# Dry run, restart
# ------------------------------------------------------------------------------


def test_a_dry_run_writes_nothing_not_even_the_cursor(mailgun):
    Suppression.objects.create(address="bob@example.com", reason="bounced")
    mailgun_pages(
        mailgun,
        "bounces",
        [bounce("ann@example.com"), bounce("bob@example.com")],
        [bounce("ann@example.com")],
    )
    mailgun_pages(
        mailgun, "complaints", [{"address": "ann@example.com"}, {"address": "cy@example.com"}]
    )
    mailgun_empty(mailgun, "unsubscribes")

    out, _ = run("--dry-run")

    assert listed() == [("bob@example.com", "", "bounced")]
    assert not SyncCursor.objects.exists()
    assert out.splitlines() == [
        "mailgun bounces: fetched 3, would add 1, already listed 2, skipped invalid 0",
        "mailgun complaints: fetched 2, would add 1, already listed 1, skipped invalid 0",
        "mailgun unsubscribes: fetched 0, would add 0, already listed 0, skipped invalid 0",
        "Dry run: nothing was written.",
    ]


def test_a_dry_run_reads_from_a_stored_cursor_and_leaves_it_where_it_was(mailgun):
    stored = SyncCursor.objects.create(
        provider="mailgun", list_name="bounces", position=mailgun_url("bounces", 2), pages=1
    )
    mailgun_pages(mailgun, "bounces", [bounce("bob@example.com")], start=2)
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    run("--dry-run")

    assert cursor("mailgun", "bounces").position == stored.position
    assert not SyncCursor.objects.filter(list_name="complaints").exists()


def test_restart_ignores_a_stored_cursor(mailgun):
    SyncCursor.objects.create(
        provider="mailgun", list_name="bounces", position=mailgun_url("bounces", 3), pages=2
    )
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")])
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    out, _ = run("--restart")

    assert mailgun.calls[0].request.url == mailgun_url("bounces")
    assert "resumed" not in out


# Which providers
# ------------------------------------------------------------------------------


def test_every_configured_esp_is_synced_and_a_provider_without_a_list_is_skipped(mail_settings):
    mail_settings(
        ["mailgun", "smtp"],
        MAILGUN_API_KEY=MAILGUN_KEY,
        MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN,
        EMAIL_HOST="smtp.example.com",
    )
    with intercept_requests() as rsps:
        mailgun_empty(rsps, "bounces", "complaints", "unsubscribes")
        out, _ = run()

    assert "smtp: skipped; it keeps no suppression list." in out


def test_a_provider_named_without_a_list_is_an_error(mail_settings):
    mail_settings(
        ["mailgun", "smtp"],
        MAILGUN_API_KEY=MAILGUN_KEY,
        MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN,
        EMAIL_HOST="smtp.example.com",
    )

    with pytest.raises(CommandError, match="smtp keeps no suppression list to sync"):
        run("--provider", "smtp")


def test_a_provider_that_is_not_configured_names_email_providers(mail_settings):
    mail_settings("mailgun", MAILGUN_API_KEY=MAILGUN_KEY, MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN)

    with pytest.raises(
        CommandError,
        match=r"'ses' is not a configured provider: EMAIL_PROVIDERS \(or EMAIL_PROVIDER\) names mailgun\.",
    ):
        run("--provider", "SES")


def test_only_the_named_provider_is_synced(mail_settings):
    mail_settings(
        ["sendgrid", "mailgun"],
        MAILGUN_API_KEY=MAILGUN_KEY,
        MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN,
        SENDGRID_API_KEY=SENDGRID_KEY,
    )
    with intercept_requests() as rsps:
        mailgun_empty(rsps, "bounces", "complaints", "unsubscribes")
        out, _ = run("--provider", "mailgun")

    assert "sendgrid" not in out


def test_without_any_esp_there_is_nothing_to_sync():
    with pytest.raises(CommandError, match="No provider to sync: EMAIL_PROVIDERS .* names locmem"):
        run()


def test_a_provider_name_is_checked_before_anything_runs():
    with pytest.raises(CommandError, match="expected a provider name like ses"):
        run("--provider", "ses;rm")


# Progress and verbosity
# ------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_is_a_line_every_n_pages_and_at_the_end(mailgun):
    mailgun_pages(mailgun, "bounces", *([bounce(f"u{n}@example.com")] for n in range(5)))
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    _, err = run("--progress-every", "2")

    assert err.splitlines() == [
        "mailgun bounces: page 2, fetched 2, added 2, already listed 0, skipped invalid 0",
        "mailgun bounces: page 4, fetched 4, added 4, already listed 0, skipped invalid 0",
        "mailgun bounces: page 6, fetched 5, added 5, already listed 0, skipped invalid 0",
        "mailgun complaints: page 1, fetched 0, added 0, already listed 0, skipped invalid 0",
        "mailgun unsubscribes: page 1, fetched 0, added 0, already listed 0, skipped invalid 0",
    ]


def test_progress_on_a_terminal_rewrites_one_line_per_list(mailgun):
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")])
    mailgun_empty(mailgun, "complaints", "unsubscribes")
    terminal = Terminal()

    run(stderr=terminal)

    lines = terminal.getvalue().split("\n")
    assert lines[0] == (
        "\rmailgun bounces: page 1, fetched 1, added 1, already listed 0, skipped invalid 0"
        "\rmailgun bounces: page 2, fetched 1, added 1, already listed 0, skipped invalid 0"
    )
    assert lines[1].startswith("\rmailgun complaints: page 1") and len(lines) == 4


def test_verbosity_0_is_silent(mailgun):
    mailgun_pages(mailgun, "bounces", [bounce("ann@example.com")])
    mailgun_empty(mailgun, "complaints", "unsubscribes")

    assert run("-v0") == ("", "")
    assert Suppression.objects.count() == 1


def test_what_was_done_before_an_error_is_still_summed_up(mail_settings):
    mail_settings(
        ["mailgun", "sendgrid"],
        MAILGUN_API_KEY=MAILGUN_KEY,
        MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN,
        SENDGRID_API_KEY=SENDGRID_KEY,
    )
    out = io.StringIO()
    with intercept_requests() as rsps:
        mailgun_pages(rsps, "bounces", [bounce("ann@example.com")])
        mailgun_empty(rsps, "complaints", "unsubscribes")
        sendgrid_page(
            rsps,
            "bounces",
            [],
            status=401,
            json={"errors": [{"message": "authorization required"}]},
        )
        with pytest.raises(CommandError, match="SendGrid refused SENDGRID_API_KEY"):
            run(stdout=out)

    assert "mailgun bounces: fetched 1, added 1" in out.getvalue()
    assert "sendgrid bounces: fetched 0, added 0" in out.getvalue()


# Push
# ------------------------------------------------------------------------------


def add(address: str, reason: str, stream: str = "", **fields: Any) -> Suppression:
    return Suppression.objects.create(address=address, reason=reason, stream=stream, **fields)


def test_push_adds_ours_to_mailgun_in_batches_of_1000(mailgun, settings):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    Suppression.objects.bulk_create(
        Suppression(
            address=f"u{n:04}@example.com",
            address_hash=address_hash(f"u{n:04}@example.com"),
            reason="bounced",
        )
        for n in range(1001)
    )
    add("cy@bücher.example", "complained", created_at=WHEN_PARSED, note="internal: called support")
    add("dee@example.com", "unsubscribed")
    add("eve@example.com", "unsubscribed", stream="newsletter")
    add("fay@example.com", "manual")
    add("gus@example.com", "bounced")
    forget("gus@example.com")
    mailgun_empty(mailgun, "bounces", "complaints", "unsubscribes")
    for name in ("bounces", "bounces", "complaints", "unsubscribes"):
        mailgun.post(f"{MAILGUN_LISTS}/{name}", json={"message": "addresses have been added"})

    out, _ = run("--push")

    posts = [call.request for call in mailgun.calls if call.request.method == "POST"]
    bounces = [posted_json(request) for request in posts[:2]]
    assert [len(batch) for batch in bounces] == [1000, 1]
    assert bounces[0][0] == {
        "address": "u0000@example.com", "code": "550", "error": "Suppressed by transactional (hard bounce)",
        "created_at": bounces[0][0]["created_at"],
    }  # fmt: skip
    assert posted_json(posts[2]) == [
        {"address": "cy@xn--bcher-kva.example", "created_at": "Fri, 14 Mar 2025 09:30:00 GMT"}
    ]
    assert posted_json(posts[3]) == [
        {
            "address": "dee@example.com",
            "created_at": posted_json(posts[3])[0]["created_at"],
            "tags": ["*"],
        }
    ]
    assert "push to mailgun bounces: pushed 1001 in 2 batch(es)" in out
    assert "push to mailgun unsubscribes: pushed 1 in 1 batch(es)" in out
    assert (
        "mailgun: not pushed: 1 manual (Mailgun keeps lists of bounces, complaints and unsubscribes only)."
        in out
    )
    assert "mailgun: not pushed: 1 erased address(es) (only a hash is kept)." in out
    assert (
        "mailgun: not pushed: 1 entry(ies) for one stream only (at Mailgun they would stop every stream)."
        in out
    )


def test_push_pushes_only_global_unsubscribes_to_sendgrid_and_says_why(sendgrid):
    add("ann@example.com", "bounced")
    add("bob@example.com", "complained")
    for n in range(1001):
        add(f"u{n:04}@example.com", "unsubscribed")
    for name in ("bounces", "blocks", "spam_reports", "unsubscribes"):
        sendgrid_page(sendgrid, name, [])
    sendgrid.post(
        f"{SENDGRID_API}asm/suppressions/global", status=201, json={"recipient_emails": []}
    )
    sendgrid.post(
        f"{SENDGRID_API}asm/suppressions/global", status=201, json={"recipient_emails": []}
    )

    out, _ = run("--push")

    posts = [posted_json(call.request) for call in sendgrid.calls if call.request.method == "POST"]
    assert [len(body["recipient_emails"]) for body in posts] == [1000, 1]
    assert posts[1] == {"recipient_emails": ["u1000@example.com"]}
    assert (
        "sendgrid: SendGrid's API cannot add bounces, blocks or spam reports: only unsubscribes are pushed."
        in out
    )
    assert "sendgrid: not pushed: 1 bounced, 1 complained" in out


def test_push_puts_each_bounce_and_complaint_on_the_ses_list(ses):
    add("ann@example.com", "bounced")
    add("bob@bücher.example", "complained")
    add("cy@example.com", "unsubscribed")
    ses.page()
    ses.page(reason="COMPLAINT")
    ses.answer({})
    ses.answer({})

    out, _ = run("--push")

    puts = [json.loads(request.body) for request in ses.requests if request.method == "PUT"]
    assert puts == [
        {"EmailAddress": "ann@example.com", "Reason": "BOUNCE"},
        {"EmailAddress": "bob@xn--bcher-kva.example", "Reason": "COMPLAINT"},
    ]
    assert (
        "ses: not pushed: 1 unsubscribed (Amazon SES's suppression list holds bounces and complaints only)."
        in out
    )


def test_a_push_dry_run_counts_and_sends_nothing(mailgun):
    add("ann@example.com", "bounced")
    add("bob@example.com", "complained")
    mailgun_empty(mailgun, "bounces", "complaints", "unsubscribes")

    out, _ = run("--push", "--dry-run")

    assert all(call.request.method == "GET" for call in mailgun.calls)
    assert "push to mailgun bounces: would push 1" in out
    assert "push to mailgun complaints: would push 1" in out
    assert out.endswith("Dry run: nothing was written.\n")


def test_a_refused_push_batch_says_what_was_pushed_and_that_pushing_again_is_safe(mailgun):
    add("ann@example.com", "bounced")
    mailgun.post(f"{MAILGUN_LISTS}/bounces", status=400, json={"message": "Invalid address"})

    with pytest.raises(
        SyncError,
        match=r"Mailgun answered 400 Bad Request \(bounces, batch 1\): Invalid address\. 0 address\(es\) were pushed before it; pushing again is safe",
    ):
        push()


def test_sync_pulls_before_it_pushes_so_one_esps_list_reaches_the_other(mail_settings):
    mail_settings(
        ["mailgun", "sendgrid"],
        MAILGUN_API_KEY=MAILGUN_KEY,
        MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN,
        SENDGRID_API_KEY=SENDGRID_KEY,
    )
    with intercept_requests() as rsps:
        mailgun_empty(rsps, "bounces", "complaints")
        mailgun_pages(rsps, "unsubscribes", [{"address": "ann@example.com", "tags": ["*"]}])
        sendgrid_page(rsps, "bounces", [])
        sendgrid_page(rsps, "blocks", [])
        sendgrid_page(rsps, "spam_reports", [])
        sendgrid_page(rsps, "unsubscribes", [sendgrid_entry("bob@example.com")])
        for name in ("unsubscribes",):
            rsps.post(f"{MAILGUN_LISTS}/{name}", json={"message": "ok"})
        rsps.post(f"{SENDGRID_API}asm/suppressions/global", status=201, json={})

        run("--push")

        posts = [call.request for call in rsps.calls if call.request.method == "POST"]
    assert [item["address"] for item in posted_json(posts[0])] == [
        "ann@example.com",
        "bob@example.com",
    ]
    assert posted_json(posts[1]) == {"recipient_emails": ["ann@example.com", "bob@example.com"]}
