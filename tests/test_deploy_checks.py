"""`manage.py check --deploy`: the sending setup (transactional.W101-W104).

The full production environment staying clean is tested in
test_settings_prod.py; here each check fires alone, with its id and hint.
"""

import pytest
from django.core import checks
from django.core.checks.registry import registry

from settings.providers import PROVIDERS
from transactional.checks import (
    check_provider_delivers,
    check_sender_addresses,
    check_sender_domain,
)

DEPLOY_CHECKS = (check_provider_delivers, check_sender_addresses, check_sender_domain)


def use(settings, provider: str) -> None:
    """Switch provider as the provider table would (name and delivery backend)."""
    settings.EMAIL_PROVIDER = provider
    settings.TRANSACTIONAL_DELIVERY_BACKEND = PROVIDERS[provider].backend


@pytest.fixture
def production(settings):
    """Settings as a complete Mailgun production environment has them."""
    settings.DEBUG = False
    use(settings, "mailgun")
    settings.ANYMAIL = {
        "MAILGUN_SENDER_DOMAIN": "mg.acme-corp.com",
        "WEBHOOK_SECRET": ["anymail:6Yh2pQ9rT4"],
    }
    settings.DEFAULT_FROM_EMAIL = "Acme <no-reply@acme-corp.com>"
    settings.SERVER_EMAIL = "Acme <no-reply@acme-corp.com>"
    return settings


def ours(*, deploy: bool = True) -> list[checks.CheckMessage]:
    """Run the registered checks and return the transactional.W1xx messages."""
    found = checks.run_checks(include_deployment_checks=deploy, tags=[checks.Tags.security])
    return [message for message in found if message.id.startswith("transactional.W1")]


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [message.id for message in messages]


def test_a_complete_production_setup_is_clean(production):
    assert ours() == []


def test_the_checks_run_only_with_deploy(production):
    use(production, "file")

    assert ids(ours()) == ["transactional.W101"]
    assert ours(deploy=False) == []
    registered = registry.get_checks(include_deployment_checks=True)
    assert all(check in registered and "security" in check.tags for check in DEPLOY_CHECKS)


@pytest.mark.parametrize("provider", ["file", "console", "locmem", "dummy"])
def test_a_provider_that_never_delivers_warns_when_debug_is_off(provider, production):
    use(production, provider)

    [message] = check_provider_delivers(None)

    assert message.id == "transactional.W101"
    assert message.msg == f"EMAIL_PROVIDER={provider} never delivers mail, and DEBUG is off."
    assert "ses, mailgun, sendgrid or smtp" in message.hint


def test_a_development_provider_is_fine_with_debug_on(production):
    use(production, "file")
    production.DEBUG = True

    assert check_provider_delivers(None) == []


@pytest.mark.parametrize("provider", ["ses", "mailgun", "sendgrid", "smtp"])
def test_a_sending_provider_passes(provider, production):
    use(production, provider)

    assert check_provider_delivers(None) == []


@pytest.mark.parametrize("address", ["webmaster@localhost", ""])
def test_djangos_default_from_email_warns(address, production):
    production.DEFAULT_FROM_EMAIL = address

    [message] = check_sender_addresses(None)

    assert message.id == "transactional.W102"
    assert "webmaster@localhost" in message.msg
    assert message.hint.startswith("Set DEFAULT_FROM_EMAIL to an address on your sending domain")


@pytest.mark.parametrize(
    "address, domain",
    [
        ("Acme <no-reply@example.com>", "example.com"),
        ("no-reply@mail.example.org", "mail.example.org"),
        ("no-reply@example.net", "example.net"),
        ("ops@localhost", "localhost"),
        ("Acme <no-reply@acme.test>", "acme.test"),
        ("no-reply@printer.local", "printer.local"),
        ("no-reply@acme.invalid", "acme.invalid"),
    ],
)
def test_a_sender_on_a_reserved_domain_warns(address, domain, production):
    production.DEFAULT_FROM_EMAIL = address

    [message] = check_sender_addresses(None)

    assert message.id == "transactional.W103"
    assert message.msg == (
        f"DEFAULT_FROM_EMAIL ({address!r}) is on {domain}, a reserved test/documentation domain: "
        "mail from it is refused or junked."
    )
    assert "verified with the provider" in message.hint


