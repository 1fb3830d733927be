"""Mail aliases (transactional/mailers.py): Django 6.1's MAILERS and using=, and the same names on 5.2."""

import warnings

import pytest
from django.core import mail

from settings.env import Env
from settings.providers import email_settings
from transactional import mailers
from transactional.models import Message

pytestmark = pytest.mark.django_db

only_on_mailers = pytest.mark.skipif(not mailers.HAS_MAILERS, reason="MAILERS is Django 6.1+")


@pytest.fixture(autouse=True)
def streams(settings):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]


@pytest.fixture
def with_mailers(settings, tmp_path):
    """Django 6.1 settings as settings/dev.py and prod.py build them: MAILERS, no EMAIL_*."""
    environ = {"TRANSACTIONAL_STREAMS": "newsletter", "EMAIL_FILE_PATH": str(tmp_path)}
    values = email_settings(["locmem"], Env(environ), base_dir=settings.BASE_DIR, use_mailers=True)
    settings.MAILERS = values["MAILERS"]
    return settings


def stored() -> list[tuple[str, str]]:
    return list(Message.objects.order_by("pk").values_list("subject", "stream"))


# -- The same names on Django 5.2 (and on 6.1 still on EMAIL_* settings) -------


def test_using_a_stream_stores_on_that_stream(outbox, deliver, mailoutbox):
    assert mailers.send_mail("Hi", "Body", "news@acme.test", ["ann@example.org"], using="newsletter") == 1
    assert mailers.send_mail("Receipt", "Body", "shop@acme.test", ["ann@example.org"]) == 1
    deliver()

    assert stored() == [("Hi", "newsletter"), ("Receipt", "transactional")]
    assert [email.subject for email in mailoutbox] == ["Hi", "Receipt"]


def test_a_message_that_names_its_stream_keeps_it(outbox):
    email = mail.EmailMessage("Hi", "Body", "news@acme.test", ["ann@example.org"])
    email.stream = "transactional"

    mailers.send(email, using="newsletter")

    assert stored() == [("Hi", "transactional")]


def test_using_a_provider_skips_the_outbox(outbox, mailoutbox):
    mailers.send_mail("Direct", "Body", "ops@acme.test", ["ann@example.org"], using="locmem")

    assert stored() == []
    assert [email.subject for email in mailoutbox] == ["Direct"]


def test_an_unknown_alias_names_the_known_ones(outbox):
    with pytest.raises(KeyError):
        mailers.send_mail("Hi", "Body", "news@acme.test", ["ann@example.org"], using="pigeon")
    if not mailers.configured():
        with pytest.raises(mailers.UnknownMailer, match="choose from: default, transactional, newsletter, locmem"):
            mailers.mailer("pigeon")


def test_the_outbox_backend_takes_a_stream_option(outbox):
    mailers.mailer("newsletter").send_messages([mail.EmailMessage("Hi", "Body", "a@acme.test", ["ann@example.org"])])

    assert stored() == [("Hi", "newsletter")]


def test_the_outbox_backend_keeps_fail_silently_as_its_own_attribute():
    from transactional.backends import EmailBackend

    assert EmailBackend(fail_silently=True).fail_silently is True
    assert EmailBackend().fail_silently is False


# -- Django 6.1: MAILERS ----------------------------------------------------------


@only_on_mailers
def test_django_send_mail_using_an_alias_reaches_the_outbox_and_the_provider(with_mailers, deliver, mailoutbox):
    mail.send_mail("Hi", "Body", "news@acme.test", ["ann@example.org"], using="newsletter")
    mail.send_mail("Receipt", "Body", "shop@acme.test", ["ann@example.org"])  # MAILERS["default"]
    deliver()

    assert stored() == [("Hi", "newsletter"), ("Receipt", "transactional")]
    assert [email.subject for email in mailoutbox] == ["Hi", "Receipt"]
    assert Message.objects.filter(status=Message.Status.SENT).count() == 2


@only_on_mailers
def test_our_mail_path_emits_no_django_2028_deprecation(with_mailers, deliver, mailoutbox, settings):
    from django.utils.deprecation import RemovedInDjango2028Warning

    settings.ADMINS = ["ops@acme.test"]  # (name, address) pairs are deprecated on 6.1 too
    with warnings.catch_warnings():
        warnings.simplefilter("error", RemovedInDjango2028Warning)
        mail.send_mail("Hi", "Body", "news@acme.test", ["ann@example.org"], using="newsletter")
        mailers.send_mail("Receipt", "Body", "shop@acme.test", ["ann@example.org"])
        deliver()
        mailers.mail_admins("Notice", "Body", using="locmem")
        assert mailers.email_setting("EMAIL_TIMEOUT") == 10.0

    assert len(mailoutbox) == 3


@only_on_mailers
def test_the_worker_connects_through_the_providers_mailer(with_mailers):
    with_mailers.MAILERS = {
        **with_mailers.MAILERS,
        "smtp": {"BACKEND": "django.core.mail.backends.smtp.EmailBackend", "OPTIONS": {"host": "relay.acme.test"}},
    }

    connection = mailers.provider_connection("smtp", "django.core.mail.backends.smtp.EmailBackend")

    assert (connection.alias, connection.host) == ("smtp", "relay.acme.test")


@only_on_mailers
def test_a_provider_backend_overridden_elsewhere_wins_over_a_stale_mailer(with_mailers):
    connection = mailers.provider_connection("locmem", "django.core.mail.backends.dummy.EmailBackend")

    assert type(connection).__module__ == "django.core.mail.backends.dummy"


@only_on_mailers
def test_email_settings_are_read_from_the_mailers(with_mailers, tmp_path):
    with_mailers.MAILERS = {
        **with_mailers.MAILERS,
        "file": {"BACKEND": "django.core.mail.backends.filebased.EmailBackend", "OPTIONS": {"file_path": str(tmp_path)}},
    }
    with_mailers.TRANSACTIONAL_PROVIDERS = {"file": "django.core.mail.backends.filebased.EmailBackend"}

    assert mailers.email_setting("EMAIL_FILE_PATH") == str(tmp_path)
    assert mailers.email_setting("EMAIL_HOST", "") == ""
