"""One-click unsubscribe from the outside: the page, the one-click POST, the mailto, every ESP.

The tokens and the headers' shape are tested in test_streams.py; here the
links are followed as a mail client, a person and an ESP's inbound webhook
would follow them.
"""

import json
import logging
from collections.abc import Iterator
from email.message import EmailMessage as MIMEMessage
from urllib.parse import unquote, urlsplit

import pytest
import responses
from django.core import mail
from django.core.mail import EmailMessage
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from tests.conftest import OUTBOX
from tests.esp import (
    MAILGUN_DOMAIN,
    MAILGUN_KEY,
    SENDGRID_KEY,
    SES_ENV,
    intercept_requests,
    mailgun_accepts,
    only_request,
    posted_form,
    posted_json,
    sendgrid_accepts,
    sent_raw_message,
    stand_in_for_ses,
)

# The real SMTP server of the SMTP delivery tests (aiosmtpd on 127.0.0.1).
from tests.test_delivery_smtp import received, smtp_server  # noqa: F401
from transactional import unsubscribe
from transactional.models import Message, Suppression
from transactional.suppression import suppress
from transactional.testing.webhooks import basic_auth, mailgun_signed

pytestmark = [
    pytest.mark.django_db,
    # anymail 15 warns on every SendGrid backend init that it dropped official support.
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
]

ANN = "ann@example.org"
MAILBOX = "unsubscribe@acme.test"
FORM = "application/x-www-form-urlencoded"
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture(autouse=True)
def configured(settings):
    settings.TRANSACTIONAL_STREAMS = ["notifications", "newsletter"]


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with intercept_requests() as mock:
        yield mock


def newsletter(to: str = ANN, subject: str = "Our March news") -> EmailMessage:
    message = EmailMessage(subject, "News.", "news@acme.test", [to])
    message.stream = "newsletter"
    return message


def password_reset(to: str = ANN) -> EmailMessage:
    return EmailMessage("Reset your password", "Click.", "no-reply@acme.test", [to])


def path(address: str = ANN, stream: str = "newsletter") -> str:
    return reverse("transactional-unsubscribe", args=[unsubscribe.make_token(address, stream)])


def one_click(client: Client, url: str, **kwargs) -> HttpResponse:
    """POST as Gmail does (RFC 8058 section 3.2)."""
    return client.post(url, ONE_CLICK, content_type=FORM, **kwargs)


def send(client: Client, method: str, url: str) -> HttpResponse:
    """Request ``url`` with ``method``, carrying the one-click body where a body fits."""
    if method in {"get", "head"}:
        return getattr(client, method)(url)
    return getattr(client, method)(url, ONE_CLICK, content_type=FORM)


def rows() -> list[tuple[str, str, str, str]]:
    return list(Suppression.objects.values_list("address", "stream", "reason", "source"))


def https_link(sent: EmailMessage) -> str:
    """Return the https target of a delivered mail's List-Unsubscribe."""
    targets = [part.strip(" <>") for part in sent.message()["List-Unsubscribe"].split(",")]
    [link] = [target for target in targets if target.startswith("https://")]
    return link


# -- GET and HEAD: a page, no change ------------------------------------------


def test_get_asks_showing_the_masked_address_and_the_stream_and_changes_nothing(client):
    response = client.get(path())

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "transactional/unsubscribe/confirm.html"
    page = response.content.decode()
    assert "a•••@example.org" in page and ANN not in page
    assert "newsletter" in page
    # The button posts to this same URL: a form with no action.
    assert '<form method="post">' in page
    assert 'name="confirm"' in page
    assert rows() == []


def test_head_changes_nothing(client):
    assert client.head(path()).status_code == 200
    assert rows() == []


# -- POST: unsubscribes from that stream only, idempotently -------------------


