"""Staging safety (transactional/staging.py): allow-list, redirect, block, and its checks."""

import pytest
from anymail.message import AnymailMessage
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage, EmailMultiAlternatives

from transactional import staging
from transactional.staging import Outcome, Rules

QA = "QA <qa@acme.com>"


def configure(
    settings, allowed: list[str] | None = None, redirect: list[str] | None = None
) -> Rules:
    """Set both staging settings and return the rules they give."""
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = allowed or []
    settings.TRANSACTIONAL_REDIRECT_TO = redirect or []
    result = staging.rules()
    assert result is not None
    return result


def message(**kwargs) -> EmailMessage:
    return EmailMessage("Hi", "Body", "no-reply@acme.com", **kwargs)


def run(*, deploy: bool = True) -> list[checks.CheckMessage]:
    """Run the registered checks and return the staging ones (W010, E010)."""
    found = checks.run_checks(include_deployment_checks=deploy)
    return [m for m in found if m.id in ("transactional.W010", "transactional.E010")]


# ALLOW-LIST
# ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, address, allowed",
    [
        ("qa@acme.com", "qa@acme.com", True),
        ("qa@acme.com", "QA Team <qa@acme.com>", True),
        ("qa@acme.com", "ann@acme.com", False),
        ("acme.com", "ann@acme.com", True),
        ("acme.com", "ann@dev.acme.com", False),
        ("@acme.com", "ann@acme.com", True),
        ("@acme.com", "ann@dev.acme.com", False),
        ("*.acme.com", "ann@dev.acme.com", True),
        ("*.acme.com", "ann@a.b.acme.com", True),
        ("*.acme.com", "ann@acme.com", False),
        ("*.acme.com", "ann@evilacme.com", False),
        ("acme.com", "ann@evilacme.com", False),
        ("acme.com", "ann@acme.com.evil.com", False),
    ],
)
def test_allow_list_entries(settings, entry, address, allowed):
    assert configure(settings, [entry]).allows(address) is allowed


@pytest.mark.parametrize(
    "entry, normalized, address",
    [
        ("ACME.com", "acme.com", "ANN@Acme.Com"),
        ("@Acme.COM", "acme.com", "ann@ACME.COM"),
        ("*.ACME.com", "*.acme.com", "Ann@Dev.Acme.Com"),
        (" Ann@ACME.com ", "ann@acme.com", "ANN@acme.COM"),
    ],
)
def test_entries_and_addresses_compare_case_insensitively(settings, entry, normalized, address):
    rules = configure(settings, [entry])

    assert rules.allowed == (normalized,)
    assert rules.allows(address)


@pytest.mark.parametrize("entry", ["bücher.example", "xn--bcher-kva.example", "BÜCHER.example"])
@pytest.mark.parametrize("address", ["ann@bücher.example", "ann@xn--bcher-kva.example"])
def test_idn_domains_match_in_both_spellings(settings, entry, address):
    rules = configure(settings, [entry])

    assert rules.allowed == ("bücher.example",)
    assert rules.allows(address)
    assert not rules.allows("ann@bucher.example")


def test_idn_wildcard_in_punycode(settings):
    rules = configure(settings, ["*.xn--bcher-kva.example"])

    assert rules.allowed == ("*.bücher.example",)
    assert rules.allows("ann@shop.bücher.example")
    assert not rules.allows("ann@xn--bcher-kva.example")


@pytest.mark.parametrize(
    "address",
    [
        "qa@acme.com, evil@x.com",  # anymail would send to both
        "qa@acme.com <evil@x.com>",
        '"qa@acme.com" <evil@x.com>',
        "evil@x.com (qa@acme.com)",
        "qa@acme.com\nevil@x.com",
        '"evil@x.com"@acme.com',
        "qa@acme.com\x00evil",
        "not an address",
        "",
    ],
)
def test_ambiguous_recipients_are_not_allowed(settings, address):
    assert not configure(settings, ["acme.com"]).allows(address)


