"""Public operational endpoints."""

import logging
from typing import Any

from django.db import DatabaseError, InterfaceError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import operations

logger = logging.getLogger(__name__)


@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 while the database answers, 503 when it does not; add queue figures."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except (DatabaseError, InterfaceError) as error:
        # The class name only: driver messages can carry hosts, users, even passwords.
        logger.error("Health check: the database does not answer (%s)", type(error).__name__)
        return JsonResponse({"status": "unavailable", "database": type(error).__name__}, status=503)
    return JsonResponse({"status": "ok", "database": "ok", "queue": _queue()})


def _queue() -> dict[str, Any]:
    """Return the queue figures, or why they are missing: never a reason for a 503."""
    try:
        return {
            "counts": operations.status_counts(),
            "oldest_due_seconds": operations.oldest_due_seconds(),
        }
    except (DatabaseError, InterfaceError) as error:  # e.g. migrations not applied yet
        logger.warning("Health check: no queue figures (%s)", type(error).__name__)
        return {"error": type(error).__name__}
