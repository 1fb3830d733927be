"""Our tracking webhooks, at anymail's paths. Include before ``anymail.urls``::

    path("anymail/", include("transactional.webhooks.urls")),
    path("anymail/", include("anymail.urls")),

``reverse("anymail:mailgun_tracking_webhook")`` still gives the same path,
which resolves to our view because it is matched first.
"""

from django.urls import path

from .amazon_ses import AmazonSESTrackingView
from .mailgun import MailgunTrackingView
from .sendgrid import SendGridTrackingView

app_name = "transactional_webhooks"
urlpatterns = [
    path("amazon_ses/tracking/", AmazonSESTrackingView.as_view(), name="amazon_ses_tracking"),
    path("mailgun/tracking/", MailgunTrackingView.as_view(), name="mailgun_tracking"),
    path("sendgrid/tracking/", SendGridTrackingView.as_view(), name="sendgrid_tracking"),
]