def test_redirect_targets_are_implicitly_allowed(settings):
    rules = configure(settings, ["acme.com"], ["Tester <tester@x.com>"])

    assert rules.allows("tester@X.com")
    assert not rules.allows("other@x.com")


# CONFIGURATION
# ------------------------------------------------------------------------------


@pytest.mark.parametrize("allowed, redirect", [(None, None), ([], []), ([], None)])
def test_rules_are_none_when_unset_or_empty(settings, allowed, redirect):
    for name, value in (
        ("TRANSACTIONAL_ALLOWED_RECIPIENTS", allowed),
        ("TRANSACTIONAL_REDIRECT_TO", redirect),
    ):
        if value is None and hasattr(settings, name):
            delattr(settings, name)
        elif value is not None:
            setattr(settings, name, value)

    assert staging.rules() is None
    assert staging.describe(None) == "staging safety is off"


def test_rules_keep_redirect_addresses_as_configured(settings):
    rules = configure(settings, ["@acme.com", "*.acme.com", "QA@x.com"], [QA])

    assert rules == Rules(allowed=("acme.com", "*.acme.com", "qa@x.com"), redirect_to=(QA,))


@pytest.mark.parametrize(
    "entry",
    [
        "foo bar", "@", "a@b@c", "a@b@c.com", "", "*", "*.com", "com", "qa@*.acme.com",
        "a b@acme.com",
    ],
)
def test_invalid_allow_list_entry(settings, entry):
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = ["acme.com", entry]

    with pytest.raises(ImproperlyConfigured) as raised:
        staging.rules()

    assert "TRANSACTIONAL_ALLOWED_RECIPIENTS" in str(raised.value)
    assert repr(entry) in str(raised.value)


@pytest.mark.parametrize(
    "entry", ["", "qa", "@acme.com", "a@b.com, c@d.com", "QA\r\nBcc: x@y.com <qa@acme.com>"]
)
def test_invalid_redirect_address(settings, entry):
    settings.TRANSACTIONAL_REDIRECT_TO = [QA, entry]

    with pytest.raises(ImproperlyConfigured) as raised:
        staging.rules()

    assert "TRANSACTIONAL_REDIRECT_TO" in str(raised.value)
    assert repr(entry) in str(raised.value)


def test_a_string_setting_is_refused_not_split_into_characters(settings):
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = "acme.com"

    with pytest.raises(ImproperlyConfigured, match="TRANSACTIONAL_ALLOWED_RECIPIENTS"):
        staging.rules()


def test_describe(settings):
    assert (
        staging.describe(configure(settings, ["acme.com", "qa@x.com"], [QA]))
        == "mail outside acme.com, qa@x.com is redirected to QA <qa@acme.com>"
    )
    assert staging.describe(configure(settings, ["acme.com"])) == "mail outside acme.com is blocked"
    assert staging.describe(configure(settings, redirect=[QA, "b@acme.com"])) == (
        "all mail is redirected to QA <qa@acme.com>, b@acme.com"
    )


# APPLY
# ------------------------------------------------------------------------------


def test_no_rules_leave_the_message_untouched():
    email = message(to=["ann@example.com"])

    assert staging.apply(email, None) == Outcome(email, [], [])


def test_nothing_to_change_returns_the_same_content(settings):
    email = message(to=["Ann <ann@acme.com>"], cc=["bob@acme.com"], headers={"X-Tag": "1"})

    outcome = staging.apply(email, configure(settings, ["acme.com"], [QA]))

    assert (outcome.redirected, outcome.blocked) == ([], [])
    assert outcome.email.to == ["Ann <ann@acme.com>"]
    assert outcome.email.cc == ["bob@acme.com"]
    assert outcome.email.extra_headers == {"X-Tag": "1"}


