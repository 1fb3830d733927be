"""Mail sent with EMAIL_PROVIDER=mailgun reaches Mailgun's messages API as Mailgun expects."""

from collections.abc import Iterator

import pytest
import responses
from anymail.exceptions import AnymailAPIError, AnymailRequestsAPIError

from tests.esp import (
    ALL_RECIPIENTS,
    ATTACHMENT,
    MAILGUN_DOMAIN,
    MAILGUN_EU,
    MAILGUN_KEY,
    MAILGUN_MESSAGE_ID,
    basic_auth,
    form_lists,
    full_message,
    intercept_requests,
    mailgun_accepts,
    mailgun_refuses,
    only_request,
    plain_message,
    posted_form,
    request_timeout,
)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Intercept requests to the ESP."""
    with intercept_requests() as mock:
        yield mock


@pytest.fixture
def mailgun(mail_settings):
    """Configure Mailgun from the environment, as production does."""

    def configure(**environ: str) -> dict:
        return mail_settings(
            "mailgun",
            **{"MAILGUN_API_KEY": MAILGUN_KEY, "MAILGUN_SENDER_DOMAIN": MAILGUN_DOMAIN, **environ},
        )

    return configure


def test_full_message_is_posted_to_the_sender_domain_in_the_us_region(mailgun, rsps):
    mailgun()
    mailgun_accepts(rsps)

    assert full_message().send() == 1

    request = only_request(rsps)
    # The from address is on acme-mail.com: the URL must use MAILGUN_SENDER_DOMAIN.
    assert request.method == "POST"
    assert request.url == "https://api.mailgun.net/v3/mg.acme-mail.com/messages"
    assert basic_auth(request) == ("api", MAILGUN_KEY)


def test_full_message_fields_are_in_mailguns_form_format(mailgun, rsps):
    mailgun()
    mailgun_accepts(rsps)

    full_message().send()

    request = only_request(rsps)
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    fields, files = posted_form(request)
    assert form_lists(fields) == {
        "from": ["Acme Billing <billing@acme-mail.com>"],
        "to": ["Ann Example <ann@example.com>", "bob@example.com"],
        "cc": ["carol@example.com"],
        "bcc": ["audit@acme-mail.com"],
        "h:Reply-To": ["Acme Support <support@acme-mail.com>"],
        "subject": ["Your invoice INV-1042"],
        "text": ["Hi Ann,\n\nYour invoice INV-1042 is attached.\n"],
        "html": ["<p>Hi Ann,</p><p>Your invoice <b>INV-1042</b> is attached.</p>"],
        "o:tag": ["invoice", "billing"],
        # Mailgun custom data is text: the number 42 arrives as "42".
        "v:invoice_id": ["INV-1042"],
        "v:customer_id": ["42"],
    }
    [attachment] = files.getlist("attachment")
    assert list(files) == ["attachment"]
    assert (attachment.name, attachment.read(), attachment.content_type) == ATTACHMENT


def test_status_carries_mailguns_message_id_for_every_recipient(mailgun, rsps):
    mailgun()
    mailgun_accepts(rsps, message_id=MAILGUN_MESSAGE_ID)
    message = full_message()

    message.send()

    # Mailgun's id keeps its angle brackets, and one id covers all recipients.
    assert message.anymail_status.message_id == MAILGUN_MESSAGE_ID
    assert message.anymail_status.status == {"queued"}
    assert sorted(message.anymail_status.recipients) == sorted(ALL_RECIPIENTS)
    for status in message.anymail_status.recipients.values():
        assert (status.message_id, status.status) == (MAILGUN_MESSAGE_ID, "queued")


def test_eu_region_is_used_when_mailgun_api_url_says_so(mailgun, rsps):
    mailgun(MAILGUN_API_URL=MAILGUN_EU)
    mailgun_accepts(rsps, api_url=MAILGUN_EU)

    assert plain_message().send() == 1

    request = only_request(rsps)
    assert request.url == "https://api.eu.mailgun.net/v3/mg.acme-mail.com/messages"
    assert basic_auth(request) == ("api", MAILGUN_KEY)


def test_message_without_attachment_is_sent_urlencoded(mailgun, rsps):
    mailgun()
    mailgun_accepts(rsps)

    plain_message().send()

    request = only_request(rsps)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields, files = posted_form(request)
    assert form_lists(fields) == {
        "from": ["Acme Billing <billing@acme-mail.com>"],
        "to": ["ann@example.com"],
        "subject": ["Welcome"],
        "text": ["Welcome aboard.\n"],
    }
    assert not files


def test_default_email_timeout_reaches_the_request(mailgun, rsps):
    mailgun()
    mailgun_accepts(rsps)

    plain_message().send()

    assert request_timeout(only_request(rsps)) == 10.0


def test_email_timeout_setting_reaches_the_request(mailgun, rsps):
    mailgun(EMAIL_TIMEOUT="3.5")
    mailgun_accepts(rsps)

    plain_message().send()

    assert request_timeout(only_request(rsps)) == 3.5


@pytest.mark.parametrize(
    ("status", "body", "esp_text"),
    [
        (
            400,
            {"message": "to parameter is not a valid address. please check documentation"},
            "to parameter is not a valid address",
        ),
        # Mailgun answers a bad API key with a bare text body.
        (401, "Forbidden", "Forbidden"),
        (429, {"message": "Too many requests"}, "Too many requests"),
        (500, {"message": "Internal Server Error"}, "Internal Server Error"),
    ],
)
def test_mailgun_error_reply_raises_anymail_api_error(mailgun, rsps, status, body, esp_text):
    mailgun()
    mailgun_refuses(rsps, status, body)

    with pytest.raises(AnymailRequestsAPIError) as raised:
        full_message().send()

    error = raised.value
    assert isinstance(error, AnymailAPIError)
    assert error.status_code == status
    assert esp_text in str(error)
    assert f"Mailgun API response {status}" in str(error)
    only_request(rsps)  # anymail does not retry, not even a 429


def test_unknown_sender_domain_names_the_settings_to_check(mailgun, rsps):
    mailgun(MAILGUN_SENDER_DOMAIN="mg.typo-mail.com")
    not_found = {"message": "Domain not found: mg.typo-mail.com"}
    mailgun_refuses(rsps, 404, not_found, domain="mg.typo-mail.com")

    with pytest.raises(AnymailRequestsAPIError) as raised:
        plain_message().send()

    assert raised.value.status_code == 404
    assert "Unknown sender domain 'mg.typo-mail.com'" in str(raised.value)
    assert "MAILGUN_API_URL" in str(raised.value)


def test_fail_silently_swallows_a_mailgun_error(mailgun, rsps):
    mailgun()
    mailgun_refuses(rsps, 500, {"message": "Internal Server Error"})

    with pytest.warns(DeprecationWarning, match="drop support for fail_silently"):
        assert full_message().send(fail_silently=True) == 0
