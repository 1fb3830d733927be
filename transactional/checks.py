"""System checks (``manage.py check``) for the outbox configuration."""

import sqlite3

from anymail.utils import get_anymail_setting
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import staging, unsubscribe
from .conf import get_setting, providers, streams
from .delivery import OUTBOX_BACKEND
from .mailers import email_setting
from .metrics import config as metrics_config
from .ratelimit import configured_rates
from .dns.domains import address_domain, aligned, is_reserved, organizational_domain


@checks.register(checks.Tags.compatibility)
def check_delivery_backend(app_configs, **kwargs) -> list[checks.CheckMessage]:
    backend = getattr(settings, "TRANSACTIONAL_DELIVERY_BACKEND", None)
    several = get_setting("PROVIDERS") or {}
    if OUTBOX_BACKEND in several.values():
        backend = OUTBOX_BACKEND
    if not backend:
        return [
            checks.Error(
                "TRANSACTIONAL_DELIVERY_BACKEND is not set.",
                hint="Set EMAIL_PROVIDER (settings/providers.py sets it for you).",
                id="transactional.E001",
            )
        ]
    if backend == OUTBOX_BACKEND:
        return [
            checks.Error(
                "TRANSACTIONAL_DELIVERY_BACKEND (or a backend in TRANSACTIONAL_PROVIDERS) is the "
                "outbox backend itself; mail would loop.",
                hint="Keep EMAIL_BACKEND as the outbox and point TRANSACTIONAL_DELIVERY_BACKEND "
                "at the backend that really sends.",
                id="transactional.E002",
            )
        ]
    return []


