"""The dev outbox at /dev/outbox/: mail files written by Django's file backend, in a browser."""

import os
from datetime import UTC, datetime, timedelta
from email.mime.image import MIMEImage
from email.utils import format_datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection, send_mail
from django.test import Client
from django.urls import reverse

from transactional.dev import mailbox, outbox_views
from transactional.models import Message
from transactional.serialization import LEGACY_EMAIL

pytestmark = pytest.mark.django_db

FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
SEPARATOR_LINE = "-" * 79
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
RICH_SUBJECT = "Réinitialisation du mot de passe — Zoë"


# Mail files, written by Django's own file backend
# ------------------------------------------------------------------------------


def write_mails(*messages: EmailMessage) -> None:
    """Send ``messages`` over one file-backend connection: one file, several messages."""
    get_connection(FILE_BACKEND).send_messages(list(messages))


def receipt(number: int, *, hours_ago: int, to: str = "ann@example.com") -> EmailMessage:
    """Build a plain-text receipt dated ``hours_ago`` before NOW."""
    date = format_datetime(NOW - timedelta(hours=hours_ago))
    return EmailMessage(
        f"Receipt #{number}",
        f"Thank you for order {number}.",
        "Shop <shop@acme.test>",
        [to],
        headers={"Date": date},
    )


def rich_mail() -> EmailMultiAlternatives:
    """Build a mail with text, HTML, an inline image, an attachment and a non-ASCII subject."""
    mail = EmailMultiAlternatives(
        RICH_SUBJECT,
        "Bonjour Zoë,\nreset your password at https://acme.test/reset/abc\n",
        "Acme <no-reply@acme.test>",
        ["Zoë Dupont <zoe@example.fr>"],
        cc=["Support <support@acme.test>"],
        headers={"Date": format_datetime(NOW)},
    )
    mail.attach_alternative(
        '<p>Bonjour Zoë</p><img src="cid:logo@acme"><script>alert(1)</script>', "text/html"
    )
    if LEGACY_EMAIL:  # Django 6 has no mixed_subtype: the image goes in multipart/mixed
        mail.mixed_subtype = "related"
    logo = MIMEImage(PIXEL, "gif")
    logo.add_header("Content-ID", "<logo@acme>")
    logo.add_header("Content-Disposition", "inline", filename="logo.gif")
    mail.attach(logo)
    mail.attach("../../invoice 2025.pdf", b"%PDF-1.4 fake", "application/pdf")
    return mail


def only_mail(subject: str) -> mailbox.Mail:
    """Return the one stored mail with this subject."""
    [mail] = [mail for mail in mailbox.mails() if mail.subject == subject]
    return mail


@pytest.fixture
def mail_dir(settings, tmp_path: Path) -> Path:
    """Write mail to files in a fresh directory, as dev settings do."""
    settings.EMAIL_PROVIDER = "file"
    settings.EMAIL_FILE_PATH = str(tmp_path / "sent_emails")
    return tmp_path / "sent_emails"


@pytest.fixture
def dev(settings, mail_dir: Path) -> Path:
    """Turn DEBUG on (pytest-django turns it off) so the dev pages answer."""
    settings.DEBUG = True
    return mail_dir


@pytest.fixture
def rich(dev: Path) -> mailbox.Mail:
    """Store the rich mail and return it as the outbox reads it."""
    write_mails(rich_mail())
    return only_mail(RICH_SUBJECT)


class IframeFinder(HTMLParser):
    """Collect the attributes of every <iframe>."""

    def __init__(self) -> None:
        super().__init__()
        self.iframes: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "iframe":
            self.iframes.append(dict(attrs))


def iframes(html: str) -> list[dict[str, str | None]]:
    """Return the attributes of every <iframe> in ``html``."""
    finder = IframeFinder()
    finder.feed(html)
    return finder.iframes


