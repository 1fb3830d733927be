"""Realistic, signed ESP tracking-webhook posts for tests (ours and yours).

The payloads in ``payloads/<esp>/<kind>.json`` are sanitised copies of each
ESP's documented samples. Each template returns a fresh copy that you can aim
at a stored message::

    payload = mailgun_event("hard_bounce", message_id=recipient.esp_message_id,
                            recipient="ann@example.org")
    response = post_webhook(client, "mailgun", payload)

``post_webhook`` goes through the real authentication path: basic auth from
``ANYMAIL["WEBHOOK_SECRET"]`` plus the ESP's own signature (Mailgun HMAC,
SendGrid ECDSA, SNS RSA). Two fixtures, enabled with
``pytest_plugins = ["transactional.testing.webhooks"]``: ``webhooks`` sets up
every credential with test keys and serves the SNS signing certificate
through ``responses`` (no network); ``tracking_events`` collects every
``tracking`` signal anymail's views send.

Kinds, per ESP (``kinds(esp)`` lists them): ``delivered``, ``hard_bounce``,
``soft_bounce``, ``complaint``, ``open``, ``click``, ``unsubscribe``; SendGrid
also ``processed``, ``blocked``, ``dropped``, ``group_unsubscribe`` and a
``batch``; Amazon SES also ``send``, ``delivery_delay`` and the
``notificationType`` format of the first four (``ses_event(...,
format="notification")``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import responses
from anymail.signals import AnymailTrackingEvent, tracking
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from transactional.webhooks.sns import clear_certificate_cache, string_to_sign

PAYLOADS = Path(__file__).resolve().parent / "payloads"
ESPS = ("mailgun", "sendgrid", "amazon_ses")

WEBHOOK_SECRET = "anymail:test-webhook-password"
MAILGUN_SIGNING_KEY = "test-mailgun-webhook-signing-key-0123456789"
SNS_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:transactional-ses-events"
SNS_CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"

Timestamp = datetime | float | int | None


# PAYLOAD TEMPLATES
# ------------------------------------------------------------------------------


def kinds(esp: str) -> list[str]:
    """Return the payload kinds stored for ``esp``."""
    return sorted(path.stem for path in (PAYLOADS / esp).glob("*.json"))


def payload(esp: str, kind: str) -> Any:
    """Return a fresh copy of the stored ``payloads/<esp>/<kind>.json``."""
    return json.loads(_payload_text(esp, kind))


@cache
def _payload_text(esp: str, kind: str) -> str:
    path = PAYLOADS / esp / f"{kind}.json"
    if not path.is_file():
        raise ValueError(f"No {esp} payload {kind!r}; choose one of: {', '.join(kinds(esp))}")
    return path.read_text()


def mailgun_event(
    kind: str,
    *,
    message_id: str | None = None,
    recipient: str | None = None,
    timestamp: Timestamp = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Return an (unsigned) Mailgun JSON webhook payload; sign it with ``mailgun_signed``.

    ``message_id`` is the send-time id, with or without its angle brackets
    (Mailgun reports it without them). ``extra`` updates ``event-data``.
    """
    data = payload("mailgun", kind)
    event = data["event-data"]
    if message_id is not None:
        event["message"]["headers"]["message-id"] = message_id.strip("<>")
    if recipient is not None:
        event["recipient"] = recipient
        event["recipient-domain"] = recipient.rpartition("@")[2]
        event["envelope"]["targets"] = recipient
        event["message"]["headers"]["to"] = recipient
    if timestamp is not None:
        event["timestamp"] = _epoch(timestamp)
    event.update(extra or {})
    return data


