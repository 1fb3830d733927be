"""SendGrid's bounces, blocks, spam reports and global unsubscribes (API v3)."""

from typing import Any

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
    ascii_address,
    clean_text,
    expect,
    from_epoch,
)

Reason = Suppression.Reason

BOUNCES = EspList("bounces", Reason.BOUNCED, "SendGrid bounces")
# A block is the receiving server refusing a message (content, our IP's
# reputation), often for a while only; SendGrid itself keeps sending to the
# address. Imported as a bounce all the same, saying so (docs/suppression-sync.md).
BLOCKS = EspList(
    "blocks", Reason.BOUNCED, "SendGrid blocks (may be temporary: the server refused a message)"
)
SPAM_REPORTS = EspList("spam_reports", Reason.COMPLAINED, "SendGrid spam reports")
UNSUBSCRIBES = EspList("unsubscribes", Reason.UNSUBSCRIBED, "SendGrid global unsubscribes")

#: The largest page SendGrid lists, and the addresses we add per request.
PAGE_SIZE = 500
PUSH_BATCH_SIZE = 1000


class SendGrid:
    """The suppression lists of one SendGrid account (or subuser: its API key's)."""

    label = "SendGrid"
    lists = (BOUNCES, BLOCKS, SPAM_REPORTS, UNSUBSCRIBES)
    push_lists = {Reason.UNSUBSCRIBED: UNSUBSCRIBES}
    cannot_push = "SendGrid's API cannot add bounces, blocks or spam reports, only unsubscribes"
    push_batch_size = PUSH_BATCH_SIZE
    #: Said on every push.
    push_note = (
        "SendGrid's API cannot add bounces, blocks or spam reports: only unsubscribes are pushed."
    )

    def __init__(self, *, sleep: Sleep) -> None:
        # kwargs={}: with None, anymail's "setting missing" error itself fails (TypeError).
        key = get_anymail_setting("api_key", esp_name="SendGrid", kwargs={}, allow_bare=True)
        api_url = get_anymail_setting(
            "api_url", esp_name="SendGrid", default="https://api.sendgrid.com/v3/"
        )
        if not api_url.endswith("/"):
            api_url += "/"
        self.api_url = api_url
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {key}"
        self.api = HttpApi(
            "SendGrid",
            session,
            key_setting="SENDGRID_API_KEY",
            refused_hint=(
                "Check the key and its Suppressions permission (read access to sync, "
                "full access to --push)."
            ),
            sleep=sleep,
        )

    def page(self, esp_list: EspList, position: str, what: str) -> Page:
        """Return the page at ``position`` (an offset; empty: the first page)."""
        if position and not position.isdigit():
            raise StaleCursor(f"the stored SendGrid offset {position[:20]!r} is not a number")
        offset = int(position or 0)
        body = self.api.get(
            f"{self.api_url}suppression/{esp_list.name}",
            params={"limit": PAGE_SIZE, "offset": offset},
            what=what,
        )
        expect(isinstance(body, list), "SendGrid", what, "a list of entries")
        expect(
            all(isinstance(item, dict) for item in body), "SendGrid", what, "each entry an object"
        )
        entries = [_entry(esp_list, item) for item in body]
        return Page(entries, str(offset + len(body)) if len(body) >= PAGE_SIZE else None)

    def push(self, esp_list: EspList, rows: list[Suppression], what: str) -> None:
        """Add ``rows`` to the global unsubscribes (SendGrid ignores those it has)."""
        body = {"recipient_emails": [ascii_address(row.address) for row in rows]}
        self.api.post(f"{self.api_url}asm/suppressions/global", body, what=what)


def _entry(esp_list: EspList, item: dict[str, Any]) -> Entry:
    detail = f"{clean_text(item.get('status'))} {clean_text(item.get('reason'))}"
    return Entry(item.get("email"), detail.strip(), from_epoch(item.get("created")))
