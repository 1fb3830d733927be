"""`manage.py check_email_dns`: SPF, DKIM, DMARC and bounce MX against a stub resolver.

No test touches the network: DNS answers come from a dict of records
(``StubResolver``) and the SES API from botocore's Stubber.
"""

import base64
import io
import json
import random
from typing import Any

import boto3
import dns.exception
import dns.rdata
import dns.resolver
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.management import CommandError, call_command

from transactional.dns import ses
from transactional.dns.domains import aligned, organizational_domain
from transactional.dns.resolver import DnsLookupError, DnsResolver
from transactional.management.commands.check_email_dns import Command

TIMEOUT = "timeout"  # a name whose every lookup times out
SERVFAIL = "servfail"

Records = dict[str, Any]


def dkim_key(bits: int) -> str:
    """Return a DKIM key record with an RSA public key of ``bits`` bits."""
    # Any odd modulus of the right length makes a loadable public key; no
    # need to pay for generating primes.
    modulus = random.Random(bits).getrandbits(bits) | (1 << (bits - 1)) | 1
    der = (
        rsa.RSAPublicNumbers(65537, modulus)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


KEY_2048 = dkim_key(2048)

#: What the providers themselves publish.
PROVIDERS_DNS: Records = {
    "amazonses.com": {"TXT": ["v=spf1 ip4:199.255.192.0/22 ip4:199.127.232.0/22 -all"]},
    "mailgun.org": {"TXT": ["v=spf1 include:_spf.mailgun.org ~all"]},
    "_spf.mailgun.org": {"TXT": ["v=spf1 ip4:209.61.151.0/24 ip4:166.78.68.0/22 ~all"]},
    "sendgrid.net": {"TXT": ["v=spf1 ip4:167.89.0.0/17 ip4:208.117.48.0/20 ~all"]},
    "u1234567.wl123.sendgrid.net": {"TXT": ["v=spf1 include:sendgrid.net ~all"]},
    "s1.domainkey.u1234567.wl123.sendgrid.net": {"TXT": [KEY_2048]},
    "s2.domainkey.u1234567.wl123.sendgrid.net": {"TXT": [KEY_2048]},
    "tok1.dkim.amazonses.com": {"TXT": [KEY_2048]},
    "tok2.dkim.amazonses.com": {"TXT": [KEY_2048]},
    "tok3.dkim.amazonses.com": {"TXT": [KEY_2048]},
}
DMARC = {"_dmarc.acme.com": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@acme.com"]}}

MAILGUN_MX = [(10, "mxa.mailgun.org"), (10, "mxb.mailgun.org")]

#: A domain that passes every check, per provider.
GOOD: dict[str, Records] = {
    "mailgun": {
        "mg.acme.com": {
            "TXT": ["v=spf1 include:mailgun.org ~all"],
            "MX": MAILGUN_MX,
        },
        "pic._domainkey.mg.acme.com": {"TXT": [KEY_2048]},
        **DMARC,
    },
    "ses": {
        "bounce.acme.com": {
            "TXT": ["v=spf1 include:amazonses.com ~all"],
            "MX": [(10, "feedback-smtp.eu-west-1.amazonses.com")],
        },
        **{
            f"tok{n}._domainkey.acme.com": {"CNAME": f"tok{n}.dkim.amazonses.com"}
            for n in (1, 2, 3)
        },
        **DMARC,
    },
    "sendgrid": {
        "em1234.acme.com": {"CNAME": "u1234567.wl123.sendgrid.net"},
        "s1._domainkey.acme.com": {"CNAME": "s1.domainkey.u1234567.wl123.sendgrid.net"},
        "s2._domainkey.acme.com": {"CNAME": "s2.domainkey.u1234567.wl123.sendgrid.net"},
        **DMARC,
    },
    "smtp": {
        "acme.com": {
            "TXT": ["google-site-verification=abc", "v=spf1 include:_spf.google.com -all"]
        },
        "_spf.google.com": {"TXT": ["v=spf1 ip4:35.190.247.0/24 ~all"]},
        "google._domainkey.acme.com": {"TXT": [KEY_2048]},
        **DMARC,
    },
}
ARGS = {
    "mailgun": ["--provider", "mailgun", "--dkim-selector", "pic"],
    "ses": ["--provider", "ses"],
    "sendgrid": ["--provider", "sendgrid", "--return-path-domain", "em1234.acme.com"],
    "smtp": ["--provider", "smtp", "--dkim-selector", "google"],
}


class StubResolver:
    """Answer like a resolver from ``{name: {"TXT": [...], "CNAME": "...", "MX": [...]}}``."""

    def __init__(self, records: Records, timeout: float) -> None:
        self.records, self.timeout = records, timeout

    def txt(self, name: str) -> list[str]:
        entry = self.records.get(name)
        if isinstance(entry, dict) and "CNAME" in entry:  # resolvers follow CNAMEs
            return self.txt(entry["CNAME"])
        return self._answer(name, "TXT")

    def cname(self, name: str) -> str:
        return self._answer(name, "CNAME")

    def mx(self, name: str) -> list[tuple[int, str]]:
        return sorted(self._answer(name, "MX"))

    def _answer(self, name: str, rdtype: str) -> Any:
        entry = self.records.get(name)
        if entry in (TIMEOUT, SERVFAIL):
            raise DnsLookupError(entry, name, rdtype, timeout=self.timeout)
        if entry is None:
            raise DnsLookupError("nxdomain", name, rdtype)
        if rdtype not in entry:
            raise DnsLookupError("noanswer", name, rdtype)
        return entry[rdtype]


@pytest.fixture
def mail_dns(settings, monkeypatch):
    """Set the sender and provider settings; return a function that runs the command."""
    settings.DEFAULT_FROM_EMAIL = "Acme <no-reply@acme.com>"
    settings.ANYMAIL = {
        "MAILGUN_SENDER_DOMAIN": "mg.acme.com",
        "AMAZON_SES_CLIENT_PARAMS": {"region_name": "eu-west-1"},
    }
    settings.EMAIL_HOST = "smtp.gmail.com"

    def run(*args: str, records: Records) -> tuple[int, str]:
        def stub(timeout: float) -> StubResolver:
            return StubResolver({**PROVIDERS_DNS, **records}, timeout)

        monkeypatch.setattr(Command, "resolver_class", staticmethod(stub))
        stdout, stderr = io.StringIO(), io.StringIO()
        try:
            call_command("check_email_dns", *args, stdout=stdout, stderr=stderr)
        except SystemExit as exit:
            code = exit.code
        else:
            code = 0
        assert stderr.getvalue() == ""
        return code, stdout.getvalue()

    return run


@pytest.fixture(scope="module")
def sesv2_client():
    """Return one SES v2 client for the module: building a boto3 client is slow."""
    return boto3.session.Session().client(
        "sesv2",
        region_name="eu-west-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
    )


@pytest.fixture
def ses_api(monkeypatch, sesv2_client):
    """Stub GetEmailIdentity: ``ses_api(mail_from=..., tokens=...)`` or ``ses_api(error=...)``."""
    stubber = Stubber(sesv2_client)
    monkeypatch.setattr(ses, "client", lambda: sesv2_client)

    def respond(
        *,
        mail_from: str = "bounce.acme.com",
        tokens: tuple[str, ...] = ("tok1", "tok2", "tok3"),
        error: str = "",
    ) -> None:
        params = {"EmailIdentity": "acme.com"}
        if error:
            stubber.add_client_error(
                "get_email_identity",
                error,
                "Identity acme.com does not exist.",
                404,
                expected_params=params,
            )
            return
        response: dict[str, Any] = {
            "IdentityType": "DOMAIN",
            "VerifiedForSendingStatus": True,
            "DkimAttributes": {"SigningEnabled": True, "Status": "SUCCESS", "Tokens": list(tokens)},
        }
        if mail_from:
            response["MailFromAttributes"] = {
                "MailFromDomain": mail_from,
                "MailFromDomainStatus": "SUCCESS",
                "BehaviorOnMxFailure": "USE_DEFAULT_VALUE",
            }
        stubber.add_response("get_email_identity", response, params)

    with stubber:
        yield respond
        stubber.assert_no_pending_responses()


def results(output: str) -> dict[str, dict[str, str]]:
    """Return the --json output keyed by check id."""
    return {row["check"]: row for row in json.loads(output)}


def mailgun_spf(spf: str, more: Records | None = None) -> Records:
    """Return Mailgun's good records with ``spf`` as mg.acme.com's SPF record, plus ``more``."""
    return with_records(
        "mailgun", {"mg.acme.com": {"TXT": [spf], "MX": MAILGUN_MX}, **(more or {})}
    )


def with_records(provider: str, changes: Records) -> Records:
    """Return the provider's good records with ``changes`` (None removes a name)."""
    records = {**GOOD[provider], **changes}
    return {name: value for name, value in records.items() if value is not None}


# A passing domain, per provider
# ------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", GOOD)
def test_a_well_configured_domain_passes_every_check(provider, mail_dns, ses_api):
    if provider == "ses":
        ses_api()
    code, output = mail_dns(*ARGS[provider], "--json", records=GOOD[provider])

    rows = json.loads(output)
    assert code == 0
    assert [row for row in rows if row["status"] != "pass"] == []
    assert {
        "spf.record",
        "spf.provider",
        "spf.lookups",
        "spf.all",
        "dmarc.record",
        "dmarc.policy",
        "dmarc.spf_alignment",
        "dmarc.dkim_alignment",
    } <= {row["check"] for row in rows}


def test_ses_checks_the_mail_from_domain_and_easy_dkim_tokens_from_the_api(mail_dns, ses_api):
    ses_api()
    code, output = mail_dns("--provider", "ses", "--json", records=GOOD["ses"])

    found = results(output)
    assert found["ses.identity"]["detail"] == (
        "acme.com in eu-west-1: MAIL FROM bounce.acme.com (SUCCESS), 3 Easy DKIM token(s)"
    )
    assert found["spf.record"]["detail"] == (
        "one SPF record at bounce.acme.com: v=spf1 include:amazonses.com ~all"
    )
    assert (
        found["mx.bounce"]["detail"] == "bounce.acme.com MX feedback-smtp.eu-west-1.amazonses.com"
    )
    assert found["dkim.tok1"]["detail"] == "2048-bit RSA key at tok1._domainkey.acme.com"
    assert found["dmarc.spf_alignment"]["detail"] == (
        "envelope bounce.acme.com aligns with From acme.com (relaxed)"
    )


def test_the_text_report_is_a_table_with_a_summary(mail_dns):
    code, output = mail_dns(*ARGS["mailgun"], records=GOOD["mailgun"])

    assert code == 0
    lines = output.splitlines()
    assert lines[0] == "acme.com sending through Mailgun (envelope domain: mg.acme.com)"
    assert lines[1].split() == ["CHECK", "STATUS", "DETAIL"]
    assert (
        "spf.record            pass    one SPF record at mg.acme.com: "
        "v=spf1 include:mailgun.org ~all" in lines
    )
    assert "To fix" not in output
    assert lines[-1] == "0 failed, 0 warning(s), 11 passed."


# Each failure names the record to publish
# ------------------------------------------------------------------------------

FAILURES = [
    pytest.param(
        "mailgun",
        {"mg.acme.com": {"MX": MAILGUN_MX}},
        "spf.record",
        "no TXT record at mg.acme.com (NoAnswer)",
        'mg.acme.com. TXT "v=spf1 include:mailgun.org ~all"',
        id="spf-missing",
    ),
    pytest.param(
        "mailgun",
        {"mg.acme.com": {"TXT": ["v=spf1 include:sendgrid.net -all"], "MX": []}},
        "spf.provider",
        "mg.acme.com's SPF record does not include mailgun.org: Mailgun is not authorized",
        'mg.acme.com. TXT "v=spf1 include:sendgrid.net include:mailgun.org -all"',
        id="spf-without-provider",
    ),
    pytest.param(
        "mailgun",
        {"_dmarc.acme.com": None},
        "dmarc.record",
        "no TXT record at _dmarc.acme.com (NXDOMAIN)",
        '_dmarc.acme.com. TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@acme.com"',
        id="dmarc-missing",
    ),
    pytest.param(
        "mailgun",
        {"pic._domainkey.mg.acme.com": None},
        "dkim.pic",
        "no TXT record at pic._domainkey.mg.acme.com (NXDOMAIN)",
        'pic._domainkey.mg.acme.com. TXT "v=DKIM1; k=rsa; p=<the public key your provider shows>"',
        id="dkim-missing",
    ),
    pytest.param(
        "ses",
        {"tok2._domainkey.acme.com": None},
        "dkim.tok2",
        "no CNAME record at tok2._domainkey.acme.com (NXDOMAIN)",
        "tok2._domainkey.acme.com. CNAME tok2.dkim.amazonses.com.",
        id="ses-easy-dkim-cname-missing",
    ),
    pytest.param(
        "ses",
        {"tok3._domainkey.acme.com": {"CNAME": "tok1.dkim.amazonses.com"}},
        "dkim.tok3",
        "tok3._domainkey.acme.com is a CNAME to tok1.dkim.amazonses.com, "
        "expected tok3.dkim.amazonses.com",
        "tok3._domainkey.acme.com. CNAME tok3.dkim.amazonses.com.",
        id="ses-easy-dkim-cname-wrong",
    ),
    pytest.param(
        "ses",
        {"bounce.acme.com": {"TXT": ["v=spf1 include:amazonses.com ~all"]}},
        "mx.bounce",
        "no MX record at bounce.acme.com (NoAnswer)",
        "bounce.acme.com. MX 10 feedback-smtp.eu-west-1.amazonses.com.",
        id="ses-mail-from-mx-missing",
    ),
    pytest.param(
        "sendgrid",
        {"em1234.acme.com": {"CNAME": "mail.acme.com"}},
        "spf.return_path",
        "em1234.acme.com is a CNAME to mail.acme.com, not to a host under sendgrid.net",
        "em1234.acme.com. CNAME u1234567.wl123.sendgrid.net.",
        id="sendgrid-return-path-cname-wrong",
    ),
    pytest.param(
        "sendgrid",
        {"s2._domainkey.acme.com": None},
        "dkim.s2",
        "no CNAME record at s2._domainkey.acme.com (NXDOMAIN)",
        "s2._domainkey.acme.com. CNAME <the host sendgrid.net shows you>.",
        id="sendgrid-dkim-cname-missing",
    ),
]


@pytest.mark.parametrize("provider, changes, check, detail, fix", FAILURES)
def test_each_failure_names_the_record_to_publish(
    provider, changes, check, detail, fix, mail_dns, ses_api
):
    if provider == "ses":
        ses_api()
    code, output = mail_dns(*ARGS[provider], "--json", records=with_records(provider, changes))

    found = results(output)
    assert code == 1
    assert (found[check]["status"], found[check]["detail"], found[check]["fix"]) == (
        "fail",
        detail,
        fix,
    )


def test_the_text_report_lists_the_fix_under_the_table(mail_dns):
    records = with_records("mailgun", {"mg.acme.com": {"MX": MAILGUN_MX}})
    code, output = mail_dns(*ARGS["mailgun"], records=records)

    assert code == 1
    assert "spf.record            fail    no TXT record at mg.acme.com (NoAnswer)" in output
    assert '  fail  spf.record: mg.acme.com. TXT "v=spf1 include:mailgun.org ~all"' in output
    assert output.splitlines()[-1].startswith("1 failed, ")


def test_mailgun_without_its_mx_is_only_a_warning(mail_dns):
    records = with_records("mailgun", {"mg.acme.com": {"TXT": ["v=spf1 include:mailgun.org ~all"]}})
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    assert code == 0
    assert results(output)["mx.bounce"] == {
        "check": "mx.bounce",
        "status": "warn",
        "detail": "no MX record at mg.acme.com (NoAnswer)",
        "fix": "mg.acme.com. MX 10 mxa.mailgun.org. and mg.acme.com. MX 10 mxb.mailgun.org.",
    }


def test_mailgun_eu_domains_include_eu_mailgun_org(settings, mail_dns):
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_API_URL": "https://api.eu.mailgun.net/v3"}
    eu_mx = [(10, "mxa.eu.mailgun.org"), (10, "mxb.eu.mailgun.org")]
    records = with_records("mailgun", {"mg.acme.com": {"TXT": ["v=spf1 -all"], "MX": eu_mx}})
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)
    assert found["spf.provider"]["fix"] == 'mg.acme.com. TXT "v=spf1 include:eu.mailgun.org -all"'
    assert found["mx.bounce"]["status"] == "pass"


# SPF: counting lookups, all, duplicates
# ------------------------------------------------------------------------------


def test_spf_lookups_are_counted_through_nested_includes(mail_dns):
    # 3 (own) + 3 (a) + 4 (b) + 2 (c) + 1 (mailgun.org) = 13
    records = mailgun_spf(
        "v=spf1 mx include:a.acme.com include:mailgun.org ~all",
        {
            "a.acme.com": {"TXT": ["v=spf1 a mx include:b.acme.com ~all"]},
            "b.acme.com": {
                "TXT": ["v=spf1 exists:%{i}.x.acme.com ptr a:x.acme.com include:c.acme.com ~all"]
            },
            "c.acme.com": {"TXT": ["v=spf1 mx a ip4:192.0.2.1 ~all"]},
        },
    )
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    lookups = results(output)["spf.lookups"]
    assert code == 1
    assert lookups["status"] == "fail"
    assert lookups["detail"] == (
        "13 DNS-querying terms (include, a, mx, ptr, exists, redirect) counted through includes; "
        "RFC 7208 allows 10, receivers return a permerror"
    )


def test_an_spf_include_loop_is_reported_not_followed_forever(mail_dns):
    records = mailgun_spf(
        "v=spf1 include:mailgun.org include:spf1.acme.com ~all",
        {
            "spf1.acme.com": {"TXT": ["v=spf1 a mx ptr include:spf2.acme.com ~all"]},
            "spf2.acme.com": {"TXT": ["v=spf1 a mx exists:x.acme.com redirect=spf3.acme.com"]},
            "spf3.acme.com": {"TXT": ["v=spf1 a mx include:spf1.acme.com ~all"]},
        },
    )
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    lookups = results(output)["spf.lookups"]
    assert code == 1
    assert lookups["detail"] == (
        "include loop mg.acme.com -> spf1.acme.com -> spf2.acme.com -> spf3.acme.com "
        "-> spf1.acme.com: "
        "receivers give up with a permerror (14 DNS-querying terms before the loop)"
    )


def test_ten_lookups_or_fewer_pass(mail_dns):
    records = mailgun_spf(
        "v=spf1 a mx include:mailgun.org include:_spf.google.com ~all",
        {"_spf.google.com": {"TXT": ["v=spf1 ip4:35.190.247.0/24 ~all"]}},
    )
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    assert results(output)["spf.lookups"] == {
        "check": "spf.lookups",
        "status": "pass",
        "detail": "5 DNS-querying terms of 10 allowed, counted through includes",
        "fix": "",
    }


def test_an_include_that_does_not_resolve_fails(mail_dns):
    records = mailgun_spf(
        "v=spf1 include:mailgun.org include:gone.example.net ~all", {"gone.example.net": TIMEOUT}
    )
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    assert code == 1
    assert results(output)["spf.includes"]["detail"] == (
        "gone.example.net: DNS timeout after 5s (TXT gone.example.net)"
    )


SOFTFAIL = 'mg.acme.com. TXT "v=spf1 include:mailgun.org ~all"'


@pytest.mark.parametrize(
    "spf, status, fix",
    [
        ("v=spf1 include:mailgun.org +all", "fail", SOFTFAIL),
        ("v=spf1 include:mailgun.org all", "fail", SOFTFAIL),
        ("v=spf1 include:mailgun.org ?all", "fail", SOFTFAIL),
        ("v=spf1 include:mailgun.org", "fail", SOFTFAIL),
        ("v=spf1 include:mailgun.org -all", "pass", ""),
        ("v=spf1 redirect=mailgun.org", "pass", ""),
    ],
)
def test_spf_must_end_in_softfail_or_fail(spf, status, fix, mail_dns):
    records = mailgun_spf(spf)
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)["spf.all"]
    assert (found["status"], found["fix"]) == (status, fix)
    assert code == (1 if status == "fail" else 0)