def sendgrid_event(
    kind: str,
    *,
    message_id: str | None = None,
    recipient: str | None = None,
    timestamp: Timestamp = None,
    event_id: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Return one SendGrid event (post a list of them), with a fresh ``sg_event_id``.

    ``message_id`` is anymail's ``anymail_id`` custom argument, which anymail
    reports as the message id.
    """
    if kind == "batch":
        raise ValueError("use sendgrid_batch() for the stored batch")
    event = payload("sendgrid", kind)
    event["sg_event_id"] = event_id or _sendgrid_event_id()
    if message_id is not None:
        event["anymail_id"] = message_id
    if recipient is not None:
        event["email"] = recipient
    if timestamp is not None:
        event["timestamp"] = int(_epoch(timestamp))
    event.update(extra or {})
    return event


def sendgrid_batch(*events: dict) -> list[dict]:
    """Return ``events`` as a batch, or the stored mixed batch with fresh event ids."""
    if events:
        return list(events)
    batch = payload("sendgrid", "batch")
    for event in batch:
        event["sg_event_id"] = _sendgrid_event_id()
    return batch


def ses_event(
    kind: str,
    *,
    format: str = "event",
    message_id: str | None = None,
    recipient: str | None = None,
    timestamp: Timestamp = None,
) -> dict:
    """Return an SES event as SNS carries it in ``Message``; wrap it with ``sns_notification``.

    ``format="event"`` is configuration-set event publishing (``eventType``);
    ``format="notification"`` is identity feedback notifications
    (``notificationType``; only delivered, hard/soft bounce and complaint).
    anymail times events by the SNS envelope: pass ``timestamp`` to
    ``sns_notification`` too.
    """
    if format not in ("event", "notification"):
        raise ValueError('format is "event" or "notification"')
    event = payload("amazon_ses", kind if format == "event" else f"notification_{kind}")
    mail = event["mail"]
    if message_id is not None:
        mail["messageId"] = mail["commonHeaders"]["messageId"] = message_id
    type_name = event.get("eventType") or event["notificationType"]
    details = event.get(type_name[0].lower() + type_name[1:], {})
    if recipient is not None:
        mail["destination"] = [recipient]
        mail["commonHeaders"]["to"] = [recipient]
        for key in ("bouncedRecipients", "complainedRecipients", "delayedRecipients"):
            for entry in details.get(key, []):
                entry["emailAddress"] = recipient
        if "recipients" in details:
            details["recipients"] = [recipient]
    if timestamp is not None and "timestamp" in details:
        details["timestamp"] = _iso(timestamp)
    return event


def sns_notification(
    message: Mapping[str, Any] | str,
    *,
    topic_arn: str = SNS_TOPIC_ARN,
    message_id: str | None = None,
    timestamp: Timestamp = None,
    subject: str | None = None,
) -> dict:
    """Return an unsigned SNS ``Notification`` envelope carrying ``message``."""
    envelope = payload("amazon_ses", "sns_notification")
    envelope.update(
        MessageId=message_id or str(uuid.uuid4()),
        TopicArn=topic_arn,
        Message=message if isinstance(message, str) else json.dumps(message),
        Timestamp=_iso(timestamp if timestamp is not None else time.time()),
        UnsubscribeURL=envelope["UnsubscribeURL"].replace(SNS_TOPIC_ARN, topic_arn),
    )
    if subject is not None:
        envelope["Subject"] = subject
    return envelope


def sns_subscription_confirmation(
    *, topic_arn: str = SNS_TOPIC_ARN, type: str = "SubscriptionConfirmation"
) -> dict:
    """Return an unsigned SNS ``SubscriptionConfirmation`` (or ``UnsubscribeConfirmation``)."""
    envelope = payload("amazon_ses", "sns_subscription_confirmation")
    token = secrets.token_hex(64)
    envelope.update(
        Type=type,
        MessageId=str(uuid.uuid4()),
        TopicArn=topic_arn,
        Token=token,
        Message=envelope["Message"].replace(SNS_TOPIC_ARN, topic_arn),
        SubscribeURL=(
            "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
            f"&TopicArn={topic_arn}&Token={token}"
        ),
        Timestamp=_iso(time.time()),
    )
    return envelope


# SIGNING
# ------------------------------------------------------------------------------


def mailgun_signed(
    payload: Mapping[str, Any],
    signing_key: str | None = None,
    *,
    timestamp: Timestamp = None,
    token: str | None = None,
) -> dict:
    """Return ``payload`` with a Mailgun ``signature`` block (fresh token, now by default)."""
    signing_key = signing_key or _anymail_setting(
        "MAILGUN_WEBHOOK_SIGNING_KEY", MAILGUN_SIGNING_KEY
    )
    stamp = str(int(_epoch(timestamp if timestamp is not None else time.time())))
    token = token or secrets.token_hex(25)
    digest = hmac.new(signing_key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {**payload, "signature": {"timestamp": stamp, "token": token, "signature": digest}}


@dataclass(frozen=True)
class SendGridKeys:
    """An ECDSA P-256 key pair like the Signed Event Webhook's."""

    private_key: ec.EllipticCurvePrivateKey

    @property
    def verification_key(self) -> str:
        """The public key as SendGrid's dashboard shows it (base64 DER, no PEM lines)."""
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")


def sendgrid_keypair() -> SendGridKeys:
    """Return a new key pair (``.verification_key`` goes in the verification-key setting)."""
    return SendGridKeys(ec.generate_private_key(ec.SECP256R1()))


@cache
def sendgrid_test_keys() -> SendGridKeys:
    """Return the key pair the ``webhooks`` fixture configures (one per process)."""
    return sendgrid_keypair()


def sendgrid_signed(
    body: bytes | str,
    private_key: ec.EllipticCurvePrivateKey | None = None,
    *,
    timestamp: Timestamp = None,
) -> dict[str, str]:
    """Return the signature headers SendGrid sends with ``body``."""
    private_key = private_key or sendgrid_test_keys().private_key
    body = body.encode() if isinstance(body, str) else body
    stamp = str(int(_epoch(timestamp if timestamp is not None else time.time())))
    signature = private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode("ascii"),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


@dataclass(frozen=True)
class SnsSigner:
    """A self-signed stand-in for Amazon SNS's signing key and certificate."""

    private_key: rsa.RSAPrivateKey
    certificate_pem: bytes
    cert_url: str = SNS_CERT_URL

    @classmethod
    def generate(cls, cert_url: str = SNS_CERT_URL) -> SnsSigner:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=3650))
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate.public_bytes(serialization.Encoding.PEM), cert_url)

    def sign(self, envelope: Mapping[str, Any], *, version: str = "2") -> dict:
        """Return ``envelope`` signed as SNS signs (SignatureVersion 1: SHA1, 2: SHA256)."""
        signed = {**envelope, "SignatureVersion": version, "SigningCertURL": self.cert_url}
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.private_key.sign(string_to_sign(signed), padding.PKCS1v15(), digest)
        signed["Signature"] = base64.b64encode(signature).decode("ascii")
        return signed

    def serve(self, rsps: responses.RequestsMock) -> None:
        """Answer GETs of ``cert_url`` with the certificate."""
        rsps.get(self.cert_url, body=self.certificate_pem, content_type="application/x-pem-file")


