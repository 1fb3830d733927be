"""Pull the ESPs' suppression lists into ours, resumably, page by page; push ours to theirs."""

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from anymail.exceptions import AnymailConfigurationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from ..conf import providers
from ..erasure import PLACEHOLDER_PREFIX
from ..models import Suppression, SyncCursor
from ..suppression import EVERY_STREAM, suppress_many, suppressed_among
from .base import EspList, Page, Sleep, StaleCursor, SyncError, clean_text, valid_address
from .mailgun import Mailgun
from .sendgrid import SendGrid
from .ses import AmazonSes

logger = logging.getLogger(__name__)

#: ``Suppression.source`` of every entry a sync adds.
SOURCE = "esp-sync"

#: Delivery backend -> the client of that ESP's suppression lists.
CLIENTS: dict[str, type[Any]] = {
    "anymail.backends.amazon_ses.EmailBackend": AmazonSes,
    "anymail.backends.mailgun.EmailBackend": Mailgun,
    "anymail.backends.sendgrid.EmailBackend": SendGrid,
}


@dataclass
class ListReport:
    """What a run took from one ESP list."""

    provider: str
    list_name: str
    dry_run: bool = False
    pages: int = 0
    fetched: int = 0
    added: int = 0
    already_listed: int = 0
    skipped_invalid: int = 0
    #: The page this run started at, when it resumed an interrupted one.
    resumed_at_page: int | None = None

    @property
    def steps(self) -> int:
        return self.pages

    def progress(self) -> str:
        return f"{self.provider} {self.list_name}: page {self.pages}, " + self._counts()

    def summary(self) -> str:
        resumed = f" (resumed at page {self.resumed_at_page})" if self.resumed_at_page else ""
        return f"{self.provider} {self.list_name}: {self._counts()}{resumed}"

    def _counts(self) -> str:
        return (
            f"fetched {self.fetched}, {'would add' if self.dry_run else 'added'} {self.added}, "
            f"already listed {self.already_listed}, skipped invalid {self.skipped_invalid}"
        )


@dataclass
class PushReport:
    """What a run added (or would add) to one ESP list."""

    provider: str
    list_name: str
    dry_run: bool = False
    total: int = 0
    pushed: int = 0
    batches: int = 0
    skipped_invalid: int = 0

    @property
    def steps(self) -> int:
        return self.batches

    def progress(self) -> str:
        return f"push to {self.provider} {self.list_name}: {self.pushed} of {self.total}"

    def summary(self) -> str:
        if self.dry_run:
            return f"push to {self.provider} {self.list_name}: would push {self.total}"
        invalid = f", skipped invalid {self.skipped_invalid}" if self.skipped_invalid else ""
        return (
            f"push to {self.provider} {self.list_name}: pushed {self.pushed} "
            f"in {self.batches} batch(es){invalid}"
        )


