"""The dev outbox, mounted at /dev/outbox/; every view 404s unless DEBUG is on."""

from django.urls import path

from . import outbox_views as views

urlpatterns = [
    path("", views.mail_list, name="dev-outbox"),
    path("clear/", views.clear, name="dev-outbox-clear"),
    path("<str:mail_id>/", views.mail_detail, name="dev-outbox-detail"),
    path("<str:mail_id>/html/", views.mail_html, name="dev-outbox-html"),
    path("<str:mail_id>/raw/", views.mail_raw, name="dev-outbox-raw"),
    path("<str:mail_id>/parts/<int:index>/", views.mail_part, name="dev-outbox-part"),
]