def test_plus_all_is_explained(mail_dns):
    records = mailgun_spf("v=spf1 include:mailgun.org +all")
    _, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    assert results(output)["spf.all"]["detail"] == "+all means anyone may send as this domain"


def test_two_spf_records_fail_with_the_merged_record(mail_dns):
    records = mailgun_spf("v=spf1 include:mailgun.org ~all", {})
    records["mg.acme.com"]["TXT"].append("v=spf1 ip4:192.0.2.10 -all")
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)["spf.record"]
    assert code == 1
    assert found["detail"] == (
        "2 SPF records at mg.acme.com: receivers treat that as a permanent error (RFC 7208 4.5); "
        "merge them into one"
    )
    assert found["fix"] == 'mg.acme.com. TXT "v=spf1 include:mailgun.org ip4:192.0.2.10 ~all"'


def test_sendgrid_without_return_path_domain_warns_and_explains(mail_dns):
    code, output = mail_dns("--provider", "sendgrid", "--json", records=GOOD["sendgrid"])

    found = results(output)
    assert code == 0
    assert found["spf.record"]["status"] == "warn"
    assert (
        "em1234.acme.com, a CNAME to u1234567.wl123.sendgrid.net" in found["spf.record"]["detail"]
    )
    assert found["spf.record"]["fix"].startswith("pass --return-path-domain")
    assert found["dmarc.spf_alignment"]["status"] == "warn"
    assert found["dmarc.dkim_alignment"]["status"] == "pass"


