"""URL map. The public paths are part of our contract (see README)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from transactional.views import healthz

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="birthday:create"), name="home"),
    path("admin/", admin.site.urls),
    path("anymail/", include("anymail.urls")),
    path("birthday/", include("birthday.urls")),
    path("healthz", healthz, name="healthz"),
    # Development pages: 404 unless DEBUG, decided per request.
    path("dev/", include("transactional.dev.urls")),
]
