"""The admin: messages read-only with retry/cancel actions, and the suppression list."""

import logging
from datetime import UTC, datetime

import pytest
from django.core.mail import EmailMultiAlternatives
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from tests.factories import make_attempt, make_message
from transactional.models import Attempt, Event, Message, Recipient, Suppression, address_hash

pytestmark = pytest.mark.django_db

S = Message.Status
MESSAGES = reverse("admin:transactional_message_changelist")
SUPPRESSIONS = reverse("admin:transactional_suppression_changelist")


def change_url(message: Message) -> str:
    return reverse("admin:transactional_message_change", args=[message.pk])


@pytest.fixture
def sent_message(outbox, mailoutbox, django_capture_on_commit_callbacks) -> Message:
    """Send a receipt with an HTML part and a PDF through the outbox; return its row."""
    email = EmailMultiAlternatives(
        "Your receipt",
        "Total: 12 EUR",
        "billing@acme.test",
        ["ann@example.com"],
        cc=["bob@example.com"],
        headers={"X-Order": "1234"},
    )
    email.attach_alternative("<p>Total: <b>12 EUR</b></p><script>alert(1)</script>", "text/html")
    email.attach("receipt.pdf", b"%PDF-1.4" + b"0" * 2040, "application/pdf")
    with django_capture_on_commit_callbacks(execute=True):
        email.send()
    return Message.objects.get()


# Message list
# ------------------------------------------------------------------------------


def test_list_shows_messages_with_their_recipients(admin_client):
    make_message(
        subject="Password reset",
        to=["ann@example.com", "bob@example.com", "cy@example.com"],
        status=S.FAILED,
        last_error="SMTPDataError: (554, b'Message rejected')",
    )

    page = admin_client.get(MESSAGES).content.decode()

    assert "Password reset" in page
    assert "ann@example.com, bob@example.com (+1)" in page
    assert "SMTPDataError: (554, b&#x27;Message rejected&#x27;)" in page


def test_list_costs_the_same_queries_for_many_messages(admin_client, django_assert_max_num_queries):
    make_message(to=["ann@example.com", "bob@example.com"])
    with django_assert_max_num_queries(100) as one:
        admin_client.get(MESSAGES)
    for _ in range(30):
        make_message(to=["ann@example.com", "bob@example.com"])

    with django_assert_max_num_queries(len(one.captured_queries)) as many:
        admin_client.get(MESSAGES)

    message_selects = [
        q["sql"] for q in many.captured_queries if 'FROM "transactional_message"' in q["sql"]
    ]
    assert message_selects and not any('"payload"' in sql for sql in message_selects)


@pytest.mark.parametrize(
    "term", ["bob@example", "0102018e-ses-id", "Password reset", "<reset-1@acme.test>"]
)
def test_search(admin_client, term):
    wanted = make_message(
        subject="Password reset", to=["bob@example.com"], message_id="<reset-1@acme.test>"
    )
    Recipient.objects.filter(message=wanted).update(esp_message_id="0102018e-ses-id")
    make_message(subject="Receipt", to=["ann@example.com"])

    response = admin_client.get(MESSAGES, {"q": term})

    assert [m.pk for m in response.context["cl"].result_list] == [wanted.pk]


def test_filter_by_status(admin_client):
    failed = make_message(status=S.FAILED)
    make_message(status=S.SENT)

    response = admin_client.get(MESSAGES, {"status__exact": "failed"})

    assert [m.pk for m in response.context["cl"].result_list] == [failed.pk]


# Message detail
# ------------------------------------------------------------------------------


def test_detail_shows_recipients_attempts_and_the_stored_message(admin_client, sent_message):
    response = admin_client.get(change_url(sent_message))

    inlines = {formset.opts.model: formset for formset in response.context["inline_admin_formsets"]}
    recipients = [form.original for form in inlines[Recipient]]
    attempts = [form.original for form in inlines[Attempt]]
    assert [(r.address, r.kind, r.status) for r in recipients] == [
        ("ann@example.com", "to", "sent"),
        ("bob@example.com", "cc", "sent"),
    ]
    assert [(a.number, a.outcome) for a in attempts] == [(1, Attempt.Outcome.SENT)]
    page = response.content.decode()
    assert escape(recipients[0].esp_message_id) in page
    assert "<pre>Total: 12 EUR</pre>" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert "X-Order: 1234" in page
    assert "receipt.pdf (2.0\xa0KB)" in page


