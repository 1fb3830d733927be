"""Templated mail: subject, text and HTML rendered from ``templates/emails/<name>/``.

A mail called ``"birthday/beatles_alert"`` is three templates::

    emails/birthday/beatles_alert/subject.txt   one line (whitespace collapsed)
    emails/birthday/beatles_alert/body.txt      optional: the text part
    emails/birthday/beatles_alert/body.html     optional: the HTML part

At least one body is required. The text templates render with autoescape
off, the HTML one with autoescape on; the HTML gets its CSS inlined (the
``<style>`` stays for clients that read it) and, without a ``body.txt``, a
text part derived from it. ``send_templated()`` builds an ordinary
``EmailMultiAlternatives`` and calls ``.send()``, so the mail goes through
whatever EMAIL_BACKEND says: the outbox in development and production.
"""

import re
from collections.abc import Iterator, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import css_inline
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.template import Context, Engine, Template, TemplateDoesNotExist

from .outbox import BYPASS_SUPPRESSION, IDEMPOTENCY_KEY
from .serialization import ANYMAIL_ATTRIBUTES

#: Folder, under any template directory, that holds one folder per mail.
TEMPLATE_ROOT = "emails"
SUBJECT, TEXT, HTML = "subject.txt", "body.txt", "body.html"

#: Attributes send_templated() sets on the message: anymail's and the outbox's.
MESSAGE_ATTRIBUTES = frozenset(ANYMAIL_ATTRIBUTES) | {IDEMPOTENCY_KEY, BYPASS_SUPPRESSION}


def send_templated(
    name: str,
    *,
    to: Sequence[str],
    context: Mapping[str, Any] | None = None,
    from_email: str | None = None,
    cc: Sequence[str] | None = None,
    bcc: Sequence[str] | None = None,
    reply_to: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    attachments: Sequence[Any] | None = None,
    tags: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    connection: BaseEmailBackend | None = None,
    fail_silently: bool = False,
    **attributes: Any,
) -> int:
    """Render the templated mail ``name`` and send it; return 1 if it was accepted, else 0.

    ``attributes`` are anymail's message attributes (``track_clicks``,
    ``send_at``, ...) and the outbox's ``idempotency_key`` and
    ``bypass_suppression``.
    """
    if tags is not None:
        attributes["tags"] = list(tags)
    if metadata is not None:
        attributes["metadata"] = dict(metadata)
    message = render_templated(
        name, context, to=to, from_email=from_email, cc=cc, bcc=bcc, reply_to=reply_to,
        headers=headers, attachments=attachments, connection=connection, **attributes,
    )
    return message.send(fail_silently=fail_silently)


def render_templated(
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    to: Sequence[str] | None = None,
    from_email: str | None = None,
    cc: Sequence[str] | None = None,
    bcc: Sequence[str] | None = None,
    reply_to: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    attachments: Sequence[Any] | None = None,
    connection: BaseEmailBackend | None = None,
    **attributes: Any,
) -> EmailMultiAlternatives:
    """Build the templated mail ``name`` without sending it."""
    unknown = sorted(set(attributes) - MESSAGE_ATTRIBUTES)
    if unknown:
        raise TypeError(
            f"Unknown message attribute(s) {', '.join(unknown)}; "
            f"expected one of {', '.join(sorted(MESSAGE_ATTRIBUTES))}."
        )
    subject, text, html = _render_parts(name, context)
    message = EmailMultiAlternatives(
        subject=subject, body=text, from_email=from_email, to=to, cc=cc, bcc=bcc,
        reply_to=reply_to, headers=dict(headers or {}), attachments=attachments,
        connection=connection,
    )
    if html is not None:
        message.attach_alternative(html, "text/html")
    for attribute, value in attributes.items():
        setattr(message, attribute, value)
    return message


def template_names() -> list[str]:
    """Return the name of every templated mail found in the template directories."""
    names = set()
    for directory in _template_dirs():
        root = Path(directory) / TEMPLATE_ROOT
        for subject in root.rglob(SUBJECT):
            names.add(subject.parent.relative_to(root).as_posix())
    return sorted(names)


def html_to_text(html: str) -> str:
    """Return a plain-text rendering of ``html`` that reads well in a text client."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    return _tidy_text(parser.text().replace("\xa0", " "))


def _render_parts(name: str, context: Mapping[str, Any] | None) -> tuple[str, str, str | None]:
    """Return the subject, text body and HTML body (or None) of mail ``name``."""
    subject_template, text_template, html_template = _load(name)
    context = dict(context or {})
    subject = " ".join(_render(subject_template, context, autoescape=False).split())
    context.setdefault("subject", subject)
    html = _inline_css(_render(html_template, context, autoescape=True)) if html_template else None
    if text_template:
        text = _tidy_text(_render(text_template, context, autoescape=False))
    else:
        text = html_to_text(html or "")
    return subject, text, html


def _path(name: str, part: str) -> str:
    """Return the template path of one part of mail ``name``."""
    return f"{TEMPLATE_ROOT}/{name.strip('/')}/{part}"


def _inline_css(html: str) -> str:
    """Copy the ``<style>`` rules into style attributes, keeping the ``<style>``."""
    inliner = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
    return inliner.inline(html)


def _tidy_text(text: str) -> str:
    """Strip trailing spaces and outer blank lines; keep at most one blank line in a row."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _load(name: str) -> tuple[Template, Template | None, Template | None]:
    """Return the subject, text and HTML templates; raise naming every one missing."""
    subject, text, html = (_find(_path(name, part)) for part in (SUBJECT, TEXT, HTML))
    missing = [_path(name, SUBJECT)] if subject is None else []
    if text is None and html is None:
        missing.append(f"{_path(name, TEXT)} or {_path(name, HTML)}")
    if missing:
        raise TemplateDoesNotExist(
            f"Templated mail {name!r} needs {' and '.join(missing)}: "
            "not found in any template directory."
        )
    return subject, text, html


def _find(path: str) -> Template | None:
    """Return the compiled template at ``path``, or None if there is none."""
    try:
        return Engine.get_default().get_template(path)
    except TemplateDoesNotExist as err:
        if err.args and err.args[0] == path:
            return None
        raise


def _render(template: Template, context: dict[str, Any], *, autoescape: bool) -> str:
    # Context's own flag reaches {% extends %} and {% include %} too, which a
    # {% autoescape off %} wrapper around the source would not.
    return template.render(Context(context, autoescape=autoescape))


def _template_dirs() -> Iterator[str]:
    for loader in Engine.get_default().template_loaders:
        yield from getattr(loader, "get_dirs", list)()


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