def test_ses_without_custom_mail_from_is_not_aligned(mail_dns, ses_api):
    ses_api(mail_from="")
    code, output = mail_dns("--provider", "ses", "--json", records=GOOD["ses"])

    found = results(output)
    assert code == 0  # DKIM aligns, so DMARC passes
    assert found["spf.record"]["status"] == "warn"
    assert found["spf.record"]["detail"].startswith(
        "no custom MAIL FROM domain: SES sends with MAIL FROM amazonses.com"
    )
    assert (
        "bounce.acme.com. MX 10 feedback-smtp.eu-west-1.amazonses.com."
        in found["spf.record"]["fix"]
    )
    assert found["dmarc.spf_alignment"]["detail"] == (
        "envelope amazonses.com does not align with From acme.com (relaxed); "
        "DKIM alignment carries DMARC"
    )
    assert "mx.bounce" not in found


def test_ses_api_errors_become_a_warning_and_options_fill_in(mail_dns, ses_api):
    ses_api(error="NotFoundException")
    code, output = mail_dns(
        "--provider",
        "ses",
        "--return-path-domain",
        "bounce.acme.com",
        "--dkim-selector",
        "tok1",
        "--json",
        records={**GOOD["ses"], "tok1._domainkey.acme.com": {"TXT": [KEY_2048]}},
    )

    found = results(output)
    assert code == 0
    assert found["ses.identity"]["status"] == "warn"
    assert found["ses.identity"]["detail"].startswith(
        "could not read the SES identity acme.com: "
        "acme.com is not a verified identity in SES region eu-west-1"
    )
    assert found["spf.record"]["status"] == "pass"
    assert found["mx.bounce"]["status"] == "pass"
    assert found["dkim.tok1"]["status"] == "pass"


