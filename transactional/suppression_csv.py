"""The suppression list as CSV: our own format out, ours and the ESPs' exports in.

Export writes ``address,reason,source,created_at,note``. Import reads that,
one-column address lists, and the exports of the ESPs we support, told
apart by their header (``FORMATS``). Bad rows are reported by line number
and skipped; the rest is added in bulk, chunk by chunk, and rows already
listed are left alone, so an import can be re-run.
"""

import csv
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TextIO

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone

from .erasure import PLACEHOLDER_PREFIX
from .models import Suppression, normalize_address
from .suppression import suppress_many, suppressed_among

logger = logging.getLogger(__name__)

Reason = Suppression.Reason

HEADER = ("address", "reason", "source", "created_at", "note")


@dataclass(frozen=True)
class Format:
    """Where one kind of CSV file keeps each field (lower-case column names)."""

    name: str
    #: Columns whose presence in the header identifies the format.
    signature: frozenset[str]
    address: str
    reason: str | None = None
    #: The file's reason values (lower case) -> ours; None: take ours as written.
    reasons: Mapping[str, str] | None = field(default_factory=dict)
    source: str | None = None
    created: str | None = None
    note: str | None = None
    #: A date we cannot read fails the row (our own files) or is ignored.
    strict_dates: bool = False

    def matches(self, columns: Collection[str]) -> bool:
        return self.signature <= set(columns)


#: Tried in order; the first whose columns are in the header wins.
FORMATS = (
    Format(
        "transactional",
        frozenset(HEADER[:3]),
        address="address",
        reason="reason",
        reasons=None,
        source="source",
        created="created_at",
        note="note",
        strict_dates=True,
    ),
    # The SES account-level suppression list (EmailAddress,Reason,LastUpdateTime).
    Format(
        "Amazon SES",
        frozenset({"emailaddress"}),
        address="emailaddress",
        reason="reason",
        reasons={"bounce": Reason.BOUNCED, "complaint": Reason.COMPLAINED},
        created="lastupdatetime",
    ),
    # Mailgun bounces (address,code,error,created_at), unsubscribes and complaints.
    Format(
        "Mailgun", frozenset({"address"}), address="address", note="error", created="created_at"
    ),
    # SendGrid bounces (email,reason,status,created), blocks, spam reports, invalid emails.
    Format("SendGrid", frozenset({"email"}), address="email", note="reason", created="created"),
)
#: A file of bare addresses, one per line, with or without a header line.
ADDRESS_LIST = Format("address list", frozenset(), address="")


@dataclass
class ImportReport:
    """What an import read, added and refused."""

    format: str
    rows: int = 0
    added: int = 0
    already_listed: int = 0
    errors: list[str] = field(default_factory=list)


class UnknownFormat(ValueError):
    """The CSV header matches none of the formats we read."""


# Export
# ------------------------------------------------------------------------------


