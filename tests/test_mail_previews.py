"""Mail previews: the registry and the /dev/mail-previews/ pages."""

import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from birthday.mail_previews import BirthdayPreviews
from tests.test_templated_mail import mail_templates  # noqa: F401 (fixture)
from transactional import previews
from transactional.models import Message
from transactional.previews import MailPreview, Preview
from transactional.templated import template_names

pytestmark = pytest.mark.django_db

LIST_URL = "/dev/mail-previews/"
DETAIL_URL = "/dev/mail-previews/birthday/beatles_alert/"
HTML_URL = "/dev/mail-previews/birthday/beatles_alert/html/"


@pytest.fixture
def debug(settings):
    settings.DEBUG = True
    return settings


@pytest.fixture
def registry(monkeypatch):
    """Let a test register preview classes without leaving them behind."""
    previews.groups()  # discover the apps' previews first
    monkeypatch.setattr(previews, "_registry", dict(previews._registry))


# Registry
# ------------------------------------------------------------------------------


def test_the_birthday_previews_are_discovered():
    assert previews.get_group("birthday") is BirthdayPreviews
    assert ("birthday", "beatles_alert") in previews.all_previews()


def test_public_methods_are_previews_in_definition_order(registry):
    class OrderMailerPreviews(MailPreview):
        def shipped(self) -> Preview:
            return Preview("orders/shipped")

        def _helper(self) -> None: ...

        def cancelled(self) -> Preview:
            return Preview("orders/cancelled")

    assert OrderMailerPreviews.slug == "order_mailer"
    assert OrderMailerPreviews.preview_names() == ["shipped", "cancelled"]
    assert previews.get_preview("order_mailer", "cancelled") == Preview("orders/cancelled")


def test_a_taken_slug_is_refused(registry):
    with pytest.raises(ImproperlyConfigured, match="'birthday' is taken by birthday.mail_previews"):

        class BirthdayPreview(MailPreview):
            pass


def test_a_preview_must_return_a_preview(registry):
    class SloppyPreviews(MailPreview):
        def welcome(self) -> dict:
            return {"template": "welcome"}

    with pytest.raises(TypeError, match=r"SloppyPreviews.welcome\(\) returned dict, not a Preview"):
        previews.get_preview("sloppy", "welcome")


@pytest.mark.parametrize(
    ("group", "name"), [("nope", "beatles_alert"), ("birthday", "nope"), ("birthday", "preview")]
)
def test_unknown_previews_are_lookup_errors(group, name):
    with pytest.raises(LookupError):
        previews.get_preview(group, name)


# Pages
# ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [LIST_URL, DETAIL_URL, HTML_URL])
def test_pages_are_404_without_debug(client, settings, url):
    settings.DEBUG = False

    assert client.get(url).status_code == 404


@pytest.mark.parametrize("url", [LIST_URL, DETAIL_URL, HTML_URL])
def test_pages_only_read(client, debug, url):
    assert client.post(url).status_code == 405


def test_the_list_shows_every_templated_mail_and_preview(client, debug):
    page = client.get(LIST_URL).content.decode()

    for name in template_names():
        assert f"<code>{name}</code>" in page
    for group, name in previews.all_previews():
        assert f'href="/dev/mail-previews/{group}/{name}/"' in page
    assert "Preview the alert for the lesson&#x27;s example, John Lennon." in page
    assert "No preview yet" not in page


def test_the_list_names_mails_without_a_preview(client, debug, mail_templates):  # noqa: F811
    mail_templates("orders/receipt", subject="Your receipt", text="Thanks.")

    page = client.get(LIST_URL).content.decode()

    assert re.search(r"No preview yet for\s*<code>orders/receipt</code>", page)
    assert '<span class="missing">no preview</span>' in page


def test_the_preview_page_shows_subject_headers_and_text(client, debug):
    page = client.get(DETAIL_URL).content.decode()

    assert "<h1>Another Beatles member</h1>" in page
    assert "<tr><th>From</th><td>birthday_form@acme.test</td></tr>" in page
    assert "<tr><th>To</th><td>admin@acme.test</td></tr>" in page
    assert "<tr><th>Tags (ESP)</th><td>birthday, beatles</td></tr>" in page
    assert '<pre class="text">John Lennon tried to add a birthday.</pre>' in page
    assert "<code>emails/birthday/beatles_alert/</code>" in page


def test_the_html_is_framed_in_a_sandbox(client, debug):
    page = client.get(DETAIL_URL).content.decode()

    [iframe] = re.findall(r"<iframe[^>]*>", page)
    assert re.search(r"\ssandbox[\s>]", iframe)  # empty: no scripts, no same origin
    assert f'src="{HTML_URL}"' in iframe
    assert "width: 100%" in iframe
    assert "width: 375px" in client.get(DETAIL_URL, {"width": "mobile"}).content.decode()


def test_the_html_is_served_under_a_strict_csp(client, debug):
    response = client.get(HTML_URL)

    assert response.status_code == 200
    assert response["Content-Security-Policy"].startswith(
        "default-src 'none'; img-src data: https:; style-src 'unsafe-inline'"
    )
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert "<strong>John Lennon</strong> tried to add a birthday." in response.content.decode()


def test_a_text_only_mail_has_no_html_page(client, debug, registry, mail_templates):  # noqa: F811
    mail_templates("notes/plain", subject="Plain", text="Just text.")

    class NotesPreviews(MailPreview):
        def plain(self) -> Preview:
            return Preview("notes/plain", to=["a@example.com"])

    page = client.get("/dev/mail-previews/notes/plain/").content.decode()

    assert "This mail has no HTML part." in page and "<iframe" not in page
    assert '<pre class="text">Just text.</pre>' in page
    assert client.get("/dev/mail-previews/notes/plain/html/").status_code == 404


@pytest.mark.parametrize(
    "url", ["/dev/mail-previews/nope/beatles_alert/", "/dev/mail-previews/birthday/nope/html/"]
)
def test_unknown_previews_are_404(client, debug, url):
    assert client.get(url).status_code == 404


def test_nothing_is_sent(client, debug, outbox, mailoutbox):
    urls = [LIST_URL]
    for group, name in previews.all_previews():
        urls += [f"/dev/mail-previews/{group}/{name}/", f"/dev/mail-previews/{group}/{name}/html/"]

    statuses = {client.get(url).status_code for url in urls}

    assert statuses == {200}
    assert mailoutbox == []
    assert not Message.objects.exists()