def test_the_ses_client_is_built_from_anymail_settings(settings):
    settings.ANYMAIL = {
        "AMAZON_SES_CLIENT_PARAMS": {
            "region_name": "ap-southeast-2",
            "config": {"connect_timeout": 3},
        }
    }

    client = ses.client()

    assert client.meta.service_model.service_name == "sesv2"
    assert client.meta.region_name == "ap-southeast-2"
    assert client.meta.config.connect_timeout == 3


# DKIM keys
# ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, status, detail",
    [
        (
            dkim_key(512),
            "fail",
            "512-bit RSA key at pic._domainkey.mg.acme.com: receivers ignore keys under 1024 bits",
        ),
        (
            dkim_key(1024),
            "warn",
            "1024-bit RSA key at pic._domainkey.mg.acme.com: 2048 bits recommended",
        ),
        (dkim_key(2048), "pass", "2048-bit RSA key at pic._domainkey.mg.acme.com"),
        ("v=DKIM1; k=rsa; p=", "fail", "key at pic._domainkey.mg.acme.com is revoked (empty p=)"),
        (
            "v=DKIM1; k=rsa; p=bm90IGEga2V5",
            "fail",
            "key at pic._domainkey.mg.acme.com: p= is not a base64 DER public key",
        ),
        (
            "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
            "pass",
            "ed25519 key at pic._domainkey.mg.acme.com",
        ),
    ],
    ids=["512", "1024", "2048", "revoked", "garbage", "ed25519"],
)
def test_dkim_key_sizes(record, status, detail, mail_dns):
    records = with_records("mailgun", {"pic._domainkey.mg.acme.com": {"TXT": [record]}})
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)["dkim.pic"]
    assert (found["status"], found["detail"]) == (status, detail)
    assert code == (1 if status == "fail" else 0)


