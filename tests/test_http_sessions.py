"""settle_environment(): the environment read once per ESP connection, with the same result."""

import pytest
import requests
import responses
from django.core.mail import get_connection

from transactional.http_sessions import settle_environment

URL = "https://api.mailgun.net/v3"


def what_requests_would_use(session: requests.Session, url: str) -> dict:
    prepared = session.prepare_request(requests.Request("POST", url))
    merged = session.merge_environment_settings(prepared.url, {}, None, None, None)
    return {"proxies": merged["proxies"], "verify": merged["verify"],
            "authorization": prepared.headers.get("Authorization")}


@pytest.fixture
def environ(monkeypatch, tmp_path):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                 "all_proxy", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    return monkeypatch


@pytest.mark.parametrize("variables", [
    {},
    {"HTTPS_PROXY": "http://proxy.internal:3128", "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/corp.pem"},
    {"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "api.mailgun.net"},
    {"CURL_CA_BUNDLE": "/etc/ssl/certs/curl.pem"},
])
def test_the_settled_session_sends_as_the_environment_said(environ, variables):
    for name, value in variables.items():
        environ.setenv(name, value)
    session = requests.Session()
    expected = what_requests_would_use(session, URL + "/mg.example.com/messages")
    connection = type("Backend", (), {"session": session, "api_url": URL})()

    settle_environment(connection)
    for name in variables:
        environ.delenv(name)  # no longer read: the session carries it

    assert session.trust_env is False
    assert what_requests_would_use(session, URL + "/mg.example.com/messages") == expected


def test_netrc_credentials_still_apply_to_a_request_without_auth(environ, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.mailgun.net login api password key-from-netrc\n")
    netrc.chmod(0o600)
    environ.setenv("NETRC", str(netrc))
    session = requests.Session()
    expected = what_requests_would_use(session, URL)

    settle_environment(type("Backend", (), {"session": session, "api_url": URL})())

    assert expected["authorization"].startswith("Basic ")
    assert what_requests_would_use(session, URL) == expected


@responses.activate
def test_an_anymail_backend_is_settled_and_still_sends(settings, environ):
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key-test", "MAILGUN_SENDER_DOMAIN": "mg.example.com"}
    responses.post("https://api.mailgun.net/v3/mg.example.com/messages",
                   json={"id": "<1@mg.example.com>", "message": "Queued"})
    connection = get_connection("anymail.backends.mailgun.EmailBackend")
    connection.open()

    settle_environment(connection)

    assert connection.session.trust_env is False
    from django.core.mail import EmailMessage

    assert EmailMessage("Hi", "Body", "shop@example.com", ["ann@example.org"], connection=connection).send() == 1
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_backends_without_a_requests_session_are_left_alone():
    smtp = get_connection("django.core.mail.backends.smtp.EmailBackend")
    settle_environment(smtp)  # no session attribute: nothing to do
    assert not hasattr(smtp, "session")