def test_a_one_click_post_unsubscribes_from_that_stream_only(client, outbox, deliver):
    response = one_click(client, path())

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "transactional/unsubscribe/done.html"
    assert "a•••@example.org" in response.content.decode()
    assert rows() == [(ANN, "newsletter", "unsubscribed", "one-click")]

    assert newsletter().send() == 0
    assert password_reset().send() == 1
    notice = EmailMessage("New login", "Was it you?", "no-reply@acme.test", [ANN])
    notice.stream = "notifications"
    assert notice.send() == 1
    deliver()
    assert sorted(m.subject for m in mail.outbox) == ["New login", "Reset your password"]
    assert Message.objects.get(stream="newsletter").status == Message.Status.SUPPRESSED


def test_posting_again_answers_200_and_adds_nothing(client):
    assert one_click(client, path()).status_code == 200
    first = Suppression.objects.get()

    assert one_click(client, path()).status_code == 200
    assert client.post(path(), {"confirm": "yes"}).status_code == 200
    assert list(Suppression.objects.all()) == [first]


def test_an_address_suppressed_everywhere_already_gets_the_done_page_and_no_new_row(client):
    suppress(ANN, reason="bounced")

    assert one_click(client, path()).status_code == 200
    assert rows() == [(ANN, "", "bounced", "")]


def test_the_pages_button_is_recorded_as_the_unsubscribe_page(client):
    response = client.post(path(), {"confirm": "yes"})

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "unsubscribe page")]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(ONE_CLICK, FORM, id="rfc-8058-form-encoded"),
        pytest.param(b"", FORM, id="empty-form"),
        pytest.param(b"", "application/octet-stream", id="empty"),
        pytest.param(ONE_CLICK, "text/plain", id="text-plain"),
        pytest.param('{"List-Unsubscribe": "One-Click"}', "application/json", id="json"),
        pytest.param(b"List-Unsubscribe=One-Click&\xff\xfe=\xff", FORM, id="undecodable-form"),
        pytest.param(b"a&" * 2000, FORM, id="too-many-fields"),
        pytest.param(b"--x\r\nnot really", "multipart/form-data; boundary=x", id="bad-multipart"),
        pytest.param(ONE_CLICK, "multipart/form-data", id="multipart-without-boundary"),
    ],
)
def test_any_post_with_a_valid_token_unsubscribes(client, body, content_type):
    response = client.post(path(), body, content_type=content_type)

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "one-click")]


def test_a_multipart_one_click_post_unsubscribes(client):
    # RFC 8058 section 3.1: the body SHOULD be multipart/form-data.
    response = client.post(path(), {"List-Unsubscribe": "One-Click"})

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "one-click")]


@pytest.mark.parametrize("content_type", [FORM, "multipart/form-data; boundary=x"])
def test_a_body_over_djangos_upload_limit_still_unsubscribes(client, settings, content_type):
    # Reading request.POST would raise RequestDataTooBig; the view never needs to.
    padding = b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    body = b"List-Unsubscribe=One-Click&padding=" + padding

    response = client.post(path(), body, content_type=content_type)

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "one-click")]


def test_the_post_needs_no_csrf_token_nor_a_same_site_origin():
    client = Client(enforce_csrf_checks=True)

    response = one_click(client, path(), headers={"origin": "https://mail.google.com"})

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "one-click")]


def test_the_post_to_the_real_link_works_with_debug_off_and_allowed_hosts(client, settings):
    settings.ALLOWED_HOSTS = ["mail.acme.test"]
    link = urlsplit(unsubscribe.link(ANN, "newsletter"))
    assert not settings.DEBUG and (link.scheme, link.netloc) == ("https", "mail.acme.test")

    response = one_click(client, link.path, secure=True, headers={"host": link.netloc})

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "one-click")]


def test_a_host_not_in_allowed_hosts_is_refused_and_changes_nothing(client, settings):
    settings.ALLOWED_HOSTS = ["mail.acme.test"]

    response = one_click(client, path(), secure=True, headers={"host": "evil.example"})

    assert response.status_code == 400
    assert rows() == []


# -- Bad tokens: 400, nothing changes ---------------------------------------


def _tampered(change) -> str:
    return change(unsubscribe.make_token(ANN, "newsletter"))


