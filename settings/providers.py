"""The ``EMAIL_PROVIDER`` switch: one table from provider name to settings.

``email_settings()`` turns the environment into the settings that make mail
go out through the chosen providers (``EMAIL_PROVIDERS=ses,mailgun`` for
failover, or one ``EMAIL_PROVIDER``). Each environment module applies it::

    EMAIL_PROVIDERS = chosen_providers(env, default="file")
    globals().update(email_settings(EMAIL_PROVIDERS, env, base_dir=BASE_DIR))

Anymail reads its ``ANYMAIL`` dict. On Django 5.2 Django's own backends read
``EMAIL_*`` and ``EMAIL_BACKEND`` is the outbox; on Django 6.1 ``MAILERS``
replaces them (``"default"``: the outbox; one alias per stream: the outbox on
that stream; one per provider: the backend that really sends, with its
OPTIONS). ``TRANSACTIONAL_PROVIDERS`` maps each provider to that backend
(``TRANSACTIONAL_DELIVERY_BACKEND`` is the primary's) on both.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core import mail
from django.core.exceptions import ImproperlyConfigured

from .env import Env

OUTBOX_BACKEND = "transactional.backends.EmailBackend"

#: Django 6.1+ configures mail with MAILERS (the EMAIL_* settings are deprecated).
HAS_MAILERS = hasattr(mail, "mailers")

#: Django's EMAIL_* setting -> the OPTIONS name of its backend under MAILERS.
MAILER_OPTIONS = {
    "EMAIL_HOST": "host",
    "EMAIL_PORT": "port",
    "EMAIL_HOST_USER": "username",
    "EMAIL_HOST_PASSWORD": "password",
    "EMAIL_USE_TLS": "use_tls",
    "EMAIL_USE_SSL": "use_ssl",
    "EMAIL_FILE_PATH": "file_path",
}

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


def chosen_providers(env: Env, *, default: str = "") -> list[str]:
    """Return the providers to send through, in failover order.

    ``EMAIL_PROVIDERS=ses,mailgun`` names several (the first is the primary);
    ``EMAIL_PROVIDER=ses`` one. An empty list means neither is set and there
    is no default.
    """
    if not env.is_set("EMAIL_PROVIDERS"):
        single = env.choice("EMAIL_PROVIDER", PROVIDERS, default=default)
        return [single] if single else []
    names = [name.lower() for name in env.list("EMAIL_PROVIDERS")]
    if unknown := [name for name in names if name not in PROVIDERS]:
        raise ImproperlyConfigured(
            f"EMAIL_PROVIDERS names {', '.join(map(repr, unknown))}, not supported; "
            f"choose from: {', '.join(PROVIDERS)}."
        )
    if len(set(names)) != len(names):
        raise ImproperlyConfigured(f"EMAIL_PROVIDERS={env.str('EMAIL_PROVIDERS')!r} names a provider twice.")
    if len(names) > 1 and (local := [name for name in names if name in DEVELOPMENT_PROVIDERS]):
        # A failover to files or the console would report mail as sent that
        # nobody ever receives.
        raise ImproperlyConfigured(
            f"EMAIL_PROVIDERS mixes {', '.join(local)} with real providers; "
            f"{', '.join(DEVELOPMENT_PROVIDERS)} can only be used alone."
        )
    if env.is_set("EMAIL_PROVIDER") and env.str("EMAIL_PROVIDER").lower() != names[0]:
        raise ImproperlyConfigured(
            f"EMAIL_PROVIDER={env.str('EMAIL_PROVIDER')!r} disagrees with EMAIL_PROVIDERS="
            f"{env.str('EMAIL_PROVIDERS')!r} (whose first entry is the primary); set only EMAIL_PROVIDERS."
        )
    return names


#: ``14/s``, ``600/m``, ``10000/h``: messages per period (a bare number is per second).
_RATE = re.compile(
    r"(?P<count>[0-9]+(?:\.[0-9]+)?)\s*(?:/\s*(?P<unit>s|sec|second|m|min|minute|h|hour))?", re.I
)
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600}


def rate_limits(env: Env, providers: list[str]) -> dict[str, float]:
    """Parse ``TRANSACTIONAL_RATE_LIMITS`` (``ses=14/s,mailgun=100/s``) into messages per second.

    ``off`` (stored as 0) means no limit; for SES it also skips reading the
    account's MaxSendRate.
    """
    limits: dict[str, float] = {}
    for item in env.list("TRANSACTIONAL_RATE_LIMITS"):
        name, equals, rate = (part.strip() for part in item.partition("="))
        name = name.lower()
        match = _RATE.fullmatch(rate)
        if equals and rate.lower() == "off":  # no limit; for SES: don't read the account's
            match = _RATE.fullmatch("0")
        elif not equals or not match or float(match["count"]) <= 0:
            raise ImproperlyConfigured(
                f"TRANSACTIONAL_RATE_LIMITS has {item!r}; write provider=rate, e.g. "
                "ses=14/s,mailgun=6000/m (a positive number per s, m or h; off for no limit)."
            )
        if name not in providers:
            raise ImproperlyConfigured(
                f"TRANSACTIONAL_RATE_LIMITS limits {name!r}, which is not among the providers "
                f"mail goes through ({', '.join(providers)})."
            )
        if name in limits:
            raise ImproperlyConfigured(f"TRANSACTIONAL_RATE_LIMITS limits {name!r} twice.")
        unit = (match["unit"] or "s")[0].lower()
        limits[name] = float(match["count"]) / _PERIOD_SECONDS[unit]
    return limits


def mailers(providers: list[str], values: dict[str, Settings], env: Env, timeout: float) -> Settings:
    """Return Django 6.1's ``MAILERS``: the outbox, one alias per stream, one per provider.

    ``values`` holds each provider's EMAIL_* settings (they become OPTIONS);
    anymail's backends keep reading the ``ANYMAIL`` dict, as its webhooks do.
    """
    aliases: Settings = {"default": {"BACKEND": OUTBOX_BACKEND}}
    stream_names = dict.fromkeys(["transactional", *(name.lower() for name in env.list("TRANSACTIONAL_STREAMS"))])
    if taken := [name for name in stream_names if name in PROVIDERS or name == "default"]:
        raise ImproperlyConfigured(
            f"TRANSACTIONAL_STREAMS names {', '.join(map(repr, taken))}, which is also a mail alias "
            f"(default, {', '.join(PROVIDERS)}); rename the stream."
        )
    for stream in stream_names:
        aliases[stream] = {"BACKEND": OUTBOX_BACKEND, "OPTIONS": {"stream": stream}}
    for name in providers:
        options = {MAILER_OPTIONS[setting]: value for setting, value in values[name].items()}
        if name == "smtp":
            options["timeout"] = timeout
        aliases[name] = {"BACKEND": PROVIDERS[name].backend, **({"OPTIONS": options} if options else {})}
    return aliases


def email_settings(
    provider: str | list[str], env: Env, *, base_dir: Path, use_mailers: bool | None = None
) -> Settings:
    """Return the mail settings for ``provider`` (or several, in failover order) read from ``env``.

    ``use_mailers``: return ``MAILERS`` instead of the deprecated ``EMAIL_*``
    backend settings; by default where Django has them (6.1+).
    Raises ImproperlyConfigured naming every missing variable at once.
    """
    providers = [provider] if isinstance(provider, str) else list(provider)
    if not providers:
        raise ImproperlyConfigured("Set EMAIL_PROVIDER (or EMAIL_PROVIDERS for failover).")
    variable = "EMAIL_PROVIDERS" if len(providers) > 1 else "EMAIL_PROVIDER"
    for name in providers:
        if name not in PROVIDERS:
            raise ImproperlyConfigured(
                f"{variable}={name!r} is not supported; choose one of: {', '.join(PROVIDERS)}."
            )
    absent = []
    for name in providers:
        absent += [a for a in env.missing(*required_variables(name, env)) if a not in absent]
    if absent:
        raise ImproperlyConfigured(
            f"{variable}={','.join(providers)} needs these environment variable(s): "
            f"{', '.join(absent)}. See .env.example and docs/configuration.md."
        )
    timeout = env.float("EMAIL_TIMEOUT", default=DEFAULT_EMAIL_TIMEOUT, minimum=0.1)
    settings: Settings = {}
    anymail: Settings = {}
    configured: dict[str, Settings] = {}
    for name in providers:
        values = PROVIDERS[name].configure(env, timeout, base_dir)
        anymail.update(values.pop("ANYMAIL", {}))
        configured[name] = values
        settings.update(values)
    use_mailers = HAS_MAILERS if use_mailers is None else use_mailers
    if use_mailers:
        # EMAIL_* and MAILERS together are refused by Django 6.1.
        settings = {"MAILERS": mailers(providers, configured, env, timeout)}
    else:
        # send_mail() stores into the outbox; a worker delivers through the
        # backends above.
        settings.update({"EMAIL_BACKEND": OUTBOX_BACKEND, "EMAIL_TIMEOUT": timeout})
    webhooks = webhook_settings(env)
    settings["ANYMAIL"] = {**anymail, "REQUESTS_TIMEOUT": timeout, **webhooks.pop("ANYMAIL")}
    limits = rate_limits(env, providers)
    return {
        **webhooks,
        "EMAIL_PROVIDER": providers[0],
        # Name -> backend, in failover order (transactional/conf.py providers());
        # with one provider TRANSACTIONAL_DELIVERY_BACKEND says it all.
        **(
            {"TRANSACTIONAL_PROVIDERS": {name: PROVIDERS[name].backend for name in providers}}
            if len(providers) > 1 else {}
        ),
        **({"TRANSACTIONAL_RATE_LIMITS": limits} if limits else {}),
        "TRANSACTIONAL_DELIVERY_BACKEND": PROVIDERS[providers[0]].backend,
        **settings,
    }
