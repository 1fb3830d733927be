"""Erasing one person's address and the personal data that came with it (GDPR).

``forget()`` replaces the address with a placeholder, ``forgotten:`` plus
the first 12 hex digits of its SHA-256, everywhere we keep it; empties the
bodies of the messages it received or appears in; and empties what ESPs told
us about it. The suppression list keeps an entry under the placeholder with
the full hash, which ``suppressed_among()`` matches, so the address is never
mailed again without being stored again. Idempotency keys that name it are
cleared, and the admin's history (``LogEntry``) is scrubbed too.

The address is looked for in both spellings of an internationalized domain
(``ann@bücher.example`` and ``ann@xn--bcher-kva.example``), in any case.
"""

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial, reduce
from operator import and_
from typing import Any
from urllib.parse import quote

from django.apps import apps
from django.db import transaction
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from .models import (
    Attempt, Event, Message, Recipient, Suppression, SyncCursor, address_hash, normalize_address,
)

logger = logging.getLogger(__name__)

PLACEHOLDER_PREFIX = "forgotten:"


@dataclass
class Erasure:
    """What ``forget()`` changed (or would change, in a dry run)."""

    placeholder: str
    messages_purged: int = 0
    subjects_blanked: int = 0
    senders_replaced: int = 0
    recipients_replaced: int = 0
    events_erased: int = 0
    other_events_emptied: int = 0
    idempotency_keys_cleared: int = 0
    admin_entries_scrubbed: int = 0
    #: "added", "replaced" (the entry held the address) or "kept" (already erased).
    suppression: str = ""


def placeholder_for(address: str) -> str:
    """Return what ``address`` is replaced with."""
    return PLACEHOLDER_PREFIX + address_hash(address)[:12]


def forget(address: str, *, dry_run: bool = False) -> Erasure:
    """Erase ``address`` from messages, recipients and events; keep it suppressed by hash."""
    address = normalize_address(address)
    erasure = Erasure(placeholder=placeholder_for(address))
    spellings = _spellings(address)
    mention = _mention_pattern(spellings)
    with transaction.atomic():
        recipients = Recipient.objects.filter(address__in=spellings)
        esp_message_ids = set(
            recipients.exclude(esp_message_id="").values_list("esp_message_id", flat=True)
        )
        messages = set(recipients.values_list("message_id", flat=True)) | _messages_naming(
            spellings, mention
        )
        _erase_messages(spellings, messages, mention, erasure)
        erasure.recipients_replaced = recipients.update(
            address=erasure.placeholder, updated_at=timezone.now()
        )
        _erase_events(spellings, messages, esp_message_ids, erasure)
        erasure.idempotency_keys_cleared = _clear_idempotency_keys(spellings, mention)
        erasure.admin_entries_scrubbed = _scrub_admin_history(
            spellings, mention, erasure.placeholder
        )
        erasure.suppression = _keep_suppressed(
            address, spellings, mention, erasure.placeholder
        )
        _forget_sync_positions(spellings)
        if dry_run:
            transaction.set_rollback(True)
    logger.info(
        "%s address %s: %d message body(ies), %d recipient(s), %d event(s)",
        "Would forget" if dry_run else "Forgot",
        erasure.placeholder,
        erasure.messages_purged,
        erasure.recipients_replaced,
        erasure.events_erased,
    )
    return erasure


def _forget_sync_positions(spellings: tuple[str, ...]) -> None:
    """Restart a `suppression sync` page position that names the address (Mailgun's paging URLs do)."""
    named = Q()
    for spelling in spellings:
        named |= Q(position__icontains=spelling) | Q(position__icontains=quote(spelling, safe=""))
    SyncCursor.objects.filter(named).update(position="", finished_at=None)


def _spellings(address: str) -> tuple[str, ...]:
    """Return the normalized address, then its domain in punycode if that differs.

    ``normalize_address()`` stores an internationalized domain in Unicode,
    but SES, mail bodies and rows stored before it did spell it in punycode.
    """
    local, _, domain = address.rpartition("@")
    ascii_domain = ".".join(map(_label_in_punycode, domain.split(".")))
    return tuple(dict.fromkeys([address, f"{local}@{ascii_domain}"]))


