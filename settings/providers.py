"""The ``EMAIL_PROVIDER`` switch: one table from provider name to settings.

``email_settings()`` turns the environment into the settings that make mail
go out through the chosen provider. Each environment module applies it::

    EMAIL_PROVIDER = env.choice("EMAIL_PROVIDER", PROVIDERS, default="file")
    globals().update(email_settings(EMAIL_PROVIDER, env, base_dir=BASE_DIR))

Anymail reads its ``ANYMAIL`` dict; Django's own backends read ``EMAIL_*``.
``EMAIL_BACKEND`` is always the outbox; ``TRANSACTIONAL_DELIVERY_BACKEND`` is
the backend that really sends.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .env import Env

OUTBOX_BACKEND = "transactional.backends.EmailBackend"

#: Seconds any single provider call (SMTP, ESP HTTP API, boto3) may take.
DEFAULT_EMAIL_TIMEOUT = 10.0

Settings = dict[str, Any]


def _mailgun(env: Env, timeout: float, base_dir: Path) -> Settings:
    anymail = {
        "MAILGUN_API_KEY": env.str("MAILGUN_API_KEY"),
        "MAILGUN_SENDER_DOMAIN": env.str("MAILGUN_SENDER_DOMAIN"),
        # https://api.eu.mailgun.net/v3 for domains in Mailgun's EU region.
        "MAILGUN_API_URL": env.str("MAILGUN_API_URL", default="https://api.mailgun.net/v3"),
    }
    return {"ANYMAIL": anymail}


def _sendgrid(env: Env, timeout: float, base_dir: Path) -> Settings:
    anymail = {
        "SENDGRID_API_KEY": env.str("SENDGRID_API_KEY"),
        "SENDGRID_API_URL": env.str("SENDGRID_API_URL", default="https://api.sendgrid.com/v3/"),
    }
    return {"ANYMAIL": anymail}


def _amazon_ses(env: Env, timeout: float, base_dir: Path) -> Settings:
    # boto3 reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the
    # environment itself; they are required (see PROVIDERS) but never copied
    # into settings, so they cannot end up in an error report.
    client_params: dict[str, Any] = {
        "region_name": env.first("AWS_REGION", "AWS_DEFAULT_REGION"),
        "config": {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            # The outbox retries with backoff; botocore's own retries would
            # multiply ours and stretch one attempt far past EMAIL_TIMEOUT.
            "retries": {"total_max_attempts": 1},
        },
    }
    if env.is_set("AMAZON_SES_ENDPOINT_URL"):
        client_params["endpoint_url"] = env.str("AMAZON_SES_ENDPOINT_URL")
    anymail: dict[str, Any] = {"AMAZON_SES_CLIENT_PARAMS": client_params}
    if env.is_set("AMAZON_SES_CONFIGURATION_SET_NAME"):
        anymail["AMAZON_SES_CONFIGURATION_SET_NAME"] = env.str(
            "AMAZON_SES_CONFIGURATION_SET_NAME"
        )
    return {"ANYMAIL": anymail}


def _smtp(env: Env, timeout: float, base_dir: Path) -> Settings:
    use_tls = env.bool("EMAIL_USE_TLS", default=False)
    use_ssl = env.bool("EMAIL_USE_SSL", default=False)
    if use_tls and use_ssl:
        raise ImproperlyConfigured(
            "EMAIL_USE_TLS and EMAIL_USE_SSL are mutually exclusive: "
            "use TLS (STARTTLS, usually port 587) or SSL (usually port 465), not both."
        )
    return {
        "EMAIL_HOST": env.str("EMAIL_HOST"),
        "EMAIL_PORT": env.int("EMAIL_PORT", default=25, minimum=1),
        "EMAIL_HOST_USER": env.str("EMAIL_HOST_USER", default=""),
        "EMAIL_HOST_PASSWORD": env.str("EMAIL_HOST_PASSWORD", default=""),
        "EMAIL_USE_TLS": use_tls,
        "EMAIL_USE_SSL": use_ssl,
    }


def _file(env: Env, timeout: float, base_dir: Path) -> Settings:
    path = Path(env.str("EMAIL_FILE_PATH", default="sent_emails"))
    return {"EMAIL_FILE_PATH": str(path if path.is_absolute() else base_dir / path)}


def _nothing(env: Env, timeout: float, base_dir: Path) -> Settings:
    return {}


@dataclass(frozen=True)
class Provider:
    #: Dotted path of the backend that really sends.
    backend: str
    #: Environment variables that must be set (a tuple inside means "one of").
    required: tuple[str | tuple[str, ...], ...]
    #: Build this provider's settings from the environment.
    configure: Callable[[Env, float, Path], Settings]


PROVIDERS: dict[str, Provider] = {
    "ses": Provider(
        "anymail.backends.amazon_ses.EmailBackend",
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", ("AWS_REGION", "AWS_DEFAULT_REGION")),
        _amazon_ses,
    ),
    "mailgun": Provider(
        "anymail.backends.mailgun.EmailBackend",
        ("MAILGUN_API_KEY", "MAILGUN_SENDER_DOMAIN"),
        _mailgun,
    ),
    "sendgrid": Provider(
        "anymail.backends.sendgrid.EmailBackend", ("SENDGRID_API_KEY",), _sendgrid
    ),
    "smtp": Provider("django.core.mail.backends.smtp.EmailBackend", ("EMAIL_HOST",), _smtp),
    "file": Provider("django.core.mail.backends.filebased.EmailBackend", (), _file),
    "console": Provider("django.core.mail.backends.console.EmailBackend", (), _nothing),
    "locmem": Provider("django.core.mail.backends.locmem.EmailBackend", (), _nothing),
    "dummy": Provider("django.core.mail.backends.dummy.EmailBackend", (), _nothing),
}

#: Providers that never deliver to a real inbox.
DEVELOPMENT_PROVIDERS = ("file", "console", "locmem", "dummy")


#: boto3 credential sources that need no access key in the environment: an
#: instance/task role (ECS, EKS pod identity), IRSA web identity, a profile.
AWS_ROLE_CREDENTIAL_VARIABLES = (
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_PROFILE",
)
AWS_KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def required_variables(
    provider: str, env: Env | None = None
) -> tuple[str | tuple[str, ...], ...]:
    """Return what ``provider`` needs from the environment (nothing if unknown).

    SES needs no access keys where boto3 finds a role or profile instead.
    """
    if provider not in PROVIDERS:
        return ()
    required = PROVIDERS[provider].required
    if provider == "ses" and env is not None and any(map(env.is_set, AWS_ROLE_CREDENTIAL_VARIABLES)):
        required = tuple(name for name in required if name not in AWS_KEY_VARIABLES)
    return required


# TRACKING WEBHOOKS
# ------------------------------------------------------------------------------
# Read whatever EMAIL_PROVIDER says: after a switch of provider, the old ESP
# keeps posting events (bounces, opens) for mail it sent before the switch.
# docs/webhooks.md; transactional/webhooks/ reads the TRANSACTIONAL_* ones.

_SNS_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_.-]{1,256}")


def webhook_settings(env: Env) -> Settings:
    """Return the settings that authenticate ESP webhook posts."""
    anymail: Settings = {"WEBHOOK_SECRET": webhook_secrets(env)}
    # https://anymail.dev/en/stable/esps/mailgun/#std-setting-ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY
    if env.is_set("MAILGUN_WEBHOOK_SIGNING_KEY"):
        anymail["MAILGUN_WEBHOOK_SIGNING_KEY"] = _ascii(env, "MAILGUN_WEBHOOK_SIGNING_KEY")
    # https://anymail.dev/en/stable/esps/sendgrid/#std-setting-ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY
    if env.is_set("SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"):
        anymail["SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"] = env.str(
            "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"
        )
    settings: Settings = {"ANYMAIL": anymail}
    # https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html
    if env.is_set("AMAZON_SES_SNS_TOPIC_ARNS"):
        settings["TRANSACTIONAL_SNS_TOPIC_ARNS"] = sns_topic_arns(env)
    if env.is_set("AMAZON_SNS_CERT_URL_PATTERN"):
        settings["TRANSACTIONAL_SNS_CERT_URL_PATTERN"] = sns_cert_url_pattern(env)
    return settings


def _ascii(env: Env, name: str) -> str:
    value = env.str(name)
    if not value.isascii():
        raise ImproperlyConfigured(f"{name} must be plain ASCII, as the ESP's dashboard shows it.")
    return value


def sns_topic_arns(env: Env) -> list[str]:
    """Parse ``AMAZON_SES_SNS_TOPIC_ARNS``: SNS topic ARNs, comma-separated."""
    arns = env.list("AMAZON_SES_SNS_TOPIC_ARNS")
    if bad := [arn for arn in arns if not _SNS_TOPIC_ARN.fullmatch(arn)]:
        raise ImproperlyConfigured(
            f"AMAZON_SES_SNS_TOPIC_ARNS has {', '.join(map(repr, bad))}, not an SNS topic ARN "
            "(arn:aws:sns:<region>:<account id>:<topic name>; several separated by commas)."
        )
    return arns


def sns_cert_url_pattern(env: Env) -> str:
    """Read ``AMAZON_SNS_CERT_URL_PATTERN``, a regular expression of trusted certificate URLs."""
    pattern = env.str("AMAZON_SNS_CERT_URL_PATTERN")
    try:
        re.compile(pattern)
    except re.error as err:
        raise ImproperlyConfigured(
            f"AMAZON_SNS_CERT_URL_PATTERN={pattern!r} is not a valid regular expression: {err}."
        ) from None
    return pattern


def webhook_secrets(env: Env) -> list[str]:
    """Parse ``ANYMAIL_WEBHOOK_SECRET``: ``user:password`` credentials, space-separated."""
    secrets = env.list("ANYMAIL_WEBHOOK_SECRET", separator=None)
    for secret in secrets:
        user, colon, password = secret.partition(":")
        if not (user and colon and password):
            raise ImproperlyConfigured(
                "ANYMAIL_WEBHOOK_SECRET must be one or more user:password "
                "credentials separated by spaces (several during a rotation)."
            )
    return secrets


def email_settings(provider: str, env: Env, *, base_dir: Path) -> Settings:
    """Return the mail settings for ``provider`` read from ``env``.

    Raises ImproperlyConfigured naming every missing variable at once.
    """
    if provider not in PROVIDERS:
        raise ImproperlyConfigured(
            f"EMAIL_PROVIDER={provider!r} is not supported; "
            f"choose one of: {', '.join(PROVIDERS)}."
        )
    if absent := env.missing(*required_variables(provider, env)):
        raise ImproperlyConfigured(
            f"EMAIL_PROVIDER={provider} needs these environment variable(s): "
            f"{', '.join(absent)}. See .env.example and docs/configuration.md."
        )
    spec = PROVIDERS[provider]
    timeout = env.float("EMAIL_TIMEOUT", default=DEFAULT_EMAIL_TIMEOUT, minimum=0.1)
    settings = spec.configure(env, timeout, base_dir)
    webhooks = webhook_settings(env)
    settings["ANYMAIL"] = {
        **settings.get("ANYMAIL", {}),
        "REQUESTS_TIMEOUT": timeout,
        **webhooks.pop("ANYMAIL"),
    }
    return {
        **webhooks,
        "EMAIL_PROVIDER": provider,
        "TRANSACTIONAL_DELIVERY_BACKEND": spec.backend,
        # send_mail() stores into the outbox; a worker delivers through the
        # backend above.
        "EMAIL_BACKEND": OUTBOX_BACKEND,
        "EMAIL_TIMEOUT": timeout,
        **settings,
    }
