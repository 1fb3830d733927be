"""Read the mail Django's file backend wrote to EMAIL_FILE_PATH.

Django's filebased backend writes one ``<timestamp>-<id>.log`` file per
connection, and each message in it as ``message.as_bytes()``, a newline and
a line of 79 dashes. A delivery run keeps one connection per sender thread,
so one file usually holds several messages. A message is known by its file
name without ``.log`` and its position in the file: ``20250301-101500-1403.2``.
"""

import mimetypes
import os
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import parsedate_to_datetime
from functools import cached_property
from pathlib import Path

from transactional.conf import provider_name
from transactional.mailers import email_setting

SEPARATOR = b"\n" + b"-" * 79 + b"\n"
#: Headers Django writes on every message; a body rarely has them all after a dash line.
ALWAYS_WRITTEN = ("MIME-Version", "From", "Date", "Message-ID")

# The list needs a few headers of every message. compat32 hands them over
# as written, over ten times faster than policy.default, which runs a full
# parser on each; the detail page uses policy.default for the whole message.
_headers = BytesHeaderParser(policy=policy.compat32)
_parser = BytesParser(policy=policy.default)


@dataclass(frozen=True)
class Attachment:
    """One non-body part of a message: an attachment or an inline image."""

    index: int
    filename: str
    content_type: str
    content: bytes
    content_id: str

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class Mail:
    """One message as the file backend wrote it."""

    file_stem: str
    position: int
    raw: bytes
    file_time: datetime

    @property
    def id(self) -> str:
        return f"{self.file_stem}.{self.position}"

    @cached_property
    def email(self) -> EmailMessage:
        return _parser.parsebytes(self.raw)

    @cached_property
    def envelope(self) -> dict[str, str]:
        """Return the raw headers by lower-case name (the first of each), for the list."""
        headers = _header_block(self.raw)
        items = list(headers.raw_items()) if headers is not None else []
        return {name.lower(): value for name, value in reversed(items)}

    @property
    def size(self) -> int:
        return len(self.raw)

    @cached_property
    def date(self) -> datetime:
        """Return the Date header, or the file's modification time without a valid one."""
        try:
            when = parsedate_to_datetime(self.envelope.get("date"))
        except (TypeError, ValueError):
            return self.file_time
        return when if when.tzinfo else when.replace(tzinfo=UTC)

    @property
    def from_email(self) -> str:
        return self._header("From")

    @property
    def to(self) -> str:
        return self._header("To")

    @property
    def cc(self) -> str:
        return self._header("Cc")

    @property
    def subject(self) -> str:
        return self._header("Subject")

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(name, str(value)) for name, value in self.email.items()]

    @cached_property
    def text(self) -> str | None:
        return self._body("plain")

    @cached_property
    def html(self) -> str | None:
        return self._body("html")

    @cached_property
    def attachments(self) -> list[Attachment]:
        bodies = [self.email.get_body((kind,)) for kind in ("plain", "html")]
        parts = [part for part in _leaves(self.email) if not any(part is body for body in bodies)]
        return [_attachment(index, part) for index, part in enumerate(parts)]

    def matches(self, query: str) -> bool:
        """Say whether a recipient or the subject contains ``query``, ignoring case."""
        query = query.casefold()
        return any(query in field.casefold() for field in (self.to, self.cc, self.subject))

    def _header(self, name: str) -> str:
        return _decode(self.envelope.get(name.lower(), ""))

    def _body(self, subtype: str) -> str | None:
        part = self.email.get_body((subtype,))
        return None if part is None else part.get_content()


def directory() -> Path | None:
    """Return EMAIL_FILE_PATH, or None when it is not set."""
    path = email_setting("EMAIL_FILE_PATH")
    return Path(path) if path else None


def provider_problem() -> str | None:
    """Explain why new mail does not land in EMAIL_FILE_PATH, or return None."""
    provider = provider_name()
    if provider != "file":
        return f"EMAIL_PROVIDER is {provider!r}: mail is not written to files"
    if directory() is None:
        return "EMAIL_FILE_PATH is not set: mail is not written to files"
    return None


def mails(search: str = "") -> list[Mail]:
    """Return every message, newest first; only those matching ``search`` if given."""
    found = [mail for path in _files() for mail in _read(path)]
    if search:
        found = [mail for mail in found if mail.matches(search)]
    return sorted(found, key=lambda mail: (mail.date, mail.file_stem, mail.position), reverse=True)


