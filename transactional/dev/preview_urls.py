"""Mail previews, mounted at /dev/mail-previews/; every view 404s unless DEBUG is on."""

from django.urls import path

from . import preview_views as views

urlpatterns = [
    path("", views.preview_list, name="dev-mail-previews"),
    path("<slug:group>/<slug:name>/", views.preview_detail, name="dev-mail-preview"),
    path("<slug:group>/<slug:name>/html/", views.preview_html, name="dev-mail-preview-html"),
]
