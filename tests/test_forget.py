"""`manage.py forget <address>`: erase a person's address, keep them unmailable by hash."""

import io

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.core.mail import EmailMessage, send_mail
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.factories import make_attempt, make_message
from transactional.erasure import placeholder_for
from transactional.models import Event, Message, Recipient, Suppression, address_hash
from transactional.serialization import serialize
from transactional.suppression import suppressed_among

pytestmark = pytest.mark.django_db

ANN = "ann@example.com"
GONE = placeholder_for(ANN)


def forget(*args: str) -> str:
    out = io.StringIO()
    call_command("forget", *args, stdout=out)
    return out.getvalue()


def payload(subject: str, body: str, to: str) -> dict:
    return serialize(EmailMessage(subject, body, "shop@acme.test", [to]))


def event(message: Message | None, address: str, **fields) -> Event:
    defaults = {
        "esp": "amazon_ses",
        "event_id": f"sns-{address}-{fields.get('event_type', 'delivered')}",
        "event_type": "delivered",
        "esp_message_id": "ses-1",
        "metadata": {"order": "1042"},
        "user_agent": "Mozilla/5.0",
        "click_url": "https://acme.test/?u=ann",
        "mta_response": f"250 ok <{address}>",
        "raw": {"mail": {"destination": [ANN, "bob@example.com"]}},
    }
    recipient = message.recipients.filter(address=address).first() if message else None
    return Event.objects.create(
        message=message, recipient=recipient, address=address, **(defaults | fields)
    )


@pytest.fixture
def mail_for_ann():
    """Ann's own receipt, a mail to Ann and Bob, an admin notice naming Ann, Joann's mail."""
    own = make_message(
        status="sent", to=[ANN], subject="Your receipt", last_error="550 <Ann@Example.com> full"
    )
    shared = make_message(status="sent", to=[ANN, "bob@example.com"], subject="Team update")
    notice = make_message(
        status="sent",
        to=["admin@acme.test"],
        subject="New signup",
        payload=payload("New signup", f"{ANN} signed up", "admin@acme.test"),
    )
    joann = make_message(
        status="sent",
        to=["joann@example.com"],
        subject="Joann's receipt",
        payload=payload("Joann's receipt", "Hi joann@example.com", "joann@example.com"),
        last_error="550 <joann@example.com> full",
    )
    Recipient.objects.filter(message__in=[own, shared]).update(esp_message_id="ses-1")
    make_attempt(own, error="SMTPRecipientsRefused: {'ann@example.com': (550, b'full')}")
    return own, shared, notice, joann


def test_forget_erases_the_address_everywhere(mail_for_ann):
    own, shared, notice, joann = mail_for_ann
    ann_event = event(own, ANN)
    bob_event = event(shared, "bob@example.com")

    out = forget("Ann@Example.com")

    for message in (own, shared, notice):
        message.refresh_from_db()
        assert message.payload is None and message.purged_at is not None
    assert (own.subject, shared.subject, notice.subject) == ("", "Team update", "New signup")
    assert own.last_error == f"550 <{GONE}> full"
    assert own.attempt_log.get().error == f"SMTPRecipientsRefused: {{'{GONE}': (550, b'full')}}"
    assert not Recipient.objects.filter(address=ANN).exists()
    assert Recipient.objects.filter(address=GONE).count() == 2
    ann_event.refresh_from_db()
    assert (ann_event.address, ann_event.raw, ann_event.metadata) == (GONE, None, {})
    assert (ann_event.user_agent, ann_event.click_url, ann_event.mta_response) == ("", "", "")
    assert ann_event.event_type == "delivered" and ann_event.message == own
    bob_event.refresh_from_db()
    assert bob_event.raw is None and bob_event.address == "bob@example.com"
    assert "3 message body(ies) emptied" in out and "2 recipient row(s) replaced" in out


