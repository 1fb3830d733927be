"""The suppression list as CSV: our own format out, ours and the ESPs' exports in.

Export writes ``address,reason,source,created_at,note,address_hash,stream``;
the hash is written for erased addresses only, so that a list restored from
an export still refuses them, and an empty stream means every stream. Import
reads that (with or without the hash and stream columns: an older export
lists every stream), one-column address lists, and the exports of the ESPs
we support, told apart by their header (``FORMATS``), in UTF-8 or, after a
byte-order mark, UTF-16 or UTF-32. Bad rows (bytes not in that encoding included) are
reported by line number and skipped; the rest is added in bulk, chunk by
chunk, and rows already listed are left alone, so an import can be re-run.
"""

import csv
import io
import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import chain
from typing import TextIO

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils import timezone

from . import db_limits
from .conf import streams
from .csv_reading import UNDECODABLE, Encoding, Record, decoded, detect_encoding, read_records
from .erasure import PLACEHOLDER_PREFIX
from .models import Suppression, address_hash, normalize_address
from .suppression import suppress_many, suppressed_among

logger = logging.getLogger(__name__)

Reason = Suppression.Reason

HEADER = ("address", "reason", "source", "created_at", "note", "address_hash", "stream")

SOURCE_MAX_LENGTH = Suppression._meta.get_field("source").max_length

#: A line that starts like a row of its own: an address, then the next column.
SWALLOWED_ROW = re.compile(r"\s*[^\s,@]+@[^\s,]+,")

#: One-column headers (lower case, without spaces, "-" or "_"); any other
#: first line of a one-column file is an address, or a bad row.
ADDRESS_HEADERS = frozenset({"email", "emails", "emailaddress", "address", "mail", "recipient"})


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
    #: The full hash kept for an erased address (our own files).
    address_hash: str | None = None
    #: The stream a row stops (our own files); empty or absent: every stream.
    stream: str | None = None
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
        address_hash="address_hash",
        stream="stream",
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
    encoding: str = "UTF-8"
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
        # A clear address is its own hash's source; an erased one has only the hash.
        digest = row.address_hash if _is_erased(row.address) else ""
        writer.writerow(
            [
                row.address,
                row.reason,
                row.source,
                row.created_at.isoformat(),
                row.note,
                digest,
                row.stream,
            ]
        )
        count += 1
    return count


# Import
# ------------------------------------------------------------------------------


def import_csv(
    file: io.BufferedReader,
    *,
    reason: str = Reason.MANUAL,
    source: str = "import",
    dry_run: bool = False,
    chunk_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 10_000,
) -> ImportReport:
    """Add the addresses of a suppression CSV; return what was added and refused.

    ``file`` is read as bytes, so that a row in another encoding is refused
    alone instead of aborting the import halfway. ``reason`` and ``source``
    apply where the file has no such column.
    """
    encoding = detect_encoding(file)
    known_streams = frozenset(streams())
    with decoded(file, encoding) as text:
        records = read_records(csv.reader(text))
        header = next((record for record in records if not record.is_blank()), None)
        if header is None:
            return ImportReport(format="empty", encoding=encoding.name)
        fmt, columns = detect(_header_values(header, encoding))
        report = ImportReport(format=fmt.name, encoding=encoding.name)
        chunk: list[Suppression | None] = []
        seen: set[str] = set()  # for a dry run, which adds nothing to compare with
        if fmt is ADDRESS_LIST and not _is_address_header(header.values):
            records = chain([header], records)
        for record in records:
            if record.is_blank():
                continue
            chunk.append(_row_or_error(fmt, columns, record, reason, source, known_streams, report))
            if progress and report.rows % progress_every == 0:
                progress(report.rows)
            if len(chunk) >= chunk_size:
                _add(chunk, report, seen, dry_run=dry_run)
                chunk = []
        _add(chunk, report, seen, dry_run=dry_run)
    logger.info(
        "Imported a suppression file (%s format): %d row(s), %d added, %d already listed, %d refused%s",
        report.format,
        report.rows,
        report.added,
        report.already_listed,
        len(report.errors),
        " (dry run)" if dry_run else "",
    )
    return report