def test_redirect_replaces_outside_recipients_in_to_cc_and_bcc(settings):
    email = message(
        to=["Ann <ann@customer.com>", "dev@acme.com"],
        cc=["Bob <BOB@Customer.com>"],
        bcc=["audit@acme.com", "eve@other.com"],
    )

    outcome = staging.apply(email, configure(settings, ["acme.com"], [QA]))

    assert outcome.email.to == ["dev@acme.com", QA]
    assert outcome.email.cc == []
    assert outcome.email.bcc == ["audit@acme.com"]
    assert outcome.redirected == ["ann@customer.com", "bob@customer.com", "eve@other.com"]
    assert outcome.blocked == []
    assert outcome.email.extra_headers == {
        "X-Original-To": "Ann <ann@customer.com>, dev@acme.com",
        "X-Original-Cc": "Bob <BOB@Customer.com>",
        "X-Original-Bcc": "audit@acme.com, eve@other.com",
    }


def test_redirect_without_allow_list_sends_everything_to_the_targets_once(settings):
    email = message(to=["ann@customer.com", "bob@customer.com"], cc=["ann@customer.com"])
    rules = configure(settings, redirect=[QA, "Lead <lead@acme.com>", "qa@ACME.com"])

    outcome = staging.apply(email, rules)

    assert outcome.email.to == [QA, "Lead <lead@acme.com>"]
    assert outcome.email.cc == []
    assert outcome.redirected == ["ann@customer.com", "bob@customer.com"]


def test_a_redirect_target_already_a_recipient_is_not_added_again(settings):
    email = message(to=["ann@customer.com"], cc=["QA@acme.com"])

    outcome = staging.apply(email, configure(settings, redirect=[QA, "lead@acme.com"]))

    assert outcome.email.to == ["lead@acme.com"]
    assert outcome.email.cc == ["QA@acme.com"]
    assert outcome.email.recipients() == ["lead@acme.com", "QA@acme.com"]


def test_blocked_only_drops_outside_recipients(settings):
    email = message(to=["ann@customer.com", "dev@acme.com"], bcc=["eve@other.com"])

    outcome = staging.apply(email, configure(settings, ["acme.com"]))

    assert outcome.email.to == ["dev@acme.com"]
    assert outcome.email.bcc == []
    assert outcome.blocked == ["ann@customer.com", "eve@other.com"]
    assert outcome.redirected == []
    assert outcome.email.extra_headers["X-Original-To"] == "ann@customer.com, dev@acme.com"
    assert outcome.email.extra_headers["X-Original-Bcc"] == "eve@other.com"
    assert "X-Original-Cc" not in outcome.email.extra_headers


def test_every_recipient_blocked_leaves_no_message(settings):
    email = message(to=["Ann <ann@customer.com>"], cc=["ann@customer.com", "a@b.com, c@d.com"])

    outcome = staging.apply(email, configure(settings, ["acme.com"]))

    assert outcome.email is None
    # One entry per address, as the outbox stores Recipient rows.
    assert outcome.blocked == ["ann@customer.com", "a@b.com", "c@d.com"]


def test_original_headers_are_stripped_of_cr_lf(settings):
    email = message(to=["Ann\r\n Bcc: x@evil.com <ann@customer.com>"])

    outcome = staging.apply(email, configure(settings, ["acme.com"], [QA]))

    assert outcome.email.extra_headers["X-Original-To"] == "Ann Bcc: x@evil.com <ann@customer.com>"
    sent = outcome.email.message()
    assert sent["Bcc"] is None
    assert sent["X-Original-To"] == "Ann Bcc: x@evil.com <ann@customer.com>"


def test_long_original_lists_are_truncated_with_a_count(settings):
    to = [f"customer{n:04d}@customer.com" for n in range(300)]  # 25 characters each

    outcome = staging.apply(message(to=to), configure(settings, ["acme.com"], [QA]))

    # 73 addresses and their separators (27 * 73 - 2) plus " (+227 more)" fit in 2000.
    value = outcome.email.extra_headers["X-Original-To"]
    assert value == ", ".join(to[:73]) + " (+227 more)"
    assert len(value) <= 2000 < len(", ".join(to[:74]) + " (+226 more)")


def test_a_list_of_exactly_the_limit_is_not_truncated(settings):
    to = ["x" * 1958 + "@customer.com", "a@b.com"]  # 1971 + 2 + 7 = 1980 characters
    to.append("y" * (2000 - 1980 - 2 - 13) + "@customer.com")

    outcome = staging.apply(message(to=to), configure(settings, ["acme.com"], [QA]))

    value = outcome.email.extra_headers["X-Original-To"]
    assert value == ", ".join(to)
    assert len(value) == 2000