# The DEBUG gate
# ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "name", "args"),
    [
        ("get", "dev-outbox", []),
        ("get", "dev-outbox-detail", ["ID"]),
        ("get", "dev-outbox-html", ["ID"]),
        ("get", "dev-outbox-raw", ["ID"]),
        ("get", "dev-outbox-part", ["ID", 0]),
        ("post", "dev-outbox-clear", []),
    ],
)
def test_every_page_is_404_without_debug(client, mail_dir, method, name, args):
    write_mails(rich_mail())
    mail_id = only_mail(RICH_SUBJECT).id
    url = reverse(name, args=[mail_id if arg == "ID" else arg for arg in args])

    response = getattr(client, method)(url)

    assert response.status_code == 404
    assert mailbox.mails(), "nothing is cleared without DEBUG"


# The list
# ------------------------------------------------------------------------------


def test_list_shows_every_message_of_a_multi_message_file_newest_first(client, dev):
    write_mails(receipt(1, hours_ago=5), receipt(3, hours_ago=1), receipt(2, hours_ago=3))
    write_mails(rich_mail())

    response = client.get(reverse("dev-outbox"))

    assert response.status_code == 200
    mails = response.context["mails"]
    subjects = [mail.subject for mail in mails]
    assert subjects == [RICH_SUBJECT, "Receipt #3", "Receipt #2", "Receipt #1"]
    assert len({mail.file_stem for mail in mails[1:]}) == 1, "the receipts share one file"
    page = response.content.decode()
    assert page.index(RICH_SUBJECT) < page.index("Receipt #3") < page.index("Receipt #1")
    assert "2025-03-01 11:00:00" in page
    assert "Zoë Dupont &lt;zoe@example.fr&gt;" in page
    assert "Shop &lt;shop@acme.test&gt;" in page
    assert "4 messages" in page


def test_list_searches_recipients_and_subject_ignoring_case(client, dev):
    write_mails(
        receipt(1, hours_ago=2, to="ann@example.com"),
        receipt(2, hours_ago=1, to="bob@example.com"),
        rich_mail(),
    )

    def subjects(query: str) -> list[str]:
        response = client.get(reverse("dev-outbox"), {"q": query})
        return [mail.subject for mail in response.context["mails"]]

    assert subjects("BOB@") == ["Receipt #2"]
    assert subjects("receipt") == ["Receipt #2", "Receipt #1"]
    assert subjects("zoë") == [RICH_SUBJECT]
    assert subjects("support@acme") == [RICH_SUBJECT]  # Cc counts as a recipient
    assert subjects("nobody") == []
    page = client.get(reverse("dev-outbox"), {"q": "nobody"}).content.decode()
    assert "No message matches “nobody”" in page


def test_list_shows_the_newest_and_says_how_many_more(client, dev, monkeypatch):
    monkeypatch.setattr(outbox_views, "LIST_LIMIT", 2)
    write_mails(*(receipt(number, hours_ago=number) for number in range(1, 6)))

    response = client.get(reverse("dev-outbox"))

    assert [mail.subject for mail in response.context["mails"]] == ["Receipt #1", "Receipt #2"]
    assert "Showing the newest 2 of 5; search to find older mail." in response.content.decode()


def test_list_of_a_missing_directory_is_empty(client, dev):
    response = client.get(reverse("dev-outbox"))

    assert response.status_code == 200
    assert not dev.exists()
    assert "No mail yet" in response.content.decode()


def test_list_auto_refreshes_only_when_asked(client, dev):
    assert "Refresh" not in client.get(reverse("dev-outbox")).headers
    assert client.get(reverse("dev-outbox"), {"refresh": "1"}).headers["Refresh"] == "5"


def test_list_warns_when_mail_waits_for_the_delivery_worker(client, dev, settings):
    page = client.get(reverse("dev-outbox")).content.decode()
    assert "waiting for the delivery worker" not in page
    settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"

    send_mail("Welcome", "Hi!", "shop@acme.test", ["ann@example.com"])  # no commit: stays queued

    assert Message.objects.get().status == Message.Status.QUEUED
    page = client.get(reverse("dev-outbox")).content.decode()
    assert "1 message is waiting for the delivery worker" in page
    assert "manage.py delivery_worker" in page


def test_list_says_when_mail_is_not_written_to_files(client, dev, settings):
    settings.EMAIL_PROVIDER = "mailgun"

    page = client.get(reverse("dev-outbox")).content.decode()

    assert "EMAIL_PROVIDER is &#x27;mailgun&#x27;: mail is not written to files, so new" in page