def test_a_longer_address_containing_it_is_left_alone(mail_for_ann):
    *_, joann = mail_for_ann

    forget(ANN)

    joann.refresh_from_db()
    assert joann.payload is not None and joann.subject == "Joann's receipt"
    assert joann.last_error == "550 <joann@example.com> full"
    assert Recipient.objects.filter(address="joann@example.com").exists()


def test_a_message_ann_sent_gets_the_placeholder_as_sender():
    message = make_message(to=["support@acme.test"], from_email=f"Ann <{ANN}>", subject="Help")

    forget(ANN)

    message.refresh_from_db()
    assert message.from_email == GONE and message.payload is None


def test_the_address_stays_suppressed_by_its_hash(outbox):
    forget(ANN)

    row = Suppression.objects.get()
    assert (row.address, row.address_hash, row.source) == (GONE, address_hash(ANN), "forget")
    assert suppressed_among(["ANN@example.com", "bob@example.com"]) == {ANN}
    send_mail("Welcome back", "Hello", "shop@acme.test", [ANN])
    assert Message.objects.get().status == Message.Status.SUPPRESSED


def test_an_existing_suppression_keeps_its_reason_under_the_placeholder():
    Suppression.objects.create(
        address=ANN, reason="bounced", source="mailgun", note=f"bounced: {ANN}"
    )

    out = forget(ANN)

    row = Suppression.objects.get()
    assert (row.address, row.reason, row.source, row.note) == (
        GONE,
        "bounced",
        "mailgun",
        f"bounced: {GONE}",
    )
    assert row.address_hash == address_hash(ANN)
    assert "its entry now holds the placeholder" in out


def test_a_dry_run_reports_and_changes_nothing(mail_for_ann):
    own, *_ = mail_for_ann
    event(own, ANN)

    out = forget(ANN, "--dry-run")

    assert "Would replace the address with" in out and "3 message body(ies) emptied" in out
    assert "Dry run: nothing was changed." in out
    assert Recipient.objects.filter(address=ANN).count() == 2
    assert Event.objects.get().address == ANN
    assert not Suppression.objects.exists()
    own.refresh_from_db()
    assert own.payload is not None


def test_forgetting_twice_changes_nothing_more(mail_for_ann):
    forget(ANN)

    out = forget(ANN)

    assert "  0 message body(ies) emptied" in out and "  0 recipient row(s) replaced" in out
    assert "already holds only the placeholder" in out
    assert Suppression.objects.count() == 1


def test_an_invalid_address_is_refused():
    with pytest.raises(CommandError, match="expected an email address"):
        forget("not an address")


# Internationalized domains: stored in Unicode, escaped in the payload's JSON,
# spelled in punycode by SES and by older rows.
# ------------------------------------------------------------------------------

ANN_IDN = "ann@bücher.example"
ANN_PUNYCODE = "ann@xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("named_in_body", "forgotten"),
    [
        (ANN_IDN, ANN_IDN),
        ("Ann@BÜCHER.example", ANN_IDN),
        (ANN_IDN, ANN_PUNYCODE),
        (ANN_PUNYCODE, ANN_IDN),
    ],
)
def test_an_internationalized_address_in_a_body_is_found_in_either_spelling(
    outbox, named_in_body, forgotten
):
    send_mail("New signup", f"User {named_in_body} signed up", None, ["admin@acme.test"])

    out = forget(forgotten)

    notice = Message.objects.get()
    assert notice.payload is None and notice.subject == "New signup"
    assert "1 message body(ies) emptied" in out
    assert placeholder_for(forgotten) == placeholder_for(ANN_IDN)


def test_an_address_on_a_new_line_of_the_body_is_found(outbox):
    send_mail("New signup", f"New user:\n{ANN}", None, ["admin@acme.test"])

    forget(ANN)

    assert Message.objects.get().payload is None