@checks.register(checks.Tags.compatibility)
def check_lease(app_configs, **kwargs) -> list[checks.CheckMessage]:
    timeout = email_setting("EMAIL_TIMEOUT") or 0
    lease = get_setting("LEASE_SECONDS")
    # A claimed batch waits for earlier calls in the pool: the last message of
    # a batch may start BATCH_SIZE / CONCURRENCY timeouts after its claim.
    rounds = -(-get_setting("BATCH_SIZE") // get_setting("CONCURRENCY"))
    if timeout and lease <= 2 * rounds * timeout:
        return [
            checks.Warning(
                f"TRANSACTIONAL_LEASE_SECONDS ({lease}) is not well above the longest a claimed "
                f"message may wait and run ({rounds} x EMAIL_TIMEOUT {timeout}s).",
                hint="A message whose provider call is still running could be swept and sent "
                "twice; raise the lease, or lower TRANSACTIONAL_BATCH_SIZE / EMAIL_TIMEOUT.",
                id="transactional.W001",
            )
        ]
    return []


#: INSERT … RETURNING, which the webhook recorder uses (bulk_insert.py).
SQLITE_MINIMUM = (3, 35)


@checks.register(checks.Tags.compatibility)
def check_sqlite_version(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """The SQLite library Python uses must run the recorder's SQL."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        return []
    if sqlite3.sqlite_version_info >= SQLITE_MINIMUM:
        return []
    return [
        checks.Error(
            f"SQLite {sqlite3.sqlite_version} is too old: the webhook recorder needs "
            f"{'.'.join(map(str, SQLITE_MINIMUM))} or newer (INSERT … RETURNING).",
            hint="Use a Python built with a newer SQLite (Python 3.11 from python.org or "
            "Debian 12 has 3.40), or PostgreSQL.",
            id="transactional.E003",
        )
    ]


# DEPLOYMENT: MAIL THAT CAN REACH AN INBOX
# ------------------------------------------------------------------------------
# `manage.py check --deploy`. The webhook credentials are checked in
# transactional/webhooks/checks.py; the DNS records by `manage.py check_email_dns`.

#: Django's backends that never hand mail to anyone (file, console, locmem, dummy).
NON_DELIVERING_BACKENDS = frozenset(
    f"django.core.mail.backends.{name}.EmailBackend"
    for name in ("filebased", "console", "locmem", "dummy")
)
#: Django's own default, which every ESP refuses.
DJANGO_DEFAULT_FROM_EMAIL = "webmaster@localhost"
#: Where each provider's sending domain is configured: anymail setting, ESP name, variable.
SENDING_DOMAIN_SETTINGS = {"mailgun": ("sender_domain", "Mailgun", "MAILGUN_SENDER_DOMAIN")}


@checks.register(checks.Tags.security, deploy=True)
def check_provider_delivers(app_configs, **kwargs) -> list[checks.CheckMessage]:
    provider = getattr(settings, "EMAIL_PROVIDER", "")
    backend = getattr(settings, "TRANSACTIONAL_DELIVERY_BACKEND", "")
    if settings.DEBUG or backend not in NON_DELIVERING_BACKENDS:
        return []
    return [
        checks.Warning(
            f"EMAIL_PROVIDER={provider} never delivers mail, and DEBUG is off.",
            hint="Set EMAIL_PROVIDER to ses, mailgun, sendgrid or smtp, with its secrets "
            "(docs/configuration.md).",
            id="transactional.W101",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_sender_addresses(app_configs, **kwargs) -> list[checks.CheckMessage]:
    if getattr(settings, "DEFAULT_FROM_EMAIL", "") in ("", DJANGO_DEFAULT_FROM_EMAIL):
        return [
            checks.Warning(
                f"DEFAULT_FROM_EMAIL is not set (Django's default {DJANGO_DEFAULT_FROM_EMAIL} "
                "is refused by every ESP).",
                hint="Set DEFAULT_FROM_EMAIL to an address on your sending domain, "
                "e.g. 'Acme <no-reply@acme.com>'.",
                id="transactional.W102",
            )
        ]
    return [
        problem
        for name in ("DEFAULT_FROM_EMAIL", "SERVER_EMAIL")
        if (problem := _unroutable_sender(name, getattr(settings, name, "")))
    ]


def _unroutable_sender(name: str, address: str) -> checks.CheckMessage | None:
    domain = address_domain(address)
    if domain and not is_reserved(domain):
        return None
    where = f"on {domain}, a reserved test/documentation domain" if domain else "not an address"
    return checks.Warning(
        f"{name} ({address!r}) is {where}: mail from it is refused or junked.",
        hint=f"Set {name} to an address on a domain you have verified with the provider "
        "(docs/deliverability.md).",
        id="transactional.W103",
    )


@checks.register(checks.Tags.security, deploy=True)
def check_sender_domain(app_configs, **kwargs) -> list[checks.CheckMessage]:
    provider = getattr(settings, "EMAIL_PROVIDER", "")
    if provider not in SENDING_DOMAIN_SETTINGS:
        return []
    setting, esp_name, variable = SENDING_DOMAIN_SETTINGS[provider]
    sending = get_anymail_setting(setting, esp_name=esp_name, default="") or ""
    from_domain = address_domain(getattr(settings, "DEFAULT_FROM_EMAIL", ""))
    if not sending or not from_domain or aligned(sending, from_domain):
        return []
    return [
        checks.Warning(
            f"DEFAULT_FROM_EMAIL is on {from_domain} but {variable} is {sending}: the "
            "envelope and DKIM domains will not align with From, so DMARC fails.",
            hint=f"Send from {organizational_domain(sending)} or a subdomain of it, or set "
            f"{variable} to a domain under {organizational_domain(from_domain)} "
            f"(e.g. mg.{organizational_domain(from_domain)}).",
            id="transactional.W104",
        )
    ]


@checks.register(checks.Tags.compatibility)
def check_staging_settings(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Report invalid staging settings: every delivery run would refuse to start."""
    try:
        staging.rules()
    except ImproperlyConfigured as err:
        return [checks.Error(str(err), id="transactional.E010")]
    return []


@checks.register(checks.Tags.security, deploy=True)
def check_staging_safety(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Warn while staging safety is on in a deployment."""
    try:
        rules = staging.rules()
    except ImproperlyConfigured:
        return []  # check_staging_settings reports it
    if settings.DEBUG or rules is None:
        return []
    return [
        checks.Warning(
            f"Staging safety is on: {staging.describe(rules)}.",
            hint="These settings are meant for staging; a production deployment should unset "
            "TRANSACTIONAL_ALLOWED_RECIPIENTS and TRANSACTIONAL_REDIRECT_TO.",
            id="transactional.W010",
        )
    ]


@checks.register(checks.Tags.compatibility)
def check_rate_limits(app_configs, **kwargs) -> list[checks.CheckMessage]:
    try:
        rates = configured_rates()
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="transactional.E011")]
    unknown = sorted(set(rates) - set(providers()))
    if unknown:
        return [
            checks.Error(
                f"TRANSACTIONAL_RATE_LIMITS limits {', '.join(unknown)}, not a provider mail goes "
                f"through ({', '.join(providers())}).",
                hint="Name the providers of EMAIL_PROVIDERS (or TRANSACTIONAL_PROVIDERS).",
                id="transactional.E011",
            )
        ]
    return []


@checks.register(checks.Tags.compatibility)
def check_streams(app_configs, **kwargs) -> list[checks.CheckMessage]:
    try:
        streams()
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="transactional.E012")]
    if problem := unsubscribe.settings_problem():
        return [
            checks.Error(
                problem,
                hint="Set TRANSACTIONAL_SITE_URL to the https address this site is reached at.",
                id="transactional.E013",
            )
        ]
    return []


@checks.register(checks.Tags.security)
def check_metrics(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Report metrics settings that /metrics, the rates or OpenTelemetry cannot use."""
    problems: list[checks.CheckMessage] = []
    if problem := metrics_config.token_problem():
        problems.append(
            checks.Error(
                problem,
                hint="Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                id="transactional.E030",
            )
        )
    try:
        metrics_config.rate_days()
    except ImproperlyConfigured as error:
        problems.append(checks.Error(str(error), id="transactional.E031"))
    if metrics_config.otel_wanted() and not metrics_config.otel_available():
        problems.append(
            checks.Warning(
                "TRANSACTIONAL_METRICS_OTEL is on but opentelemetry-api is not installed: "
                "no OpenTelemetry metrics are reported.",
                hint="pip install opentelemetry-api (and an SDK with an exporter), or turn it off.",
                id="transactional.W030",
            )
        )
    return problems
