"""Streams: every message has one; an unsubscribe stops only its stream; one-click headers."""

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from transactional import unsubscribe
from transactional.conf import streams
from transactional.erasure import forget
from transactional.models import Message, Recipient, Suppression
from transactional.suppression import suppress, suppressed_among, unsuppress
from transactional.templated import send_templated

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def configured(settings):
    settings.TRANSACTIONAL_STREAMS = ["notifications", "newsletter"]


@pytest.fixture
def deliver(outbox, deliver):
    """conftest's deliver, through the outbox."""
    return deliver


def on(stream: str | None, to: str = "ann@example.org", subject: str = "Hello") -> EmailMessage:
    message = EmailMessage(subject, "Body", "news@acme.test", [to])
    if stream is not None:
        message.stream = stream
    return message


def test_streams_are_transactional_and_the_configured_ones(settings):
    assert streams() == ("transactional", "notifications", "newsletter")


@pytest.mark.parametrize("bad", ["News Letter", "", "x" * 65, "Newsletter!", "9lives"])
def test_a_bad_stream_name_in_settings_is_refused(settings, bad):
    settings.TRANSACTIONAL_STREAMS = [bad]
    with pytest.raises(ImproperlyConfigured, match="TRANSACTIONAL_STREAMS"):
        streams()


def test_a_message_is_on_the_transactional_stream_unless_it_says_otherwise(outbox):
    on(None).send()
    on("Newsletter", to="bob@example.org").send()

    assert list(Message.objects.order_by("pk").values_list("stream", flat=True)) == ["transactional", "newsletter"]


@pytest.mark.parametrize("bad", ["marketing", 3, ["newsletter"]])
def test_an_unknown_stream_is_refused_at_send_and_nothing_is_stored(outbox, bad):
    with pytest.raises(ValueError, match="stream=.*use one of 'transactional', 'notifications', 'newsletter'"):
        on(bad).send()
    assert not Message.objects.exists()


def test_a_stream_message_goes_to_one_address(outbox):
    message = EmailMessage("News", "Body", "news@acme.test", ["ann@example.org", "bob@example.org"])
    message.stream = "newsletter"

    with pytest.raises(ValueError, match="goes to one address"):
        message.send()
    assert not Message.objects.exists()


def test_send_templated_takes_a_stream(outbox):
    send_templated(
        "birthday/beatles_alert", to=["admin@acme.test"], stream="notifications",
        context={"first_name": "John", "last_name": "Lennon", "full_name": "John Lennon"},
    )

    assert Message.objects.get().stream == "notifications"


# -- Suppression scope --------------------------------------------------------


def test_an_unsubscribe_from_the_newsletter_still_lets_password_resets_through(outbox, deliver):
    suppress("ann@example.org", reason="unsubscribed", stream="newsletter")

    assert on("newsletter").send() == 0
    assert on(None, subject="Reset your password").send() == 1
    assert on("notifications", subject="New login").send() == 1
    deliver()

    assert sorted(m.subject for m in mail.outbox) == ["New login", "Reset your password"]
    newsletter = Message.objects.get(stream="newsletter")
    assert newsletter.status == Message.Status.SUPPRESSED


def test_a_hard_bounce_stops_every_stream(outbox):
    suppress("ann@example.org", reason="bounced")

    assert [on(stream).send() for stream in (None, "notifications", "newsletter")] == [0, 0, 0]


def test_suppressed_among_reads_the_stream_and_every_stream_rows():
    suppress("ann@example.org", reason="unsubscribed", stream="newsletter")
    suppress("bob@example.org", reason="complained")
    both = ["ann@example.org", "bob@example.org"]

    assert suppressed_among(both, stream="newsletter") == set(both)
    assert suppressed_among(both, stream="transactional") == {"bob@example.org"}


def test_a_stream_row_is_not_added_under_an_every_stream_row():
    suppress("ann@example.org", reason="bounced")

    row, created = suppress("ann@example.org", reason="unsubscribed", stream="newsletter")

    assert not created and row.stream == ""
    assert Suppression.objects.count() == 1


def test_a_stream_suppressed_on_delivery_is_skipped_there_only(outbox, deliver):
    on("newsletter").send()
    on(None, subject="Receipt").send()
    suppress("ann@example.org", reason="unsubscribed", stream="newsletter")  # after enqueue

    deliver()

    assert [m.subject for m in mail.outbox] == ["Receipt"]
    assert Recipient.objects.get(message__stream="newsletter").status == Recipient.Status.SUPPRESSED


def test_lifting_one_streams_suppression_keeps_the_others():
    suppress("ann@example.org", reason="unsubscribed", stream="newsletter")
    suppress("ann@example.org", reason="unsubscribed", stream="notifications")

    assert unsuppress("ann@example.org", by="test", stream="newsletter")
    assert list(Suppression.objects.values_list("stream", flat=True)) == ["notifications"]


def test_forget_leaves_one_suppression_for_every_stream():
    suppress("ann@example.org", reason="unsubscribed", stream="newsletter")
    suppress("ann@example.org", reason="unsubscribed", stream="notifications")

    forget("ann@example.org")

    [row] = Suppression.objects.all()
    assert row.stream == "" and "ann@example.org" not in row.address
    assert suppressed_among(["ann@example.org"], stream="transactional") == {"ann@example.org"}