# One message
# ------------------------------------------------------------------------------


def test_detail_shows_headers_text_attachments_and_a_sandboxed_html_frame(client, rich):
    response = client.get(reverse("dev-outbox-detail", args=[rich.id]))

    assert response.status_code == 200
    page = response.content.decode()
    assert f"<h1>{RICH_SUBJECT}</h1>" in page
    assert "Support &lt;support@acme.test&gt;" in page
    assert "<th>Message-ID</th>" in page
    assert "reset your password at https://acme.test/reset/abc" in page
    assert "invoice 2025.pdf" in page and "logo.gif" in page
    [frame] = iframes(page)
    assert "sandbox" in frame and frame["sandbox"] in (None, ""), "an empty sandbox: no exceptions"
    assert frame["src"] == reverse("dev-outbox-html", args=[rich.id])


def test_html_body_is_served_under_a_strict_csp_to_our_own_frames_only(client, rich):
    response = client.get(reverse("dev-outbox-html", args=[rich.id]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Content-Security-Policy"] == (
        "default-src 'none'; img-src 'self' data: cid:; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    )
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    logo = next(part for part in rich.attachments if part.content_id == "logo@acme")
    logo_url = reverse("dev-outbox-part", args=[rich.id, logo.index])
    assert f'<img src="{logo_url}">' in response.content.decode()


def test_other_pages_keep_the_deny_frame_policy(client, rich):
    assert client.get(reverse("dev-outbox-detail", args=[rich.id]))["X-Frame-Options"] == "DENY"


def test_a_text_only_message_has_no_frame_and_no_html(client, dev):
    write_mails(receipt(1, hours_ago=1))
    mail_id = only_mail("Receipt #1").id

    page = client.get(reverse("dev-outbox-detail", args=[mail_id])).content.decode()

    assert iframes(page) == []
    assert "Thank you for order 1." in page
    assert client.get(reverse("dev-outbox-html", args=[mail_id])).status_code == 404


def test_attachment_downloads_with_its_type_and_a_sanitized_name(client, rich):
    invoice = next(part for part in rich.attachments if part.content_type == "application/pdf")

    response = client.get(reverse("dev-outbox-part", args=[rich.id, invoice.index]))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="invoice 2025.pdf"'
    assert response.content == b"%PDF-1.4 fake"
    assert client.get(reverse("dev-outbox-part", args=[rich.id, 9])).status_code == 404


def test_non_ascii_attachment_names_are_encoded(client, dev):
    mail = EmailMessage("Files", "See attached.", "shop@acme.test", ["ann@example.com"])
    mail.attach("reçu\x07.txt", "merci", "text/plain")
    write_mails(mail)
    stored = only_mail("Files")

    response = client.get(reverse("dev-outbox-part", args=[stored.id, 0]))

    assert response["Content-Disposition"] == "attachment; filename*=utf-8''re%C3%A7u.txt"


def test_raw_source_is_the_message_as_written(client, rich):
    response = client.get(reverse("dev-outbox-raw", args=[rich.id]))

    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == rich.raw
    top = "related" if LEGACY_EMAIL else "mixed"  # Django 6 has no mixed_subtype
    assert f"Content-Type: multipart/{top};".encode() in response.content.split(b"\n\n")[0]
    assert b"Subject: =?utf-8?" in response.content
    assert SEPARATOR_LINE.encode() not in response.content


@pytest.mark.parametrize(
    "mail_id",
    ["../secret.0", "..%2Fsecret.0", "secret.0", "link.0", "notes.0"]
    + ["ID.7", "ID", "ID.-1", "ID.x", "ID.²"],
)
def test_ids_outside_the_listing_are_404(client, dev, mail_id):
    write_mails(receipt(1, hours_ago=1))
    stored = only_mail("Receipt #1")
    secret = dev.parent / "secret.log"
    secret.write_bytes(stored.raw + f"\n{SEPARATOR_LINE}\n".encode())
    (dev / "link.log").symlink_to(secret)
    (dev / "notes.txt").write_bytes(secret.read_bytes())
    mail_id = mail_id.replace("ID", stored.file_stem)

    assert mailbox.get(mail_id) is None
    assert client.get(f"/dev/outbox/{mail_id}/raw/").status_code == 404


# Clear
# ------------------------------------------------------------------------------


def test_clear_deletes_only_the_mail_files(client, dev):
    write_mails(receipt(1, hours_ago=2), receipt(2, hours_ago=1))
    write_mails(rich_mail())
    # One or two: the second connection may reuse the first one's id(), hence its file name.
    written = len(list(dev.glob("*.log")))
    (dev / "notes.txt").write_text("keep me")
    (dev / "archive.log").mkdir()
    outside = dev.parent / "outside.log"
    outside.write_text("keep me too")
    (dev / "link.log").symlink_to(outside)

    response = client.post(reverse("dev-outbox-clear"), follow=True)

    assert response.redirect_chain == [(reverse("dev-outbox"), 302)]
    assert f"Deleted {written} mail file(s)" in response.content.decode()
    assert sorted(path.name for path in dev.iterdir()) == ["archive.log", "link.log", "notes.txt"]
    assert outside.read_text() == "keep me too"
    assert mailbox.mails() == []


def test_clear_needs_a_post_with_a_csrf_token(dev):
    write_mails(receipt(1, hours_ago=1))
    client = Client(enforce_csrf_checks=True)

    assert client.get(reverse("dev-outbox-clear")).status_code == 405
    assert client.post(reverse("dev-outbox-clear")).status_code == 403
    assert len(mailbox.mails()) == 1


# Reading the files
# ------------------------------------------------------------------------------


def test_a_body_line_of_79_dashes_does_not_split_the_message(dev):
    body = f"Above\n{SEPARATOR_LINE}\nFrom: quoted\n\nBelow\n"  # Django 6 ends every body with one
    text = EmailMessage("Dashes", body, "shop@acme.test", ["ann@example.com"])
    html = EmailMultiAlternatives("Dashes 2", f"A\n{SEPARATOR_LINE}\n", "shop@acme.test", ["b@x.y"])
    html.attach_alternative("<p>B</p>", "text/html")
    write_mails(text, html, receipt(1, hours_ago=1))

    assert sorted(mail.subject for mail in mailbox.mails()) == ["Dashes", "Dashes 2", "Receipt #1"]
    assert only_mail("Dashes").text == body


def test_a_forwarded_message_after_a_dash_line_stays_in_an_unclosed_multipart(dev):
    forwarded = f"Forwarded:\n{SEPARATOR_LINE}\n{receipt(9, hours_ago=9).message().as_string()}"
    mail = EmailMultiAlternatives("Fwd", forwarded, "shop@acme.test", ["ann@example.com"])
    mail.attach_alternative("<p>Forwarded</p>", "text/html")
    write_mails(mail)

    assert [stored.subject for stored in mailbox.mails()] == ["Fwd"]


def test_a_message_still_being_written_is_left_out(dev):
    write_mails(receipt(1, hours_ago=1))
    [path] = dev.glob("*.log")
    with path.open("ab") as file:  # the backend's first write; the dash line comes next
        file.write(receipt(2, hours_ago=0).message().as_bytes() + b"\n")

    assert [mail.subject for mail in mailbox.mails()] == ["Receipt #1"]


def test_a_message_without_a_date_is_dated_by_its_file(dev):
    dev.mkdir()
    path = dev / "handmade.log"
    path.write_bytes(f"From: shop@acme.test\nSubject: Undated\n\nHi\n{SEPARATOR_LINE}\n".encode())
    os.utime(path, (NOW.timestamp(), NOW.timestamp()))

    [mail] = mailbox.mails()

    assert (mail.id, mail.date, mail.text) == ("handmade.0", NOW, "Hi")


def test_ids_are_stable_as_a_file_grows(dev):
    connection = get_connection(FILE_BACKEND)
    connection.open()
    connection.send_messages([receipt(1, hours_ago=2)])
    first = only_mail("Receipt #1").id
    connection.send_messages([receipt(2, hours_ago=1)])
    connection.close()

    assert only_mail("Receipt #1").id == first
    assert only_mail("Receipt #2").id == first[:-1] + "1"
