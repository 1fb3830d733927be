"""The dev outbox: browse the mail the file backend wrote, like a small mail client."""

import re
from urllib.parse import unquote

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST, require_safe

from transactional.models import Message

from . import mailbox
from .gate import dev_only

#: Mail HTML is untrusted: no scripts, no requests anywhere but our part URLs.
HTML_CSP = (
    "default-src 'none'; img-src 'self' data: cid:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
CID_REFERENCE = re.compile(r"cid:([^\s\"'()<>]+)", re.IGNORECASE)
AUTO_REFRESH_SECONDS = 5
#: Rows on the list page; search reaches older mail.
LIST_LIMIT = 200


@dev_only
@require_safe
def mail_list(request: HttpRequest) -> HttpResponse:
    """List the mail, newest first, optionally searched and auto-refreshed."""
    query = request.GET.get("q", "").strip()
    auto_refresh = request.GET.get("refresh") == "1"
    mails = mailbox.mails(search=query)
    context = {
        "mails": mails[:LIST_LIMIT],
        "total": len(mails),
        "query": query,
        "auto_refresh": auto_refresh,
        "directory": mailbox.directory(),
        "problem": mailbox.provider_problem(),
        # Due now or being sent: mail held for send_at or a retry delay is not late.
        "undelivered": Message.objects.due().count()
        + Message.objects.filter(status=Message.Status.SENDING).count(),
    }
    response = render(request, "transactional/dev/outbox_list.html", context)
    if auto_refresh:
        # The header form of <meta http-equiv="refresh">, which belongs in <head>.
        response["Refresh"] = str(AUTO_REFRESH_SECONDS)
    return response


@dev_only
@require_safe
def mail_detail(request: HttpRequest, mail_id: str) -> HttpResponse:
    """Show one message: headers, HTML, text, attachments."""
    return render(request, "transactional/dev/outbox_detail.html", {"mail": _get(mail_id)})


@dev_only
@require_safe
@xframe_options_sameorigin
def mail_html(request: HttpRequest, mail_id: str) -> HttpResponse:
    """Serve the HTML body for the detail page's sandboxed iframe."""
    mail = _get(mail_id)
    if mail.html is None:
        raise Http404("This message has no HTML part.")
    response = HttpResponse(_link_inline_images(mail, mail.html))
    response["Content-Security-Policy"] = HTML_CSP
    return response


@dev_only
@require_safe
def mail_part(request: HttpRequest, mail_id: str, index: int) -> HttpResponse:
    """Download an attachment or inline part."""
    attachments = _get(mail_id).attachments
    if index >= len(attachments):
        raise Http404("No such part.")
    part = attachments[index]
    response = HttpResponse(part.content, content_type=part.content_type)
    response["Content-Disposition"] = content_disposition_header(True, part.filename)
    return response


@dev_only
@require_safe
def mail_raw(request: HttpRequest, mail_id: str) -> HttpResponse:
    """Serve the message source exactly as it was written."""
    return HttpResponse(_get(mail_id).raw, content_type="text/plain; charset=utf-8")


@dev_only
@require_POST
def clear(request: HttpRequest) -> HttpResponse:
    """Delete every mail file, then go back to the list."""
    deleted = mailbox.clear()
    messages.success(request, f"Deleted {deleted} mail file(s) from {mailbox.directory()}.")
    return redirect("dev-outbox")


def _get(mail_id: str) -> mailbox.Mail:
    """Return the message or raise 404."""
    mail = mailbox.get(mail_id)
    if mail is None:
        raise Http404("No such message in EMAIL_FILE_PATH.")
    return mail


def _link_inline_images(mail: mailbox.Mail, html: str) -> str:
    """Point ``cid:`` references at the parts' download URLs."""
    urls = {
        part.content_id: reverse("dev-outbox-part", args=[mail.id, part.index])
        for part in mail.attachments
        if part.content_id
    }
    return CID_REFERENCE.sub(lambda match: urls.get(unquote(match[1]), match[0]), html)
