"""The fake Mailgun (transactional.testing.fake_mailgun) answers anymail as Mailgun does."""

import base64
import http.client
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import requests
from anymail.exceptions import AnymailRequestsAPIError
from django.core.mail import EmailMultiAlternatives, get_connection

from transactional.testing.fake_mailgun import Attachment, FakeResponse, running_fake_mailgun

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "mg.acme-mail.com"
KEY = "key-test"
MAILGUN_ID = re.compile(r"<\d{14}\.\d+\.[0-9A-F]{6}@mg\.acme-mail\.com>")
INVALID_TO = "'to' parameter is not a valid address. please check documentation"


def use_mailgun(settings, base_url: str, **extra) -> None:
    """Point anymail's Mailgun backend at ``base_url``."""
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {
        "MAILGUN_API_KEY": KEY,
        "MAILGUN_SENDER_DOMAIN": DOMAIN,
        "MAILGUN_API_URL": base_url,
        **extra,
    }


def message(subject: str = "Hello", message_id: str | None = None) -> EmailMultiAlternatives:
    """A plain text message to one recipient, optionally with a Message-ID header."""
    headers = {"Message-ID": message_id} if message_id else {}
    return EmailMultiAlternatives(
        subject, "Hi there", "Acme <no-reply@acme-mail.com>", ["ann@example.com"], headers=headers
    )


@pytest.fixture
def fake():
    with running_fake_mailgun(api_key=KEY) as server:
        yield server


@pytest.fixture
def mailgun(settings, fake):
    """The fake, with anymail's Mailgun backend configured to use it."""
    use_mailgun(settings, fake.base_url)
    return fake


def test_full_message_is_recorded_as_mailgun_receives_it(mailgun):
    msg = EmailMultiAlternatives(
        "Your order",
        "Text body",
        "Acme <no-reply@acme-mail.com>",
        ["Ann <ann@example.com>", "bob@example.com"],
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        headers={"Message-ID": "<order-42@acme-mail.com>", "X-Campaign": "spring"},
    )
    msg.attach_alternative("<p>HTML body</p>", "text/html")
    msg.attach("report.csv", "a,b\n1,2\n", "text/csv")
    msg.tags = ["welcome", "order"]
    msg.metadata = {"order_id": 42, "user": "u1"}

    assert msg.send() == 1

    [sent] = mailgun.messages
    assert (sent.domain, sent.endpoint) == (DOMAIN, "messages")
    assert sent.fields["from"] == ["Acme <no-reply@acme-mail.com>"]
    assert sent.to == ["Ann <ann@example.com>", "bob@example.com"]
    assert sent.fields["cc"] == ["cc@example.com"]
    assert sent.fields["bcc"] == ["bcc@example.com"]
    assert sent.subject == "Your order"
    assert sent.fields["text"] == ["Text body"]
    assert sent.fields["html"] == ["<p>HTML body</p>"]
    assert sent.fields["o:tag"] == ["welcome", "order"]
    assert sent.fields["v:order_id"] == ["42"]
    assert sent.fields["v:user"] == ["u1"]
    assert sent.message_id == "<order-42@acme-mail.com>"
    assert sent.header("x-campaign") == "spring"
    assert sent.attachments == [Attachment("attachment", "report.csv", 8)]
    assert MAILGUN_ID.fullmatch(sent.id)
    assert msg.anymail_status.message_id == sent.id
    assert msg.anymail_status.status == {"queued"}
    assert mailgun.count == 1


def test_each_message_gets_its_own_id_over_one_connection(mailgun):
    msgs = [message(f"Hello {n}") for n in range(3)]
    with get_connection() as connection:
        assert connection.send_messages(msgs) == 3

    ids = [msg.anymail_status.message_id for msg in msgs]
    assert ids == [sent.id for sent in mailgun.messages]
    assert len(set(ids)) == 3
    assert [sent.subject for sent in mailgun.messages] == ["Hello 0", "Hello 1", "Hello 2"]
    assert mailgun.duplicates() == {}


def test_duplicates_are_keyed_by_message_id_else_subject(mailgun):
    for msg in [
        message("A", "<dup@acme-mail.com>"),
        message("B", "<dup@acme-mail.com>"),
        message("C", "<once@acme-mail.com>"),
        message("Same subject"),
        message("Same subject"),
    ]:
        msg.send()

    assert mailgun.count == 5
    assert mailgun.duplicates() == {"<dup@acme-mail.com>": 2, "Same subject": 2}


def test_planned_500s_fail_then_the_default_success_resumes(mailgun):
    mailgun.plan(FakeResponse(500), FakeResponse(500), FakeResponse(500))

    with get_connection() as connection:
        for _ in range(3):
            with pytest.raises(AnymailRequestsAPIError) as raised:
                connection.send_messages([message()])
            assert raised.value.status_code == 500
            assert "Internal Server Error" in str(raised.value)
        assert connection.send_messages([message()]) == 1

    assert mailgun.count == 1


def test_planned_429_carries_retry_after(mailgun):
    mailgun.plan(FakeResponse.error(429, "Too many requests", retry_after=7))

    with pytest.raises(AnymailRequestsAPIError) as raised:
        message().send()

    assert raised.value.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "7"
    assert raised.value.response.json() == {"message": "Too many requests"}
    assert mailgun.count == 0


