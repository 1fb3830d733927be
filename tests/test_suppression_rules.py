"""Which ESP events suppress their address: the ESP's own fields decide hard vs soft."""

import pytest

from transactional.esps import attributable, suppression_reason
from transactional.models import normalize_address


@pytest.mark.parametrize(
    ("event_type", "raw", "expected"),
    [
        ("bounced", {"event": "failed", "severity": "permanent", "reason": "bounce"}, "bounced"),
        (
            "bounced",
            {"event": "failed", "severity": "permanent", "reason": "suppress-bounce"},
            "bounced",
        ),
        (
            "bounced",
            {"event": "failed", "severity": "permanent", "reason": "suppress-complaint"},
            "complained",
        ),
        (
            "bounced",
            {"event": "failed", "severity": "permanent", "reason": "suppress-unsubscribe"},
            "unsubscribed",
        ),
        # gave up retrying, or blocked by the receiving ESP: about the mail, not the address
        ("bounced", {"event": "failed", "severity": "permanent", "reason": "old"}, None),
        ("bounced", {"event": "failed", "severity": "permanent", "reason": "esp-block"}, None),
        ("bounced", {"event": "failed", "severity": "permanent", "reason": "generic"}, None),
        ("deferred", {"event": "failed", "severity": "temporary", "reason": "bounce"}, None),
        ("rejected", {"event": "rejected", "reason": "suppress-bounce"}, "bounced"),
        (
            "rejected",
            {
                "event": "rejected",
                "reject": {"reason": "Sandbox subdomains are for test purposes only"},
            },
            None,
        ),
        ("bounced", {"event": "bounced", "code": "550"}, "bounced"),  # legacy webhook
        ("complained", {"event": "complained"}, "complained"),
        ("unsubscribed", {"event": "unsubscribed"}, "unsubscribed"),
        ("delivered", {"event": "delivered"}, None),
    ],
)
def test_mailgun(event_type, raw, expected):
    assert suppression_reason("mailgun", event_type, raw) == expected


@pytest.mark.parametrize(
    ("event_type", "raw", "expected"),
    [
        (
            "bounced",
            {"event": "bounce", "type": "bounce", "bounce_classification": "Invalid Address"},
            "bounced",
        ),
        (
            "bounced",
            {"event": "bounce", "type": "bounce", "bounce_classification": "Reputation"},
            None,
        ),
        (
            "bounced",
            {"event": "bounce", "type": "bounce", "bounce_classification": "Content"},
            None,
        ),
        (
            "bounced",
            {"event": "bounce", "type": "bounce", "bounce_classification": "Technical"},
            None,
        ),
        (
            "bounced",
            {
                "event": "bounce",
                "type": "bounce",
                "bounce_classification": "Frequency or Volume Limits",
            },
            None,
        ),
        (
            "bounced",
            {"event": "bounce", "type": "bounce", "bounce_classification": "Mailbox Unavailable"},
            None,
        ),
        # unclassified or no classification: SendGrid's type decides
        (
            "bounced",
            {"event": "bounce", "type": "bounce", "bounce_classification": "Unclassified"},
            "bounced",
        ),
        (
            "bounced",
            {"event": "bounce", "type": "blocked", "bounce_classification": "Unclassified"},
            None,
        ),
        ("bounced", {"event": "bounce", "type": "bounce"}, "bounced"),
        ("bounced", {"event": "bounce", "type": "blocked"}, None),
        ("bounced", {"event": "bounce"}, "bounced"),
        ("rejected", {"event": "dropped", "reason": "Bounced Address"}, "bounced"),
        ("rejected", {"event": "dropped", "reason": "Invalid"}, "rejected"),
        ("rejected", {"event": "dropped", "reason": "Unsubscribed Address"}, "unsubscribed"),
        ("rejected", {"event": "dropped", "reason": "Spam Reporting Address"}, "complained"),
        ("rejected", {"event": "dropped", "reason": "Invalid SMTPAPI header"}, None),
        ("rejected", {"event": "dropped", "reason": "Recipient List over Package Quota"}, None),
        ("complained", {"event": "spamreport"}, "complained"),
        ("unsubscribed", {"event": "group_unsubscribe"}, "unsubscribed"),
        ("deferred", {"event": "deferred"}, None),
        ("subscribed", {"event": "group_resubscribe"}, None),
    ],
)
def test_sendgrid(event_type, raw, expected):
    assert suppression_reason("sendgrid", event_type, raw) == expected


@pytest.mark.parametrize(
    ("event_type", "raw", "expected"),
    [
        (
            "bounced",
            {
                "eventType": "Bounce",
                "bounce": {"bounceType": "Permanent", "bounceSubType": "General"},
            },
            "bounced",
        ),
        (
            "bounced",
            {
                "notificationType": "Bounce",
                "bounce": {"bounceType": "Permanent", "bounceSubType": "OnAccountSuppressionList"},
            },
            "bounced",
        ),
        (
            "bounced",
            {
                "eventType": "Bounce",
                "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull"},
            },
            None,
        ),
        ("bounced", {"eventType": "Bounce", "bounce": {"bounceType": "Undetermined"}}, None),
        (
            "complained",
            {"eventType": "Complaint", "complaint": {"complaintFeedbackType": "abuse"}},
            "complained",
        ),
        ("complained", {"eventType": "Complaint", "complaint": {}}, "complained"),
        (
            "complained",
            {"eventType": "Complaint", "complaint": {"complaintFeedbackType": "not-spam"}},
            None,
        ),
        # SES rejects a message for a virus: nothing wrong with the address
        ("rejected", {"eventType": "Reject", "reject": {"reason": "Bad content"}}, None),
        ("delivered", {"eventType": "Delivery"}, None),
    ],
)
def test_amazon_ses(event_type, raw, expected):
    assert suppression_reason("amazon_ses", event_type, raw) == expected


def test_a_payload_that_is_not_a_mapping_suppresses_only_by_event_type():
    assert suppression_reason("sendgrid", "bounced", None) is None
    assert suppression_reason("mailgun", "complained", ["odd"]) == "complained"


@pytest.mark.parametrize(
    ("esp", "event_type", "raw", "expected"),
    [
        ("amazon_ses", "opened", {"mail": {"destination": ["ann@example.com"]}}, True),
        (
            "amazon_ses",
            "clicked",
            {"mail": {"destination": ["ann@example.com", "bob@example.com"]}},
            False,
        ),
        ("amazon_ses", "opened", {}, False),
        ("amazon_ses", "delivered", {"mail": {"destination": ["a@x.test", "b@x.test"]}}, True),
        ("sendgrid", "opened", {}, True),
        ("mailgun", "clicked", {}, True),
    ],
)
def test_attribution(esp, event_type, raw, expected):
    assert attributable(esp, event_type, raw) is expected


@pytest.mark.parametrize(
    ("address", "normalized"),
    [
        ("  Ann@Example.COM ", "ann@example.com"),
        ("ann@XN--BCHER-KVA.example", "ann@bücher.example"),  # how SES reports an IDN
        ("ann@bücher.example", "ann@bücher.example"),
        ("ann@mail.xn--strae-oqa.de", "ann@mail.straße.de"),
        ("ann@xn--zz.example", "ann@xn--zz.example"),  # not punycode: left as it is
        ("ann@xn--" + "a" * 40 + ".example", "ann@xn--" + "a" * 40 + ".example"),
        ("not an address", "not an address"),
    ],
)
def test_addresses_are_compared_trimmed_lower_case_with_unicode_domains(address, normalized):
    assert normalize_address(address) == normalized
