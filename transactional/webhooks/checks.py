"""Deployment checks (``manage.py check --deploy``) for the tracking webhooks.

Each problem here makes our webhook views refuse posts with 503 in
production (see base.py and docs/webhooks.md); the check says so before the
first ESP post does.
"""

from anymail.utils import get_anymail_setting
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from django.core import checks

from ..conf import providers
from .base import webhook_secrets
from .sns import allowed_topic_arns  # not .amazon_ses: it imports boto3 (~0.1 s)


def _anymail(name: str, esp_name: str, *, allow_bare: bool):
    # Looked up exactly as anymail's webhook view does.
    return get_anymail_setting(name, esp_name=esp_name, default=None, allow_bare=allow_bare)


@checks.register(checks.Tags.security, deploy=True)
def check_webhook_credentials(app_configs, **kwargs) -> list[checks.CheckMessage]:
    found = []
    if not webhook_secrets():
        found.append(
            checks.Warning(
                "ANYMAIL_WEBHOOK_SECRET is not set: every ESP webhook post is refused (503).",
                hint="Set it to user:password and put the credentials in the webhook URL "
                "you give the ESP (docs/webhooks.md).",
                id="transactional.W201",
            )
        )
    # Every provider mail may fail over to will post its events too.
    configured = set(providers())
    if "mailgun" in configured and not _anymail("webhook_signing_key", "Mailgun", allow_bare=False):
        found.append(
            checks.Warning(
                "MAILGUN_WEBHOOK_SIGNING_KEY is not set: Mailgun webhook posts are refused (503).",
                hint='Copy the "HTTP webhook signing key" from Mailgun\'s dashboard '
                "(Sending > Webhooks); it is not the API key.",
                id="transactional.W202",
            )
        )
    sendgrid_key = _anymail("tracking_webhook_verification_key", "SendGrid", allow_bare=True)
    if "sendgrid" in configured and not sendgrid_key:
        found.append(
            checks.Warning(
                "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY is not set: SendGrid webhook "
                "posts are checked by basic auth only.",
                hint="Enable the Signed Event Webhook in SendGrid (Settings > Mail Settings > "
                "Event Webhook) and copy its verification key.",
                id="transactional.W203",
            )
        )
    if "ses" in configured and not allowed_topic_arns():
        found.append(
            checks.Warning(
                "AMAZON_SES_SNS_TOPIC_ARNS is not set: Amazon SES webhook posts are refused (503).",
                hint="Set it to the ARN of the SNS topic your SES configuration set publishes to.",
                id="transactional.W204",
            )
        )
    return found


@checks.register(checks.Tags.security)
def check_sendgrid_verification_key(app_configs, **kwargs) -> list[checks.CheckMessage]:
    key = _anymail("tracking_webhook_verification_key", "SendGrid", allow_bare=True)
    if not key:
        return []
    pem = f"-----BEGIN PUBLIC KEY-----\n{key}\n-----END PUBLIC KEY-----".encode()
    try:
        # anymail loads the key the same way, on every SendGrid webhook post.
        valid = isinstance(load_pem_public_key(pem), ec.EllipticCurvePublicKey)
    except (ValueError, TypeError):
        valid = False
    if valid:
        return []
    return [
        checks.Error(
            "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY is not an elliptic-curve public key: "
            "SendGrid webhook posts are refused (503).",
            hint="Paste the base64 text SendGrid shows for the Signed Event Webhook, "
            "without BEGIN/END lines.",
            id="transactional.E201",
        )
    ]
