"""The one-click unsubscribe page: GET asks, POST unsubscribes (RFC 8058).

No login and no CSRF token: the mail client posts ``List-Unsubscribe=One-Click``
on its own (RFC 8058 section 3.2), and the signed token is the authority.
GET and HEAD never change anything, so a link scanner that opens the link
unsubscribes nobody.

Any POST with a valid token unsubscribes, whatever its body: providers post
form-encoded, multipart (RFC 8058's "SHOULD"), other types or nothing at
all, and RFC 8058 makes the URI, not the body, the request. The body only
tells our own button from a mail client, for the suppression's ``source``,
and is read only when small enough to be one of those: a huge or malformed
body still unsubscribes, and never turns into a 400 or a 500 that would
lose the request.
"""

import logging
from collections.abc import Callable
from functools import wraps

from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .models import Suppression
from .suppression import suppress
from .unsubscribe import BadToken, read_token

logger = logging.getLogger(__name__)

TEMPLATES = "transactional/unsubscribe"
#: The form field our confirmation page's button posts.
BUTTON = "confirm"
#: Bodies larger than this are not parsed: ours and RFC 8058's are ~50 bytes
#: form-encoded, a few hundred as multipart.
MAX_PARSED_BODY = 4096


def _private(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Keep every answer, 405s included, out of caches, search engines and Referer headers."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["X-Robots-Tag"] = "noindex, nofollow"
        # The URL holds the token, and the token the address (signed, not encrypted).
        response["Referrer-Policy"] = "no-referrer"
        return response

    return never_cache(wrapper)


@csrf_exempt
@_private
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """Ask (GET), or unsubscribe the token's address on its stream (POST)."""
    try:
        address, stream = read_token(token)
    except BadToken as error:
        logger.warning("Refused an unsubscribe token: %s", error)
        return render(request, f"{TEMPLATES}/invalid.html", {"error": str(error)}, status=400)
    context = {"address": masked(address), "stream": stream}
    if request.method != "POST":
        return render(request, f"{TEMPLATES}/confirm.html", context)
    source = "unsubscribe page" if _from_our_button(request) else "one-click"
    # suppress() logs the new row; a repeated POST finds it and adds nothing.
    suppress(address, reason=Suppression.Reason.UNSUBSCRIBED, stream=stream, source=source)
    return render(request, f"{TEMPLATES}/done.html", context)


def _from_our_button(request: HttpRequest) -> bool:
    """Say whether the POST came from our confirmation page (else: a mail client)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    if not 0 < length <= MAX_PARSED_BODY:
        return False
    try:
        return BUTTON in request.POST
    except (SuspiciousOperation, MultiPartParserError, ValueError):
        # A bad multipart boundary, too many fields, undecodable data: not our form.
        return False


def masked(address: str) -> str:
    """Return ``address`` with all but the first letter of its local part hidden.

    The owner still recognises it (the domain tells work from home). The pages
    mask it even after the POST: the POST needs nothing more than the link, so
    a full address there would go to anyone the mail was forwarded to, or who
    glimpses a screen. (The token itself is readable to whoever holds the
    link: masking protects the page, not the link.)
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return "•••"
    return f"{local[:1]}•••@{domain}"
