"""Amazon SES tracking webhook (SES -> SNS -> HTTPS): anymail's view plus SNS checks.

anymail checks basic auth and that the SNS headers match the body. Then,
before anything is parsed or any subscription confirmed, we check that:

- the topic is in ``TRANSACTIONAL_SNS_TOPIC_ARNS`` (environment:
  ``AMAZON_SES_SNS_TOPIC_ARNS``), so anymail auto-confirms only our own
  topics; in DEBUG an empty list allows any topic, in production it refuses
  every post with 503 (our misconfiguration);
- the message carries a valid SNS signature whose certificate comes from a
  URL matching ``TRANSACTIONAL_SNS_CERT_URL_PATTERN`` (see ``sns.py``).

anymail confirms subscriptions with an SNS client built from
``AMAZON_SES_CLIENT_PARAMS``; we drop its ``endpoint_url`` (an SES endpoint,
such as a local emulator's) so confirmations always go to SNS in the topic's
region.
"""

from __future__ import annotations

from typing import Any

import boto3
from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.http import HttpRequest

from ..conf import get_setting
from . import sns
from .base import HardenedTrackingMixin, Malformed, Unavailable, logger
from .sns import allowed_topic_arns


class AmazonSESTrackingView(HardenedTrackingMixin, AmazonSESTrackingWebhookView):
    key_settings = "AMAZON_SES_CLIENT_PARAMS and AMAZON_SES_SESSION_PARAMS"

    def misconfiguration(self) -> str | None:
        if problem := super().misconfiguration():
            return problem
        if not settings.DEBUG and not allowed_topic_arns():
            return (
                "AMAZON_SES_SNS_TOPIC_ARNS is not set, so any SNS topic could post "
                "and be auto-confirmed; set it to your SES event topic's ARN."
            )
        return None

    def check_request(self, request: HttpRequest) -> None:
        message = self._parse_sns_message(request)  # cached by anymail's own check
        topic_arn = message.get("TopicArn")
        allowed = allowed_topic_arns()
        if allowed and topic_arn not in allowed:
            raise Malformed(f"SNS topic {topic_arn!r} is not in AMAZON_SES_SNS_TOPIC_ARNS")
        pattern = get_setting("SNS_CERT_URL_PATTERN")
        try:
            sns.verify(message, cert_url_pattern=pattern)
        except sns.SignatureError as err:
            raise Malformed(f"SNS signature: {err}") from err
        except sns.CertificateUnavailable as err:
            raise Unavailable(f"SNS signing certificate: {err}") from err
        if message.get("Type") != "Notification":
            logger.info("Verified SNS %s for topic %s", message.get("Type"), topic_arn)

    def auto_confirm_sns_subscription(self, sns_message: dict) -> None:
        try:
            super().auto_confirm_sns_subscription(sns_message)
        except (BotoCoreError, ClientError) as err:
            raise Unavailable(
                f"could not confirm the subscription to {sns_message.get('TopicArn')}: {err}"
            ) from err

    def get_boto_client(self, service_name: str, **kwargs: Any):
        params = {**self.client_params, **kwargs}
        if service_name == "sns":
            params.pop("endpoint_url", None)
        return boto3.session.Session(**self.session_params).client(service_name, **params)
