"""Reading CSV files people bring: encodings, byte-order marks, line numbers.

A file is read as bytes and decoded as UTF-8 unless a byte-order mark says
UTF-16 or UTF-32 (Excel's "Unicode text"). Bytes the encoding cannot decode
become ``UNDECODABLE``, so that one row in another encoding can be refused
alone instead of aborting the whole file; each record carries the lines it
spans, for error messages.
"""

import codecs
import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

#: Stands for bytes the file's encoding cannot decode. A lone surrogate:
#: no decoder yields one, so a row holding it was not readable text.
UNDECODABLE = "\udcff"
codecs.register_error("transactional.undecodable", lambda error: (UNDECODABLE, error.end))


@dataclass(frozen=True)
class Record:
    """One CSV record, the lines it spans, and why the csv module refused it, if it did."""

    first_line: int
    last_line: int
    values: list[str]
    error: str = ""

    @property
    def lines(self) -> str:
        if self.first_line == self.last_line:
            return f"line {self.last_line}"
        return f"lines {self.first_line}-{self.last_line}"

    def is_blank(self) -> bool:
        return not self.error and not any(value.strip() for value in self.values)


@dataclass(frozen=True)
class Encoding:
    """How a file is decoded: Python's codec, and the name people know it by."""

    codec: str
    name: str


#: Without a byte-order mark a file is UTF-8 (utf-8-sig drops a UTF-8 one).
#: Excel's "Unicode text" is UTF-16 with a mark. UTF-32 marks come first:
#: the little-endian one starts with the UTF-16 one.
UTF8 = Encoding("utf-8-sig", "UTF-8")
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, Encoding("utf-32", "UTF-32")),
    (codecs.BOM_UTF32_BE, Encoding("utf-32", "UTF-32")),
    (codecs.BOM_UTF16_LE, Encoding("utf-16", "UTF-16")),
    (codecs.BOM_UTF16_BE, Encoding("utf-16", "UTF-16")),
)


def detect_encoding(file: io.BufferedReader) -> Encoding:
    """Return the encoding a byte-order mark announces; UTF-8 without one."""
    head = file.peek(4)[:4]
    return next((encoding for mark, encoding in BYTE_ORDER_MARKS if head.startswith(mark)), UTF8)


@contextmanager
def decoded(file: io.BufferedReader, encoding: Encoding) -> Iterator[TextIO]:
    """Read ``file`` as text, undecodable bytes marked, without closing it (stdin is not ours)."""
    text = io.TextIOWrapper(
        file, encoding=encoding.codec, errors="transactional.undecodable", newline=""
    )
    try:
        yield text
    finally:
        text.detach()


def read_records(reader: "csv._reader") -> Iterator[Record]:
    """Yield the reader's records with their lines; one the csv module refuses becomes an error.

    The reader resumes on the line after a refused record, so one bad row
    (a field over ``csv.field_size_limit()``, say) does not end the import.
    """
    last_line = reader.line_num
    while True:
        first_line = last_line + 1
        try:
            values, error = next(reader), ""
        except StopIteration:
            return
        except csv.Error as refusal:
            values, error = [], str(refusal)
        last_line = reader.line_num
        yield Record(first_line, last_line, values, error)
