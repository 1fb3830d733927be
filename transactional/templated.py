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

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import css_inline
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend
from django.template import Context, Engine, Template, TemplateDoesNotExist

from .html_text import html_to_text, tidy_text
from .outbox import BYPASS_SUPPRESSION, IDEMPOTENCY_KEY, PRIORITY, STREAM
from .serialization import ANYMAIL_ATTRIBUTES

#: Folder, under any template directory, that holds one folder per mail.
TEMPLATE_ROOT = "emails"
SUBJECT, TEXT, HTML = "subject.txt", "body.txt", "body.html"

#: Attributes send_templated() sets on the message: anymail's and the outbox's.
MESSAGE_ATTRIBUTES = frozenset(ANYMAIL_ATTRIBUTES) | {IDEMPOTENCY_KEY, BYPASS_SUPPRESSION, PRIORITY, STREAM}


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
    ``send_at``, ...) and the outbox's ``idempotency_key``,
    ``bypass_suppression``, ``priority`` ("high", "normal", "low") and
    ``stream`` (one of TRANSACTIONAL_STREAMS; default "transactional").
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


def _render_parts(name: str, context: Mapping[str, Any] | None) -> tuple[str, str, str | None]:
    """Return the subject, text body and HTML body (or None) of mail ``name``."""
    subject_template, text_template, html_template = _load(name)
    context = dict(context or {})
    subject = " ".join(_render(subject_template, context, autoescape=False).split())
    context.setdefault("subject", subject)
    html = _inline_css(_render(html_template, context, autoescape=True)) if html_template else None
    if text_template:
        text = tidy_text(_render(text_template, context, autoescape=False))
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
