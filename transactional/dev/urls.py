"""Development-only URLs, mounted at /dev/; each view 404s unless DEBUG is on."""

from django.urls import include, path

urlpatterns = [
    path("outbox/", include("transactional.dev.outbox_urls")),
    path("mail-previews/", include("transactional.dev.preview_urls")),
]