@cache
def sns_test_signer() -> SnsSigner:
    """Return the signer the ``webhooks`` fixture serves (one per process)."""
    return SnsSigner.generate()


def sns_signed(
    message: Mapping[str, Any], signer: SnsSigner | None = None, *, version: str = "2"
) -> dict:
    """Return a signed SNS envelope; an SES event (no ``Type``) is wrapped in one first."""
    envelope = message if "Type" in message else sns_notification(message)
    return (signer or sns_test_signer()).sign(envelope, version=version)


# POSTING
# ------------------------------------------------------------------------------

_FROM_SETTINGS = object()


def webhook_url(esp: str) -> str:
    """Return the tracking-webhook path for ``esp`` (anymail's URL name)."""
    if esp not in ESPS:
        raise ValueError(f"esp is one of: {', '.join(ESPS)}")
    return reverse(f"anymail:{esp}_tracking_webhook")


def basic_auth(credentials: str) -> str:
    """Return an ``Authorization`` header value for ``user:password``."""
    return "Basic " + base64.b64encode(credentials.encode()).decode("ascii")


def post_webhook(
    client: Client,
    esp: str,
    payload: Any,
    *,
    auth: str | None | object = _FROM_SETTINGS,
    sign: bool = True,
    signing_key: str | None = None,
    sendgrid_key: ec.EllipticCurvePrivateKey | None = None,
    sns_signer: SnsSigner | None = None,
    sns_version: str = "2",
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """POST ``payload`` to ``esp``'s tracking webhook the way the ESP does; return the response.

    ``auth``: basic-auth ``user:password`` (default: the first of
    ``ANYMAIL["WEBHOOK_SECRET"]``; None sends none). ``sign=False`` skips the
    ESP signature, so a Mailgun payload keeps whatever ``signature`` it has.
    Mailgun payloads are signed with ``signing_key`` (default: the configured
    key), SendGrid with ``sendgrid_key`` (default: ``sendgrid_test_keys()``),
    SNS with ``sns_signer`` (default: ``sns_test_signer()``). A SendGrid event
    dict is posted as a batch of one; an SES event is wrapped in a Notification.
    """
    send_headers: dict[str, str] = {}
    if esp == "mailgun":
        body = json.dumps(mailgun_signed(payload, signing_key) if sign else payload)
        content_type = "application/json"
    elif esp == "sendgrid":
        body = json.dumps([payload] if isinstance(payload, Mapping) else payload)
        content_type = "application/json"
        if sign:
            send_headers.update(sendgrid_signed(body, sendgrid_key))
    elif esp == "amazon_ses":
        envelope = payload if "Type" in payload else sns_notification(payload)
        if sign:
            envelope = sns_signed(envelope, sns_signer, version=sns_version)
        body = json.dumps(envelope)
        content_type = "text/plain; charset=UTF-8"
        send_headers.update(
            {
                "x-amz-sns-message-type": str(envelope.get("Type")),
                "x-amz-sns-message-id": str(envelope.get("MessageId")),
                "x-amz-sns-topic-arn": str(envelope.get("TopicArn")),
            }
        )
    else:
        raise ValueError(f"esp is one of: {', '.join(ESPS)}")
    if auth is _FROM_SETTINGS:
        configured = _anymail_setting("WEBHOOK_SECRET", [])
        configured = [configured] if isinstance(configured, str) else configured
        auth = configured[0] if configured else None
    if auth is not None:
        send_headers["Authorization"] = basic_auth(auth)
    send_headers.update(headers or {})
    return client.post(webhook_url(esp), data=body, content_type=content_type, headers=send_headers)


# PYTEST FIXTURE
# ------------------------------------------------------------------------------


@dataclass
class WebhookKit:
    """The credentials the ``webhooks`` fixture configured, and a poster that uses them."""

    rsps: responses.RequestsMock
    secret: str = WEBHOOK_SECRET
    mailgun_signing_key: str = MAILGUN_SIGNING_KEY
    sendgrid: SendGridKeys = field(default_factory=sendgrid_test_keys)
    sns: SnsSigner = field(default_factory=sns_test_signer)
    topic_arn: str = SNS_TOPIC_ARN

    def post(self, client: Client, esp: str, payload: Any, **kwargs: Any) -> HttpResponse:
        """``post_webhook`` with this kit's keys."""
        kwargs.setdefault("sendgrid_key", self.sendgrid.private_key)
        kwargs.setdefault("sns_signer", self.sns)
        return post_webhook(client, esp, payload, **kwargs)


@pytest.fixture
def webhooks(settings, db) -> Iterator[WebhookKit]:
    """Configure every ESP's webhook credentials with test keys; serve the SNS certificate.

    It needs the database (posts record events), as ``db`` does; mark the
    test ``django_db(transaction=True)`` for committed transactions.

    SNS subscriptions are not auto-confirmed (that would call AWS); set
    ``ANYMAIL["AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS"] = True`` and mock
    AWS (moto) to test it.
    """
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        kit = WebhookKit(rsps)
        settings.ANYMAIL = {
            **getattr(settings, "ANYMAIL", {}),
            "WEBHOOK_SECRET": [kit.secret],
            "MAILGUN_WEBHOOK_SIGNING_KEY": kit.mailgun_signing_key,
            "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": kit.sendgrid.verification_key,
            "AMAZON_SES_AUTO_CONFIRM_SNS_SUBSCRIPTIONS": False,
        }
        settings.TRANSACTIONAL_SNS_TOPIC_ARNS = [kit.topic_arn]
        kit.sns.serve(rsps)
        clear_certificate_cache()
        yield kit
    clear_certificate_cache()


@pytest.fixture
def tracking_events() -> Iterator[list[tuple[str, AnymailTrackingEvent]]]:
    """Collect ``(esp_name, event)`` for every anymail ``tracking`` signal sent during the test."""
    sent: list[tuple[str, AnymailTrackingEvent]] = []

    def collect(sender: type, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
        sent.append((esp_name, event))

    uid = f"transactional.testing.webhooks.tracking_events.{id(sent)}"
    tracking.connect(collect, weak=False, dispatch_uid=uid)
    yield sent
    tracking.disconnect(dispatch_uid=uid)


# HELPERS
# ------------------------------------------------------------------------------


def _anymail_setting(name: str, default: Any) -> Any:
    return getattr(settings, "ANYMAIL", {}).get(name, default)


def _epoch(value: datetime | float | int) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _iso(value: datetime | float | int) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _sendgrid_event_id() -> str:
    # SendGrid: "a string up to 100 characters that is Base64url encoded".
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