def _sealed(value, key: bytes | None = None) -> str:
    """Seal ``value`` as a token is sealed: with our key (a token of ours with the wrong payload) or another."""
    import base64
    import json

    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    cipher = AESSIV(key) if key else unsubscribe._keys()[0]
    sealed = cipher.encrypt(json.dumps(value).encode(), None)
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


BAD_TOKENS = [
    pytest.param(_tampered(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B")), id="signature"),
    pytest.param(_tampered(lambda t: t[:10] + ("x" if t[10] != "x" else "y") + t[11:]), id="body"),
    pytest.param(_tampered(lambda t: t[: len(t) // 2]), id="cut-short"),
    pytest.param(_tampered(lambda t: t[22:]), id="no-authentication-tag"),
    pytest.param(_tampered(lambda t: t + "x"), id="one-too-many"),
    pytest.param("not-a-token", id="junk"),
    pytest.param("ä€😀:ß", id="non-ascii"),
    pytest.param("<img src=x onerror=alert(1)>", id="markup"),
    pytest.param("a\x00b:c", id="nul"),
    pytest.param("%FF%FE%00", id="percent-encoded-bytes"),
    pytest.param("..:..", id="dots"),
    pytest.param("A" * 20_000 + ":" + "B" * 43, id="very-long"),
    pytest.param(_sealed([ANN, "newsletter"], key=b"k" * 64), id="another-key"),
    pytest.param(_sealed("ann@example.org is not a pair"), id="not-a-pair"),
    pytest.param(_sealed([1, "newsletter"]), id="not-strings"),
]


@pytest.mark.parametrize("token", BAD_TOKENS)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_bad_token_gets_the_invalid_page_with_400_and_changes_nothing(
    client, method, token, caplog
):
    url = reverse("transactional-unsubscribe", args=[token])

    with caplog.at_level(logging.WARNING, logger="transactional.unsubscribe_views"):
        response = send(client, method, url)

    assert response.status_code == 400
    assert [t.name for t in response.templates][0] == "transactional/unsubscribe/invalid.html"
    assert b"This link does not work" in response.content
    assert b"<img" not in response.content
    assert rows() == []
    assert "Refused an unsubscribe token" in caplog.text


def test_a_token_made_with_another_secret_key_gets_400(client, settings):
    url = path()
    settings.SECRET_KEY = "another-secret-key-entirely-0123456789"

    assert one_click(client, url).status_code == 400
    assert rows() == []


def test_a_token_for_a_stream_no_longer_configured_gets_400_naming_it(client, settings):
    url = path(stream="newsletter")
    settings.TRANSACTIONAL_STREAMS = ["notifications"]

    response = one_click(client, url)

    assert response.status_code == 400
    assert b"no longer sent" in response.content
    assert rows() == []


def test_a_token_for_the_transactional_stream_gets_400(client):
    assert one_click(client, path(stream="transactional")).status_code == 400
    assert rows() == []


@pytest.mark.parametrize(
    ("raw_path", "status"),
    [
        ("/unsubscribe/abc%2Fdef:xyz/", 404),  # an encoded slash splits the path: not our URL
        ("/unsubscribe/%25%25%25/", 400),
        ("/unsubscribe/%C0%AE%C0%AE/", 400),  # overlong UTF-8
        ("/unsubscribe/%ED%A0%80:x/", 400),  # a UTF-16 surrogate, encoded
        ("/unsubscribe/" + "%41" * 5000 + "/", 400),
    ],
)
def test_percent_encoded_junk_never_answers_500(client, raw_path, status):
    assert one_click(client, raw_path).status_code == status
    assert client.get(raw_path).status_code == status
    assert rows() == []


# -- Other methods, response headers ------------------------------------------


@pytest.mark.parametrize("method", ["put", "delete", "patch", "options"])
def test_other_methods_get_405_and_change_nothing(client, method):
    response = send(client, method, path())

    assert response.status_code == 405
    assert set(response["Allow"].split(", ")) == {"GET", "HEAD", "POST"}
    assert rows() == []


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", path),
        ("post", path),
        ("get", lambda: "/unsubscribe/not-a-token/"),
        ("put", path),
    ],
    ids=["confirm", "done", "invalid", "405"],
)
def test_every_answer_is_kept_out_of_caches_search_engines_and_referers(client, method, url):
    response = send(client, method, url())

    assert "no-store" in response["Cache-Control"]
    assert "noindex" in response["X-Robots-Tag"]
    assert response["Referrer-Policy"] == "no-referrer"
    # The button must not be clickable inside someone else's frame.
    assert response["X-Frame-Options"] == "DENY"


# -- End to end: from the outbox to the ESP and back --------------------------


def test_the_link_in_a_delivered_newsletter_unsubscribes_with_one_post(
    client, outbox, deliver, settings
):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    settings.ALLOWED_HOSTS = ["mail.acme.test"]
    newsletter().send()
    deliver()

    [sent] = mail.outbox
    assert sent.message()["List-Unsubscribe-Post"] == ONE_CLICK
    link = urlsplit(https_link(sent))
    response = one_click(client, link.path, secure=True, headers={"host": link.netloc})

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "one-click")]
    mail.outbox.clear()
    assert newsletter(subject="Our April news").send() == 0
    assert password_reset().send() == 1
    deliver()
    assert [m.subject for m in mail.outbox] == ["Reset your password"]


def expected_headers() -> dict[str, str]:
    return unsubscribe.headers(ANN, "newsletter")


def unfolded(value: str) -> str:
    """Return a parsed MIME header's value without the folding whitespace it starts with.

    The first URL is longer than a 78-character line, so Python folds the
    header right after the colon ("List-Unsubscribe: CRLF SP <https...>"),
    and email.policy.default keeps that leading space in the value.
    """
    return str(value).lstrip()


@pytest.fixture
def provider(mail_settings, settings):
    """Configure a provider as production does, behind the outbox, with the mailto on."""

    def configure(name: str, **environ: str) -> None:
        mail_settings(name, **environ)
        settings.EMAIL_BACKEND = OUTBOX
        settings.TRANSACTIONAL_UNSUBSCRIBE_MAILTO = MAILBOX
        assert ", <mailto:" in expected_headers()["List-Unsubscribe"]

    return configure


def test_mailgun_receives_the_headers_as_h_fields(provider, rsps, deliver):
    provider("mailgun", MAILGUN_API_KEY=MAILGUN_KEY, MAILGUN_SENDER_DOMAIN=MAILGUN_DOMAIN)
    mailgun_accepts(rsps)
    newsletter().send()

    assert deliver() == 1

    fields, _ = posted_form(only_request(rsps))
    assert fields.getlist("h:List-Unsubscribe") == [expected_headers()["List-Unsubscribe"]]
    assert fields.getlist("h:List-Unsubscribe-Post") == [ONE_CLICK]


def test_sendgrid_receives_the_headers_unchanged_in_its_json(provider, rsps, deliver):
    # anymail's SendGrid backend copies extra headers into "headers" as they are,
    # and adds no tracking_settings: SendGrid's own subscription tracking, if the
    # account enables it, would insert its List-Unsubscribe (docs/streams.md).
    provider("sendgrid", SENDGRID_API_KEY=SENDGRID_KEY)
    sendgrid_accepts(rsps)
    newsletter().send()

    assert deliver() == 1

    payload = posted_json(only_request(rsps))
    headers = payload["headers"]
    assert headers["List-Unsubscribe"] == expected_headers()["List-Unsubscribe"]
    assert headers["List-Unsubscribe-Post"] == ONE_CLICK
    assert "tracking_settings" not in payload


def test_ses_receives_the_headers_in_the_raw_mime(provider, monkeypatch, deliver):
    ses = stand_in_for_ses(monkeypatch)
    provider("ses", **SES_ENV, AWS_REGION="eu-west-1")
    ses.accepts()
    newsletter().send()

    assert deliver() == 1

    raw = sent_raw_message(ses.only_request())
    assert unfolded(raw["List-Unsubscribe"]) == expected_headers()["List-Unsubscribe"]
    assert raw["List-Unsubscribe-Post"] == ONE_CLICK
    ses.assert_all_replies_used()


def test_an_smtp_server_receives_the_headers(provider, smtp_server, deliver):  # noqa: F811
    server, port = smtp_server()
    provider("smtp", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port))
    newsletter().send()

    assert deliver() == 1

    message = received(server.only_envelope())
    assert unfolded(message["List-Unsubscribe"]) == expected_headers()["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == ONE_CLICK


# -- The mailto: an inbound mail through anymail's Mailgun inbound webhook ----


@pytest.fixture
def inbound(webhooks, settings, client):
    """Post a mail to anymail's Mailgun inbound webhook, signed, as a Mailgun route forwards it."""
    settings.TRANSACTIONAL_UNSUBSCRIBE_MAILTO = MAILBOX

    def post(
        subject: str, body: str = "", *, to: str = MAILBOX, recipient: str | None = None,
        mime: str | None = None,
    ) -> HttpResponse:
        if mime is None:
            message = MIMEMessage()
            message["From"] = f"Ann <{ANN}>"
            message["To"] = to
            message["Subject"] = subject
            message["Message-ID"] = "<reply-1@example.org>"
            message.set_content(body)
            mime = message.as_string()
        fields = {
            "recipient": recipient or to, "sender": ANN, "body-mime": mime,
            **mailgun_signed({})["signature"],  # token, timestamp, signature
        }
        return client.post(
            reverse("anymail:mailgun_inbound_webhook"), fields,
            headers={"authorization": basic_auth(webhooks.secret)},
        )

    return post


def subject_line(address: str = ANN, stream: str = "newsletter") -> str:
    return f"unsubscribe {unsubscribe.make_token(address, stream)}"


def test_a_mail_to_the_mailbox_with_the_token_in_its_subject_unsubscribes(inbound):
    assert inbound(subject_line()).status_code == 200

    assert rows() == [(ANN, "newsletter", "unsubscribed", "mailto")]
    assert Suppression.objects.get().note == f"Mail to {MAILBOX} received via Mailgun."


@pytest.mark.parametrize(
    "subject",
    [
        lambda token: f"Re: unsubscribe {token}",
        lambda token: f"[SPAM] Unsubscribe  {token} ",
        lambda token: f"unsubscribe%20{token}",  # a client that did not decode the mailto
    ],
    ids=["reply", "tagged", "still-percent-encoded"],
)
def test_the_subject_may_carry_more_than_the_token(inbound, subject):
    assert inbound(subject(unsubscribe.make_token(ANN, "newsletter"))).status_code == 200

    assert rows() == [(ANN, "newsletter", "unsubscribed", "mailto")]


def test_the_token_may_be_in_the_first_line_of_the_body(inbound):
    assert inbound("Unsubscribe me", f"\n{subject_line()}\nThanks, Ann\n").status_code == 200

    assert rows() == [(ANN, "newsletter", "unsubscribed", "mailto")]


def test_the_mailto_in_a_delivered_mail_unsubscribes(inbound, outbox, deliver):
    newsletter().send()
    deliver()
    [sent] = mail.outbox
    targets = [part.strip(" <>") for part in sent.message()["List-Unsubscribe"].split(",")]
    [mailto] = [target for target in targets if target.startswith("mailto:")]
    mailbox, _, query = mailto.removeprefix("mailto:").partition("?")
    assert mailbox == MAILBOX and query.startswith("subject=")

    assert inbound(unquote(query.removeprefix("subject="))).status_code == 200

    assert rows() == [(ANN, "newsletter", "unsubscribed", "mailto")]


def test_mailguns_parsed_fields_work_as_well_as_raw_mime(webhooks, settings, client):
    settings.TRANSACTIONAL_UNSUBSCRIBE_MAILTO = MAILBOX
    fields = {
        "recipient": MAILBOX, "sender": ANN, "from": f"Ann <{ANN}>", "subject": subject_line(),
        "body-plain": "", "timestamp": "0",
        "message-headers": json.dumps([["To", MAILBOX], ["Subject", subject_line()]]),
        **mailgun_signed({})["signature"],
    }

    response = client.post(
        reverse("anymail:mailgun_inbound_webhook"), fields,
        headers={"authorization": basic_auth(webhooks.secret)},
    )

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "mailto")]