def test_a_multi_string_dkim_key_is_joined_by_the_resolver():
    rdata = dns.rdata.from_text(
        "IN", "TXT", " ".join(f'"{KEY_2048[i : i + 255]}"' for i in range(0, len(KEY_2048), 255))
    )
    resolver = DnsResolver(
        timeout=5, resolver=FakeDnspython({("pic._domainkey.acme.com", "TXT"): [rdata]})
    )

    assert resolver.txt("pic._domainkey.acme.com") == [KEY_2048]


def test_mailgun_without_a_selector_warns_where_to_find_it(mail_dns):
    code, output = mail_dns("--provider", "mailgun", "--json", records=GOOD["mailgun"])

    found = results(output)
    assert code == 0
    assert found["dkim"]["status"] == "warn"
    assert "pass --dkim-selector: Mailgun shows it for mg.acme.com" in found["dkim"]["fix"]
    assert found["dmarc.dkim_alignment"]["status"] == "warn"


# DMARC: policy, fallback, alignment
# ------------------------------------------------------------------------------


def test_dmarc_p_none_warns_with_the_next_step(mail_dns):
    records = with_records(
        "mailgun", {"_dmarc.acme.com": {"TXT": ["v=DMARC1; p=none; rua=mailto:d@acme.com"]}}
    )
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)["dmarc.policy"]
    assert code == 0
    assert (found["status"], found["detail"]) == (
        "warn",
        "p=none: monitoring only, receivers act on nothing",
    )
    assert found["fix"].endswith(
        '_dmarc.acme.com. TXT "v=DMARC1; p=quarantine; rua=mailto:d@acme.com; pct=25"'
    )


