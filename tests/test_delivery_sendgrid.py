"""Mail sent with EMAIL_PROVIDER=sendgrid reaches SendGrid's v3 mail/send API as it expects."""

import base64
import uuid
from collections.abc import Iterator

import pytest
import responses
from anymail.exceptions import AnymailAPIError, AnymailRequestsAPIError

from tests.esp import (
    ALL_RECIPIENTS,
    ATTACHMENT,
    HTML,
    SENDGRID_KEY,
    SENDGRID_X_MESSAGE_ID,
    TEXT,
    full_message,
    intercept_requests,
    only_request,
    plain_message,
    posted_json,
    request_timeout,
    sendgrid_accepts,
    sendgrid_refuses,
)

# anymail 15 warns on every SendGrid backend init that it dropped official support.
pytestmark = pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")

CUSTOM_API = "https://sendgrid-proxy.acme-mail.com/v3/"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Intercept requests to the ESP."""
    with intercept_requests() as mock:
        yield mock


@pytest.fixture
def sendgrid(mail_settings):
    """Configure SendGrid from the environment, as production does."""

    def configure(**environ: str) -> dict:
        return mail_settings("sendgrid", **{"SENDGRID_API_KEY": SENDGRID_KEY, **environ})

    return configure


def test_full_message_is_posted_to_mail_send_with_the_bearer_key(sendgrid, rsps):
    sendgrid()
    sendgrid_accepts(rsps)

    assert full_message().send() == 1

    request = only_request(rsps)
    assert request.method == "POST"
    assert request.url == "https://api.sendgrid.com/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"


def test_full_message_is_in_sendgrids_json_format(sendgrid, rsps):
    sendgrid()
    sendgrid_accepts(rsps)
    message = full_message()

    message.send()

    payload = posted_json(only_request(rsps))
    name, content, mimetype = ATTACHMENT
    assert payload == {
        "from": {"email": "billing@acme-mail.com", "name": "Acme Billing"},
        "personalizations": [
            {
                "to": [
                    {"email": "ann@example.com", "name": "Ann Example"},
                    {"email": "bob@example.com"},
                ],
                "cc": [{"email": "carol@example.com"}],
                "bcc": [{"email": "audit@acme-mail.com"}],
                # anymail's own message id, echoed back by SendGrid's event webhook.
                "custom_args": {"anymail_id": message.anymail_status.message_id},
            }
        ],
        "reply_to_list": [{"email": "support@acme-mail.com", "name": "Acme Support"}],
        "subject": "Your invoice INV-1042",
        "content": [
            {"type": "text/plain", "value": TEXT},
            {"type": "text/html", "value": HTML},
        ],
        "attachments": [
            {"filename": name, "content": base64.b64encode(content).decode(), "type": mimetype}
        ],
        "categories": ["invoice", "billing"],
        # SendGrid rejects non-string custom_args: the number 42 is sent as "42".
        "custom_args": {"invoice_id": "INV-1042", "customer_id": "42"},
    }


def test_status_carries_anymails_id_not_sendgrids_x_message_id(sendgrid, rsps):
    sendgrid()
    sendgrid_accepts(rsps, x_message_id=SENDGRID_X_MESSAGE_ID)
    message = full_message()

    message.send()

    message_id = message.anymail_status.message_id
    assert uuid.UUID(message_id).version == 4
    assert message_id != SENDGRID_X_MESSAGE_ID
    assert message.anymail_status.status == {"queued"}
    assert sorted(message.anymail_status.recipients) == sorted(ALL_RECIPIENTS)
    for status in message.anymail_status.recipients.values():
        assert (status.message_id, status.status) == (message_id, "queued")


def test_each_send_gets_a_fresh_anymail_id(sendgrid, rsps):
    sendgrid()
    sendgrid_accepts(rsps)
    sendgrid_accepts(rsps)
    first, second = plain_message(), plain_message()

    first.send()
    second.send()

    assert first.anymail_status.message_id != second.anymail_status.message_id
    sent_ids = [
        posted_json(call.request)["personalizations"][0]["custom_args"]["anymail_id"]
        for call in rsps.calls
    ]
    assert sent_ids == [first.anymail_status.message_id, second.anymail_status.message_id]


def test_custom_api_url_is_used(sendgrid, rsps):
    sendgrid(SENDGRID_API_URL=CUSTOM_API)
    sendgrid_accepts(rsps, api_url=CUSTOM_API)

    assert plain_message().send() == 1

    request = only_request(rsps)
    assert request.url == "https://sendgrid-proxy.acme-mail.com/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {SENDGRID_KEY}"


def test_default_email_timeout_reaches_the_request(sendgrid, rsps):
    sendgrid()
    sendgrid_accepts(rsps)

    plain_message().send()

    assert request_timeout(only_request(rsps)) == 10.0


def test_email_timeout_setting_reaches_the_request(sendgrid, rsps):
    sendgrid(EMAIL_TIMEOUT="2.5")
    sendgrid_accepts(rsps)

    plain_message().send()

    assert request_timeout(only_request(rsps)) == 2.5


@pytest.mark.parametrize(
    ("status", "esp_text", "field"),
    [
        (400, "Does not contain a valid address.", "personalizations.0.to.0.email"),
        (401, "The provided authorization grant is invalid, expired, or revoked", None),
        (429, "too many requests", None),
        (500, "internal error", None),
    ],
)
def test_sendgrid_error_reply_raises_anymail_api_error(sendgrid, rsps, status, esp_text, field):
    sendgrid()
    sendgrid_refuses(rsps, status, esp_text, field=field)

    with pytest.raises(AnymailRequestsAPIError) as raised:
        full_message().send()

    error = raised.value
    assert isinstance(error, AnymailAPIError)
    assert error.status_code == status
    assert esp_text in str(error)
    assert f"SendGrid API response {status}" in str(error)
    assert error.response.json()["errors"][0]["message"] == esp_text
    only_request(rsps)  # anymail does not retry, not even a 429