def test_rows_stored_in_punycode_get_the_placeholder():
    message = make_message(to=[ANN_PUNYCODE], last_error=f"550 <{ANN_PUNYCODE}> no such user")
    punycode_event = event(message, ANN_PUNYCODE)
    # bulk_create skips save(), which now normalizes: rows as stored before.
    Suppression.objects.bulk_create([Suppression(address=ANN_PUNYCODE, reason="bounced")])

    forget(ANN_IDN)

    placeholder = placeholder_for(ANN_IDN)
    assert message.recipients.get().address == placeholder
    message.refresh_from_db()
    assert message.payload is None and message.last_error == f"550 <{placeholder}> no such user"
    punycode_event.refresh_from_db()
    assert (punycode_event.address, punycode_event.raw) == (placeholder, None)
    row = Suppression.objects.get()
    assert (row.address, row.address_hash, row.reason) == (
        placeholder,
        address_hash(ANN_IDN),
        "bounced",
    )


def test_an_address_suppressed_in_both_spellings_keeps_one_entry_under_the_placeholder():
    # One listed before addresses were normalized (bulk_create skips save()), one after.
    Suppression.objects.bulk_create(
        [Suppression(address=ANN_PUNYCODE, reason="bounced"), Suppression(address=ANN_IDN)]
    )

    forget(ANN_IDN)

    assert list(Suppression.objects.values_list("address", "address_hash")) == [
        (placeholder_for(ANN_IDN), address_hash(ANN_IDN))
    ]


# Idempotency keys and the admin's history
# ------------------------------------------------------------------------------


def idempotent_mail(key: str, to: str) -> None:
    email = EmailMessage("Your receipt", "Thank you.", "shop@acme.test", [to])
    email.idempotency_key = key
    email.send()


def test_idempotency_keys_naming_the_address_are_cleared(outbox):
    idempotent_mail("receipt:dana@example.com:42", "dana@example.com")
    idempotent_mail("receipt:Dana@Example.com:43", "dana@example.com")
    idempotent_mail("signup-notice:dana@example.com", "admin@acme.test")
    idempotent_mail("receipt:jordana@example.com:44", "jordana@example.com")

    out = forget("dana@example.com")

    keys = Message.objects.order_by("pk").values_list("idempotency_key", flat=True)
    assert list(keys) == [None, None, None, "receipt:jordana@example.com:44"]
    assert "3 idempotency key(s) cleared" in out


def test_a_suppression_added_in_the_admin_leaves_no_trace_in_its_history(admin_client, admin_user):
    add = reverse("admin:transactional_suppression_add")
    admin_client.post(add, {"address": ANN_IDN, "reason": "manual", "note": ""})
    # A change message of an inline, as the admin writes it: JSON, non-ASCII escaped.
    message = make_message(to=["bob@example.com"])
    inline = [{"added": {"name": "recipient", "object": f"to: {ANN_IDN}"}}]
    LogEntry.objects.log_actions(admin_user.pk, [message], CHANGE, inline, single_object=True)
    assert "\\u00fc" in LogEntry.objects.get(action_flag=CHANGE).change_message

    out = forget(ANN_PUNYCODE)

    added = LogEntry.objects.get(action_flag=ADDITION)
    assert added.object_repr == placeholder_for(ANN_IDN)
    changed = LogEntry.objects.get(action_flag=CHANGE)
    assert changed.get_change_message() == f"Added recipient “to: {placeholder_for(ANN_IDN)}”."
    assert "2 admin history entry(ies) scrubbed" in out


def test_a_sync_position_naming_the_address_starts_over():
    from transactional.models import SyncCursor

    naming = SyncCursor.objects.create(
        provider="mailgun", list_name="bounces",
        position="https://api.mailgun.net/v3/mg.acme.test/bounces?page=next&address=ann%40example.com",
    )
    other = SyncCursor.objects.create(provider="mailgun", list_name="complaints", position="page-token-42")

    forget("ann@example.com")

    naming.refresh_from_db()
    other.refresh_from_db()
    assert naming.position == "" and other.position == "page-token-42"