def test_dmarc_without_rua_warns(mail_dns):
    records = with_records(
        "mailgun", {"_dmarc.acme.com": {"TXT": ["v=DMARC1; p=quarantine; pct=50"]}}
    )
    _, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)
    assert found["dmarc.policy"]["detail"] == "p=quarantine, pct=50"
    assert found["dmarc.rua"]["fix"] == (
        '_dmarc.acme.com. TXT "v=DMARC1; p=quarantine; pct=50; rua=mailto:dmarc-reports@acme.com"'
    )


def test_a_subdomain_falls_back_to_the_organizational_domains_dmarc(settings, mail_dns):
    settings.DEFAULT_FROM_EMAIL = "Acme <alerts@mail.acme.com>"
    records = with_records(
        "mailgun",
        {"_dmarc.acme.com": {"TXT": ["v=DMARC1; p=reject; sp=none; rua=mailto:d@acme.com"]}},
    )
    _, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)
    assert found["dmarc.record"]["detail"] == (
        "_dmarc.acme.com: v=DMARC1; p=reject; sp=none; rua=mailto:d@acme.com "
        "(no record at _dmarc.mail.acme.com: the organizational domain's applies)"
    )
    assert found["dmarc.policy"]["status"] == "warn"
    assert found["dmarc.policy"]["detail"].startswith("sp=none")


@pytest.mark.parametrize(
    "dmarc, spf_status, dkim_status, code",
    [
        ("v=DMARC1; p=reject; rua=mailto:d@acme.com", "pass", "pass", 0),
        ("v=DMARC1; p=reject; aspf=s; rua=mailto:d@acme.com", "warn", "pass", 0),
        ("v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:d@acme.com", "fail", "fail", 1),
    ],
    ids=["relaxed", "strict-spf", "strict-both"],
)
def test_alignment_relaxed_vs_strict(dmarc, spf_status, dkim_status, code, mail_dns):
    # Mailgun's envelope and d= are mg.acme.com, From is acme.com: relaxed aligns, strict does not.
    records = with_records("mailgun", {"_dmarc.acme.com": {"TXT": [dmarc]}})
    exit_code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)
    assert (found["dmarc.spf_alignment"]["status"], found["dmarc.dkim_alignment"]["status"]) == (
        spf_status,
        dkim_status,
    )
    assert exit_code == code


def test_strict_alignment_failure_suggests_relaxed_modes(mail_dns):
    records = with_records(
        "mailgun", {"_dmarc.acme.com": {"TXT": ["v=DMARC1; p=reject; adkim=s; aspf=s"]}}
    )
    _, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)
    assert found["dmarc.spf_alignment"]["detail"] == (
        "envelope mg.acme.com does not align with From acme.com (strict), "
        "and DKIM does not align either: DMARC fails"
    )
    assert (
        found["dmarc.spf_alignment"]["fix"]
        == '_dmarc.acme.com. TXT "v=DMARC1; p=reject; adkim=s; aspf=r"'
    )
    assert (
        found["dmarc.dkim_alignment"]["fix"]
        == '_dmarc.acme.com. TXT "v=DMARC1; p=reject; adkim=r; aspf=s"'
    )


