"""settings.prod: required variables, `check --deploy`, error mail to ADMINS.

Each test imports the production settings in a fresh interpreter with a
controlled environment, as a deployment would.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import RequestFactory

from transactional.mailers import HAS_MAILERS

ROOT = Path(__file__).resolve().parent.parent

SECRET_KEY = "x9$k2!vQ7#pLm4@Zr8^tWc1&Yh6*Nb3(Fd5)Gs0_Ju-Ke=Ao+Ip"
PRODUCTION = {
    "SECRET_KEY": SECRET_KEY,
    "ALLOWED_HOSTS": "mail.acme-corp.com",
    "EMAIL_PROVIDER": "mailgun",
    "MAILGUN_API_KEY": "key-3ax6xnjp29jd6fds4gc373sgvjxteol0",
    "MAILGUN_SENDER_DOMAIN": "mg.acme-corp.com",
    "MAILGUN_WEBHOOK_SIGNING_KEY": "whsec-8c1f3a09e5b24d7e",
    "ANYMAIL_WEBHOOK_SECRET": "anymail:6Yh2pQ9rT4",
    "DEFAULT_FROM_EMAIL": "Acme <no-reply@acme-corp.com>",
    "ADMINS": "Ops <ops@acme-corp.com>",
}


def run(*args: str, environ: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    environ = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        **environ,
    }
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


def test_check_deploy_is_clean_with_a_complete_environment(tmp_path):
    result = run("manage.py", "check", "--deploy", "--settings=settings.prod", environ=PRODUCTION, tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."
    assert result.stderr == ""


def test_missing_variables_are_named_all_at_once(tmp_path):
    result = run("manage.py", "check", "--settings=settings.prod", environ={}, tmp_path=tmp_path)

    assert result.returncode != 0
    assert (
        "ImproperlyConfigured: Missing required environment variable(s): "
        "SECRET_KEY, ALLOWED_HOSTS, EMAIL_PROVIDER or EMAIL_PROVIDERS." in result.stderr
    )


def test_missing_provider_secrets_are_named_with_the_others(tmp_path):
    result = run(
        "manage.py", "check", "--settings=settings.prod",
        environ={"EMAIL_PROVIDER": "ses", "ALLOWED_HOSTS": "mail.acme-corp.com"},
        tmp_path=tmp_path,
    )

    assert (
        "Missing required environment variable(s): SECRET_KEY, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_DEFAULT_REGION." in result.stderr
    )


def test_unknown_provider_fails_naming_the_choices(tmp_path):
    result = run(
        "manage.py", "check", "--settings=settings.prod",
        environ={**PRODUCTION, "EMAIL_PROVIDER": "pigeon"},
        tmp_path=tmp_path,
    )

    assert "EMAIL_PROVIDER='pigeon' is not supported; choose one of: ses, mailgun, sendgrid" in result.stderr


DUMP = """
import json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "settings.prod"
from django.conf import settings
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "outbox": (settings.MAILERS["default"]["BACKEND"] if hasattr(settings, "MAILERS")
               else settings.EMAIL_BACKEND),
    "TRANSACTIONAL_DELIVERY_BACKEND": settings.TRANSACTIONAL_DELIVERY_BACKEND,
    "mail_admins": settings.LOGGING["handlers"]["mail_admins"],
    "django_logger": settings.LOGGING["loggers"]["django"],
    "ADMINS": settings.ADMINS,
    "SERVER_EMAIL": settings.SERVER_EMAIL,
    "SECURE_PROXY_SSL_HEADER": settings.SECURE_PROXY_SSL_HEADER,
    "DATABASES": settings.DATABASES["default"]["OPTIONS"],
    "has_DATABASE_URL": hasattr(settings, "DATABASE_URL"),
}))
"""


def test_prod_settings_route_error_mail_through_the_provider(tmp_path):
    result = run("-c", DUMP, environ=PRODUCTION, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)

    assert values["DEBUG"] is False
    assert values["TRANSACTIONAL_DELIVERY_BACKEND"] == "anymail.backends.mailgun.EmailBackend"
    assert values["mail_admins"] == {
        "class": "django.utils.log.AdminEmailHandler",
        "level": "ERROR",
        "filters": ["require_debug_false"],
        # Django 6.1: the provider's MAILERS alias; 5.2: its backend.
        **({"using": "mailgun"} if HAS_MAILERS else {"email_backend": "anymail.backends.mailgun.EmailBackend"}),
    }
    assert values["outbox"] == "transactional.backends.EmailBackend"
    assert values["django_logger"]["handlers"] == ["mail_admins"]
    assert values["ADMINS"] == [["Ops", "ops@acme-corp.com"]]
    assert values["SERVER_EMAIL"] == "Acme <no-reply@acme-corp.com>"
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["DATABASES"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in values["DATABASES"]["init_command"]
    assert values["has_DATABASE_URL"] is False


def test_error_report_mail_hides_credentials(settings, mailoutbox):
    """AdminEmailHandler's report shows no webhook auth, cookie or database URL."""
    from django.utils.log import AdminEmailHandler

    settings.ADMINS = [("Ops", "ops@acme-corp.com")]
    request = RequestFactory().post(
        "/anymail/mailgun/tracking/",
        HTTP_AUTHORIZATION="Basic YW55bWFpbDpzM2NyM3Q=",
        HTTP_COOKIE="sessionid=abcdef123456",
        DATABASE_URL="postgres://app:pg-pass-999@db/app",
    )
    handler = AdminEmailHandler(include_html=True)
    logger = logging.getLogger("tests.error_report")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("Internal Server Error: %s", request.path, extra={"request": request, "status_code": 500})
    finally:
        logger.removeHandler(handler)

    assert len(mailoutbox) == 1
    report = mailoutbox[0].body + mailoutbox[0].alternatives[0].content
    assert "RuntimeError" in report
    for secret in ("YW55bWFpbDpzM2NyM3Q=", "abcdef123456", "pg-pass-999"):
        assert secret not in report


