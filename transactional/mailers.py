"""Mail aliases that work on Django 5.2 and on Django 6.1's ``MAILERS``.

Django 6.1 names its email backends in ``settings.MAILERS`` and sends with
``send_mail(..., using=alias)`` / ``EmailMessage.send(using=alias)``;
``get_connection()``, ``fail_silently`` and the ``EMAIL_*`` backend settings
are deprecated (RemovedInDjango2028Warning). Our aliases are the same on both:

- ``"default"``: the outbox, what plain ``send_mail()`` uses;
- one per stream (``"newsletter"``): the outbox, storing on that stream;
- one per provider (``"ses"``, ``"mailgun"``): the backend that really sends.

On 6.1 ``settings/providers.py`` writes them into ``MAILERS``; on 5.2 (or 6.1
still on ``EMAIL_*`` settings) :func:`mailer` builds the same connections
from ``EMAIL_BACKEND`` and ``transactional.conf``. This is the only module
that asks which Django runs; docs/configuration.md, "Mail aliases".
"""

from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import providers, streams

OUTBOX_BACKEND = "transactional.backends.EmailBackend"

#: Django 6.1+: ``django.core.mail.mailers`` and ``using=``.
HAS_MAILERS = hasattr(mail, "mailers")

#: Where each deprecated ``EMAIL_*`` setting lives once ``MAILERS`` is defined.
_OPTIONS = {"EMAIL_FILE_PATH": "file_path", "EMAIL_HOST": "host", "EMAIL_PORT": "port"}


class UnknownMailer(ImproperlyConfigured, KeyError):
    """No such alias (Django 6.1 raises its MailerDoesNotExist, also both of these)."""


def configured() -> bool:
    """Return True where ``settings.MAILERS`` defines the backends (Django 6.1+)."""
    return HAS_MAILERS and hasattr(settings, "MAILERS")


def mailer(alias: str = "default"):
    """Return a new connection for ``alias``: ``mailers[alias]``, or its 5.2 equivalent."""
    if configured():
        return mail.mailers[alias]
    if alias == "default":
        return mail.get_connection()
    if alias in (backends := providers()):
        return mail.get_connection(backends[alias])
    if alias in streams():
        # As Django's test runner points every alias at locmem, a stream is
        # whatever EMAIL_BACKEND is, on that stream only if it is the outbox.
        options = {"stream": alias} if settings.EMAIL_BACKEND == OUTBOX_BACKEND else {}
        return mail.get_connection(**options)
    raise UnknownMailer(
        f"No mail alias {alias!r}; choose from: default, {', '.join([*streams(), *providers()])}."
    )


def provider_connection(provider: str, backend: str):
    """Return a new connection to ``provider``, whose backend is ``backend`` (conf.providers()).

    ``MAILERS[provider]`` (with its OPTIONS) where it names that backend;
    otherwise the backend with its settings' defaults, as 5.2's
    ``get_connection(backend)`` builds it (an ``override_settings`` of
    TRANSACTIONAL_PROVIDERS then wins over a stale MAILERS entry).
    """
    if configured() and settings.MAILERS.get(provider, {}).get("BACKEND") == backend:
        return mail.mailers[provider]
    if HAS_MAILERS:
        return import_string(backend)()
    return mail.get_connection(backend, fail_silently=False)


def send(email: mail.EmailMessage, *, using: str | None = None) -> int:
    """``email.send(using=using)`` on either Django; return how many were accepted."""
    if using is None:
        return email.send()
    if configured():
        return email.send(using=using)
    if not email.recipients():
        return 0
    with mailer(using) as connection:
        return connection.send_messages([email])


def send_mail(
    subject: str,
    message: str,
    from_email: str | None,
    recipient_list: list[str],
    *,
    html_message: str | None = None,
    using: str | None = None,
) -> int:
    """Django 6.1's ``send_mail(..., using=alias)``, also on 5.2."""
    email = mail.EmailMultiAlternatives(subject, message, from_email, recipient_list)
    if html_message:
        email.attach_alternative(html_message, "text/html")
    return send(email, using=using)


def mail_admins(subject: str, message: str, *, using: str) -> None:
    """``mail_admins()`` through the mailer ``using`` (a provider: not the outbox)."""
    if configured():
        mail.mail_admins(subject, message, using=using)
    else:
        mail.mail_admins(subject, message, connection=mailer(using))


def email_setting(name: str, default=None):
    """Return a Django ``EMAIL_*`` backend setting, also where ``MAILERS`` replaced it.

    ``EMAIL_TIMEOUT`` is then anymail's REQUESTS_TIMEOUT, which
    settings/providers.py sets to it; ``EMAIL_FILE_PATH``, ``EMAIL_HOST``,
    ``EMAIL_PORT`` come from the first provider mailer that has the option.
    """
    if not configured():
        return getattr(settings, name, default)
    if name == "EMAIL_TIMEOUT":
        return getattr(settings, "ANYMAIL", {}).get("REQUESTS_TIMEOUT", default)
    for provider in providers():
        options = settings.MAILERS.get(provider, {}).get("OPTIONS", {})
        if _OPTIONS.get(name) in options:
            return options[_OPTIONS[name]]
    return default