def test_detail_shows_attempt_errors_escaped(admin_client):
    message = make_message(status=S.RETRYING)
    make_attempt(
        message,
        outcome=Attempt.Outcome.RETRY,
        error_type="SMTPDataError",
        error="451 <greylisted>\ntry later",
        status_code=451,
    )

    page = admin_client.get(change_url(message)).content.decode()

    assert "<pre>451 &lt;greylisted&gt;\ntry later</pre>" in page


def test_detail_of_a_purged_message_says_when(admin_client):
    purged_at = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    message = make_message(status=S.SENT, payload=None, purged_at=purged_at)

    page = admin_client.get(change_url(message)).content.decode()

    assert "purged on March 14, 2026, 9:30 a.m." in page


def test_messages_cannot_be_added_edited_or_deleted(admin_client):
    message = make_message(status=S.QUEUED)

    assert admin_client.get(reverse("admin:transactional_message_add")).status_code == 403
    assert admin_client.post(change_url(message), {"status": "sent"}).status_code == 403
    delete = reverse("admin:transactional_message_delete", args=[message.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Message.objects.get(pk=message.pk).status == S.QUEUED


# Message actions
# ------------------------------------------------------------------------------


def run_action(client, action: str, *messages: Message):
    data = {"action": action, "_selected_action": [m.pk for m in messages]}
    return client.post(MESSAGES, data, follow=True)


def test_retry_now(admin_client):
    failed, sent = make_message(status=S.FAILED), make_message(status=S.SENT)

    response = run_action(admin_client, "retry_now", failed, sent)

    assert Message.objects.get(pk=failed.pk).status == S.QUEUED
    assert Message.objects.get(pk=sent.pk).status == S.SENT
    assert "Re-queued 1 of 2 selected message(s)" in response.content.decode()


def test_retry_now_says_which_bodies_are_gone(admin_client):
    purged = make_message(status=S.FAILED, payload=None, purged_at=timezone.now())

    response = run_action(admin_client, "retry_now", purged)

    assert "Skipped 1 message(s) whose body was purged" in response.content.decode()


def test_cancel(admin_client):
    queued, sending = make_message(status=S.QUEUED), make_message(status=S.SENDING)

    response = run_action(admin_client, "cancel", queued, sending)

    assert Message.objects.get(pk=queued.pk).status == S.CANCELLED
    assert Message.objects.get(pk=sending.pk).status == S.SENDING
    assert "Cancelled 1 of 2 selected message(s)" in response.content.decode()


# Suppressions
# ------------------------------------------------------------------------------


def test_add_a_suppression_by_hand(admin_client):
    response = admin_client.post(
        reverse("admin:transactional_suppression_add"),
        {"address": " Bob@Example.COM ", "reason": "manual", "note": "asked by phone"},
    )

    assert response.status_code == 302
    row = Suppression.objects.get()
    assert (row.address, row.source, row.note) == (
        "bob@example.com",
        "admin",
        "Added by admin: asked by phone",
    )


def test_adding_an_address_twice_is_a_form_error(admin_client):
    Suppression.objects.create(address="bob@example.com", reason="bounced", source="mailgun")

    response = admin_client.post(
        reverse("admin:transactional_suppression_add"),
        {"address": "BOB@example.com", "reason": "manual"},
    )

    assert response.status_code == 200
    assert "This address is on the suppression list for this stream already." in response.content.decode()


def test_suppressions_are_listed_searched_and_never_edited(admin_client):
    row = Suppression.objects.create(
        address="bob@example.com", reason="complained", source="sendgrid"
    )
    Suppression.objects.create(address="ann@example.com", reason="bounced", source="mailgun")

    listed = admin_client.get(SUPPRESSIONS, {"q": "bob", "reason__exact": "complained"})
    change = reverse("admin:transactional_suppression_change", args=[row.pk])

    assert [s.pk for s in listed.context["cl"].result_list] == [row.pk]
    edit = admin_client.post(change, {"address": "eve@example.com", "reason": "manual"})
    assert admin_client.get(change).status_code == 200
    assert edit.status_code == 403


def test_the_suppression_list_links_each_entry_to_its_source_event(admin_client):
    event = Event.objects.create(
        esp="mailgun",
        event_id="e-1",
        address="bob@example.com",
        event_type="bounced",
        timestamp=datetime(2026, 3, 14, 9, 30, tzinfo=UTC),
    )
    Suppression.objects.create(
        address="bob@example.com", reason="bounced", source="mailgun", event=event
    )
    Suppression.objects.create(address="ann@example.com", reason="manual", source="admin")

    page = admin_client.get(SUPPRESSIONS).content.decode()

    assert f'href="{reverse("admin:transactional_event_change", args=[event.pk])}">bounced' in page


def test_an_address_erased_by_forget_cannot_be_added_again_in_clear(admin_client):
    Suppression.objects.create(
        address="forgotten:0123456789ab",
        address_hash=address_hash("dana@example.com"),
        reason="bounced",
    )

    response = admin_client.post(
        reverse("admin:transactional_suppression_add"),
        {"address": "Dana@example.com", "reason": "manual"},
    )

    assert response.status_code == 200
    assert "erased by `forget`" in response.content.decode()
    assert Suppression.objects.count() == 1


def test_deleting_a_suppression_is_logged(admin_client, caplog):
    row = Suppression.objects.create(address="bob@example.com", reason="bounced", source="mailgun")

    with caplog.at_level(logging.WARNING, logger="transactional.suppression"):
        admin_client.post(
            reverse("admin:transactional_suppression_delete", args=[row.pk]), {"post": "yes"}
        )

    assert not Suppression.objects.exists()
    assert "Removed bob@example.com from the suppression list (by admin)" in caplog.messages


def test_deleting_suppressions_in_bulk_is_logged(admin_client, caplog):
    rows = [
        Suppression.objects.create(address=a, reason="bounced")
        for a in ("a@example.com", "b@example.com")
    ]

    with caplog.at_level(logging.WARNING, logger="transactional.suppression"):
        admin_client.post(
            SUPPRESSIONS,
            {"action": "delete_selected", "_selected_action": [r.pk for r in rows], "post": "yes"},
        )

    assert not Suppression.objects.exists()
    assert sorted(caplog.messages) == [
        "Removed a@example.com from the suppression list (by admin)",
        "Removed b@example.com from the suppression list (by admin)",
    ]


# -- Providers: breakers and rate limits -------------------------------------

PROVIDERS_PAGE = reverse("admin:transactional_providerstate_changelist")


def test_the_providers_page_shows_each_breaker_its_place_and_rate(admin_client, settings):
    from transactional.models import ProviderState

    settings.TRANSACTIONAL_PROVIDERS = {"mailgun": "anymail.backends.mailgun.EmailBackend",
                                        "ses": "anymail.backends.amazon_ses.EmailBackend"}
    settings.TRANSACTIONAL_RATE_LIMITS = {"mailgun": 100}
    ProviderState.objects.create(provider="mailgun", state="open", failures=5,
                                 last_error="AnymailRequestsAPIError: Mailgun API response 503")
    ProviderState.objects.create(provider="ses", account_rate=14)

    page = admin_client.get(PROVIDERS_PAGE).content.decode()

    assert "open: skipped" in page and "closed: sending" in page
    assert "primary" in page and "2." in page
    assert "100/s (TRANSACTIONAL_RATE_LIMITS)" in page
    assert "14/s (the SES account&#x27;s MaxSendRate)" in page
    assert "Mailgun API response 503" in page


def test_an_operator_can_close_a_breaker_but_not_edit_the_row(admin_client):
    from transactional.models import ProviderState

    state = ProviderState.objects.create(provider="mailgun", state="open", failures=5, retry_at=timezone.now())

    response = admin_client.post(PROVIDERS_PAGE, {"action": "close_breaker", "_selected_action": [state.pk]})

    assert response.status_code == 302
    state.refresh_from_db()
    assert (state.state, state.failures, state.retry_at) == ("closed", 0, None)
    change = reverse("admin:transactional_providerstate_change", args=[state.pk])
    page = admin_client.get(change).content.decode()
    assert 'name="_save"' not in page
    assert admin_client.post(change, {"state": "open"}).status_code == 403


def test_the_message_list_filters_by_priority(admin_client, outbox):
    from django.core.mail import EmailMessage

    urgent = EmailMessage("Reset your password", "Click", "security@acme.test", ["ann@example.com"])
    urgent.priority = "high"
    urgent.send()
    EmailMessage("Newsletter", "News", "news@acme.test", ["bob@example.com"]).send()

    page = admin_client.get(MESSAGES, {"priority__exact": Message.Priority.HIGH}).content.decode()

    assert "Reset your password" in page and "Newsletter" not in page
