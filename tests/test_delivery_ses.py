"""Mail sent with EMAIL_PROVIDER=ses reaches Amazon SES v2 SendEmail as SES expects."""

import json
from collections.abc import Iterator

import pytest
from anymail.exceptions import AnymailAPIError
from botocore.exceptions import ClientError

from tests.esp import (
    ALL_RECIPIENTS,
    ATTACHMENT,
    HTML,
    SES_ENV,
    SES_MESSAGE_ID,
    TEXT,
    SesApi,
    full_message,
    plain_message,
    sent_params,
    sent_raw_message,
    stand_in_for_ses,
)


@pytest.fixture
def ses(monkeypatch) -> Iterator[SesApi]:
    """Stand in for Amazon SES; fail if a queued reply was never requested."""
    api = stand_in_for_ses(monkeypatch)
    yield api
    api.assert_all_replies_used()


@pytest.fixture
def amazon_ses(mail_settings, ses):
    """Configure Amazon SES from the environment, as production does."""

    def configure(**environ: str) -> dict:
        return mail_settings("ses", **{**SES_ENV, **environ})

    return configure


def test_send_email_goes_to_the_region_from_aws_region(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1")
    ses.accepts()

    assert plain_message().send() == 1

    request = ses.only_request()
    assert ses.only_client().meta.region_name == "eu-west-1"
    assert request.method == "POST"
    assert request.url == "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails"
    # Signed with the environment's key, for SES in that region.
    authorization = request.headers["Authorization"].decode()
    assert f"Credential={SES_ENV['AWS_ACCESS_KEY_ID']}/" in authorization
    assert "/eu-west-1/ses/aws4_request" in authorization


def test_aws_default_region_is_the_fallback(amazon_ses, ses):
    amazon_ses(AWS_DEFAULT_REGION="ap-southeast-2")
    ses.accepts()

    plain_message().send()

    assert ses.only_client().meta.region_name == "ap-southeast-2"
    assert ses.only_request().url.startswith("https://email.ap-southeast-2.amazonaws.com/")


def test_aws_region_wins_over_aws_default_region(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-central-1", AWS_DEFAULT_REGION="us-east-1")
    ses.accepts()

    plain_message().send()

    assert ses.only_client().meta.region_name == "eu-central-1"


def test_endpoint_url_overrides_the_regional_endpoint(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1", AMAZON_SES_ENDPOINT_URL="http://127.0.0.1:4566")
    ses.accepts()

    plain_message().send()

    assert ses.only_request().url == "http://127.0.0.1:4566/v2/email/outbound-emails"


def test_full_message_is_sent_as_raw_mime_with_explicit_destinations(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1")
    ses.accepts()

    full_message().send()

    assert sent_params(ses.only_request()) == {
        # Bcc is only in the Destination: it never appears in the raw message.
        "Destination": {
            "ToAddresses": ["ann@example.com", "bob@example.com"],
            "CcAddresses": ["carol@example.com"],
            "BccAddresses": ["audit@acme-mail.com"],
        },
        "Content": {"Raw": {"Data": "<raw MIME>"}},
    }


def test_raw_mime_holds_headers_bodies_tags_metadata_and_attachment(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1")
    ses.accepts()

    full_message().send()

    mime = sent_raw_message(ses.only_request())
    assert mime["Subject"] == "Your invoice INV-1042"
    assert mime["From"] == "Acme Billing <billing@acme-mail.com>"
    assert mime["To"] == "Ann Example <ann@example.com>, bob@example.com"
    assert mime["Cc"] == "carol@example.com"
    assert mime["Reply-To"] == "Acme Support <support@acme-mail.com>"
    assert mime["Bcc"] is None
    # SES has no tag/metadata fields for raw mail: anymail sends them as headers.
    assert mime.get_all("X-Tag") == ["invoice", "billing"]
    assert json.loads(mime["X-Metadata"]) == {"invoice_id": "INV-1042", "customer_id": 42}
    assert mime.get_body(("plain",)).get_content() == TEXT
    assert mime.get_body(("html",)).get_content().rstrip("\n") == HTML
    [attachment] = mime.iter_attachments()
    name, content, mimetype = ATTACHMENT
    assert attachment.get_filename() == name
    assert attachment.get_content_type() == mimetype
    assert attachment.get_content() == content


def test_status_carries_ses_message_id_for_every_recipient(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1")
    ses.accepts(SES_MESSAGE_ID)
    message = full_message()

    message.send()

    assert message.anymail_status.message_id == SES_MESSAGE_ID
    assert message.anymail_status.status == {"queued"}
    assert sorted(message.anymail_status.recipients) == sorted(ALL_RECIPIENTS)


def test_configuration_set_name_is_sent(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1", AMAZON_SES_CONFIGURATION_SET_NAME="transactional-events")
    ses.accepts()

    plain_message().send()

    assert sent_params(ses.only_request())["ConfigurationSetName"] == "transactional-events"


def test_no_configuration_set_is_sent_unless_configured(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1")
    ses.accepts()

    plain_message().send()

    assert "ConfigurationSetName" not in sent_params(ses.only_request())


def test_client_times_out_after_email_timeout_and_never_retries(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1", EMAIL_TIMEOUT="4")
    ses.accepts()

    plain_message().send()

    config = ses.only_client().meta.config
    assert (config.connect_timeout, config.read_timeout) == (4.0, 4.0)
    assert config.retries["total_max_attempts"] == 1
    # botocore announces its attempt budget on the wire.
    assert ses.only_request().headers["amz-sdk-request"] == b"attempt=1; max=1"


def test_a_failing_send_is_attempted_once(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1")
    # botocore would retry a 500 up to 4 more times with backoff; the outbox retries instead.
    ses.refuses(500, "InternalFailure", "We encountered an internal error. Please try again.")

    with pytest.raises(AnymailAPIError, match="We encountered an internal error"):
        plain_message().send()

    assert len(ses.requests) == 1


def test_message_rejected_raises_anymail_api_error_with_ses_text(amazon_ses, ses):
    amazon_ses(AWS_REGION="eu-west-1")
    rejection = (
        "Email address is not verified. The following identities failed the check "
        "in region EU-WEST-1: billing@acme-mail.com"
    )
    ses.refuses(400, "MessageRejected", rejection)

    with pytest.raises(AnymailAPIError) as raised:
        full_message().send()

    error = raised.value
    assert rejection in str(error)
    assert isinstance(error.__cause__, ClientError)
    assert error.__cause__.response["Error"] == {"Code": "MessageRejected", "Message": rejection}
    # A boto error is no HTTP response to anymail: status_code stays None.
    assert error.status_code is None
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(ses.requests) == 1
