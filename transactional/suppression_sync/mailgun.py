"""Mailgun's bounces, complaints and unsubscribes of MAILGUN_SENDER_DOMAIN (API v3)."""

from datetime import UTC
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from anymail.utils import get_anymail_setting

from ..models import Suppression
from .base import (
    Entry,
    EspList,
    HttpApi,
    Page,
    Sleep,
    StaleCursor,
    SyncError,
    ascii_address,
    clean_text,
    expect,
    from_text,
)

Reason = Suppression.Reason

BOUNCES = EspList("bounces", Reason.BOUNCED, "Mailgun bounces")
COMPLAINTS = EspList("complaints", Reason.COMPLAINED, "Mailgun complaints")
UNSUBSCRIBES = EspList("unsubscribes", Reason.UNSUBSCRIBED, "Mailgun unsubscribes")

#: The largest page Mailgun lists, and the most entries one POST may add.
PAGE_SIZE = 1000
PUSH_BATCH_SIZE = 1000


class Mailgun:
    """The suppression lists of one Mailgun sending domain."""

    label = "Mailgun"
    lists = (BOUNCES, COMPLAINTS, UNSUBSCRIBES)
    #: Our reason -> the list it is pushed into.
    push_lists = {
        Reason.BOUNCED: BOUNCES,
        Reason.COMPLAINED: COMPLAINTS,
        Reason.UNSUBSCRIBED: UNSUBSCRIBES,
    }
    cannot_push = "Mailgun keeps lists of bounces, complaints and unsubscribes only"
    push_batch_size = PUSH_BATCH_SIZE
    push_note = ""

    def __init__(self, *, sleep: Sleep) -> None:
        # kwargs={}: with None, anymail's "setting missing" error itself fails (TypeError).
        key = get_anymail_setting("api_key", esp_name="Mailgun", kwargs={}, allow_bare=True)
        self.domain = get_anymail_setting(
            "sender_domain", esp_name="Mailgun", allow_bare=True, default=None
        )
        api_url = get_anymail_setting(
            "api_url", esp_name="Mailgun", default="https://api.mailgun.net/v3"
        )
        if not self.domain:
            raise SyncError(
                "Set MAILGUN_SENDER_DOMAIN: Mailgun keeps suppression lists per domain."
            )
        if not api_url.endswith("/"):
            api_url += "/"
        session = requests.Session()
        session.auth = ("api", key)
        self.base = f"{api_url}{quote(self.domain, safe='')}/"
        self.api = HttpApi(
            "Mailgun",
            session,
            key_setting="MAILGUN_API_KEY",
            refused_hint="Check the key: a private API key (a domain sending key can only send).",
            not_found_hint=(
                f"Check MAILGUN_SENDER_DOMAIN ({self.domain!r}), and MAILGUN_API_URL ({api_url}): "
                "a domain in Mailgun's EU region needs https://api.eu.mailgun.net/v3."
            ),
            sleep=sleep,
        )

    def page(self, esp_list: EspList, position: str, what: str) -> Page:
        """Return the page at ``position`` (a ``paging.next`` URL; empty: the first page)."""
        first = self.base + esp_list.name
        if position and not _same_endpoint(position, first):
            raise StaleCursor(f"the stored Mailgun page URL is not under {first}")
        if position:
            body = self.api.get(position, what=what)
        else:
            body = self.api.get(first, params={"limit": PAGE_SIZE}, what=what)
        expected = 'an object with an "items" list and "paging" URLs'
        expect(
            isinstance(body, dict) and isinstance(body.get("items"), list),
            "Mailgun",
            what,
            expected,
        )
        items, paging = body["items"], body.get("paging") or {}
        expect(
            all(isinstance(item, dict) for item in items), "Mailgun", what, "each item an object"
        )
        expect(isinstance(paging, dict), "Mailgun", what, expected)
        next_url = paging.get("next")
        expect(next_url is None or isinstance(next_url, str), "Mailgun", what, "paging.next a URL")
        # The key goes wherever paging.next points: only ever to this list.
        expect(
            not next_url or _same_endpoint(next_url, first),
            "Mailgun",
            what,
            f"paging.next under {first}",
        )
        # Mailgun always sends a next URL; the page after the last one is empty.
        done = not items or not next_url or next_url == position
        return Page([_entry(esp_list, item) for item in items], None if done else next_url)

    def push(self, esp_list: EspList, rows: list[Suppression], what: str) -> None:
        """Add ``rows`` to ``esp_list`` (Mailgun replaces an entry it has already)."""
        self.api.post(
            self.base + esp_list.name, [_record(esp_list, row) for row in rows], what=what
        )


def _same_endpoint(url: str, endpoint: str) -> bool:
    """Whether ``url`` is ``endpoint`` (same scheme, host and path), whatever its query."""
    try:
        given, wanted = urlsplit(url), urlsplit(endpoint)
    except ValueError:
        return False
    return (given.scheme, given.netloc, given.path) == (wanted.scheme, wanted.netloc, wanted.path)


def _entry(esp_list: EspList, item: dict[str, Any]) -> Entry:
    if esp_list is BOUNCES:
        detail = f"{clean_text(item.get('code'))} {clean_text(item.get('error'))}"
    elif esp_list is UNSUBSCRIBES:
        tags = item.get("tags", [item.get("tag")])
        tags = [clean_text(tag, 64) for tag in tags] if isinstance(tags, list) else []
        detail = "" if tags in ([], ["*"], [""]) else f"only tags {', '.join(tags)}"
    else:
        detail = ""
    return Entry(item.get("address"), detail.strip(), from_text(item.get("created_at")))


def _record(esp_list: EspList, row: Suppression) -> dict[str, Any]:
    """Return one entry of an add request; our notes stay ours."""
    record: dict[str, Any] = {
        "address": ascii_address(row.address),
        "created_at": format_datetime(row.created_at.astimezone(UTC), usegmt=True),
    }
    if esp_list is BOUNCES:
        record |= {
            "code": "550",
            "error": f"Suppressed by transactional ({row.get_reason_display()})",
        }
    elif esp_list is UNSUBSCRIBES:
        record["tags"] = ["*"]
    return record