def test_existing_original_and_to_overrides_are_replaced(settings):
    headers = {"x-original-to": "forged", "To": "Ann", "X-A": "1"}
    email = message(to=["ann@customer.com"], headers=headers)

    outcome = staging.apply(email, configure(settings, ["acme.com"], [QA]))

    assert outcome.email.extra_headers == {"X-A": "1", "X-Original-To": "ann@customer.com"}
    assert outcome.email.message()["To"] == QA


def test_the_given_message_is_not_mutated(settings):
    email = message(to=["ann@customer.com"], cc=["bob@customer.com"], headers={"X-A": "1"})
    to, cc, headers = email.to, email.cc, email.extra_headers

    outcome = staging.apply(email, configure(settings, ["acme.com"], [QA]))

    assert outcome.email is not email
    assert email.to is to and to == ["ann@customer.com"]
    assert email.cc is cc and cc == ["bob@customer.com"]
    assert email.extra_headers is headers and headers == {"X-A": "1"}


def test_alternatives_and_attachments_are_preserved(settings):
    email = EmailMultiAlternatives("Hi", "Text", "no-reply@acme.com", ["ann@customer.com"])
    email.attach_alternative("<p>HTML</p>", "text/html")
    email.attach("report.csv", "a,b\n", "text/csv")

    sent = staging.apply(email, configure(settings, ["acme.com"], [QA])).email

    assert isinstance(sent, EmailMultiAlternatives)
    assert sent.alternatives == [("<p>HTML</p>", "text/html")]
    assert sent.attachments == [("report.csv", "a,b\n", "text/csv")]
    assert sent.message()["X-Original-To"] == "ann@customer.com"


def test_anymail_attributes_are_preserved(settings):
    email = AnymailMessage("Hi", "Text", "no-reply@acme.com", ["ann@customer.com"])
    email.tags = ["welcome"]
    email.metadata = {"user_id": 7}

    sent = staging.apply(email, configure(settings, ["acme.com"], [QA])).email

    assert isinstance(sent, AnymailMessage)
    assert (sent.tags, sent.metadata, sent.to) == (["welcome"], {"user_id": 7}, [QA])


# SYSTEM CHECK
# ------------------------------------------------------------------------------


def test_check_warns_while_staging_safety_is_on_without_debug(settings):
    settings.DEBUG = False
    configure(settings, ["acme.com"], [QA])

    [warning] = run()

    assert warning.id == "transactional.W010"
    assert warning.level == checks.WARNING
    assert warning.msg == (
        "Staging safety is on: mail outside acme.com is redirected to QA <qa@acme.com>."
    )
    assert "TRANSACTIONAL_ALLOWED_RECIPIENTS" in warning.hint
    assert "TRANSACTIONAL_REDIRECT_TO" in warning.hint
    assert run(deploy=False) == []


def test_check_warns_with_only_one_setting(settings):
    settings.DEBUG = False
    configure(settings, ["acme.com"])

    assert [m.msg for m in run()] == ["Staging safety is on: mail outside acme.com is blocked."]


def test_check_is_silent_with_debug_or_settings_unset(settings):
    settings.DEBUG = True
    configure(settings, ["acme.com"], [QA])
    assert run() == []

    settings.DEBUG = False
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = []
    settings.TRANSACTIONAL_REDIRECT_TO = []
    assert run() == []


@pytest.mark.parametrize("debug", [False, True])
def test_check_reports_invalid_settings_as_an_error(settings, debug):
    settings.DEBUG = debug
    settings.TRANSACTIONAL_ALLOWED_RECIPIENTS = ["acme.com", "foo bar"]

    [error] = run()

    assert error.id == "transactional.E010"
    assert error.level == checks.ERROR
    assert "TRANSACTIONAL_ALLOWED_RECIPIENTS" in error.msg
    assert "'foo bar'" in error.msg
