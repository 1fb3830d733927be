"""Mail previews: every templated mail rendered with sample data, never sent."""

import inspect
import json
from dataclasses import dataclass

from django.core.mail import EmailMultiAlternatives
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_safe

from transactional import previews
from transactional.previews import Preview
from transactional.templated import template_names

from .gate import dev_only

#: Mail HTML is untrusted: no scripts, no requests but images; framed only by us.
HTML_CSP = (
    "default-src 'none'; img-src data: https:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
#: Iframe widths the detail page offers (?width=...).
WIDTHS = {"desktop": "100%", "mobile": "375px"}


@dataclass(frozen=True)
class PreviewLink:
    """A preview as the list page shows it."""

    group: str
    name: str
    description: str
    template: str


@dev_only
@require_safe
def preview_list(request: HttpRequest) -> HttpResponse:
    """List every templated mail with its previews, and the mails that have none."""
    links = _links()
    templates = sorted(set(template_names()) | {link.template for link in links})
    mails = [(name, [link for link in links if link.template == name]) for name in templates]
    context = {
        "mails": mails,
        "unpreviewed": [name for name, previewed in mails if not previewed],
        "module": previews.PREVIEWS_MODULE,
    }
    return render(request, "transactional/dev/previews_list.html", context)


@dev_only
@require_safe
def preview_detail(request: HttpRequest, group: str, name: str) -> HttpResponse:
    """Show one preview: subject, headers, the HTML in a sandboxed iframe, the text."""
    preview = _get(group, name)
    message = preview.render()
    width = request.GET.get("width", "desktop")
    width = width if width in WIDTHS else "desktop"
    context = {
        "group": group,
        "name": name,
        "preview": preview,
        "message": message,
        "headers": _headers(message),
        "html": _html(message),
        "width": width,
        "frame_width": WIDTHS[width],
        "widths": WIDTHS,
    }
    return render(request, "transactional/dev/previews_detail.html", context)


@dev_only
@require_safe
@xframe_options_sameorigin
def preview_html(request: HttpRequest, group: str, name: str) -> HttpResponse:
    """Serve the preview's HTML part for the detail page's sandboxed iframe."""
    html = _html(_get(group, name).render())
    if html is None:
        raise Http404("This mail has no HTML part.")
    response = HttpResponse(html)
    response["Content-Security-Policy"] = HTML_CSP
    return response


def _get(group: str, name: str) -> Preview:
    try:
        return previews.get_preview(group, name)
    except LookupError as err:
        raise Http404(str(err)) from err


def _links() -> list[PreviewLink]:
    return [
        PreviewLink(
            group=group.slug,
            name=name,
            description=inspect.getdoc(getattr(group, name)) or "",
            template=group().preview(name).template,
        )
        for group in previews.groups()
        for name in group.preview_names()
    ]


def _headers(message: EmailMultiAlternatives) -> list[tuple[str, str]]:
    """Return the envelope and extra headers, then anymail's tags and metadata."""
    metadata = getattr(message, "metadata", None)
    rows = [
        ("From", message.from_email),
        ("To", ", ".join(message.to)),
        ("Cc", ", ".join(message.cc)),
        ("Bcc", ", ".join(message.bcc)),
        ("Reply-To", ", ".join(message.reply_to)),
        *((header, str(value)) for header, value in message.extra_headers.items()),
        ("Tags (ESP)", ", ".join(getattr(message, "tags", None) or ())),
        ("Metadata (ESP)", json.dumps(metadata, ensure_ascii=False) if metadata else ""),
    ]
    return [(header, value) for header, value in rows if value]


def _html(message: EmailMultiAlternatives) -> str | None:
    return next(
        (str(content) for content, mimetype in message.alternatives if mimetype == "text/html"),
        None,
    )
