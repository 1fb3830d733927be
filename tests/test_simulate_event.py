"""`manage.py simulate_event`: a fake ESP event through anymail's signal and our receiver."""

import io

import pytest
from django.core.management import CommandError, call_command

from tests.factories import make_message
from transactional.models import Event, Message, Recipient, Suppression

pytestmark = pytest.mark.django_db

ANN, BOB = "ann@example.com", "bob@example.com"


@pytest.fixture(autouse=True)
def debug(settings):
    settings.DEBUG = True


def sent(provider: str, *addresses: str, esp_message_id: str = "<1.abc@acme.test>") -> Message:
    message = make_message(
        status="sent", to=addresses or (ANN,), recipient_status="sent", provider=provider
    )
    message.recipients.update(esp_message_id=esp_message_id)
    return message


def simulate(*args: str) -> str:
    out = io.StringIO()
    call_command("simulate_event", *args, stdout=out)
    return out.getvalue()


def test_refuses_without_debug(settings):
    settings.DEBUG = False
    message = sent("mailgun")

    with pytest.raises(CommandError, match="only with DEBUG on, or with --force"):
        simulate(str(message.pk), "delivered")

    assert not Event.objects.exists()


def test_force_runs_without_debug(settings):
    settings.DEBUG = False
    message = sent("mailgun")

    simulate(str(message.pk), "delivered", "--force")

    assert Event.objects.get().message == message


def test_a_file_backend_message_gets_a_mailgun_delivery(settings):
    message = sent("file")

    out = simulate(str(message.pk), "delivered")

    event = Event.objects.get()
    assert (event.esp, event.event_type, event.address) == ("mailgun", "delivered", ANN)
    assert event.esp_message_id == "<1.abc@acme.test>"
    assert event.recipient == message.recipients.get()
    assert "Sent 1 mailgun tracking event(s)" in out and f"Recipient {ANN}: delivered" in out


@pytest.mark.parametrize(
    ("provider", "esp"), [("mailgun", "mailgun"), ("sendgrid", "sendgrid"), ("ses", "amazon_ses")]
)
def test_a_hard_bounce_suppresses_and_a_soft_one_does_not(provider, esp):
    message = sent(provider, ANN, BOB)

    simulate(str(message.pk), "soft_bounced", "--address", BOB)
    simulate(str(message.pk), "bounced")

    assert list(Suppression.objects.values_list("address", "reason", "source")) == [
        (ANN, "bounced", esp)
    ]
    statuses = dict(message.recipients.values_list("address", "status"))
    assert statuses[ANN] == Recipient.Status.BOUNCED
    # Mailgun reports a temporary failure as deferred; SendGrid and SES as a bounce.
    assert statuses[BOB] == ("deferred" if provider == "mailgun" else "bounced")


@pytest.mark.parametrize("kind", ["complained", "unsubscribed", "opened", "clicked"])
def test_every_kind_reaches_the_recipient(kind):
    message = sent("sendgrid")

    simulate(str(message.pk), kind)

    assert message.recipients.get().status == kind


def test_an_ses_open_of_a_mail_to_two_is_recorded_for_both_and_opens_neither():
    message = sent("ses", ANN, BOB)

    simulate(str(message.pk), "opened")

    assert sorted(Event.objects.values_list("address", "event_type")) == [
        (ANN, "opened"),
        (BOB, "opened"),
    ]
    assert set(message.recipients.values_list("status", flat=True)) == {"sent"}


def test_simulating_twice_records_two_events():
    message = sent("mailgun")

    simulate(str(message.pk), "opened")
    simulate(str(message.pk), "opened")

    assert Event.objects.count() == 2


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["999", "delivered"], "There is no message 999"),
        (["0", "delivered"], "expected a message id"),
        (["{pk}", "exploded"], "invalid choice: 'exploded'"),
        (
            ["{pk}", "delivered", "--address", "carol@example.com"],
            "was not sent to carol@example.com",
        ),
    ],
)
def test_bad_arguments_are_refused(args, error):
    message = sent("mailgun")

    with pytest.raises(CommandError, match=error):
        simulate(*(arg.format(pk=message.pk) for arg in args))


def test_an_unsent_message_is_refused():
    message = make_message(status="queued")

    with pytest.raises(
        CommandError,
        match=f"Message {message.pk} has no sent recipient .status queued.; deliver it first",
    ):
        simulate(str(message.pk), "delivered")


def test_ses_has_no_unsubscribe_to_simulate():
    message = sent("ses")

    with pytest.raises(CommandError, match="Amazon SES has no 'unsubscribed' event"):
        simulate(str(message.pk), "unsubscribed")
