"""The lesson's birthday form and its Beatles check."""

import datetime
import logging
import smtplib

import pytest
from django.urls import reverse

from birthday.forms import BEATLES_ERROR
from birthday.mail_previews import DZHON_LENNON, JOHN_LENNON, BirthdayPreviews
from birthday.models import Birthday

pytestmark = pytest.mark.django_db

FORM_URL = "/birthday/"


def submit(client, first_name: str, last_name: str, birthday: str = "1940-10-09"):
    return client.post(FORM_URL, {"first_name": first_name, "last_name": last_name, "birthday": birthday})


def test_form_page_renders(client):
    response = client.get(FORM_URL)

    assert response.status_code == 200
    assert b'name="first_name"' in response.content
    assert b'type="date"' in response.content


@pytest.mark.parametrize(
    ("first_name", "last_name"),
    [("John", "Lennon"), ("Джон", "Леннон"), ("Пол", "Маккартни"), ("ringo", "STARR"), (" George ", "Harrison")],
)
def test_a_beatle_mails_the_admins_and_shows_the_lessons_error(client, mailoutbox, first_name, last_name):
    response = submit(client, first_name, last_name)

    assert response.status_code == 200
    assert BEATLES_ERROR in response.content.decode()
    assert not Birthday.objects.exists()
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.subject == "Another Beatles member"
    assert mail.body == f"{first_name.strip()} {last_name.strip()} tried to add a birthday."
    assert mail.from_email == "birthday_form@acme.test"
    assert mail.to == ["admin@acme.test"]
    [(html, mimetype)] = mail.alternatives
    assert mimetype == "text/html"
    full_name = f"{first_name.strip()} {last_name.strip()}"
    assert f"<strong>{full_name}</strong> tried to add a birthday." in html
    assert mail.tags == ["birthday", "beatles"]


@pytest.mark.parametrize(
    ("name", "preview"),
    [(JOHN_LENNON, "beatles_alert"), (DZHON_LENNON, "beatles_alert_in_russian")],
)
def test_the_mail_sent_is_the_one_previewed(client, mailoutbox, name, preview):
    expected = BirthdayPreviews().preview(preview).render()

    submit(client, *name)

    [mail] = mailoutbox
    assert (mail.subject, mail.body, mail.alternatives) == (
        expected.subject, expected.body, expected.alternatives
    )
    assert (mail.from_email, mail.to, mail.tags) == (
        expected.from_email, expected.to, expected.tags
    )


def test_anyone_else_is_saved_without_mail(client, mailoutbox):
    response = submit(client, "Yoko", "Ono", "1933-02-18")

    assert response.status_code == 302
    assert response["Location"] == reverse("birthday:list")
    assert Birthday.objects.get().birthday == datetime.date(1933, 2, 18)
    assert mailoutbox == []


def test_list_page_shows_saved_birthdays(client):
    Birthday.objects.create(first_name="Yoko", last_name="Ono", birthday=datetime.date(1933, 2, 18))

    response = client.get(reverse("birthday:list"))

    assert response.status_code == 200
    assert "Yoko Ono" in response.content.decode()
    assert "18 February 1933" in response.content.decode()


def test_the_mail_reaches_every_admin(client, settings, mailoutbox):
    settings.ADMINS = [("Ops", "ops@acme.test"), ("", "dev@acme.test")]

    submit(client, "Paul", "McCartney")

    assert mailoutbox[0].to == ["ops@acme.test", "dev@acme.test"]


def test_sender_uses_the_domain_of_default_from_email(client, settings, mailoutbox):
    settings.DEFAULT_FROM_EMAIL = "Shop <hello@shop.acme-corp.com>"

    submit(client, "Paul", "McCartney")

    assert mailoutbox[0].from_email == "birthday_form@shop.acme-corp.com"


def test_file_backend_writes_the_mail_under_email_file_path(client, mail_settings, tmp_path):
    mail_settings("file", EMAIL_FILE_PATH=str(tmp_path / "sent_emails"))

    submit(client, "John", "Lennon")

    files = list((tmp_path / "sent_emails").iterdir())
    assert len(files) == 1
    content = files[0].read_text()
    assert "Subject: Another Beatles member" in content
    assert "To: admin@acme.test" in content
    assert "John Lennon tried to add a birthday." in content


def test_a_failing_provider_is_logged_and_the_visitor_still_sees_the_form_error(
    client, mail_settings, caplog
):
    # An SMTP server that is not there: the real failure, not a stub.
    mail_settings("smtp", EMAIL_HOST="127.0.0.1", EMAIL_PORT="9", EMAIL_TIMEOUT="2")

    with caplog.at_level(logging.ERROR, logger="birthday.beatles"):
        response = submit(client, "Ringo", "Starr")

    assert response.status_code == 200
    assert BEATLES_ERROR in response.content.decode()
    [record] = caplog.records
    assert record.getMessage() == "Could not notify ADMINS that 'Ringo Starr' tried to add a birthday"
    assert isinstance(record.exc_info[1], (ConnectionError, smtplib.SMTPException, OSError))


def test_no_admins_configured_is_a_warning_not_a_crash(client, settings, mailoutbox, caplog):
    settings.ADMINS = []

    with caplog.at_level(logging.WARNING, logger="birthday.beatles"):
        response = submit(client, "John", "Lennon")

    assert BEATLES_ERROR in response.content.decode()
    assert mailoutbox == []
    assert "ADMINS is empty" in caplog.text


def test_home_redirects_to_the_form(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == FORM_URL