def test_planned_400_body_reaches_the_error(mailgun):
    mailgun.plan(FakeResponse.error(400, INVALID_TO))

    with pytest.raises(AnymailRequestsAPIError) as raised:
        message().send()

    assert raised.value.status_code == 400
    assert raised.value.response.json() == {"message": INVALID_TO}
    assert "not a valid address. please check documentation" in str(raised.value)
    assert mailgun.count == 0


def test_wrong_api_key_is_refused_with_401(mailgun, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_API_KEY": "key-wrong"}

    with pytest.raises(AnymailRequestsAPIError) as raised:
        message().send()

    assert raised.value.status_code == 401
    assert raised.value.response.json() == {"message": "Invalid private key"}
    assert mailgun.count == 0


def test_latency_delays_every_answer(settings):
    with running_fake_mailgun(latency=0.2, api_key=KEY) as server:
        use_mailgun(settings, server.base_url)
        started = time.monotonic()
        message().send()
        elapsed = time.monotonic() - started

    assert elapsed >= 0.2
    assert server.count == 1


def test_dropped_connection_is_an_anymail_connection_error(mailgun):
    mailgun.plan(FakeResponse(drop=True))

    with pytest.raises(AnymailRequestsAPIError) as raised:
        message().send()

    assert isinstance(raised.value, requests.ConnectionError)
    assert mailgun.count == 0
    message().send()
    assert mailgun.count == 1


def test_slow_answer_times_out_after_the_message_was_accepted(mailgun, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.1}
    mailgun.plan(FakeResponse(delay=0.3))

    with pytest.raises(AnymailRequestsAPIError) as raised:
        message(message_id="<ghost@acme-mail.com>").send()

    assert isinstance(raised.value, requests.Timeout)
    assert [sent.message_id for sent in mailgun.messages] == ["<ghost@acme-mail.com>"]


def test_mime_endpoint_records_the_posted_message(fake):
    mime = (
        b"From: no-reply@acme-mail.com\r\nTo: ann@example.com\r\nSubject: Raw\r\n"
        b"Message-ID: <raw@acme-mail.com>\r\n\r\nBody\r\n"
    )
    response = requests.post(
        f"{fake.base_url}/{DOMAIN}/messages.mime",
        auth=("api", KEY),
        data={"to": "ann@example.com"},
        files={"message": ("message.mime", mime)},
        timeout=5,
    )

    assert response.status_code == 200
    [sent] = fake.messages
    assert response.json() == {"id": sent.id, "message": "Queued. Thank you."}
    assert (sent.endpoint, sent.to, sent.subject) == ("messages.mime", ["ann@example.com"], "Raw")
    assert sent.message_id == "<raw@acme-mail.com>"
    assert sent.attachments == [Attachment("message", "message.mime", len(mime))]


def test_answers_keep_the_connection_alive(fake):
    url = urlsplit(fake.base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    auth = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"}
    form = urlencode({"from": "a@acme-mail.com", "to": "b@example.com", "text": "hi"})
    try:
        for path in [f"/v3/{DOMAIN}/messages", "/v3/nowhere", f"/v3/{DOMAIN}/messages"]:
            connection.request("POST", path, body=form, headers=headers)
            response = connection.getresponse()
            body = response.read()
            assert (response.version, response.will_close) == (11, False)
            assert response.headers["Content-Length"] == str(len(body))
            assert response.status == (404 if path == "/v3/nowhere" else 200)
        assert len(fake.connections) == 1
    finally:
        connection.close()
    assert fake.count == 2


def test_stopping_closes_idle_keep_alive_connections():
    with requests.Session() as session:
        with running_fake_mailgun() as server:
            url = f"{server.base_url}/{DOMAIN}/messages"
            form = {"from": "a@acme-mail.com", "to": "b@example.com", "text": "hi"}
            assert session.post(url, data=form, timeout=5).status_code == 200
        with pytest.raises(requests.ConnectionError):
            session.post(url, data=form, timeout=5)


@pytest.mark.slow
def test_subprocess_prints_its_url_and_records_each_delivery(settings, tmp_path):
    record = tmp_path / "deliveries.jsonl"
    command = [sys.executable, "-m", "transactional.testing.fake_mailgun", "--port", "0"]
    command += ["--api-key", KEY, "--record-file", str(record)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        first_line = process.stdout.readline()
        listening = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/v3)\n", first_line)
        assert listening, first_line
        use_mailgun(settings, listening[1])
        msgs = [message("First", "<one@acme-mail.com>"), message("Second", "<two@acme-mail.com>")]
        for msg in msgs:
            msg.send()

        lines = [json.loads(line) for line in record.read_text().splitlines()]
    finally:
        process.terminate()
        process.wait(timeout=5)
        process.stdout.close()

    assert process.returncode == 0
    assert [line["id"] for line in lines] == [msg.anymail_status.message_id for msg in msgs]
    assert lines[0]["domain"] == DOMAIN
    assert lines[0]["to"] == ["ann@example.com"]
    assert lines[0]["message_id"] == "<one@acme-mail.com>"
    assert lines[0]["subject"] == "First"