def _label_in_punycode(label: str) -> str:
    if label.isascii():
        return label
    try:
        return "xn--" + label.encode("punycode").decode("ascii")
    except UnicodeError:
        return label


def _mention_pattern(spellings: tuple[str, ...]) -> re.Pattern[str]:
    """Match any spelling in text, but not inside a longer address (ann@ in joann@)."""
    either = "|".join(map(re.escape, spellings))
    return re.compile(rf"(?<![\w.+-])(?:{either})(?![\w-]|\.\w)", re.IGNORECASE)


#: Printable ASCII but the two characters JSON escapes (" and \).
SEARCHABLE_RUN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")


def _may_name(field: str, spellings: tuple[str, ...]) -> Q:
    """Narrow rows to those whose ``field`` may name the address; the pattern decides.

    The database sees only the address's ASCII runs (``ann@b`` and
    ``cher.example``), each of which must be there: JSON text escapes
    non-ASCII (``\\u00fc``, in any case of the letter), and SQLite ignores
    case in ASCII only.
    """
    return reduce(Q.__or__, (_has_every_run(field, spelling) for spelling in spellings))


def _has_every_run(field: str, spelling: str) -> Q:
    runs = SEARCHABLE_RUN.findall(spelling)
    return reduce(and_, (Q(**{f"{field}__icontains": run}) for run in runs))


def _strings(value: Any) -> Iterator[str]:
    """Yield every string in decoded JSON data, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _replace_strings(value: Any, replace: Callable[[str], str]) -> Any:
    """Return decoded JSON data with ``replace`` applied to every string value."""
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, dict):
        return {key: _replace_strings(item, replace) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace_strings(item, replace) for item in value]
    return value


def _messages_naming(spellings: tuple[str, ...], mention: re.Pattern[str]) -> set[int]:
    """Return the messages naming the address in their body, subject or sender."""
    # Best effort for bodies: a base64 attachment hides the address. The
    # payload's strings are searched decoded: in its JSON text the address
    # may be escaped, or follow "\n" (whose "n" would look like a longer address).
    candidates = Message.objects.annotate(payload_text=Cast("payload", TextField())).filter(
        _may_name("payload_text", spellings)
        | _may_name("subject", spellings)
        | _may_name("from_email", spellings)
    )
    return {
        message.pk
        for message in candidates.only("pk", "payload", "subject", "from_email")
        if any(
            mention.search(text)
            for text in (*_strings(message.payload), message.subject, message.from_email)
        )
    }


def _erase_messages(
    spellings: tuple[str, ...], messages: set[int], mention: re.Pattern[str], erasure: Erasure
) -> None:
    rows = Message.objects.filter(pk__in=messages)
    erasure.messages_purged = rows.filter(payload__isnull=False).update(
        payload=None, purged_at=timezone.now()
    )
    # The subject says what a person was mailed about: blank it when the
    # mail was theirs alone, or names them; keep it for shared mail.
    others = Recipient.objects.filter(message_id__in=messages).exclude(address__in=spellings)
    shared = set(others.values_list("message_id", flat=True))
    blank = [
        m.pk
        for m in rows.exclude(subject="").only("pk", "subject")
        if m.pk not in shared or mention.search(m.subject)
    ]
    erasure.subjects_blanked = Message.objects.filter(pk__in=blank).update(subject="")
    senders = [m.pk for m in rows.only("pk", "from_email") if mention.search(m.from_email)]
    erasure.senders_replaced = Message.objects.filter(pk__in=senders).update(
        from_email=erasure.placeholder
    )
    # Provider errors quote the address ("550 <ann@example.com>: no such user").
    _scrub(rows, "last_error", spellings, mention, erasure.placeholder)
    _scrub(
        Attempt.objects.filter(message_id__in=messages),
        "error",
        spellings,
        mention,
        erasure.placeholder,
    )


def _erase_events(
    spellings: tuple[str, ...], messages: set[int], esp_message_ids: set[str], erasure: Erasure
) -> None:
    erasure.events_erased = Event.objects.filter(address__in=spellings).update(
        address=erasure.placeholder,
        raw=None,
        metadata={},
        user_agent="",
        click_url="",
        mta_response="",
        description="",
    )
    # Other recipients' events of the same mail: an SES payload lists every
    # destination and the headers, a Mailgun one the To header.
    others = Event.objects.filter(
        Q(message_id__in=messages) | Q(message__isnull=True, esp_message_id__in=esp_message_ids)
    )
    erasure.other_events_emptied = (
        others.exclude(address=erasure.placeholder).filter(raw__isnull=False).update(raw=None)
    )


def _clear_idempotency_keys(spellings: tuple[str, ...], mention: re.Pattern[str]) -> int:
    """Clear the idempotency keys naming the address (``receipt:ann@example.com:42``)."""
    # NULL rather than the placeholder: keys differing only in the address's
    # case or spelling would collide on the unique constraint, and a longer
    # key could overflow its 255 characters. Nothing is lost: a key holding
    # the placeholder would never match a caller's key again either, the
    # outbox itself frees old keys by setting NULL, and a message repeated to
    # the address itself is stored as suppressed.
    keys = Message.objects.filter(_may_name("idempotency_key", spellings))
    naming = [pk for pk, key in keys.values_list("pk", "idempotency_key") if mention.search(key)]
    return Message.objects.filter(pk__in=naming).update(idempotency_key=None)


def _scrub_admin_history(
    spellings: tuple[str, ...], mention: re.Pattern[str], placeholder: str
) -> int:
    """Replace the address in the admin's history: what was added, changed or deleted."""
    if not apps.is_installed("django.contrib.admin"):
        return 0
    from django.contrib.admin.models import LogEntry

    replace = partial(mention.sub, placeholder)
    scrubbed = 0
    entries = LogEntry.objects.filter(
        _may_name("object_repr", spellings) | _may_name("change_message", spellings)
    )
    for pk, object_repr, change_message in entries.values_list(
        "pk", "object_repr", "change_message"
    ):
        # The admin cuts object_repr at 200 characters; a short address grows.
        new_repr = replace(object_repr)[: LogEntry._meta.get_field("object_repr").max_length]
        new_message = _scrubbed_change_message(change_message, replace)
        if (new_repr, new_message) != (object_repr, change_message):
            LogEntry.objects.filter(pk=pk).update(object_repr=new_repr, change_message=new_message)
            scrubbed += 1
    return scrubbed


