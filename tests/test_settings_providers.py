"""The EMAIL_PROVIDER table (settings/providers.py) and the environment reader."""

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from settings.env import Env
from settings.providers import PROVIDERS, chosen_providers, email_settings

BASE_DIR = Path("/srv/app")

MAILGUN = {"MAILGUN_API_KEY": "key-3ax6xnjp29jd6fds4gc373sgvjxteol0", "MAILGUN_SENDER_DOMAIN": "mg.acme-mail.com"}
SENDGRID = {"SENDGRID_API_KEY": "SG.fake-key"}
SES = {"AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "fake-secret", "AWS_REGION": "eu-west-1"}


def build(provider: str, **environ: str) -> dict:
    """The EMAIL_* form (Django 5.2); ``mailers()`` below builds Django 6.1's MAILERS."""
    return email_settings(provider, Env(environ), base_dir=BASE_DIR, use_mailers=False)


def mailers(provider: str | list[str], **environ: str) -> dict:
    return email_settings(provider, Env(environ), base_dir=BASE_DIR, use_mailers=True)


@pytest.mark.parametrize(
    ("provider", "environ", "backend"),
    [
        ("ses", SES, "anymail.backends.amazon_ses.EmailBackend"),
        ("mailgun", MAILGUN, "anymail.backends.mailgun.EmailBackend"),
        ("sendgrid", SENDGRID, "anymail.backends.sendgrid.EmailBackend"),
        ("smtp", {"EMAIL_HOST": "smtp.acme-mail.com"}, "django.core.mail.backends.smtp.EmailBackend"),
        ("file", {}, "django.core.mail.backends.filebased.EmailBackend"),
        ("console", {}, "django.core.mail.backends.console.EmailBackend"),
        ("locmem", {}, "django.core.mail.backends.locmem.EmailBackend"),
        ("dummy", {}, "django.core.mail.backends.dummy.EmailBackend"),
    ],
)
def test_every_provider_resolves_to_its_backend(provider, environ, backend):
    values = build(provider, **environ)

    assert values["EMAIL_PROVIDER"] == provider
    assert values["TRANSACTIONAL_DELIVERY_BACKEND"] == backend
    assert values["EMAIL_TIMEOUT"] == 10.0
    assert values["ANYMAIL"]["REQUESTS_TIMEOUT"] == 10.0


def test_table_covers_exactly_the_documented_providers():
    assert set(PROVIDERS) == {"ses", "mailgun", "sendgrid", "smtp", "file", "console", "locmem", "dummy"}


def test_mailgun_settings_default_to_the_us_region():
    anymail = build("mailgun", **MAILGUN)["ANYMAIL"]

    assert anymail["MAILGUN_API_KEY"] == MAILGUN["MAILGUN_API_KEY"]
    assert anymail["MAILGUN_SENDER_DOMAIN"] == "mg.acme-mail.com"
    assert anymail["MAILGUN_API_URL"] == "https://api.mailgun.net/v3"
    assert "MAILGUN_WEBHOOK_SIGNING_KEY" not in anymail


def test_mailgun_eu_region_and_signing_key():
    anymail = build(
        "mailgun",
        **MAILGUN,
        MAILGUN_API_URL="https://api.eu.mailgun.net/v3",
        MAILGUN_WEBHOOK_SIGNING_KEY="whsec-1",
    )["ANYMAIL"]

    assert anymail["MAILGUN_API_URL"] == "https://api.eu.mailgun.net/v3"
    assert anymail["MAILGUN_WEBHOOK_SIGNING_KEY"] == "whsec-1"


def test_sendgrid_settings():
    anymail = build(
        "sendgrid",
        **SENDGRID,
        SENDGRID_API_URL="https://api.eu.sendgrid.com/v3/",
        SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY="MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
    )["ANYMAIL"]

    assert anymail["SENDGRID_API_KEY"] == "SG.fake-key"
    assert anymail["SENDGRID_API_URL"] == "https://api.eu.sendgrid.com/v3/"
    assert anymail["SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"].startswith("MFkw")


def test_ses_region_endpoint_configuration_set_and_timeouts():
    anymail = build(
        "ses",
        **SES,
        AMAZON_SES_ENDPOINT_URL="http://127.0.0.1:5000",
        AMAZON_SES_CONFIGURATION_SET_NAME="transactional",
        EMAIL_TIMEOUT="4.5",
    )["ANYMAIL"]

    client = anymail["AMAZON_SES_CLIENT_PARAMS"]
    assert client["region_name"] == "eu-west-1"
    assert client["endpoint_url"] == "http://127.0.0.1:5000"
    assert client["config"] == {
        "connect_timeout": 4.5,
        "read_timeout": 4.5,
        "retries": {"total_max_attempts": 1},
    }
    assert anymail["AMAZON_SES_CONFIGURATION_SET_NAME"] == "transactional"
    assert anymail["REQUESTS_TIMEOUT"] == 4.5


def test_ses_region_falls_back_to_aws_default_region():
    environ = {**SES, "AWS_DEFAULT_REGION": "us-east-2"}
    del environ["AWS_REGION"]

    client = build("ses", **environ)["ANYMAIL"]["AMAZON_SES_CLIENT_PARAMS"]

    assert client["region_name"] == "us-east-2"


def test_ses_credentials_stay_out_of_settings():
    values = build("ses", **SES)

    assert "fake-secret" not in repr(values)


def test_smtp_settings():
    values = build(
        "smtp",
        EMAIL_HOST="smtp.acme-mail.com",
        EMAIL_PORT="587",
        EMAIL_HOST_USER="postmaster@acme-mail.com",
        EMAIL_HOST_PASSWORD="hunter2",
        EMAIL_USE_TLS="true",
        EMAIL_TIMEOUT="7",
    )

    assert values["EMAIL_HOST"] == "smtp.acme-mail.com"
    assert values["EMAIL_PORT"] == 587
    assert values["EMAIL_HOST_USER"] == "postmaster@acme-mail.com"
    assert values["EMAIL_HOST_PASSWORD"] == "hunter2"
    assert values["EMAIL_USE_TLS"] is True
    assert values["EMAIL_USE_SSL"] is False
    assert values["EMAIL_TIMEOUT"] == 7.0


def test_smtp_refuses_tls_and_ssl_together():
    with pytest.raises(ImproperlyConfigured, match="EMAIL_USE_TLS and EMAIL_USE_SSL"):
        build("smtp", EMAIL_HOST="smtp.acme-mail.com", EMAIL_USE_TLS="1", EMAIL_USE_SSL="1")


def test_file_path_is_relative_to_the_project_unless_absolute():
    assert build("file")["EMAIL_FILE_PATH"] == str(BASE_DIR / "sent_emails")
    assert build("file", EMAIL_FILE_PATH="/tmp/mails")["EMAIL_FILE_PATH"] == "/tmp/mails"


@pytest.mark.parametrize(
    ("provider", "names"),
    [
        ("mailgun", "MAILGUN_API_KEY, MAILGUN_SENDER_DOMAIN"),
        ("sendgrid", "SENDGRID_API_KEY"),
        ("ses", "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_DEFAULT_REGION"),
        ("smtp", "EMAIL_HOST"),
    ],
)
def test_missing_variables_are_all_named_at_once(provider, names):
    with pytest.raises(ImproperlyConfigured) as error:
        build(provider)

    assert f"EMAIL_PROVIDER={provider} needs these environment variable(s): {names}." in str(error.value)


def test_blank_values_count_as_missing():
    with pytest.raises(ImproperlyConfigured, match="MAILGUN_SENDER_DOMAIN"):
        build("mailgun", MAILGUN_API_KEY="key", MAILGUN_SENDER_DOMAIN="   ")


def test_unknown_provider_names_the_allowed_ones():
    with pytest.raises(ImproperlyConfigured) as error:
        Env({"EMAIL_PROVIDER": "postmark"}).choice("EMAIL_PROVIDER", PROVIDERS)

    assert str(error.value) == (
        "EMAIL_PROVIDER='postmark' is not supported; choose one of: "
        "ses, mailgun, sendgrid, smtp, file, console, locmem, dummy."
    )
    with pytest.raises(ImproperlyConfigured, match="choose one of: ses, mailgun"):
        build("postmark")


def test_provider_names_are_case_insensitive():
    assert Env({"EMAIL_PROVIDER": "Mailgun"}).choice("EMAIL_PROVIDER", PROVIDERS) == "mailgun"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"EMAIL_TIMEOUT": "soon"}, "EMAIL_TIMEOUT='soon' is not a number."),
        ({"EMAIL_TIMEOUT": "0"}, "EMAIL_TIMEOUT must be at least 0.1"),
        ({"EMAIL_TIMEOUT": "nan"}, "EMAIL_TIMEOUT='nan' is not a finite number."),
        ({"ANYMAIL_WEBHOOK_SECRET": "justapassword"}, "ANYMAIL_WEBHOOK_SECRET must be one or more user:password"),
    ],
)
def test_bad_values_name_the_variable(environ, message):
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(").replace(".", r"\.")):
        build("locmem", **environ)


def test_webhook_secret_accepts_several_credentials_for_rotation():
    anymail = build("locmem", ANYMAIL_WEBHOOK_SECRET="old:pass1  new:pass2")["ANYMAIL"]

    assert anymail["WEBHOOK_SECRET"] == ["old:pass1", "new:pass2"]


@pytest.mark.parametrize(("raw", "expected"), [("yes", True), ("On", True), ("0", False), ("false", False)])
def test_booleans(raw, expected):
    assert Env({"DEBUG": raw}).bool("DEBUG", default=not expected) is expected


def test_a_misspelt_boolean_is_an_error_not_false():
    with pytest.raises(ImproperlyConfigured, match="EMAIL_USE_TLS='ture' is not a boolean"):
        Env({"EMAIL_USE_TLS": "ture"}).bool("EMAIL_USE_TLS", default=False)


def test_addresses_parse_names_and_bare_addresses():
    env = Env({"ADMINS": "Ops <ops@example.com>, dev@example.com"})

    assert env.addresses("ADMINS") == [("Ops", "ops@example.com"), ("", "dev@example.com")]


def test_addresses_reject_garbage():
    with pytest.raises(ImproperlyConfigured, match="ADMINS='ops' is not a comma-separated list"):
        Env({"ADMINS": "ops"}).addresses("ADMINS")


# Tracking-webhook settings (transactional/webhooks/)
# ------------------------------------------------------------------------------

TOPIC = "arn:aws:sns:eu-west-1:123456789012:transactional-ses-events"


def test_sns_topic_allow_list_and_cert_pattern_become_settings():
    values = build(
        "ses",
        **SES,
        AMAZON_SES_SNS_TOPIC_ARNS=f"{TOPIC}, arn:aws-cn:sns:cn-north-1:123456789012:events.fifo",
        AMAZON_SNS_CERT_URL_PATTERN=r"^https://sns\.test\.internal/.+\.pem$",
    )

    assert values["TRANSACTIONAL_SNS_TOPIC_ARNS"] == [TOPIC, "arn:aws-cn:sns:cn-north-1:123456789012:events.fifo"]
    assert values["TRANSACTIONAL_SNS_CERT_URL_PATTERN"] == r"^https://sns\.test\.internal/.+\.pem$"


def test_unset_sns_variables_leave_the_app_defaults():
    values = build("ses", **SES)

    assert "TRANSACTIONAL_SNS_TOPIC_ARNS" not in values
    assert "TRANSACTIONAL_SNS_CERT_URL_PATTERN" not in values


def test_webhook_keys_are_read_whatever_the_provider():
    # After a switch of provider, the old ESP keeps posting events for a while.
    values = build(
        "mailgun",
        **MAILGUN,
        AMAZON_SES_SNS_TOPIC_ARNS=TOPIC,
        SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY="MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
    )
    ses_values = build("ses", **SES, MAILGUN_WEBHOOK_SIGNING_KEY="whsec-1")

    assert values["TRANSACTIONAL_SNS_TOPIC_ARNS"] == [TOPIC]
    assert values["ANYMAIL"]["SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"].startswith("MFkw")
    assert ses_values["ANYMAIL"]["MAILGUN_WEBHOOK_SIGNING_KEY"] == "whsec-1"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AMAZON_SES_SNS_TOPIC_ARNS": "transactional-ses-events"}, "AMAZON_SES_SNS_TOPIC_ARNS has 'transactional-ses-events', not an SNS topic ARN"),
        ({"AMAZON_SES_SNS_TOPIC_ARNS": f"{TOPIC} {TOPIC}"}, "AMAZON_SES_SNS_TOPIC_ARNS has"),
        ({"AMAZON_SES_SNS_TOPIC_ARNS": "arn:aws:sqs:eu-west-1:123456789012:queue"}, "not an SNS topic ARN"),
        ({"AMAZON_SNS_CERT_URL_PATTERN": r"^https://sns\.(.*\.pem$"}, "AMAZON_SNS_CERT_URL_PATTERN=.* is not a valid regular expression"),
        ({"MAILGUN_WEBHOOK_SIGNING_KEY": "clé"}, "MAILGUN_WEBHOOK_SIGNING_KEY must be plain ASCII"),
    ],
)
def test_bad_webhook_values_name_the_variable(environ, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        build("locmem", **environ)


@pytest.mark.parametrize("source", ["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE"])
def test_ses_needs_no_access_keys_with_a_role_or_profile(source):
    values = build("ses", AWS_REGION="eu-west-1", **{source: "/v2/credentials/abc"})

    assert values["ANYMAIL"]["AMAZON_SES_CLIENT_PARAMS"]["region_name"] == "eu-west-1"


def test_ses_with_a_role_still_needs_a_region():
    with pytest.raises(ImproperlyConfigured, match=r"needs these environment variable\(s\): AWS_REGION or AWS_DEFAULT_REGION\."):
        build("ses", AWS_PROFILE="mail")


# -- EMAIL_PROVIDERS: several, in failover order ------------------------------


def test_several_providers_are_configured_together_in_failover_order():
    values = email_settings(["ses", "mailgun"], Env({**SES, **MAILGUN}), base_dir=BASE_DIR)

    assert values["EMAIL_PROVIDER"] == "ses"
    assert list(values["TRANSACTIONAL_PROVIDERS"].items()) == [
        ("ses", "anymail.backends.amazon_ses.EmailBackend"),
        ("mailgun", "anymail.backends.mailgun.EmailBackend"),
    ]
    assert values["TRANSACTIONAL_DELIVERY_BACKEND"] == "anymail.backends.amazon_ses.EmailBackend"
    assert values["ANYMAIL"]["MAILGUN_API_KEY"] == MAILGUN["MAILGUN_API_KEY"]
    assert values["ANYMAIL"]["AMAZON_SES_CLIENT_PARAMS"]["region_name"] == "eu-west-1"


def test_one_provider_sets_no_provider_table():
    assert "TRANSACTIONAL_PROVIDERS" not in build("mailgun", **MAILGUN)


def test_every_providers_missing_variables_are_named_at_once():
    with pytest.raises(ImproperlyConfigured) as caught:
        email_settings(["ses", "mailgun"], Env({"MAILGUN_API_KEY": "key"}), base_dir=BASE_DIR)

    assert str(caught.value).startswith(
        "EMAIL_PROVIDERS=ses,mailgun needs these environment variable(s): AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_DEFAULT_REGION, MAILGUN_SENDER_DOMAIN."
    )


def test_rate_limits_come_with_the_providers():
    values = email_settings(
        ["mailgun", "sendgrid"], Env({**MAILGUN, **SENDGRID, "TRANSACTIONAL_RATE_LIMITS": "mailgun=100/s"}),
        base_dir=BASE_DIR,
    )

    assert values["TRANSACTIONAL_RATE_LIMITS"] == {"mailgun": 100.0}


@pytest.mark.parametrize("environ, chosen", [
    ({"EMAIL_PROVIDERS": "ses,mailgun"}, ["ses", "mailgun"]),
    ({"EMAIL_PROVIDERS": " SES , Mailgun ,"}, ["ses", "mailgun"]),
    ({"EMAIL_PROVIDERS": "ses,mailgun", "EMAIL_PROVIDER": "ses"}, ["ses", "mailgun"]),
    ({"EMAIL_PROVIDER": "smtp"}, ["smtp"]),
    ({}, ["file"]),
])
def test_providers_are_chosen_from_the_environment(environ, chosen):
    assert chosen_providers(Env(environ), default="file") == chosen


@pytest.mark.parametrize("environ, complaint", [
    ({"EMAIL_PROVIDERS": "ses,postmark"}, "EMAIL_PROVIDERS names 'postmark', not supported"),
    ({"EMAIL_PROVIDERS": "ses,ses"}, "names a provider twice"),
    ({"EMAIL_PROVIDERS": "mailgun,file"}, "EMAIL_PROVIDERS mixes file with real providers"),
    ({"EMAIL_PROVIDERS": "ses,mailgun", "EMAIL_PROVIDER": "mailgun"},
     "EMAIL_PROVIDER='mailgun' disagrees with EMAIL_PROVIDERS='ses,mailgun'"),
])
def test_a_bad_provider_list_is_refused(environ, complaint):
    with pytest.raises(ImproperlyConfigured, match=complaint):
        chosen_providers(Env(environ))


def test_no_provider_at_all_yields_an_empty_list_for_prod_to_report():
    assert chosen_providers(Env({})) == []


def test_redirect_addresses_keep_names_and_internationalized_domains():
    from email.utils import getaddresses

    env = Env({"TRANSACTIONAL_REDIRECT_TO": 'QA <qa@bücher.example>, "Team, \\"Q\\"" <t@acme.test>, x@acme.test'})

    formatted = env.formatted_addresses("TRANSACTIONAL_REDIRECT_TO")

    assert getaddresses(formatted) == [
        ("QA", "qa@bücher.example"), ('Team, "Q"', "t@acme.test"), ("", "x@acme.test"),
    ]


# -- Django 6.1: MAILERS instead of the EMAIL_* settings ------------------------


def test_mailers_replace_every_deprecated_email_setting():
    values = mailers("smtp", EMAIL_HOST="smtp.acme-mail.com", EMAIL_PORT="587", EMAIL_USE_TLS="1")

    assert not {name for name in values if name.startswith("EMAIL_")} - {"EMAIL_PROVIDER"}
    assert values["TRANSACTIONAL_DELIVERY_BACKEND"] == "django.core.mail.backends.smtp.EmailBackend"
    assert values["ANYMAIL"]["REQUESTS_TIMEOUT"] == 10.0


def test_mailers_are_the_outbox_each_stream_and_each_provider():
    values = mailers(["ses", "mailgun"], **SES, **MAILGUN, TRANSACTIONAL_STREAMS="Newsletter,notifications")

    assert values["MAILERS"] == {
        "default": {"BACKEND": "transactional.backends.EmailBackend"},
        "transactional": {"BACKEND": "transactional.backends.EmailBackend", "OPTIONS": {"stream": "transactional"}},
        "newsletter": {"BACKEND": "transactional.backends.EmailBackend", "OPTIONS": {"stream": "newsletter"}},
        "notifications": {"BACKEND": "transactional.backends.EmailBackend", "OPTIONS": {"stream": "notifications"}},
        # anymail reads the ANYMAIL dict, as its webhooks do: no second copy of the keys.
        "ses": {"BACKEND": "anymail.backends.amazon_ses.EmailBackend"},
        "mailgun": {"BACKEND": "anymail.backends.mailgun.EmailBackend"},
    }
    assert values["ANYMAIL"]["MAILGUN_API_KEY"] == MAILGUN["MAILGUN_API_KEY"]


def test_smtp_and_file_settings_become_mailer_options():
    smtp = mailers(
        "smtp", EMAIL_HOST="smtp.acme-mail.com", EMAIL_PORT="587", EMAIL_HOST_USER="postmaster",
        EMAIL_HOST_PASSWORD="hunter2", EMAIL_USE_SSL="yes", EMAIL_TIMEOUT="7",
    )["MAILERS"]["smtp"]
    file = mailers("file", EMAIL_FILE_PATH="/tmp/mails")["MAILERS"]["file"]

    assert smtp == {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {
            "host": "smtp.acme-mail.com", "port": 587, "username": "postmaster", "password": "hunter2",
            "use_tls": False, "use_ssl": True, "timeout": 7.0,
        },
    }
    assert file == {"BACKEND": "django.core.mail.backends.filebased.EmailBackend", "OPTIONS": {"file_path": "/tmp/mails"}}


@pytest.mark.parametrize("stream", ["default", "ses"])
def test_a_stream_cannot_take_a_mail_alias(stream):
    with pytest.raises(ImproperlyConfigured, match=f"TRANSACTIONAL_STREAMS names '{stream}'"):
        mailers("locmem", TRANSACTIONAL_STREAMS=stream)


def test_mailers_are_the_default_where_django_has_them():
    from django.core import mail

    assert ("MAILERS" in email_settings("locmem", Env({}), base_dir=BASE_DIR)) is hasattr(mail, "mailers")
