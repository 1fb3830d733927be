"""The one-click unsubscribe page: GET asks, POST unsubscribes (RFC 8058).

No login and no CSRF token: the mail client posts ``List-Unsubscribe=One-Click``
on its own (RFC 8058 section 3.2), and the signed token is the authority.
GET never changes anything, so a link scanner that opens it unsubscribes
nobody.
"""

import logging

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .models import Suppression
from .suppression import suppress
from .unsubscribe import BadToken, read_token

logger = logging.getLogger(__name__)

TEMPLATES = "transactional/unsubscribe"


@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """Show the confirmation page (GET), or unsubscribe the token's address from its stream (POST)."""
    try:
        address, stream = read_token(token)
    except BadToken as error:
        logger.warning("Refused an unsubscribe token: %s", error)
        return render(request, f"{TEMPLATES}/invalid.html", {"error": str(error)}, status=400)
    context = {"address": address, "stream": stream}
    if request.method != "POST":
        return render(request, f"{TEMPLATES}/confirm.html", context)
    one_click = request.POST.get("List-Unsubscribe") == "One-Click"
    _, created = suppress(
        address, reason=Suppression.Reason.UNSUBSCRIBED, stream=stream,
        source="one-click" if one_click else "unsubscribe page",
    )
    if created:
        logger.info("Unsubscribed %s from stream %s (%s)", address, stream,
                    "one-click" if one_click else "unsubscribe page")
    return render(request, f"{TEMPLATES}/done.html", context)
