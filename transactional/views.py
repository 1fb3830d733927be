"""Public operational endpoints."""

from django.http import JsonResponse


def healthz(request):
    """Placeholder; replaced by the real liveness endpoint."""
    return JsonResponse({"status": "ok"})
