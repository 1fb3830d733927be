"""anymail's own tracking views, unwrapped, for the event-recording tests.

The recording side is tested through anymail's parsing alone, whatever the
project mounts in front of it. ``/batched/sendgrid/tracking/`` wraps the
SendGrid view the way a project view should: one transaction, events
recorded in bulk as it ends.
"""

from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.db import transaction
from django.urls import include, path

from transactional import events


class BatchedSendGridTrackingView(SendGridTrackingWebhookView):
    def post(self, request, *args, **kwargs):
        with transaction.atomic(), events.batch():
            return super().post(request, *args, **kwargs)


urlpatterns = [
    path("anymail/", include("anymail.urls")),
    path("batched/sendgrid/tracking/", BatchedSendGridTrackingView.as_view()),
]