def export_csv(out: TextIO, *, reasons: Collection[str] = ()) -> int:
    """Write the list (only ``reasons``, if given) to ``out``; return how many rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    rows = Suppression.objects.order_by("created_at", "pk")
    if reasons:
        rows = rows.filter(reason__in=reasons)
    count = 0
    for row in rows.iterator(chunk_size=2000):
        writer.writerow([row.address, row.reason, row.source, row.created_at.isoformat(), row.note])
        count += 1
    return count


# Import
# ------------------------------------------------------------------------------


def import_csv(
    lines: Iterable[str],
    *,
    reason: str = Reason.MANUAL,
    source: str = "import",
    dry_run: bool = False,
    chunk_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 10_000,
) -> ImportReport:
    """Add the addresses of a suppression CSV; return what was added and refused.

    ``reason`` and ``source`` apply where the file has no such column.
    """
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return ImportReport(format="empty file")
    fmt, columns = detect(header)
    report = ImportReport(format=fmt.name)
    chunk: list[Suppression | None] = []
    seen: set[str] = set()  # for a dry run, which adds nothing to compare with
    if fmt is ADDRESS_LIST and "@" in "".join(header):
        chunk.append(_row_or_error(fmt, columns, header, reader.line_num, reason, source, report))
    for values in reader:
        if not any(value.strip() for value in values):
            continue
        chunk.append(_row_or_error(fmt, columns, values, reader.line_num, reason, source, report))
        if progress and report.rows % progress_every == 0:
            progress(report.rows)
        if len(chunk) >= chunk_size:
            _add(chunk, report, seen, dry_run=dry_run)
            chunk = []
    _add(chunk, report, seen, dry_run=dry_run)
    logger.info(
        "Imported a %s suppression file: %d row(s), %d added, %d already listed, %d refused%s",
        report.format,
        report.rows,
        report.added,
        report.already_listed,
        len(report.errors),
        " (dry run)" if dry_run else "",
    )
    return report


def detect(header: list[str]) -> tuple[Format, dict[str, int]]:
    """Return the format of a file with this header row, and its column positions."""
    columns = {name.strip().lower(): position for position, name in enumerate(header)}
    for fmt in FORMATS:
        if fmt.matches(columns):
            return fmt, columns
    if len(header) == 1:
        return ADDRESS_LIST, {"": 0}
    raise UnknownFormat(
        f"Unrecognized CSV header {','.join(header)!r}: expected ours ({','.join(HEADER)}), "
        "an ESP export (an 'email', 'address' or 'EmailAddress' column) or one address per line."
    )


def _row_or_error(
    fmt: Format,
    columns: dict[str, int],
    values: list[str],
    line: int,
    reason: str,
    source: str,
    report: ImportReport,
) -> Suppression | None:
    """Return the row to add, or None after recording why it cannot be."""
    report.rows += 1
    try:
        return _row(fmt, columns, values, reason, source)
    except ValueError as error:
        report.errors.append(f"line {line}: {error}")
        return None


def _row(
    fmt: Format, columns: dict[str, int], values: list[str], reason: str, source: str
) -> Suppression:
    """Return an unsaved Suppression from one CSV row, or raise ValueError saying why not."""

    def cell(name: str | None) -> str:
        position = columns.get(name) if name is not None else None
        return values[position].strip() if position is not None and position < len(values) else ""

    return Suppression(
        address=_address(cell(fmt.address)),
        reason=_reason(fmt, cell(fmt.reason), reason),
        source=cell(fmt.source) or source,
        created_at=_created(cell(fmt.created), strict=fmt.strict_dates),
        note=cell(fmt.note),
    )


def _address(value: str) -> str:
    address = normalize_address(value)
    if address.startswith(PLACEHOLDER_PREFIX):
        raise ValueError(
            f"{value!r} is an erased address (only its hash was kept); it cannot be imported"
        )
    try:
        validate_email(address)
    except ValidationError:
        raise ValueError(f"not an email address: {value!r}") from None
    return address


def _reason(fmt: Format, value: str, default: str) -> str:
    if fmt.reasons is None:  # ours: the value must be one of our reasons
        if value not in Reason.values:
            raise ValueError(
                f"unknown reason {value!r} (expected one of {', '.join(Reason.values)})"
            )
        return value
    return fmt.reasons.get(value.lower(), default)


def _created(value: str, *, strict: bool) -> datetime:
    """Parse an ISO 8601, RFC 2822 or epoch-seconds date; empty means now."""
    if not value:
        return timezone.now()
    parsed = _parse_date(value)
    if parsed is None:
        if strict:
            raise ValueError(f"unreadable date {value!r} (expected ISO 8601)")
        return timezone.now()
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)


def _parse_date(value: str) -> datetime | None:
    if value.isdigit():
        return datetime.fromtimestamp(int(value), tz=UTC)
    for parse in (datetime.fromisoformat, parsedate_to_datetime):
        try:
            return parse(value)
        except (TypeError, ValueError):
            continue
    return None


def _add(
    chunk: list[Suppression | None], report: ImportReport, seen: set[str], *, dry_run: bool
) -> None:
    """Add one chunk's valid rows; count what was new."""
    rows = [row for row in chunk if row is not None]
    if not rows:
        return
    if dry_run:
        addresses = {row.address for row in rows}
        listed = suppressed_among(addresses) | (addresses & seen)
        seen |= addresses
        added = len(addresses - listed)
    else:
        added = len(suppress_many(rows))
    report.added += added
    report.already_listed += len(rows) - added