def test_server_email_is_checked_too(production):
    production.SERVER_EMAIL = "root@localhost"

    [message] = check_sender_addresses(None)

    assert (message.id, message.msg.split()[0]) == ("transactional.W103", "SERVER_EMAIL")
    assert message.hint.startswith("Set SERVER_EMAIL")


def test_a_sender_that_is_not_an_address_warns(production):
    production.DEFAULT_FROM_EMAIL = "Acme"

    [message] = check_sender_addresses(None)

    assert message.id == "transactional.W103"
    assert "is not an address" in message.msg


@pytest.mark.parametrize(
    "sender_domain", ["mg.acme-corp.com", "acme-corp.com", "mail.acme-corp.com"]
)
def test_a_sending_domain_in_the_same_organization_passes(sender_domain, production):
    production.ANYMAIL = {"MAILGUN_SENDER_DOMAIN": sender_domain}

    assert check_sender_domain(None) == []


def test_a_sending_domain_of_another_organization_warns(production):
    production.ANYMAIL = {"MAILGUN_SENDER_DOMAIN": "mg.other.com"}

    [message] = check_sender_domain(None)

    assert message.id == "transactional.W104"
    assert message.msg == (
        "DEFAULT_FROM_EMAIL is on acme-corp.com but MAILGUN_SENDER_DOMAIN is mg.other.com: the "
        "envelope and DKIM domains will not align with From, so DMARC fails."
    )
    assert message.hint == (
        "Send from other.com or a subdomain of it, or set MAILGUN_SENDER_DOMAIN to a domain "
        "under acme-corp.com (e.g. mg.acme-corp.com)."
    )


def test_providers_without_a_sending_domain_setting_are_not_compared(production):
    use(production, "ses")
    production.ANYMAIL = {"MAILGUN_SENDER_DOMAIN": "mg.other.com"}

    assert check_sender_domain(None) == []


def test_every_check_has_an_id_and_a_hint(production):
    use(production, "locmem")
    production.DEFAULT_FROM_EMAIL = "no-reply@example.com"
    production.SERVER_EMAIL = "root@localhost"

    found = ours()
    use(production, "mailgun")
    production.DEFAULT_FROM_EMAIL = "no-reply@other.com"
    found += ours()
    production.DEFAULT_FROM_EMAIL = ""
    found += ours()

    assert sorted(set(ids(found))) == [f"transactional.W10{n}" for n in (1, 2, 3, 4)]
    assert all(message.hint and isinstance(message, checks.Warning) for message in found)


# -- Several providers -------------------------------------------------------


def test_webhook_checks_cover_every_provider_mail_may_fail_over_to(settings):
    from django.core.checks import run_checks

    settings.TRANSACTIONAL_PROVIDERS = {"ses": PROVIDERS["ses"].backend, "mailgun": PROVIDERS["mailgun"].backend}
    settings.ANYMAIL = {"WEBHOOK_SECRET": ["anymail:secret"]}
    settings.TRANSACTIONAL_SNS_TOPIC_ARNS = []

    found = ids(run_checks(include_deployment_checks=True))

    assert "transactional.W202" in found  # Mailgun, the secondary, has no signing key
    assert "transactional.W204" in found  # SES, the primary, has no topic allow-list


def test_a_provider_backend_looping_into_the_outbox_is_an_error(settings):
    from django.core.checks import run_checks

    settings.TRANSACTIONAL_PROVIDERS = {"mailgun": PROVIDERS["mailgun"].backend,
                                        "smtp": "transactional.backends.EmailBackend"}

    assert "transactional.E002" in ids(run_checks())


@pytest.mark.parametrize("limits", [{"sendgrid": 10}, {"locmem": -1}, "locmem=1/s"])
def test_bad_rate_limits_are_an_error(settings, limits):
    from django.core.checks import run_checks

    settings.TRANSACTIONAL_RATE_LIMITS = limits

    assert "transactional.E011" in ids(run_checks())
