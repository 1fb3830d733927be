"""Reading the environment once per ESP connection, not once per request.

A ``requests.Session`` with ``trust_env`` (the default) looks up proxy
variables, ``no_proxy``, the CA bundle variables and ``~/.netrc`` on every
request: a tenth of a delivery worker's CPU per message at high rates.
The environment does not change during a delivery run, so
``settle_environment()`` applies what those lookups would find to the
session itself, once, and turns them off. Requests go out exactly as they
would have.
"""

import os

import requests
from requests.utils import get_environ_proxies, get_netrc_auth


def settle_environment(connection) -> None:
    """Fix the environment's settings on ``connection``'s requests session, if it has one.

    For anymail's requests-based backends (Mailgun, SendGrid, ...) once
    ``open()`` has made the session; others (SES's boto3, SMTP) are left as
    they are.
    """
    session = getattr(connection, "session", None)
    url = getattr(connection, "api_url", None)
    if not isinstance(session, requests.Session) or not session.trust_env or not url:
        return
    # As Session.merge_environment_settings(): the session's own proxies win.
    for scheme, proxy in get_environ_proxies(url, no_proxy=session.proxies.get("no_proxy")).items():
        session.proxies.setdefault(scheme, proxy)
    # A request without ``verify`` takes the environment's CA bundle over the session's.
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    # As Session.prepare_request(): netrc only when neither request nor session has auth.
    if session.auth is None:
        session.auth = get_netrc_auth(url)
    session.trust_env = False
