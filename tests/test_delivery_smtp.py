"""Mail sent with EMAIL_PROVIDER=smtp reaches a real SMTP server with the right envelope."""

import email
import email.policy
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage as MIMEMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.esp import ATTACHMENT, HTML, TEXT, full_message, plain_message

USER, PASSWORD = "relay-user", "relay-password"


class Recorder:
    """An SMTP handler that keeps every accepted envelope and refuses chosen recipients."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.envelopes: list[Envelope] = []
        self.logins: list[bytes | None] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.logins.append(getattr(session.auth_data, "login", None))
        return "250 2.0.0 Ok: queued as 4F1A2B3C4D"

    def only_envelope(self) -> Envelope:
        """Return the single envelope the server accepted."""
        assert len(self.envelopes) == 1, self.envelopes
        return self.envelopes[0]


def received(envelope: Envelope) -> MIMEMessage:
    """Parse the message data the server received, with its CRLF line ends made plain."""
    data = envelope.content.replace(b"\r\n", b"\n")
    return email.message_from_bytes(data, policy=email.policy.default)


def free_port() -> int:
    """Return a loopback port nobody listens on (aiosmtpd cannot bind port 0 itself)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_login(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """Accept only USER / PASSWORD."""
    credentials = (USER.encode(), PASSWORD.encode())
    ok = isinstance(auth_data, LoginPassword) and (
        (auth_data.login, auth_data.password) == credentials
    )
    # handled=False makes aiosmtpd send the 535 itself; the default (True) sends nothing.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Recorder, int]]]:
    """Start real SMTP servers on 127.0.0.1; stop them after the test."""
    controllers: list[Controller] = []

    def start(recorder: Recorder | None = None, **smtp_options: Any) -> tuple[Recorder, int]:
        recorder = recorder or Recorder()
        port = free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, **smtp_options)
        controller.start()
        controllers.append(controller)
        return recorder, port

    yield start
    for controller in controllers:
        controller.stop()


def test_envelope_holds_sender_and_every_recipient_including_bcc(mail_settings, smtp_server):
    server, port = smtp_server()
    mail_settings("smtp", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port))

    assert full_message().send() == 1

    envelope = server.only_envelope()
    assert envelope.mail_from == "billing@acme-mail.com"
    assert envelope.rcpt_tos == [
        "ann@example.com",
        "bob@example.com",
        "carol@example.com",
        "audit@acme-mail.com",
    ]


def test_server_receives_headers_bodies_and_attachment(mail_settings, smtp_server):
    server, port = smtp_server()
    mail_settings("smtp", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port))

    full_message().send()

    message = received(server.only_envelope())
    assert message["Subject"] == "Your invoice INV-1042"
    assert message["From"] == "Acme Billing <billing@acme-mail.com>"
    assert message["To"] == "Ann Example <ann@example.com>, bob@example.com"
    assert message["Cc"] == "carol@example.com"
    assert message["Reply-To"] == "Acme Support <support@acme-mail.com>"
    assert message["Bcc"] is None
    assert message["Message-ID"]
    assert message.get_body(("plain",)).get_content() == TEXT
    assert message.get_body(("html",)).get_content().rstrip("\n") == HTML
    [attachment] = message.iter_attachments()
    name, content, mimetype = ATTACHMENT
    assert (attachment.get_filename(), attachment.get_content_type()) == (name, mimetype)
    assert attachment.get_content() == content


def test_every_refused_recipient_raises_smtp_recipients_refused(mail_settings, smtp_server):
    server, port = smtp_server(Recorder(refuse=frozenset({"ann@example.com"})))
    mail_settings("smtp", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port))

    with pytest.raises(smtplib.SMTPRecipientsRefused) as raised:
        plain_message().send()

    code, reply = raised.value.recipients["ann@example.com"]
    assert code == 550
    assert b"User unknown" in reply
    assert server.envelopes == []


def test_partly_refused_recipients_are_dropped_without_an_error(mail_settings, smtp_server):
    server, port = smtp_server(Recorder(refuse=frozenset({"bob@example.com"})))
    mail_settings("smtp", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port))

    # Django's SMTP backend ignores sendmail()'s dict of refused recipients.
    assert full_message().send() == 1

    assert "bob@example.com" not in server.only_envelope().rcpt_tos
    assert "ann@example.com" in server.only_envelope().rcpt_tos


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_login_uses_email_host_user_and_password(mail_settings, smtp_server):
    server, port = smtp_server(
        authenticator=check_login, auth_required=True, auth_require_tls=False
    )
    mail_settings(
        "smtp",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(port),
        EMAIL_HOST_USER=USER,
        EMAIL_HOST_PASSWORD=PASSWORD,
    )

    assert plain_message().send() == 1

    assert server.only_envelope().rcpt_tos == ["ann@example.com"]
    assert server.logins == [USER.encode()]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_wrong_password_raises_smtp_authentication_error(mail_settings, smtp_server):
    server, port = smtp_server(
        authenticator=check_login, auth_required=True, auth_require_tls=False
    )
    mail_settings(
        "smtp",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(port),
        EMAIL_HOST_USER=USER,
        EMAIL_HOST_PASSWORD="not-the-password",
    )

    with pytest.raises(smtplib.SMTPAuthenticationError) as raised:
        plain_message().send()

    assert raised.value.smtp_code == 535

    assert server.envelopes == []


def test_server_that_never_answers_times_out_after_email_timeout(mail_settings):
    # The kernel completes the TCP handshake from the backlog; nobody ever greets.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        mail_settings("smtp", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(port), EMAIL_TIMEOUT="0.3")
        # Should no timeout apply, reset the connection after 3 s instead of hanging.
        hang_up = threading.Timer(3, silent.close)
        hang_up.start()
        started = time.monotonic()

        # smtplib turns the socket timeout into a disconnect.
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            plain_message().send()

        hang_up.cancel()
    assert 0.25 < time.monotonic() - started < 2
