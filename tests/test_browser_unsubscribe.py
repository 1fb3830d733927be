"""One-click unsubscribe in a real browser: the link from a delivered mail, clicked through.

The same Chromium, Playwright and skip/fail rules as test_browser.py (its
fixtures, imported): Debian's /usr/bin/chromium against pytest-django's
``live_server``. Mail goes through the outbox into Django's in-memory outbox,
with TRANSACTIONAL_SITE_URL pointing at the live server, so the link in the
mail is the one the browser opens.

Every step leaves a screenshot in the test's ``tmp_path`` (under /tmp), on a
desktop and on a phone-sized screen.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from playwright.sync_api import Browser, Page, expect

from tests.conftest import OUTBOX
from tests.test_browser import TIMEOUT_MS, Steps, browser, chromium_path  # noqa: F401
from transactional.delivery import deliver_due
from transactional.models import Suppression

pytestmark = [
    pytest.mark.browser,
    # Starts a server thread and a browser; .ci/run's PostgreSQL pass skips it.
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

ANN = "ann@example.org"
#: The site's accent colour (static/site.css --accent): the stylesheet loaded.
ACCENT = "rgb(35, 87, 217)"
SCREENS = {
    "desktop": {"viewport": {"width": 1280, "height": 900}},
    # About an iPhone 13's CSS pixels.
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True},
}


@pytest.fixture(params=list(SCREENS))
def page(request, browser: Browser) -> Iterator[Page]:  # noqa: F811
    context = browser.new_context(**SCREENS[request.param])
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def newsletter_link(live_server, settings) -> str:
    """Send a newsletter through the outbox; return the https link of its List-Unsubscribe.

    The live server's thread reads these settings on every request.
    """
    settings.EMAIL_BACKEND = OUTBOX
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    # The dev server's case: http, on the live server's port.
    settings.TRANSACTIONAL_SITE_URL = live_server.url
    message = EmailMessage("Our March news", "News.", "news@acme.test", [ANN])
    message.stream = "newsletter"
    assert message.send() == 1
    if not mail.outbox:  # delivery runs after the commit; in case it had not
        deliver_due()
    [sent] = mail.outbox
    header = sent.message()["List-Unsubscribe"]
    targets = [part.strip(" <>") for part in header.split(",")]
    [link] = [target for target in targets if target.startswith("http")]
    assert link.startswith(f"{live_server.url}/unsubscribe/")
    return link


def no_sideways_scrolling(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_reader_opens_the_link_from_the_mail_and_unsubscribes(
    newsletter_link: str, page: Page, tmp_path: Path
):
    step = Steps(page, tmp_path)
    button = page.get_by_role("button", name="Unsubscribe")

    with step("confirm-page"):
        response = page.goto(newsletter_link)
        assert response is not None and response.status == 200
        heading = page.get_by_role("heading", name="Unsubscribe from newsletter mail?")
        expect(heading).to_be_visible()
        expect(page.locator("main")).to_contain_text("a•••@example.org")
        expect(button).to_be_visible()
        expect(button).to_have_css("background-color", ACCENT)
        assert no_sideways_scrolling(page)
        # Looking changes nothing.
        assert not Suppression.objects.exists()

    with step("done-page"):
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            button.click()
        assert posted.value.status == 200
        assert posted.value.headers["cache-control"].count("no-store") == 1
        expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
        expect(page.locator("main")).to_contain_text("will get no more newsletter mail")
        assert page.url == newsletter_link, "the button posts to the link itself"
        assert no_sideways_scrolling(page)

    assert list(Suppression.objects.values_list("address", "stream", "reason", "source")) == [
        (ANN, "newsletter", "unsubscribed", "unsubscribe page")
    ]


def test_a_tampered_link_shows_the_invalid_page_with_400(
    newsletter_link: str, page: Page, tmp_path: Path
):
    step = Steps(page, tmp_path)
    last = newsletter_link[-2]  # the signature's last character, before the final "/"
    tampered = f"{newsletter_link[:-2]}{'A' if last != 'A' else 'B'}/"

    with step("invalid-page"):
        response = page.goto(tampered)
        assert response is not None and response.status == 400
        expect(page.get_by_role("heading", name="This link does not work")).to_be_visible()
        expect(page.locator("main")).to_contain_text("Nothing was changed.")
        expect(page.get_by_role("button", name="Unsubscribe")).to_have_count(0)
        assert no_sideways_scrolling(page)

    assert not Suppression.objects.exists()
