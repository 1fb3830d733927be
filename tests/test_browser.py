"""The site in a real browser, as a user would click through it.

Debian's Chromium (/usr/bin/chromium, installed by scripts/test when missing)
driven by Playwright's sync API against pytest-django's ``live_server``: a
threaded server on the file-backed test database, with the mail path of the
dev settings (outbox backend -> immediate delivery task -> file backend).

Every step leaves a screenshot in the test's ``tmp_path``; a failing step
names its screenshot and the page's URL in the error.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect, sync_playwright

from birthday.forms import BEATLES_ERROR

pytestmark = [
    pytest.mark.browser,
    # Starts a server thread and a browser; .ci/run's PostgreSQL pass skips it.
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

CHROMIUM = "/usr/bin/chromium"
#: As the machine probe starts it: without the background-networking flags
#: Chromium keeps calling Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
ADMIN_USERNAME, ADMIN_PASSWORD = "ada", "correct horse battery staple"
SUBJECT = "Another Beatles member"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


@pytest.fixture
def chromium_path() -> str:
    """Debian's Chromium; skip without it on a laptop, fail in CI (CI=true)."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    reason = (
        f"{CHROMIUM} is missing: install Debian's chromium package "
        "(scripts/test does it when run as root with apt-get)"
    )
    if in_ci():
        pytest.fail(f"CI is set, so the browser test may not skip: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser(chromium_path: str, monkeypatch) -> Iterator[Browser]:
    # Playwright's sync API keeps an asyncio loop in this thread, which makes
    # Django refuse ORM calls from the test ("SynchronousOnlyOperation").
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def dev_site(settings, mail_settings, tmp_path: Path) -> Path:
    """The dev settings' mail path, mail files in tmp_path, DEBUG on for /dev/ pages.

    The live server's thread reads these settings on every request.
    """
    mail_dir = tmp_path / "sent_emails"
    mail_settings("file", EMAIL_FILE_PATH=str(mail_dir))
    settings.TRANSACTIONAL_DELIVERY_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_BACKEND = "transactional.backends.EmailBackend"
    settings.DEBUG = True
    return mail_dir


class Steps:
    """Name each step; screenshot it, and point a failure at its screenshot."""

    def __init__(self, page: Page, directory: Path) -> None:
        self.page = page
        self.directory = directory
        self.count = 0

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.count += 1
        path = self.directory / f"{self.count:02d}-{name}.png"
        try:
            yield
        except Exception as error:
            path = path.with_stem(f"{path.stem}-FAILED")
            try:
                self.page.screenshot(path=path, full_page=True)
                error.add_note(f"Step {name!r} failed at {self.page.url}; screenshot: {path}")
            except Exception as screenshot_error:  # the browser itself may be gone
                error.add_note(f"Step {name!r} failed; no screenshot: {screenshot_error}")
            raise
        self.page.screenshot(path=path, full_page=True)


def test_a_user_types_a_beatle_then_reads_the_mail_and_the_stats(
    live_server, dev_site: Path, page: Page, django_user_model, tmp_path: Path
):
    django_user_model.objects.create_superuser(ADMIN_USERNAME, "ada@acme.test", ADMIN_PASSWORD)
    step = Steps(page, tmp_path)
    url = live_server.url

    with step("birthday-form-says-beatles"):
        page.goto(f"{url}/birthday/")
        expect(page.get_by_role("heading", name="Add a birthday")).to_be_visible()
        page.get_by_label("First name").fill("John")
        page.get_by_label("Last name").fill("Lennon")
        page.get_by_label("Birthday").fill("1940-10-09")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text(BEATLES_ERROR)).to_be_visible()
        assert page.url == f"{url}/birthday/", "a Beatle's name must not be saved"

    with step("outbox-lists-the-mail"):
        page.goto(f"{url}/dev/outbox/")
        expect(page.get_by_role("heading", name="Outbox", exact=True)).to_be_visible()
        # No "not written to files" or "waiting for the delivery worker" banner.
        expect(page.locator(".banner")).to_have_count(0)
        expect(page.locator("table.mail-list tbody tr")).to_have_count(1)

    with step("mail-html-in-sandboxed-iframe"):
        page.get_by_role("link", name=SUBJECT).click()
        expect(page.get_by_role("heading", name=SUBJECT)).to_be_visible()
        expect(page.locator(".mail-summary")).to_contain_text("admin@acme.test")
        iframe = page.locator("iframe[sandbox]")
        expect(iframe).to_have_count(1)
        # An empty sandbox: no scripts, no same-origin, no forms.
        assert iframe.get_attribute("sandbox") == ""
        body = page.frame_locator("iframe[sandbox]").locator("body")
        expect(body).to_contain_text("John Lennon tried to add a birthday.")
        # Rendered as HTML, not shown as markup.
        expect(body.locator("strong")).to_have_text("John Lennon")
        expect(page.locator("pre.mail-text")).to_contain_text("John Lennon tried to add a birthday.")

    stats_path = reverse("admin:transactional_stats")
    assert stats_path == "/admin/transactional/stats/"

    with step("admin-login"):
        page.goto(f"{url}{stats_path}")
        expect(page).to_have_url(f"{url}/admin/login/?next={stats_path}")
        page.get_by_label("Username").fill(ADMIN_USERNAME)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)

    with step("stats-page"):
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(f"{url}{stats_path}")
        expect(page.get_by_role("heading", name="Delivery stats", level=1)).to_be_visible()
        charts = page.locator(".stats-chart svg")
        expect(charts).to_have_count(3)
        expect(charts.first).to_be_visible()
        # The alert the form sent: one recipient sent in the window's total.
        expect(page.locator(".stats-table tfoot td").first).to_have_text("1")
