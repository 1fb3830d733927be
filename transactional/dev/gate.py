"""The per-request DEBUG gate for development pages."""

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse


def dev_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """404 unless DEBUG is on, decided per request (tests switch DEBUG on and off)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not settings.DEBUG:
            raise Http404("Development pages are available only with DEBUG on.")
        return view(request, *args, **kwargs)

    return wrapped