@dataclass
class SyncReport:
    """What a run did, list by list, and what it left alone and why."""

    dry_run: bool = False
    lists: list[ListReport] = field(default_factory=list)
    pushes: list[PushReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: Called after every page or batch, and with True once a list is done.
Progress = Callable[[ListReport | PushReport, bool], None]


def sync(
    names: Sequence[str] = (),
    *,
    push: bool = False,
    dry_run: bool = False,
    restart: bool = False,
    progress: Progress | None = None,
    sleep: Sleep | None = None,
) -> SyncReport:
    """Merge the ESPs' lists into ours, then (``push``) ours into theirs; return what was done.

    ``names`` are providers of EMAIL_PROVIDERS; none: every configured ESP.
    A SyncError carries the report of what was done before it.
    """
    report = SyncReport(dry_run=dry_run)
    try:
        clients = _clients(names, report, sleep or time.sleep)
        seen: set[str] = set()  # for a dry run, which adds nothing to compare with
        for name, client in clients.items():
            for esp_list in client.lists:
                _pull(name, client, esp_list, report, restart, progress or _quiet, seen)
        if push:
            for name, client in clients.items():
                _push(name, client, report, progress or _quiet)
    except SyncError as error:
        error.report = report
        raise
    return report


def push(
    names: Sequence[str] = (),
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    sleep: Sleep | None = None,
) -> SyncReport:
    """Add our suppressions to the ESPs' lists (none pulled); return what was done."""
    report = SyncReport(dry_run=dry_run)
    try:
        for name, client in _clients(names, report, sleep or time.sleep).items():
            _push(name, client, report, progress or _quiet)
    except SyncError as error:
        error.report = report
        raise
    return report


def _quiet(report: ListReport | PushReport, done: bool) -> None:
    pass


def _clients(names: Sequence[str], report: SyncReport, sleep: Sleep) -> dict[str, Any]:
    """Return provider name -> list client: those named, or every configured ESP."""
    configured = providers()
    listed = ", ".join(configured)
    if names:
        for name in names:
            if name not in configured:
                raise SyncError(
                    f"{name!r} is not a configured provider: EMAIL_PROVIDERS (or EMAIL_PROVIDER) "
                    f"names {listed}."
                )
            if configured[name] not in CLIENTS:
                raise SyncError(
                    f"{name} keeps no suppression list to sync; Amazon SES, Mailgun and SendGrid do."
                )
        chosen = list(dict.fromkeys(names))
    else:
        chosen = [name for name, backend in configured.items() if backend in CLIENTS]
        report.notes += [
            f"{name}: skipped; it keeps no suppression list."
            for name, backend in configured.items()
            if backend not in CLIENTS
        ]
        if not chosen:
            raise SyncError(
                f"No provider to sync: EMAIL_PROVIDERS (or EMAIL_PROVIDER) names {listed}; "
                "of those we support, Amazon SES, Mailgun and SendGrid keep suppression lists."
            )
    clients = {}
    for name in chosen:
        try:
            clients[name] = CLIENTS[configured[name]](sleep=sleep)
        except AnymailConfigurationError as error:
            raise SyncError(f"{name}: {error}") from error
    return clients


# Pull
# ------------------------------------------------------------------------------


def _pull(
    name: str,
    client: Any,
    esp_list: EspList,
    report: SyncReport,
    restart: bool,
    progress: Progress,
    seen: set[str],
) -> None:
    """Merge one ESP list, page by page, from where its cursor says."""
    dry_run = report.dry_run
    cursor = _cursor(name, esp_list.name, restart=restart, dry_run=dry_run)
    result = ListReport(name, esp_list.name, dry_run=dry_run)
    result.resumed_at_page = cursor.pages + 1 if cursor.pages else None
    report.lists.append(result)
    started_over = False
    while True:
        number, position = cursor.pages + 1, cursor.position
        try:
            page = client.page(esp_list, position, f"{esp_list.name}, page {number}")
        except StaleCursor as error:
            if not position or started_over:  # once: an ESP refusing every position loops
                raise SyncError(
                    f"{error} {_resume_hint(name, esp_list, number, dry_run)}"
                ) from error
            started_over = True
            logger.warning("%s %s: %s; starting the list over", name, esp_list.name, error)
            report.notes.append(f"{name} {esp_list.name}: {error}; started the list over.")
            _start_over(cursor, dry_run=dry_run)
            result.resumed_at_page = None
            continue
        except SyncError as error:
            raise type(error)(f"{error} {_resume_hint(name, esp_list, number, dry_run)}") from error
        if page.next_position == position:  # an ESP pointing at the page it sent
            page = Page(page.entries, None)
        rows, invalid = _rows(esp_list, page.entries)
        added = _merge(rows, cursor, page, invalid, dry_run=dry_run, seen=seen)
        result.pages += 1
        result.fetched += len(page.entries)
        result.added += added
        result.already_listed += len(rows) - added
        result.skipped_invalid += invalid
        progress(result, page.next_position is None)
        if page.next_position is None:
            break
    logger.info(
        "Synced %s %s%s: %d fetched, %d added, %d already listed, %d invalid skipped",
        name,
        esp_list.name,
        " (dry run)" if dry_run else "",
        result.fetched,
        result.added,
        result.already_listed,
        result.skipped_invalid,
    )


def _resume_hint(name: str, esp_list: EspList, number: int, dry_run: bool) -> str:
    if dry_run:
        return "(Dry run: nothing was written.)"
    if number == 1:
        return f"Nothing from {name} {esp_list.name} was written."
    merged = "Page 1 is" if number == 2 else f"Pages 1-{number - 1} are"
    return (
        f"{merged} merged, nothing from page {number} of {name} {esp_list.name}: "
        "run the same command again (without --restart) to resume there."
    )


def _cursor(provider: str, list_name: str, *, restart: bool, dry_run: bool) -> SyncCursor:
    """Return where to start: the cursor of an interrupted pass, or a fresh one."""
    cursor = SyncCursor.objects.filter(provider=provider, list_name=list_name).first()
    cursor = cursor or SyncCursor(provider=provider, list_name=list_name)
    if restart or cursor.finished_at or not cursor.position:
        _start_over(cursor, dry_run=dry_run)
    return cursor


def _start_over(cursor: SyncCursor, *, dry_run: bool) -> None:
    cursor.position = ""
    cursor.pages = cursor.fetched = cursor.added = cursor.already_listed = 0
    cursor.skipped_invalid = 0
    cursor.started_at, cursor.finished_at = timezone.now(), None
    if not dry_run:
        cursor.save()


def _rows(esp_list: EspList, entries: list[Any]) -> tuple[list[Suppression], int]:
    """Return the unsaved rows of a page's valid entries, and how many were not valid."""
    rows, now = [], timezone.now()
    for entry in entries:
        address = valid_address(entry.address)
        if address is None:
            continue
        note = f"{esp_list.label}: {entry.detail}" if entry.detail else esp_list.label
        rows.append(
            Suppression(
                address=address,
                stream=EVERY_STREAM,
                reason=entry.reason or esp_list.reason,
                source=SOURCE,
                note=clean_text(note),
                created_at=entry.created_at or now,
            )
        )
    return rows, len(entries) - len(rows)


def _merge(
    rows: list[Suppression],
    cursor: SyncCursor,
    page: Page,
    invalid: int,
    *,
    dry_run: bool,
    seen: set[str],
) -> int:
    """Add a page's rows and move the cursor past it, together; return how many were new."""
    if dry_run:
        # suppressed_among matches an erased address by its hash, as suppress_many does.
        listed = suppressed_among((row.address for row in rows), stream=EVERY_STREAM)
        new = {row.address for row in rows} - listed - seen
        seen |= new
        _advance(cursor, page, len(new), len(rows) - len(new), invalid)
        return len(new)
    with transaction.atomic():
        added = len(suppress_many(rows))
        _advance(cursor, page, added, len(rows) - added, invalid)
        cursor.save()
    return added


def _advance(cursor: SyncCursor, page: Page, added: int, listed: int, invalid: int) -> None:
    cursor.position = page.next_position or ""
    cursor.pages += 1
    cursor.fetched += len(page.entries)
    cursor.added += added
    cursor.already_listed += listed
    cursor.skipped_invalid += invalid
    if page.next_position is None:
        cursor.finished_at = timezone.now()


# Push
# ------------------------------------------------------------------------------


def _push(name: str, client: Any, report: SyncReport, progress: Progress) -> None:
    """Add our every-stream entries to the ESP's lists that take them; note the rest."""
    every_stream = Suppression.objects.filter(stream=EVERY_STREAM)
    in_clear = every_stream.exclude(address__startswith=PLACEHOLDER_PREFIX)
    for reason, esp_list in client.push_lists.items():
        rows = in_clear.filter(reason=reason)
        result = PushReport(name, esp_list.name, dry_run=report.dry_run, total=rows.count())
        report.pushes.append(result)
        if report.dry_run:
            continue
        for batch in _batches(rows, client.push_batch_size):
            valid = [row for row in batch if valid_address(row.address) == row.address]
            what = f"{esp_list.name}, batch {result.batches + 1}"
            try:
                if valid:
                    client.push(esp_list, valid, what)
            except SyncError as error:
                raise type(error)(
                    f"{error} {result.pushed} address(es) were pushed before it; pushing again "
                    f"is safe ({client.label} accepts an address it has)."
                ) from error
            result.batches += 1
            result.pushed += len(valid)
            result.skipped_invalid += len(batch) - len(valid)
            progress(result, False)
        progress(result, True)
        logger.info("Pushed %d address(es) to %s %s", result.pushed, name, esp_list.name)
    report.notes += _not_pushed(name, client, every_stream, in_clear)


def _batches(rows: QuerySet, size: int) -> Iterator[list[Suppression]]:
    """Yield ``rows`` in primary-key order, ``size`` at a time, one query per batch."""
    last = 0
    while batch := list(rows.filter(pk__gt=last).order_by("pk")[:size]):
        yield batch
        last = batch[-1].pk


def _not_pushed(name: str, client: Any, every_stream: QuerySet, in_clear: QuerySet) -> list[str]:
    notes = [f"{name}: {client.push_note}"] if client.push_note else []
    others = (
        in_clear.exclude(reason__in=list(client.push_lists))
        .values_list("reason")
        .annotate(count=Count("pk"))
        .order_by("reason")
    )
    if counts := ", ".join(f"{count} {reason}" for reason, count in others):
        notes.append(f"{name}: not pushed: {counts} ({client.cannot_push}).")
    if erased := every_stream.filter(address__startswith=PLACEHOLDER_PREFIX).count():
        notes.append(f"{name}: not pushed: {erased} erased address(es) (only a hash is kept).")
    if one_stream := Suppression.objects.exclude(stream=EVERY_STREAM).count():
        notes.append(
            f"{name}: not pushed: {one_stream} entry(ies) for one stream only "
            f"(at {client.label} they would stop every stream)."
        )
    return notes