def test_a_sending_domain_of_another_organization_does_not_align(settings, mail_dns):
    settings.ANYMAIL = {"MAILGUN_SENDER_DOMAIN": "mg.other.com"}
    records = {
        "mg.other.com": GOOD["mailgun"]["mg.acme.com"],
        "pic._domainkey.mg.other.com": {"TXT": [KEY_2048]},
        **DMARC,
    }
    code, output = mail_dns(*ARGS["mailgun"], "--json", records=records)

    found = results(output)
    assert code == 1
    assert found["dmarc.dkim_alignment"]["detail"] == (
        "d=mg.other.com does not align with From acme.com (relaxed), "
        "and SPF does not align either: DMARC fails"
    )


@pytest.mark.parametrize(
    "name, organization",
    [
        ("acme.com", "acme.com"),
        ("mg.acme.com", "acme.com"),
        ("a.b.acme.com", "acme.com"),
        ("acme.co.uk", "acme.co.uk"),
        ("mail.acme.co.uk", "acme.co.uk"),
        ("em1234.shop.acme.com.au", "acme.com.au"),
    ],
)
def test_organizational_domain_approximation(name, organization):
    assert organizational_domain(name) == organization


def test_alignment_modes():
    assert aligned("mg.acme.com", "acme.com", "r")
    assert not aligned("mg.acme.com", "acme.com", "s")
    assert aligned("ACME.com.", "acme.com", "s")
    assert not aligned("acme.co.uk", "other.co.uk", "r")


# Outages are reported, never a traceback
# ------------------------------------------------------------------------------


def test_a_dns_timeout_is_reported_in_the_table(mail_dns):
    records = with_records("mailgun", {"_dmarc.acme.com": TIMEOUT})
    code, output = mail_dns(*ARGS["mailgun"], "--timeout", "2.5", records=records)

    assert code == 1
    assert "dmarc.record          fail    DNS timeout after 2.5s (TXT _dmarc.acme.com)" in output
    assert "Traceback" not in output


def test_nxdomain_everywhere_is_reported_for_each_record(mail_dns):
    code, output = mail_dns(*ARGS["mailgun"], "--json", records={})

    found = results(output)
    assert code == 1
    assert found["spf.record"]["detail"] == "no TXT record at mg.acme.com (NXDOMAIN)"
    assert found["dmarc.record"]["detail"] == "no TXT record at _dmarc.acme.com (NXDOMAIN)"


def test_servfail_is_reported_without_a_fix(mail_dns):
    code, output = mail_dns(
        *ARGS["mailgun"], "--json", records=with_records("mailgun", {"mg.acme.com": SERVFAIL})
    )

    found = results(output)["spf.record"]
    assert code == 1
    assert found == {
        "check": "spf.record",
        "status": "fail",
        "fix": "",
        "detail": "no DNS server answered for TXT mg.acme.com (SERVFAIL / NoNameservers)",
    }


# Command line
# ------------------------------------------------------------------------------


def test_json_is_a_list_of_check_status_detail_fix(mail_dns):
    _, output = mail_dns(*ARGS["mailgun"], "--json", records=GOOD["mailgun"])

    rows = json.loads(output)
    assert isinstance(rows, list)
    assert all(set(row) == {"check", "status", "detail", "fix"} for row in rows)
    assert {row["status"] for row in rows} <= {"pass", "warn", "fail"}


def test_exit_status_is_zero_with_warnings_only(mail_dns):
    records = with_records("mailgun", {"_dmarc.acme.com": {"TXT": ["v=DMARC1; p=none"]}})
    code, output = mail_dns(*ARGS["mailgun"], records=records)

    assert code == 0
    assert output.splitlines()[-1] == "0 failed, 2 warning(s), 9 passed."


def test_domain_and_provider_default_to_the_settings(settings, mail_dns):
    settings.EMAIL_PROVIDER = "mailgun"
    code, output = mail_dns("--dkim-selector", "pic", records=GOOD["mailgun"])

    assert code == 0
    assert output.startswith("acme.com sending through Mailgun (envelope domain: mg.acme.com)")


def test_an_address_or_explicit_domain_is_accepted(settings, mail_dns):
    settings.ANYMAIL = {}
    records = {
        "shop.example.org": GOOD["mailgun"]["mg.acme.com"],
        "_dmarc.example.org": DMARC["_dmarc.acme.com"],
    }
    _, output = mail_dns("Shop@Shop.Example.org", "--provider", "mailgun", records=records)

    assert output.startswith(
        "shop.example.org sending through Mailgun (envelope domain: shop.example.org)"
    )


def test_a_development_provider_needs_provider(settings, mail_dns):
    settings.EMAIL_PROVIDER = "file"

    with pytest.raises(
        CommandError, match=r"^EMAIL_PROVIDER=file does not send mail; pass --provider\.$"
    ):
        mail_dns(records={})


