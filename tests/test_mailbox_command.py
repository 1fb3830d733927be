"""`manage.py mailbox`: the dev outbox in a terminal."""

from argparse import ArgumentTypeError
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.test_dev_outbox import PIXEL, RICH_SUBJECT, only_mail, receipt, rich_mail, write_mails
from transactional.management.commands.mailbox import positive_int


def mailbox(*args: str) -> str:
    """Run `manage.py mailbox ARGS`; return what it printed."""
    stdout = StringIO()
    call_command("mailbox", *args, stdout=stdout)
    return stdout.getvalue()


@pytest.fixture
def mail_dir(settings, tmp_path: Path) -> Path:
    """Write mail to files in a fresh directory, as dev settings do (DEBUG stays off)."""
    settings.EMAIL_PROVIDER = "file"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    return tmp_path


@pytest.fixture
def mails(mail_dir: Path) -> Path:
    write_mails(receipt(1, hours_ago=3), receipt(2, hours_ago=2, to="bob@example.com"), rich_mail())
    return mail_dir


# list
# ------------------------------------------------------------------------------


def test_list_says_where_it_reads_and_shows_newest_first(mails):
    lines = mailbox("list").splitlines()

    assert lines[0] == f"3 message(s) in {mails} (EMAIL_FILE_PATH)"
    assert lines[1].split() == ["ID", "TIME", "FROM", "TO", "SUBJECT"]
    assert [line.split()[0] for line in lines[2:]] == [
        only_mail(RICH_SUBJECT).id,
        only_mail("Receipt #2").id,
        only_mail("Receipt #1").id,
    ]
    assert "2025-03-01 10:00:00  Shop <shop@acme.test>" in lines[3]
    assert lines[2].endswith(RICH_SUBJECT)


def test_list_searches_and_limits(mails):
    assert "bob@example.com" in mailbox("list", "--search", "BOB")
    assert "ann@example.com" not in mailbox("list", "--search", "BOB")

    lines = mailbox("list", "--search", "receipt", "--limit", "1").splitlines()

    assert lines[0] == f"2 message(s) matching 'receipt' in {mails} (EMAIL_FILE_PATH)"
    assert "Receipt #2" in lines[2]
    assert lines[3:] == ["… and 1 older (raise --limit to see them)"]


def test_list_of_an_empty_directory(mail_dir):
    assert mailbox("list") == f"0 message(s) in {mail_dir} (EMAIL_FILE_PATH)\n"


def test_limit_must_be_positive():
    assert positive_int("3") == 3
    for value in ("0", "-1", "x"):
        with pytest.raises(ArgumentTypeError):
            positive_int(value)


# show
# ------------------------------------------------------------------------------


def test_show_prints_headers_attachments_and_text(mails):
    output = mailbox("show", only_mail(RICH_SUBJECT).id)

    assert f"Subject: {RICH_SUBJECT}" in output
    assert "To: Zoë Dupont <zoe@example.fr>" in output
    assert "Cc: Support <support@acme.test>" in output
    logo = f"logo.gif (image/gif, {len(PIXEL)} bytes, inline as cid:logo@acme)"
    assert f"Attachment: {logo}\n" in output
    assert "Attachment: invoice 2025.pdf (application/pdf, 13 bytes)" in output
    assert output.endswith("\n\nBonjour Zoë,\nreset your password at https://acme.test/reset/abc\n")


def test_show_prints_one_part_or_the_source(mails):
    rich = only_mail(RICH_SUBJECT)

    assert mailbox("show", rich.id, "--html").startswith("<p>Bonjour Zoë</p>")
    assert mailbox("show", rich.id, "--text").startswith("Bonjour Zoë,\n")
    assert mailbox("show", rich.id, "--raw") == rich.raw.decode()


def test_show_refuses_a_missing_part_or_message(mails):
    with pytest.raises(CommandError, match="has no HTML part"):
        mailbox("show", only_mail("Receipt #1").id, "--html")
    with pytest.raises(CommandError, match=f"No message '../x.0' in {mails}"):
        mailbox("show", "../x.0")


# clear
# ------------------------------------------------------------------------------


def test_clear_with_yes_deletes_the_mail_files(mails):
    (mails / "notes.txt").write_text("keep me")

    assert mailbox("clear", "--yes") == f"Deleted 1 mail file(s) from {mails}.\n"
    assert [path.name for path in mails.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("answer", "deleted"), [("y", True), ("n", False), ("", False)])
def test_clear_asks_first(mails, monkeypatch, answer, deleted):
    monkeypatch.setattr("builtins.input", lambda question: answer)

    output = mailbox("clear")

    assert (output == "Nothing deleted.\n") is not deleted
    assert bool(list(mails.glob("*.log"))) is not deleted


def test_clear_without_a_terminal_deletes_nothing(mails, monkeypatch):
    def no_terminal(question: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", no_terminal)

    assert mailbox("clear") == "Nothing deleted.\n"
    assert len(list(mails.glob("*.log"))) == 1


# where mail goes
# ------------------------------------------------------------------------------


@pytest.mark.parametrize("subcommand", [["list"], ["show", "x.0"], ["clear", "--yes"]])
def test_refuses_when_mail_is_not_written_to_files(settings, mails, subcommand):
    settings.EMAIL_PROVIDER = "mailgun"

    message = "^EMAIL_PROVIDER is 'mailgun': mail is not written to files$"
    with pytest.raises(CommandError, match=message):
        mailbox(*subcommand)

    assert len(list(mails.glob("*.log"))) == 1


def test_refuses_without_email_file_path(settings):
    settings.EMAIL_PROVIDER = "file"
    del settings.EMAIL_FILE_PATH

    with pytest.raises(CommandError, match="EMAIL_FILE_PATH is not set"):
        mailbox("list")
