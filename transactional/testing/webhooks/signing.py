"""Signing posts as each ESP does: Mailgun HMAC, SendGrid ECDSA, SNS RSA."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from transactional.webhooks.sns import string_to_sign

from .common import MAILGUN_SIGNING_KEY, SNS_CERT_URL, Timestamp, anymail_setting, epoch
from .payloads import sns_notification


def mailgun_signed(
    payload: Mapping[str, Any],
    signing_key: str | None = None,
    *,
    timestamp: Timestamp = None,
    token: str | None = None,
) -> dict:
    """Return ``payload`` with a Mailgun ``signature`` block (fresh token, now by default)."""
    signing_key = signing_key or anymail_setting("MAILGUN_WEBHOOK_SIGNING_KEY", MAILGUN_SIGNING_KEY)
    stamp = str(int(epoch(timestamp if timestamp is not None else time.time())))
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
    stamp = str(int(epoch(timestamp if timestamp is not None else time.time())))
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