@pytest.fixture
def mailgun_event_for_a_newsletter(outbox, deliver, webhooks, client):
    """Deliver a newsletter to ann@, then post a Mailgun event of ``kind`` about it."""
    from transactional.testing.webhooks import mailgun_event

    on("newsletter").send()
    deliver()
    Recipient.objects.update(esp_message_id="<news-1@acme.test>")

    def post(kind: str) -> None:
        event = mailgun_event(kind, recipient="ann@example.org", message_id="<news-1@acme.test>")
        assert webhooks.post(client, "mailgun", event).status_code == 200

    return post


def test_an_esp_unsubscribe_stops_the_stream_of_the_message_it_came_from(mailgun_event_for_a_newsletter):
    mailgun_event_for_a_newsletter("unsubscribe")

    assert list(Suppression.objects.values_list("address", "stream", "reason")) == [
        ("ann@example.org", "newsletter", "unsubscribed")
    ]


def test_an_esp_hard_bounce_stops_every_stream(mailgun_event_for_a_newsletter):
    mailgun_event_for_a_newsletter("hard_bounce")

    assert list(Suppression.objects.values_list("stream", "reason")) == [("", "bounced")]


# -- One-click unsubscribe headers --------------------------------------------


def test_stream_mail_carries_one_click_unsubscribe_headers(outbox, deliver, settings):
    settings.TRANSACTIONAL_UNSUBSCRIBE_MAILTO = "unsubscribe@acme.test"
    on("newsletter").send()
    deliver()

    [sent] = mail.outbox
    headers = sent.message()
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = [part.strip(" <>") for part in headers["List-Unsubscribe"].split(",")]
    assert https.startswith("https://mail.acme.test/unsubscribe/")
    token = https.rsplit("/", 2)[-2]
    assert unsubscribe.read_token(token) == ("ann@example.org", "newsletter")
    assert mailto.startswith("mailto:unsubscribe@acme.test?subject=unsubscribe%20")


def test_transactional_mail_has_no_unsubscribe_headers(outbox, deliver):
    on(None).send()
    deliver()

    assert "List-Unsubscribe" not in mail.outbox[0].message()


def test_the_callers_own_list_unsubscribe_header_wins(outbox, deliver):
    message = on("newsletter")
    message.extra_headers["list-unsubscribe"] = "<https://lists.acme.test/u/42>"
    message.send()
    deliver()

    headers = mail.outbox[0].message()
    assert headers.get_all("List-Unsubscribe") == ["<https://lists.acme.test/u/42>"]
    assert "List-Unsubscribe-Post" not in headers  # one-click is a promise about our link only


def test_a_stream_message_without_a_site_url_is_refused(outbox, settings):
    settings.TRANSACTIONAL_SITE_URL = ""

    with pytest.raises(ImproperlyConfigured, match="TRANSACTIONAL_SITE_URL"):
        on("newsletter").send()


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature
    lambda t: t[:10] + ("x" if t[10] != "x" else "y") + t[11:],  # the payload
    lambda t: t[: len(t) // 2],  # cut short
    lambda t: "",
    lambda t: "not-a-token",
])
def test_an_altered_token_is_refused(tamper):
    token = unsubscribe.make_token("ann@example.org", "newsletter")

    with pytest.raises(unsubscribe.BadToken):
        unsubscribe.read_token(tamper(token))


def test_a_token_for_another_secret_key_is_refused(settings):
    token = unsubscribe.make_token("ann@example.org", "newsletter")
    settings.SECRET_KEY = "another-secret-key-entirely-0123456789"

    with pytest.raises(unsubscribe.BadToken):
        unsubscribe.read_token(token)


def test_a_token_made_before_a_key_rotation_still_works(settings):
    old = settings.SECRET_KEY
    token = unsubscribe.make_token("ann@example.org", "newsletter")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-new-secret-key-0123456789abcdef", [old]

    assert unsubscribe.read_token(token) == ("ann@example.org", "newsletter")


def test_the_token_does_not_show_the_address():
    import base64

    token = unsubscribe.make_token("ann@example.org", "newsletter")
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))

    assert b"ann" not in decoded and "ann" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_token_for_the_transactional_stream_or_a_dropped_stream_is_refused(settings):
    transactional = unsubscribe.make_token("ann@example.org", "transactional")
    dropped = unsubscribe.make_token("ann@example.org", "newsletter")
    settings.TRANSACTIONAL_STREAMS = ["notifications"]

    for token in (transactional, dropped):
        with pytest.raises(unsubscribe.BadToken):
            unsubscribe.read_token(token)


# -- Settings and checks ------------------------------------------------------


def test_streams_without_a_site_url_are_a_check_error(settings):
    from django.core.checks import run_checks

    settings.TRANSACTIONAL_SITE_URL = ""

    assert "transactional.E013" in [m.id for m in run_checks()]


def test_a_site_url_whose_host_is_not_allowed_is_a_check_error(settings):
    from django.core.checks import run_checks

    settings.TRANSACTIONAL_SITE_URL = "https://elsewhere.example"

    assert "transactional.E013" in [m.id for m in run_checks()]


def test_a_plain_http_site_url_is_a_check_error_without_debug(settings):
    from django.core.checks import run_checks

    settings.TRANSACTIONAL_SITE_URL = "http://mail.acme.test"
    assert "transactional.E013" in [m.id for m in run_checks()]
    settings.DEBUG = True
    assert "transactional.E013" not in [m.id for m in run_checks()]


def test_a_bad_stream_name_is_a_check_error(settings):
    from django.core.checks import run_checks

    settings.TRANSACTIONAL_STREAMS = ["Bad Name"]

    assert "transactional.E012" in [m.id for m in run_checks()]