def _header_values(header: Record, encoding: Encoding) -> list[str]:
    """Return the header's column names, or raise UnknownFormat if it is not readable text."""
    if header.error:
        raise UnknownFormat(f"{header.lines}: {header.error}")
    if any(UNDECODABLE in value or "\0" in value for value in header.values):
        raise UnknownFormat(f"{header.lines}: not {encoding.name} text; is this a CSV file?")
    return header.values


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


def _is_address_header(values: list[str]) -> bool:
    """Whether the first line of a one-column file names its column (else it is a row)."""
    return re.sub(r"[\s_-]", "", "".join(values).lower()) in ADDRESS_HEADERS


def _row_or_error(
    fmt: Format,
    columns: dict[str, int],
    record: Record,
    reason: str,
    source: str,
    known_streams: frozenset[str],
    report: ImportReport,
) -> Suppression | None:
    """Return the row to add, or None after recording why it cannot be."""
    report.rows += 1
    try:
        _check_record(fmt, columns, record, report.encoding)
        return _row(fmt, columns, record.values, reason, source, known_streams)
    except ValueError as error:
        report.errors.append(f"{record.lines}: {error}")
        return None


def _check_record(fmt: Format, columns: dict[str, int], record: Record, encoding: str) -> None:
    """Raise ValueError if the record is not a row whatever its columns hold."""
    if record.error:
        raise ValueError(record.error)
    if any(UNDECODABLE in value for value in record.values):
        raise ValueError(f"not {encoding}")  # no value: it is not printable text
    if any("\0" in value for value in record.values):
        raise ValueError("contains a NUL character")  # PostgreSQL cannot store one
    # A note may span lines (ours, or an ESP's multi-line SMTP reply). Any
    # other field with a line break, or a note whose later lines start like
    # a row, means an unterminated quote swallowed the rows after it.
    note = columns.get(fmt.note) if fmt.note is not None else None
    for position, value in enumerate(record.values):
        lines = value.splitlines()
        if len(lines) > 1 and (position != note or any(map(SWALLOWED_ROW.match, lines[1:]))):
            raise ValueError("a field runs over several lines (an unterminated quote?)")


def _row(
    fmt: Format,
    columns: dict[str, int],
    values: list[str],
    reason: str,
    source: str,
    known_streams: frozenset[str],
) -> Suppression:
    """Return an unsaved Suppression from one CSV row, or raise ValueError saying why not."""

    def cell(name: str | None) -> str:
        position = columns.get(name) if name is not None else None
        return values[position].strip() if position is not None and position < len(values) else ""

    address, digest = _address(cell(fmt.address), cell(fmt.address_hash))
    return Suppression(
        address=address,
        address_hash=digest,
        reason=_reason(fmt, cell(fmt.reason), reason),
        source=_source(cell(fmt.source) or source),
        created_at=_created(cell(fmt.created), strict=fmt.strict_dates),
        note=cell(fmt.note),
        stream=_stream(cell(fmt.stream), known_streams),
    )


def _address(value: str, digest: str) -> tuple[str, str]:
    """Return the normalized address and the hash it is matched by."""
    address = normalize_address(value)
    if _is_erased(address):
        return address, _erased_hash(address, digest)
    try:
        validate_email(address)
    except ValidationError:
        raise ValueError(f"not an email address: {_shown(value)}") from None
    # A hash beside a clear address adds nothing: it is recomputed.
    return address, address_hash(address)


def _is_erased(address: str) -> bool:
    return address.startswith(PLACEHOLDER_PREFIX)


def _erased_hash(placeholder: str, digest: str) -> str:
    """Return the full hash an erased entry keeps; it must be the one its placeholder shows."""
    if not digest:
        raise ValueError(
            f"{placeholder!r} is an erased address (only its hash was kept); it cannot be imported"
        )
    digest = digest.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"malformed address_hash {_shown(digest)} (expected 64 hex digits)")
    if placeholder != PLACEHOLDER_PREFIX + digest[:12]:
        raise ValueError(f"the address_hash does not belong to {placeholder!r}")
    return digest


def _reason(fmt: Format, value: str, default: str) -> str:
    if fmt.reasons is None:  # ours: the value must be one of our reasons
        if value not in Reason.values:
            raise ValueError(
                f"unknown reason {_shown(value)} (expected one of {', '.join(Reason.values)})"
            )
        return value
    return fmt.reasons.get(value.lower(), default)