def test_a_repeated_post_of_the_same_mail_adds_nothing(inbound):
    assert inbound(subject_line()).status_code == 200
    assert inbound(subject_line()).status_code == 200

    assert Suppression.objects.count() == 1


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param(subject_line()[:-3], id="cut-short"),
        pytest.param("unsubscribe not-a-token", id="junk"),
        pytest.param("unsubscribe " + "A" * 5000 + ":x", id="very-long"),
    ],
)
def test_a_bad_token_is_logged_and_ignored_with_200(inbound, subject, caplog):
    with caplog.at_level(logging.WARNING, logger="transactional.unsubscribe_inbound"):
        response = inbound(subject)

    assert response.status_code == 200  # an error would make the ESP post it again forever
    assert rows() == []
    assert f"Ignored an unsubscribe token mailed to {MAILBOX} (via Mailgun)" in caplog.text


def test_a_token_for_a_stream_no_longer_configured_is_ignored(inbound, settings, caplog):
    subject = subject_line()
    settings.TRANSACTIONAL_STREAMS = ["notifications"]

    with caplog.at_level(logging.WARNING, logger="transactional.unsubscribe_inbound"):
        assert inbound(subject).status_code == 200

    assert rows() == []
    assert "no longer sent" in caplog.text


def test_a_mail_without_a_token_is_logged_and_ignored(inbound, caplog):
    with caplog.at_level(logging.WARNING, logger="transactional.unsubscribe_inbound"):
        assert inbound("Please take me off your list", "Thanks").status_code == 200

    assert rows() == []
    assert "no 'unsubscribe <token>'" in caplog.text