@pytest.mark.parametrize("site_url, complaint", [
    (None, "Missing required environment variable(s): TRANSACTIONAL_SITE_URL."),
    ("http://mail.acme-corp.com", "TRANSACTIONAL_SITE_URL must be an https:// URL"),
])
def test_streams_need_an_https_site_url_in_production(tmp_path, site_url, complaint):
    environ = {**PRODUCTION, "TRANSACTIONAL_STREAMS": "newsletter"}
    if site_url:
        environ["TRANSACTIONAL_SITE_URL"] = site_url

    result = run("manage.py", "check", "--settings=settings.prod", environ=environ, tmp_path=tmp_path)

    assert result.returncode != 0
    assert complaint in result.stderr


def test_streams_with_an_https_site_url_check_clean_in_production(tmp_path):
    environ = {**PRODUCTION, "TRANSACTIONAL_STREAMS": "newsletter,notifications",
               "TRANSACTIONAL_SITE_URL": "https://mail.acme-corp.com"}

    result = run("manage.py", "check", "--deploy", "--settings=settings.prod", environ=environ, tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr


def release_check() -> list[str]:
    """The `manage.py check` of the Procfile's release step, as its arguments."""
    import shlex

    release = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("release:"))
    command = shlex.split(release.split("sh -c", 1)[1])[0].split("&&")[0]
    return shlex.split(command)[1:]  # without "python"


def test_the_release_step_fails_on_a_provider_that_never_delivers(tmp_path):
    environ = {key: value for key, value in PRODUCTION.items() if not key.startswith("MAILGUN")}
    environ["EMAIL_PROVIDER"] = "file"
    assert "--fail-level" in release_check()

    result = run(*release_check(), environ={**environ, "DJANGO_SETTINGS_MODULE": "settings.prod"}, tmp_path=tmp_path)

    assert result.returncode != 0
    assert "transactional.W101" in result.stderr


def test_the_release_step_passes_a_complete_environment_and_honours_silenced_checks(tmp_path):
    clean = run(*release_check(), environ={**PRODUCTION, "DJANGO_SETTINGS_MODULE": "settings.prod"},
                tmp_path=tmp_path)
    staging = {**PRODUCTION, "DJANGO_SETTINGS_MODULE": "settings.prod",
               "TRANSACTIONAL_REDIRECT_TO": "qa@acme-corp.com"}
    refused = run(*release_check(), environ=staging, tmp_path=tmp_path)
    silenced = run(*release_check(), environ={**staging, "SILENCED_SYSTEM_CHECKS": "transactional.W010"},
                   tmp_path=tmp_path)

    assert clean.returncode == 0, clean.stderr
    assert refused.returncode != 0 and "transactional.W010" in refused.stderr
    assert silenced.returncode == 0, silenced.stderr


REQUESTS = """
import json, os
os.environ["DJANGO_SETTINGS_MODULE"] = "settings.prod"
import django
django.setup()
from django.db import connection
from django.test import Client

client = Client(HTTP_HOST="mail.acme-corp.com")
after = []
for _ in range(2):
    assert client.get("/healthz").status_code == 200
    after.append({
        "open": connection.connection is not None,
        "id": id(connection.connection),
        "wal": os.path.exists(connection.settings_dict["NAME"] + "-wal"),
        "pragmas": [
            connection.cursor().execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "cache_size", "mmap_size")
        ],
    })
print(json.dumps(after))
"""


def test_a_gunicorn_worker_keeps_its_sqlite_connection_between_requests(tmp_path):
    """A connection per request cost single webhook posts over a quarter of their rate.

    docs/webhooks.md, "Throughput"; scripts/bench_webhooks.py --conn-max-age 0 shows it.
    """
    result = run("-c", REQUESTS, environ=PRODUCTION, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = json.loads(result.stdout.splitlines()[-1])  # after the log lines

    assert first["open"] and second["open"]
    assert first["id"] == second["id"]  # the same connection: no connect, no PRAGMAs again
    # SQLite deletes the WAL file as the last connection closes, for the next one to create.
    assert first["wal"] and second["wal"]
    # WAL, synchronous=NORMAL (1), a 32 MiB page cache and a 256 MiB memory map.
    assert first["pragmas"] == second["pragmas"] == ["wal", 1, -32768, 268435456]


def test_postgresql_keeps_its_connection_settings(tmp_path):
    dump = (
        "import json, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'settings.prod'\n"
        "from django.conf import settings\n"
        "db = settings.DATABASES['default']\n"
        "print(json.dumps([db['ENGINE'], db['CONN_MAX_AGE'], db.get('CONN_HEALTH_CHECKS')]))\n"
    )
    sqlite = run("-c", dump, environ=PRODUCTION, tmp_path=tmp_path)
    postgres = run(
        "-c", dump,
        environ={**PRODUCTION, "DATABASE_URL": "postgres://app:secret@db.internal:5432/app"},
        tmp_path=tmp_path,
    )

    assert json.loads(sqlite.stdout) == ["django.db.backends.sqlite3", 60, False]
    assert json.loads(postgres.stdout) == ["django.db.backends.postgresql", 60, True]