def _scrubbed_change_message(text: str, replace: Callable[[str], str]) -> str:
    """Return a change message scrubbed: JSON since Django 2.0 (non-ASCII escaped), text before."""
    try:
        data = json.loads(text)
    except ValueError:
        return replace(text)
    scrubbed = _replace_strings(data, replace)
    return text if scrubbed == data else json.dumps(scrubbed)


def _keep_suppressed(
    address: str, spellings: tuple[str, ...], mention: re.Pattern[str], placeholder: str
) -> str:
    """Make sure the address stays suppressed, under its placeholder; say how."""
    # Rows stored before addresses were normalized may hold the punycode
    # spelling, so two rows can list the address: one is enough.
    listed = Suppression.objects.for_addresses([address]) | Suppression.objects.filter(
        address__in=spellings
    )
    # One row, for every stream: a person who asked to be forgotten gets nothing.
    row, *extra = sorted(listed, key=lambda row: (row.address != placeholder, row.stream != "")) or [None]
    Suppression.objects.filter(pk__in=[other.pk for other in extra]).delete()
    if row is None:
        Suppression.objects.create(
            address=placeholder,
            address_hash=address_hash(address),
            reason=Suppression.Reason.MANUAL,
            source="forget",
            note="Address erased on request; matched by its hash.",
        )
        return "added"
    if row.address == placeholder and row.stream == Suppression.EVERY_STREAM:
        return "kept"
    Suppression.objects.filter(pk=row.pk).update(
        address=placeholder,
        address_hash=address_hash(address),
        stream=Suppression.EVERY_STREAM,
        note=mention.sub(placeholder, row.note),
    )
    return "replaced"


def _scrub(
    rows: QuerySet,
    field: str,
    spellings: tuple[str, ...],
    mention: re.Pattern[str],
    placeholder: str,
) -> None:
    """Replace mentions of the address in one text field of ``rows``."""
    for pk, text in rows.filter(_may_name(field, spellings)).values_list("pk", field):
        if (scrubbed := mention.sub(placeholder, text)) != text:
            rows.model.objects.filter(pk=pk).update(**{field: scrubbed})