def test_a_mail_to_another_address_is_none_of_our_business(inbound, caplog):
    with caplog.at_level(logging.WARNING, logger="transactional.unsubscribe_inbound"):
        assert inbound(subject_line(), to="support@acme.test").status_code == 200

    assert rows() == []
    assert caplog.text == ""


def test_without_a_mailto_setting_inbound_mail_is_ignored(inbound, settings):
    settings.TRANSACTIONAL_UNSUBSCRIBE_MAILTO = ""

    assert inbound(subject_line()).status_code == 200
    assert rows() == []


def test_the_envelope_recipient_counts_even_with_a_malformed_to_header(inbound):
    malformed = "undisclosed-recipients:;, a@b@c, <<>>"

    response = inbound(subject_line(), to=malformed, recipient=MAILBOX)

    assert response.status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "mailto")]


def test_a_body_in_an_unknown_charset_does_not_break_the_subject(inbound):
    mime = (
        f"From: {ANN}\r\nTo: {MAILBOX}\r\nSubject: {subject_line()}\r\n"
        "Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nhello\r\n"
    )

    assert inbound("", mime=mime).status_code == 200
    assert rows() == [(ANN, "newsletter", "unsubscribed", "mailto")]


def test_an_unsigned_inbound_post_is_refused_by_anymail_and_changes_nothing(
    webhooks, settings, client
):
    settings.TRANSACTIONAL_UNSUBSCRIBE_MAILTO = MAILBOX
    fields = {
        "recipient": MAILBOX, "body-mime": f"To: {MAILBOX}\r\nSubject: {subject_line()}\r\n\r\n",
        "token": "t" * 50, "timestamp": "1700000000", "signature": "0" * 64,
    }

    response = client.post(
        reverse("anymail:mailgun_inbound_webhook"), fields,
        headers={"authorization": basic_auth(webhooks.secret)},
    )

    assert response.status_code == 400
    assert rows() == []
