"""HTML to plain text, for the text part of mails that have only an HTML template."""

import re
from collections.abc import Mapping
from html.parser import HTMLParser


def html_to_text(html: str) -> str:
    """Return a plain-text rendering of ``html`` that reads well in a text client."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    return tidy_text(parser.text().replace("\xa0", " "))


def tidy_text(text: str) -> str:
    """Strip trailing spaces and outer blank lines; keep at most one blank line in a row."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()



class _TextParser(HTMLParser):
    """Collect the readable text of an HTML mail, block by block."""

    SKIPPED = frozenset({"head", "style", "script", "title", "template"})
    PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote"})
    BLOCKS = frozenset(
        {"div", "table", "tr", "li", "section", "header", "footer", "article", "center", "address"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._tail = "\n"  # the last characters written, to decide on spaces and newlines
        self._space = False  # collapsed whitespace waiting for the next word
        self._skipping: list[str] = []  # the invisible tag being skipped, once per nesting
        self._links: list[tuple[str, int]] = []  # href and where its text starts
        self._lists: list[list[int]] = []  # one per open list: [next number] for <ol>
        self._pre = 0

    def text(self) -> str:
        """Return the text collected so far."""
        return "".join(self._out)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Open blocks, list items and links; start skipping invisible elements."""
        attributes = dict(attrs)
        if self._skipping:
            if tag == self._skipping[0]:
                self._skipping.append(tag)
        elif tag in self.SKIPPED or _hidden(attributes):
            if tag not in ("br", "hr", "img", "input", "meta", "link", "wbr"):
                self._skipping.append(tag)
        elif tag == "br":
            self._write("\n")
        elif tag == "hr":
            self._block(2)
            self._write("-" * 40)
            self._block(2)
        elif tag == "img":
            self._word(attributes.get("alt") or "")
        elif tag in ("ul", "ol"):
            self._block(1 if self._lists else 2)
            self._lists.append([1] if tag == "ol" else [])
        elif tag == "li":
            self._list_item()
        elif tag == "a":
            self._links.append((attributes.get("href") or "", len(self._out)))
        elif tag in ("td", "th"):
            self._cell()
        elif tag in self.PARAGRAPHS:
            self._pre += 1 if tag == "pre" else 0
            self._block(2)
        elif tag in self.BLOCKS:
            self._block(1)

    def handle_endtag(self, tag: str) -> None:
        """Close what handle_starttag() opened."""
        if self._skipping:
            if tag == self._skipping[0]:
                self._skipping.pop()
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
            self._block(1 if self._lists else 2)
        elif tag == "a" and self._links:
            self._end_link(*self._links.pop())
        elif tag in self.PARAGRAPHS:
            self._pre -= 1 if tag == "pre" and self._pre else 0
            self._block(2)
        elif tag in self.BLOCKS:
            self._block(1)

    def handle_data(self, data: str) -> None:
        """Write text, with HTML's whitespace collapsed outside <pre>."""
        if self._skipping:
            return
        if self._pre:
            self._write(data)
            return
        self._space = self._space or data[:1].isspace()
        if data.strip():
            self._word(" ".join(data.split()))
            self._space = data[-1:].isspace()

    def _word(self, words: str) -> None:
        if not words:
            return
        if self._space and not self._tail[-1:].isspace():
            self._write(" ")
        self._write(words)

    def _write(self, text: str) -> None:
        self._out.append(text)
        self._tail = (self._tail + text)[-2:]
        self._space = False

    def _block(self, newlines: int) -> None:
        """End the line so that ``newlines`` line breaks precede what comes next."""
        if self._out:
            written = len(self._tail) - len(self._tail.rstrip("\n"))
            self._write("\n" * max(newlines - written, 0))

    def _list_item(self) -> None:
        self._block(1)
        numbers = self._lists[-1] if self._lists else []
        bullet = f"{numbers[0]}." if numbers else "-"
        if numbers:
            numbers[0] += 1
        self._write("  " * max(len(self._lists) - 1, 0) + bullet + " ")

    def _cell(self) -> None:
        """Separate a table cell from the one before it on the same row."""
        if self._out and not self._tail.endswith("\n"):
            self._write(" | ")

    def _end_link(self, href: str, start: int) -> None:
        """Follow the link's text with its address, unless the text already is it."""
        if not href or href.startswith(("#", "javascript:")):
            return
        label = "".join(self._out[start:]).strip()
        address = href.removeprefix("mailto:")
        if not label:
            self._word(address)
        elif label not in (href, address):
            self._write(f" ({href})")


def _hidden(attributes: Mapping[str, str | None]) -> bool:
    """Return True for what no reader sees: preheaders, hidden fallbacks."""
    style = "".join((attributes.get("style") or "").split()).lower()
    return "hidden" in attributes or "display:none" in style
