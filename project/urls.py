"""URL map. The public paths are part of our contract (see README)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from transactional.metrics.views import metrics
from transactional.stats_views import stats_urls
from transactional.unsubscribe_views import unsubscribe
from transactional.views import healthz

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="birthday:create"), name="home"),
    # The admin, with our delivery stats page (admin:transactional_stats) in front.
    path("admin/", ([*stats_urls(admin.site), *admin.site.get_urls()], "admin", admin.site.name)),
    # Our hardened tracking webhooks first, at anymail's own paths; anymail's
    # URLs still serve its inbound webhooks (and reverse() its names).
    path("anymail/", include("transactional.webhooks.urls")),
    path("anymail/", include("anymail.urls")),
    path("birthday/", include("birthday.urls")),
    path("healthz", healthz, name="healthz"),
    # Prometheus: 404 unless TRANSACTIONAL_METRICS_TOKEN is set; Authorization: Bearer <token>.
    path("metrics", metrics, name="metrics"),
    # One-click unsubscribe (RFC 8058): the links in mail on non-transactional streams.
    path("unsubscribe/<str:token>/", unsubscribe, name="transactional-unsubscribe"),
    # Development pages: 404 unless DEBUG, decided per request.
    path("dev/", include("transactional.dev.urls")),
]
