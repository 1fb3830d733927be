"""One-click unsubscribe (RFC 8058): the links a stream's mail carries, and their tokens.

Mail on any stream but "transactional" carries ``List-Unsubscribe`` (an
https link, and a mailto if TRANSACTIONAL_UNSUBSCRIBE_MAILTO is set) and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The link holds a token
naming the address and the stream, encrypted and authenticated with a key
derived from SECRET_KEY: it never expires, it does not show the address,
and a changed character makes it worthless. Posting to it suppresses the
address on that stream only (views in ``unsubscribe_views.py``).
"""

import base64
import copy
import hashlib
import json
import re
from urllib.parse import quote, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.core.mail import EmailMessage
from django.http.request import validate_host
from django.urls import reverse

from .conf import get_setting, streams
from .models import DEFAULT_STREAM, normalize_address

SALT = "transactional.unsubscribe"
#: RFC 8058 section 3.1: the body a one-click POST carries.
ONE_CLICK = "List-Unsubscribe=One-Click"
#: Unpadded base64url of at least the 16-byte SIV tag and a little payload.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{30,1000}")


class BadToken(SuspiciousOperation):
    """An unsubscribe token that was not made by us (forged, altered, cut short)."""


def _keys() -> list[AESSIV]:
    # One key per SECRET_KEY (the current one first, then SECRET_KEY_FALLBACKS),
    # derived for this purpose only; AES-SIV takes 512 bits.
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [AESSIV(hashlib.sha512(f"{SALT}:{secret}".encode()).digest()) for secret in secrets]


def make_token(address: str, stream: str) -> str:
    """Return the token naming ``address`` on ``stream``.

    Encrypted and authenticated with AES-SIV, keyed from SECRET_KEY: a link
    in an access log or a forwarded mail does not show the address, and a
    changed character makes it worthless. Deterministic (the same address
    and stream give the same token) and without expiry.
    """
    payload = json.dumps([normalize_address(address), stream], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(_keys()[0].encrypt(payload, None)).decode("ascii").rstrip("=")


def read_token(token: str) -> tuple[str, str]:
    """Return the (address, stream) a token names; raise BadToken if we did not make it."""
    try:
        sealed = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
    except (ValueError, UnicodeError) as error:
        raise BadToken("This unsubscribe link is not valid (altered or cut short).") from error
    if not _TOKEN.fullmatch(token):
        raise BadToken("This unsubscribe link is not valid (altered or cut short).")
    for key in _keys():
        try:
            address, stream = json.loads(key.decrypt(sealed, None))
            break
        except InvalidTag:
            continue
        except (ValueError, TypeError, UnicodeError) as error:
            raise BadToken("This unsubscribe link is not valid.") from error
    else:
        raise BadToken("This unsubscribe link is not valid (altered or cut short).")
    if not isinstance(address, str) or not isinstance(stream, str) or stream == DEFAULT_STREAM:
        raise BadToken("This unsubscribe link is not valid.")
    if stream not in streams():
        raise BadToken(f"The stream {stream!r} of this unsubscribe link is no longer sent.")
    return address, stream


def site_url() -> str:
    """Return TRANSACTIONAL_SITE_URL, the base of the links in mail."""
    url = get_setting("SITE_URL")
    if not url:
        raise ImproperlyConfigured(
            "TRANSACTIONAL_SITE_URL is not set: mail on a stream other than 'transactional' "
            "needs it for its unsubscribe link (e.g. https://mail.acme-corp.com)."
        )
    return url.rstrip("/")


def link(address: str, stream: str) -> str:
    """Return the https link that unsubscribes ``address`` from ``stream``."""
    return site_url() + reverse("transactional-unsubscribe", args=[make_token(address, stream)])


def headers(address: str, stream: str) -> dict[str, str]:
    """Return the List-Unsubscribe headers for mail to ``address`` on ``stream``."""
    targets = [f"<{link(address, stream)}>"]
    if mailbox := get_setting("UNSUBSCRIBE_MAILTO"):
        subject = quote(f"unsubscribe {make_token(address, stream)}")
        targets.append(f"<mailto:{mailbox}?subject={subject}>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": ONE_CLICK}


def with_headers(email: EmailMessage, address: str, stream: str) -> EmailMessage:
    """Return a copy of ``email`` carrying the unsubscribe headers.

    A message with a List-Unsubscribe of its own keeps it, and gets no
    List-Unsubscribe-Post either: one-click is a promise about our link.
    """
    if any(name.lower() == "list-unsubscribe" for name in email.extra_headers):
        return email
    email = copy.copy(email)
    email.extra_headers = {**email.extra_headers, **headers(address, stream)}
    return email


def settings_problem() -> str | None:
    """Say what keeps the unsubscribe links from working, or None."""
    if len(streams()) == 1:
        return None
    url = get_setting("SITE_URL")
    if not url:
        return "TRANSACTIONAL_SITE_URL is not set, and mail on streams other than 'transactional' needs it."
    if not settings.DEBUG and not url.startswith("https://"):
        return f"TRANSACTIONAL_SITE_URL={url!r} is not https: RFC 8058 one-click links must be https."
    host = urlsplit(url).hostname or ""
    if not validate_host(host, settings.ALLOWED_HOSTS):
        return (
            f"TRANSACTIONAL_SITE_URL={url!r} names the host {host!r}, which ALLOWED_HOSTS does "
            "not allow: every one-click unsubscribe would be refused with 400."
        )
    return None
