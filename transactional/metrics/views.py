"""GET /metrics: the Prometheus endpoint, behind a bearer token, off without one."""

import hashlib
import hmac
import logging

from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, InterfaceError
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import config

logger = logging.getLogger(__name__)

REALM = 'Bearer realm="transactional metrics"'


@require_safe
@never_cache
@login_not_required
def metrics(request: HttpRequest) -> HttpResponse:
    """Answer Prometheus with every metric; 404 while no token is set, 401/403 without the right one."""
    tokens = config.tokens()
    if not tokens:
        raise Http404("Metrics are off: TRANSACTIONAL_METRICS_TOKEN is not set.")
    presented = bearer_token(request.headers.get("Authorization", ""))
    if presented is None:
        response = HttpResponse(
            "Send Authorization: Bearer <token>.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = REALM
        return response
    if not accepted(presented, tokens):
        logger.warning("Metrics: refused a wrong bearer token from %s", request.META.get("REMOTE_ADDR"))
        return HttpResponse("Wrong token.\n", status=403, content_type="text/plain")

    from .prometheus import render  # prometheus-client is needed only once metrics are on

    try:
        body, content_type = render(request.headers.get("Accept", ""))
    except (DatabaseError, InterfaceError) as error:
        # The class name only: driver messages can carry hosts and users.
        logger.error("Metrics: the database does not answer (%s)", type(error).__name__)
        return HttpResponse(f"{type(error).__name__}\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=content_type)


def bearer_token(header: str) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def accepted(presented: str, tokens: list[str]) -> bool:
    """Compare in constant time: digests first, so the length does not show either."""
    digest = hashlib.sha256(presented.encode()).digest()
    matches = [hmac.compare_digest(digest, hashlib.sha256(token.encode()).digest()) for token in tokens]
    return any(matches)
