"""Amazon SNS message signatures, which anymail does not check.

SNS signs every HTTP(S) message with an AWS key whose certificate it names in
``SigningCertURL``. We trust only certificate URLs that match
``TRANSACTIONAL_SNS_CERT_URL_PATTERN`` (AWS's own ``https://sns.<region>.amazonaws.com``
hosts by default): a pattern that trusted any ``amazonaws.com`` URL would let
anyone sign with a certificate they host in their own S3 bucket.
https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..conf import get_setting

#: Seconds a certificate download may take. SNS waits 15 s for our answer.
CERT_TIMEOUT_SECONDS = 5.0

# The fields signed, in this order, as "Name\nvalue\n" each. Subject is
# signed only when the message has one.
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
)
OPTIONAL_FIELDS = frozenset({"Subject"})

HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}

# AWS rotates signing certificates rarely; a handful of URLs covers every
# region a deployment hears from. The bound only stops unbounded growth.
_MAX_CACHED_CERTIFICATES = 32
_certificates: dict[str, rsa.RSAPublicKey] = {}
_certificates_lock = threading.Lock()


def allowed_topic_arns() -> list[str]:
    """Return the SNS topics allowed to post (``TRANSACTIONAL_SNS_TOPIC_ARNS``)."""
    return list(get_setting("SNS_TOPIC_ARNS"))


class SignatureError(ValueError):
    """The message is not signed by Amazon SNS as it claims."""


class CertificateUnavailable(Exception):
    """A trusted signing certificate could not be fetched right now."""


def verify(message: dict, *, cert_url_pattern: str, timeout: float = CERT_TIMEOUT_SECONDS) -> None:
    """Raise SignatureError unless ``message`` carries a valid SNS signature."""
    version = message.get("SignatureVersion")
    if not isinstance(version, str) or version not in HASHES:
        raise SignatureError("unsupported SignatureVersion")
    cert_url = message.get("SigningCertURL")
    if not is_trusted_cert_url(cert_url, cert_url_pattern):
        raise SignatureError("SigningCertURL is not a trusted Amazon SNS certificate URL")
    try:
        signature = base64.b64decode(message.get("Signature"), validate=True)
    except (TypeError, ValueError, binascii.Error) as err:
        raise SignatureError("Signature is not base64") from err
    public_key = certificate_key(cert_url, timeout=timeout)
    try:
        public_key.verify(signature, string_to_sign(message), padding.PKCS1v15(), HASHES[version]())
    except InvalidSignature as err:
        raise SignatureError("signature does not match the message") from err


def string_to_sign(message: dict) -> bytes:
    """Return the bytes SNS signed for ``message`` (its canonical string)."""
    fields = NOTIFICATION_FIELDS if message.get("Type") == "Notification" else CONFIRMATION_FIELDS
    parts = []
    for name in fields:
        value = message.get(name)
        if value is None and name in OPTIONAL_FIELDS:
            continue
        if not isinstance(value, str):
            raise SignatureError(f"{name} is missing or not a string")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode("utf-8")


def is_trusted_cert_url(url: object, pattern: str) -> bool:
    """Return whether ``url`` is an https URL that matches ``pattern`` as a whole."""
    if not isinstance(url, str):
        return False
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return False
    # https is enforced here too, whatever pattern an operator configures.
    return scheme == "https" and re.fullmatch(pattern, url) is not None


def certificate_key(url: str, *, timeout: float = CERT_TIMEOUT_SECONDS) -> rsa.RSAPublicKey:
    """Return the RSA public key of the certificate at ``url`` (cached per URL)."""
    key = _certificates.get(url)
    if key is None:
        key = _fetch_certificate_key(url, timeout)
        with _certificates_lock:
            if len(_certificates) >= _MAX_CACHED_CERTIFICATES:
                _certificates.clear()
            _certificates[url] = key
    return key


def clear_certificate_cache() -> None:
    """Forget every downloaded certificate (tests, or after a key rotation)."""
    with _certificates_lock:
        _certificates.clear()


def _fetch_certificate_key(url: str, timeout: float) -> rsa.RSAPublicKey:
    try:
        # No redirects: the URL we checked is the only one we fetch.
        response = requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as err:
        raise CertificateUnavailable(f"could not fetch {url}: {type(err).__name__}") from err
    if response.status_code != 200:
        raise CertificateUnavailable(f"{url} answered HTTP {response.status_code}")
    try:
        key = x509.load_pem_x509_certificate(response.content).public_key()
    except ValueError as err:
        raise CertificateUnavailable(f"{url} is not a PEM certificate") from err
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateUnavailable(f"{url} does not hold an RSA key")
    return key