def _stream(value: str, known_streams: frozenset[str]) -> str:
    if value and value not in known_streams:
        raise ValueError(
            f"unknown stream {_shown(value)} (expected one of {', '.join(sorted(known_streams))}, "
            "or empty for every stream; see TRANSACTIONAL_STREAMS)"
        )
    return value


def _source(value: str) -> str:
    # Refused rather than cut: a cut source may read as another one.
    if len(value) > SOURCE_MAX_LENGTH:
        raise ValueError(f"source longer than {SOURCE_MAX_LENGTH} characters")
    return value


def _created(value: str, *, strict: bool) -> datetime:
    """Parse a date (see ``_parse_date``); empty means now.

    A date we cannot read or store fails a row of ours, and is replaced by
    now in an ESP's export, whose date is only informative.
    """
    if not value:
        return timezone.now()
    try:
        return _parse_date(value)
    except ValueError:
        if strict:
            raise
        return timezone.now()


def _parse_date(value: str) -> datetime:
    """Return an ISO 8601, RFC 2822 or epoch date in UTC, or raise ValueError saying why not."""
    if value.isdigit():
        return _from_epoch(int(value))
    parsed = None
    for parse in (datetime.fromisoformat, parsedate_to_datetime):
        try:
            parsed = parse(value)
            break
        except (TypeError, ValueError):
            continue
    if parsed is None:
        raise ValueError(f"unreadable date {_shown(value)} (expected ISO 8601)")
    try:
        # Converted now: the database stores UTC, and 0001-01-01T00:00+14:00 has none.
        return parsed.astimezone(UTC) if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)
    except OverflowError:
        raise ValueError(f"date out of range {_shown(value)}") from None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _from_epoch(number: int) -> datetime:
    """Read epoch seconds, or milliseconds (some exports) when too large for seconds."""
    for unit in ("seconds", "milliseconds"):
        try:
            return EPOCH + timedelta(**{unit: number})
        except OverflowError:
            continue
    raise ValueError(f"timestamp out of range {number}")


def _shown(value: str, limit: int = 80) -> str:
    """Quote a value for a message; a field that swallowed half a file is cut short."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _add(
    chunk: list[Suppression | None],
    report: ImportReport,
    seen: set[tuple[str, str]],
    *,
    dry_run: bool,
) -> None:
    """Add one chunk's valid rows; count what was new."""
    rows = [row for row in chunk if row is not None]
    if not rows:
        return
    fresh = _without_listed_hashes(rows)
    if dry_run:
        # As suppress_many decides: a row is covered by one for its stream or every stream.
        by_stream: dict[str, list[Suppression]] = {}
        for row in fresh:
            by_stream.setdefault(row.stream, []).append(row)
        new = {
            (row.address_hash, stream)
            for stream, stream_rows in by_stream.items()
            for listed in [suppressed_among((row.address for row in stream_rows), stream=stream)]
            for row in stream_rows
            if row.address not in listed
        } - seen
        seen |= new
        added = len(new)
    else:
        added = len(suppress_many(fresh))
    report.added += added
    report.already_listed += len(rows) - added


def _without_listed_hashes(rows: list[Suppression]) -> list[Suppression]:
    """Keep one row per hash and stream, and no erased row whose hash is listed already.

    ``suppress_many`` finds an entry by address or the address's hash; an
    erased row's address is a placeholder, so only the hash it carries can
    find the entry that lists it in clear (for its stream, or every stream).
    """
    unique: dict[tuple[str, str], Suppression] = {}
    for row in rows:
        unique.setdefault((row.address_hash, row.stream), row)
    erased = [digest for (digest, _), row in unique.items() if _is_erased(row.address)]
    listed = {
        pair
        for hashes in db_limits.chunks(erased)
        for pair in Suppression.objects.filter(address_hash__in=hashes).values_list(
            "address_hash", "stream"
        )
    }
    return [
        row
        for (digest, stream), row in unique.items()
        if (digest, Suppression.EVERY_STREAM) not in listed and (digest, stream) not in listed
    ]
