"""The admin with the delivery stats page in front, as project/urls.py will mount it."""

from django.contrib import admin
from django.urls import path

from transactional.stats_views import stats_urls

urlpatterns = [
    path("admin/", ([*stats_urls(admin.site), *admin.site.get_urls()], "admin", admin.site.name)),
]