def get(mail_id: str) -> Mail | None:
    """Return the message with this id, or None; the id never becomes a path."""
    stem, _, position = mail_id.rpartition(".")
    if not (position.isascii() and position.isdigit()):
        return None
    path = next((path for path in _files() if path.stem == stem), None)
    mail_list = _read(path) if path else []
    return mail_list[int(position)] if int(position) < len(mail_list) else None


def clear() -> int:
    """Delete every mail file in EMAIL_FILE_PATH; return how many were deleted."""
    deleted = 0
    for path in _files():
        with suppress(FileNotFoundError):
            path.unlink()
            deleted += 1
    return deleted


def split(data: bytes) -> list[bytes]:
    """Split a file into its messages; leave out a last one still being written.

    A body may hold a line of 79 dashes itself, so a separator counts only
    where it ends the file or a new message starts after it, and where a
    multipart message before it is closed.
    """
    chunks: list[bytes] = []
    start = 0
    position = data.find(SEPARATOR)
    while position != -1:
        after = position + len(SEPARATOR)
        chunk = data[start:position]
        if after == len(data) or (_starts_message(data, after) and _is_closed(chunk)):
            chunks.append(chunk)
            start = after
        position = data.find(SEPARATOR, position + 1)
    return chunks


def _files() -> list[Path]:
    """List the regular ``*.log`` files directly inside EMAIL_FILE_PATH."""
    path = directory()
    if path is None:
        return []
    with suppress(FileNotFoundError, NotADirectoryError), os.scandir(path) as entries:
        return [
            Path(entry.path)
            for entry in entries
            if entry.name.endswith(".log") and entry.is_file(follow_symlinks=False)
        ]
    return []


def _read(path: Path) -> list[Mail]:
    """Return the messages in one file, in the order they were written."""
    try:
        data = path.read_bytes()
        mtime = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    except FileNotFoundError:  # cleared since it was listed
        return []
    return [
        Mail(file_stem=path.stem, position=position, raw=raw, file_time=mtime)
        for position, raw in enumerate(split(data))
    ]


def _header_block(data: bytes, start: int = 0) -> Message | None:
    """Parse the headers starting at ``start``; None if there is no header block."""
    end = data.find(b"\n\n", start)
    if end == -1:
        return None
    return _headers.parsebytes(data[start : end + 1])


def _starts_message(data: bytes, start: int) -> bool:
    """Say whether a message Django wrote starts at ``start``."""
    headers = _header_block(data, start)
    if headers is None or headers.defects:
        return False
    return all(name in headers for name in ALWAYS_WRITTEN)


def _is_closed(chunk: bytes) -> bool:
    """Say whether a multipart message has its closing boundary (others always do)."""
    headers = _header_block(chunk)
    boundary = headers.get_boundary() if headers is not None else None
    return boundary is None or f"\n--{boundary}--".encode() in chunk


def _decode(value: str) -> str:
    """Decode RFC 2047 encoded words and unfold, as a mail client shows a header."""
    value = value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    try:
        value = str(make_header(decode_header(value)))
    except (HeaderParseError, LookupError, UnicodeError):
        pass  # show it as written
    return " ".join(value.split())


def _leaves(part: EmailMessage) -> Iterator[EmailMessage]:
    """Yield the non-multipart parts; an attached message counts as one part."""
    if part.get_content_maintype() == "multipart":
        for child in part.iter_parts():
            yield from _leaves(child)
    else:
        yield part


def _attachment(index: int, part: EmailMessage) -> Attachment:
    """Describe one part for listing and download."""
    content_type = part.get_content_type()
    return Attachment(
        index=index,
        filename=_safe_filename(part.get_filename(), index, content_type),
        content_type=content_type,
        content=_content(part),
        content_id=str(part.get("Content-ID", "")).strip().strip("<>"),
    )


def _content(part: EmailMessage) -> bytes:
    """Return the decoded bytes of a part (an attached message as it was sent)."""
    if part.get_content_type() == "message/rfc822":
        return part.get_payload(0).as_bytes()
    return part.get_payload(decode=True) or b""


def _safe_filename(name: str | None, index: int, content_type: str) -> str:
    """Return a download name: the last path component, printable, no leading dots."""
    name = (name or "").replace("\\", "/").rpartition("/")[2]
    name = "".join(char for char in name if char.isprintable()).strip().lstrip(".")
    return name or f"attachment-{index + 1}{mimetypes.guess_extension(content_type) or ''}"