@pytest.mark.parametrize(
    "args, message",
    [
        (["not a domain", "--provider", "smtp"], "expected a domain name like acme.com"),
        (["--provider", "pigeon"], "invalid choice: 'pigeon'"),
        (["--provider", "smtp", "--timeout", "0"], "expected a positive number of seconds"),
        (["--provider", "smtp", "--dkim-selector", "bad selector"], "expected a DKIM selector"),
    ],
)
def test_bad_arguments_are_refused(args, message, mail_dns):
    with pytest.raises(CommandError, match=message):
        mail_dns(*args, records={})


def test_the_timeout_reaches_the_resolver(mail_dns, monkeypatch):
    seen = []
    monkeypatch.setattr(
        Command,
        "resolver_class",
        staticmethod(lambda timeout: seen.append(timeout) or StubResolver(GOOD["smtp"], timeout)),
    )
    call_command("check_email_dns", "--provider", "smtp", "--timeout", "1.5", stdout=io.StringIO())

    assert seen == [1.5]


# The dnspython seam
# ------------------------------------------------------------------------------


class FakeDnspython:
    """Stands in for ``dns.resolver.Resolver``: answers or raises per (name, type)."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers, self.lifetime = answers, None

    def resolve(self, name: str, rdtype: str, search: bool = True) -> list:
        answer = self.answers[(name, rdtype)]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(
    "error, kind, text",
    [
        (dns.resolver.NXDOMAIN(), "nxdomain", "no TXT record at acme.com (NXDOMAIN)"),
        (dns.resolver.NoAnswer(), "noanswer", "no TXT record at acme.com (NoAnswer)"),
        (
            dns.resolver.LifetimeTimeout(timeout=5.0, errors=[]),
            "timeout",
            "DNS timeout after 5s (TXT acme.com)",
        ),
        (
            dns.resolver.NoNameservers(),
            "servfail",
            "no DNS server answered for TXT acme.com (SERVFAIL / NoNameservers)",
        ),
        (
            dns.exception.DNSException(),
            "servfail",
            "no DNS server answered for TXT acme.com (SERVFAIL / NoNameservers)",
        ),
    ],
)
def test_the_seam_turns_dnspython_errors_into_ours(error, kind, text):
    resolver = DnsResolver(timeout=5, resolver=FakeDnspython({("acme.com", "TXT"): error}))

    with pytest.raises(DnsLookupError) as raised:
        resolver.txt("acme.com")
    assert (raised.value.kind, raised.value.name, str(raised.value)) == (kind, "acme.com", text)


def test_the_seam_normalizes_cname_and_mx_answers():
    resolver = DnsResolver(
        timeout=3,
        resolver=FakeDnspython(
            {
                ("tok._domainkey.acme.com", "CNAME"): [
                    dns.rdata.from_text("IN", "CNAME", "Tok.DKIM.amazonses.com.")
                ],
                ("mg.acme.com", "MX"): [
                    dns.rdata.from_text("IN", "MX", "20 mxb.mailgun.org."),
                    dns.rdata.from_text("IN", "MX", "10 mxa.mailgun.org."),
                ],
            }
        ),
    )

    assert resolver.resolver.lifetime == 3
    assert resolver.cname("tok._domainkey.acme.com") == "tok.dkim.amazonses.com"
    assert resolver.mx("mg.acme.com") == [(10, "mxa.mailgun.org"), (20, "mxb.mailgun.org")]


def test_every_configured_provider_is_checked_when_mail_may_fail_over(settings, mail_dns):
    settings.TRANSACTIONAL_PROVIDERS = {
        "mailgun": "anymail.backends.mailgun.EmailBackend",
        "smtp": "django.core.mail.backends.smtp.EmailBackend",
    }
    # Mailgun's domain is set up; the SMTP relay (Gmail) is not in acme.com's SPF.
    code, output = mail_dns("--dkim-selector", "pic", records=GOOD["mailgun"])

    assert code == 1
    mailgun, smtp = output.split("\n\nacme.com sending through ")
    assert mailgun.startswith("acme.com sending through Mailgun")
    assert "0 failed" in mailgun.splitlines()[-1]
    assert smtp.startswith("SMTP")
    assert "0 failed" not in smtp.splitlines()[-1]


def test_several_providers_in_json_say_which_provider_each_result_is_about(settings, mail_dns):
    settings.TRANSACTIONAL_PROVIDERS = {
        "mailgun": "anymail.backends.mailgun.EmailBackend",
        "smtp": "django.core.mail.backends.smtp.EmailBackend",
    }
    records = {**GOOD["mailgun"], **GOOD["smtp"]}
    records["acme.com"] = GOOD["smtp"]["acme.com"]

    code, output = mail_dns("--dkim-selector", "pic", "--dkim-selector", "google", "--json", records=records)

    rows = json.loads(output)
    assert {row["provider"] for row in rows} == {"mailgun", "smtp"}
    assert {"check", "status", "detail", "fix", "provider"} == set(rows[0])
