"""`manage.py suppression export|import`: our CSV out, ours and the ESPs' exports in."""

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from transactional.erasure import forget, placeholder_for
from transactional.models import Suppression, address_hash

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("suppression", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "list.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_bytes(tmp_path: Path, data: bytes, name: str = "list.csv") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def refusals(err: str) -> list[str]:
    """The per-row errors on standard error, without the file name in front."""
    return [line.split(": ", 1)[1] for line in err.splitlines() if not line.startswith("...")]


def listed() -> list[tuple[str, str, str]]:
    return list(Suppression.objects.order_by("address").values_list("address", "reason", "source"))


# Export
# ------------------------------------------------------------------------------


def test_export_writes_our_header_and_every_entry_oldest_first():
    Suppression.objects.create(
        address="b@example.com",
        reason="bounced",
        source="mailgun",
        created_at=datetime(2026, 3, 2, tzinfo=UTC),
    )
    Suppression.objects.create(
        address="a@example.com",
        reason="manual",
        source="admin",
        note="asked, by phone",
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
    )

    out, _ = run("export")

    assert list(csv.reader(io.StringIO(out))) == [
        ["address", "reason", "source", "created_at", "note", "address_hash", "stream"],
        [
            "a@example.com",
            "manual",
            "admin",
            "2026-03-01T00:00:00+00:00",
            "asked, by phone",
            "",
            "",
        ],
        ["b@example.com", "bounced", "mailgun", "2026-03-02T00:00:00+00:00", "", "", ""],
    ]


def test_export_writes_the_stream_of_an_entry_for_one_stream(settings):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    Suppression.objects.create(
        address="ann@example.com",
        reason="unsubscribed",
        stream="newsletter",
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
    )

    out, _ = run("export")

    assert list(csv.DictReader(io.StringIO(out))) == [
        {
            "address": "ann@example.com",
            "reason": "unsubscribed",
            "source": "",
            "created_at": "2026-03-01T00:00:00+00:00",
            "note": "",
            "address_hash": "",
            "stream": "newsletter",
        }
    ]


def test_export_filters_by_reason_and_writes_to_a_file(tmp_path):
    Suppression.objects.create(address="b@example.com", reason="bounced")
    Suppression.objects.create(address="c@example.com", reason="complained")
    Suppression.objects.create(address="m@example.com", reason="manual")
    target = tmp_path / "out.csv"

    _, err = run("export", "--output", str(target), "--reason", "bounced", "--reason", "complained")

    rows = list(csv.DictReader(target.open()))
    assert [row["address"] for row in rows] == ["b@example.com", "c@example.com"]
    assert "Wrote 2 suppression(s)" in err


def test_an_export_imports_back_unchanged(tmp_path, settings):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    Suppression.objects.create(
        address="a@example.com", reason="complained", source="sendgrid", note="spam"
    )
    Suppression.objects.create(address="b@example.com", reason="bounced", source="amazon_ses")
    Suppression.objects.create(
        address="b@example.com", reason="unsubscribed", source="unsubscribe", stream="newsletter"
    )
    fields = ("address", "stream", "reason", "source", "note", "created_at")
    exported, _ = run("export")
    before = list(Suppression.objects.order_by("address", "stream").values(*fields))
    Suppression.objects.all().delete()

    out, _ = run("import", write(tmp_path, exported))

    after = list(Suppression.objects.order_by("address", "stream").values(*fields))
    assert after == before
    assert "Added 3 address(es) from a transactional file" in out


# Import formats
# ------------------------------------------------------------------------------


def test_a_plain_address_list_without_a_header_uses_reason_and_source_options(tmp_path):
    path = write(tmp_path, "Ann@Example.com\nbob@example.com\n\n")

    run("import", path, "--reason", "unsubscribed", "--source", "old-crm")

    assert listed() == [
        ("ann@example.com", "unsubscribed", "old-crm"),
        ("bob@example.com", "unsubscribed", "old-crm"),
    ]


def test_a_one_column_list_with_a_header_skips_the_header(tmp_path):
    run("import", write(tmp_path, "Email Address\nann@example.com\n"))

    assert listed() == [("ann@example.com", "manual", "import")]


def test_a_sendgrid_bounce_export(tmp_path):
    path = write(
        tmp_path,
        'email,reason,status,created\nann@example.com,"550 5.1.1 unknown user",5.1.1,1741000000\n',
    )

    run("import", path, "--reason", "bounced")

    row = Suppression.objects.get()
    assert (row.address, row.reason, row.source, row.note) == (
        "ann@example.com",
        "bounced",
        "import",
        "550 5.1.1 unknown user",
    )
    assert row.created_at == datetime.fromtimestamp(1741000000, tz=UTC)


def test_a_sendgrid_spam_report_export(tmp_path):
    run(
        "import",
        write(tmp_path, "email,ip,created\nann@example.com,192.0.2.1,2025-03-03 11:06:40\n"),
        "--reason",
        "complained",
    )

    assert listed() == [("ann@example.com", "complained", "import")]


def test_a_mailgun_bounce_export(tmp_path):
    path = write(
        tmp_path,
        "address,code,error,created_at\n"
        'ann@example.com,550,"No such mailbox","Fri, 21 Oct 2011 11:02:55 UTC"\n',
    )

    run("import", path, "--reason", "bounced")

    row = Suppression.objects.get()
    assert (row.address, row.reason, row.note) == ("ann@example.com", "bounced", "No such mailbox")
    assert row.created_at == datetime(2011, 10, 21, 11, 2, 55, tzinfo=UTC)


def test_an_ses_account_suppression_list_maps_its_reasons(tmp_path):
    path = write(
        tmp_path,
        "EmailAddress,Reason,LastUpdateTime\n"
        "ann@example.com,BOUNCE,2025-01-07T10:00:00Z\nbob@example.com,COMPLAINT,2025-01-08T10:00:00Z\n",
    )

    run("import", path)

    assert listed() == [
        ("ann@example.com", "bounced", "import"),
        ("bob@example.com", "complained", "import"),
    ]


def test_a_byte_order_mark_does_not_hide_the_header(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffemail\r\nann@example.com\r\n".encode())

    run("import", str(path))

    assert listed() == [("ann@example.com", "manual", "import")]


def test_an_unknown_header_is_refused_before_anything_is_added(tmp_path):
    with pytest.raises(CommandError, match="Unrecognized CSV header 'name,phone'"):
        run("import", write(tmp_path, "name,phone\nAnn,555\n"))

    assert not Suppression.objects.exists()


def test_a_missing_file_is_named():
    with pytest.raises(CommandError, match="Cannot open /nonexistent.csv"):
        run("import", "/nonexistent.csv")


# Bad rows, repeats, progress
# ------------------------------------------------------------------------------


def test_bad_rows_are_reported_by_line_and_the_rest_imported(tmp_path):
    path = write(
        tmp_path,
        "address,reason,source,created_at,note\n"
        "ann@example.com,bounced,mailgun,2026-03-01T00:00:00+00:00,\n"
        "not-an-address,bounced,mailgun,,\n"
        'bob@example.com,bounced,mailgun,,"a note\nover two lines"\n'
        "carol@example.com,angry,admin,,\n"
        "dave@example.com,manual,admin,yesterday,\n"
        "forgotten:0123456789ab,manual,forget,,\n"
        "erin@example.com,manual,admin,,\n",
    )

    out, err = run("import", path)

    assert [line.split(": ", 1)[1] for line in err.splitlines()] == [
        "line 3: not an email address: 'not-an-address'",
        "line 6: unknown reason 'angry' "
        "(expected one of bounced, complained, unsubscribed, rejected, manual)",
        "line 7: unreadable date 'yesterday' (expected ISO 8601)",
        "line 8: 'forgotten:0123456789ab' is an erased address "
        "(only its hash was kept); it cannot be imported",
    ]
    assert [address for address, _, _ in listed()] == [
        "ann@example.com",
        "bob@example.com",
        "erin@example.com",
    ]
    assert (
        "Added 3 address(es) from a transactional file: 7 row(s), 0 already listed, 4 refused."
        in out
    )


def test_importing_twice_adds_nothing_the_second_time(tmp_path):
    path = write(tmp_path, "ann@example.com\nbob@example.com\nann@example.com\n")

    first, _ = run("import", path)
    second, _ = run("import", path)

    assert Suppression.objects.count() == 2
    assert "Added 2 address(es)" in first and "1 already listed" in first
    assert "Added 0 address(es)" in second and "3 already listed" in second


def test_an_address_already_listed_keeps_its_entry(tmp_path):
    Suppression.objects.create(address="ann@example.com", reason="complained", source="sendgrid")

    run("import", write(tmp_path, "ann@example.com\n"), "--reason", "manual")

    assert listed() == [("ann@example.com", "complained", "sendgrid")]


def test_an_erased_address_is_not_added_again_by_an_import(tmp_path):
    forget("ann@example.com")

    out, _ = run("import", write(tmp_path, "ann@example.com\n"))

    assert Suppression.objects.count() == 1
    assert "1 already listed" in out


def test_a_dry_run_counts_but_adds_nothing(tmp_path):
    Suppression.objects.create(address="ann@example.com")
    path = write(tmp_path, "ann@example.com\nbob@example.com\nbob@example.com\n")

    out, _ = run("import", path, "--dry-run")

    assert listed() == [("ann@example.com", "manual", "")]
    assert "Would add 1 address(es)" in out and "2 already listed" in out


def test_a_large_import_reports_progress_and_inserts_in_bulk(
    tmp_path, django_assert_max_num_queries
):
    path = write(tmp_path, "".join(f"user{n}@example.com\n" for n in range(2500)))

    # A lookup per 1000 rows, and inserts as large as SQLite's parameter limit allows.
    with django_assert_max_num_queries(30):
        _, err = run("import", path, "--progress-every", "1000")

    assert Suppression.objects.count() == 2500
    assert err.splitlines() == ["... 1000 rows read", "... 2000 rows read"]


def test_progress_every_must_be_positive(tmp_path):
    with pytest.raises(CommandError, match="expected a positive integer"):
        run("import", write(tmp_path, "a@example.com\n"), "--progress-every", "0")


# Erased addresses
# ------------------------------------------------------------------------------


def test_an_export_keeps_the_hash_of_an_erased_address_so_a_fresh_list_still_refuses_it(
    tmp_path,
):
    forget("ann@example.com")
    exported, _ = run("export")
    Suppression.objects.all().delete()

    out, err = run("import", write(tmp_path, exported))
    again, _ = run("import", write(tmp_path, "ann@example.com\n", name="again.csv"))

    row = Suppression.objects.get()
    assert (row.address, row.address_hash, row.source) == (
        placeholder_for("ann@example.com"),
        address_hash("ann@example.com"),
        "forget",
    )
    assert err == "" and "Added 1 address(es)" in out
    assert "Added 0 address(es)" in again and "1 already listed" in again


def test_an_old_export_without_the_hash_column_still_imports(tmp_path):
    path = write(tmp_path, "address,reason,source,created_at,note\nann@example.com,manual,x,,\n")

    run("import", path)

    assert listed() == [("ann@example.com", "manual", "x")]


# Streams
# ------------------------------------------------------------------------------

STREAM_HEADER = "address,reason,source,created_at,note,address_hash,stream\n"


def streams_listed() -> list[tuple[str, str]]:
    return list(Suppression.objects.order_by("address", "stream").values_list("address", "stream"))


def test_an_old_export_without_the_stream_column_imports_as_every_stream(tmp_path, settings):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    path = write(
        tmp_path,
        "address,reason,source,created_at,note,address_hash\nann@example.com,unsubscribed,x,,,\n",
    )

    run("import", path)

    assert streams_listed() == [("ann@example.com", "")]


def test_the_stream_column_is_read_back_and_an_unknown_stream_is_a_bad_row(tmp_path, settings):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    path = write(
        tmp_path,
        STREAM_HEADER
        + "ann@example.com,unsubscribed,x,,,,newsletter\n"
        + "bob@example.com,bounced,x,,,,\n"
        + "cy@example.com,unsubscribed,x,,,,promotions\n"
        + "dee@example.com,unsubscribed,x,,,,transactional\n",
    )

    out, err = run("import", path)

    assert refusals(err) == [
        "line 4: unknown stream 'promotions' (expected one of newsletter, transactional, "
        "or empty for every stream; see TRANSACTIONAL_STREAMS)"
    ]
    assert streams_listed() == [
        ("ann@example.com", "newsletter"),
        ("bob@example.com", ""),
        ("dee@example.com", "transactional"),
    ]
    assert "Added 3 address(es)" in out and "1 refused" in out


def test_a_row_for_one_stream_and_one_for_every_stream_of_one_address_are_both_kept(
    tmp_path, settings
):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    path = write(
        tmp_path,
        STREAM_HEADER
        + "ann@example.com,unsubscribed,x,,,,newsletter\n"
        + "ann@example.com,bounced,x,,,,\n",
    )

    dry, _ = run("import", path, "--dry-run")
    out, _ = run("import", path)

    assert streams_listed() == [("ann@example.com", ""), ("ann@example.com", "newsletter")]
    assert "Would add 2 address(es)" in dry and "Added 2 address(es)" in out


def test_a_dry_run_counts_a_row_for_every_stream_as_new_beside_one_for_a_stream(tmp_path, settings):
    settings.TRANSACTIONAL_STREAMS = ["newsletter"]
    Suppression.objects.create(
        address="ann@example.com", reason="unsubscribed", stream="newsletter"
    )
    Suppression.objects.create(address="bob@example.com", reason="bounced")
    path = write(
        tmp_path,
        STREAM_HEADER
        + "ann@example.com,bounced,x,,,,\n"  # new: the entry stops the newsletter only
        + "ann@example.com,unsubscribed,x,,,,newsletter\n"  # listed
        + "bob@example.com,unsubscribed,x,,,,newsletter\n",  # covered by every stream
    )

    dry, _ = run("import", path, "--dry-run")
    out, _ = run("import", path)

    assert "Would add 1 address(es)" in dry and "2 already listed" in dry
    assert "Added 1 address(es)" in out and "2 already listed" in out
    assert streams_listed() == [
        ("ann@example.com", ""),
        ("ann@example.com", "newsletter"),
        ("bob@example.com", ""),
    ]


def test_an_erased_row_needs_the_full_hash_of_its_placeholder(tmp_path):
    digest = address_hash("ann@example.com")
    placeholder = placeholder_for("ann@example.com")
    path = write(
        tmp_path,
        "address,reason,source,created_at,note,address_hash\n"
        f"{placeholder},manual,forget,,,\n"
        f"{placeholder},manual,forget,,,{digest[:40]}\n"
        f"{placeholder},manual,forget,,,{address_hash('bob@example.com')}\n",
    )

    out, err = run("import", path)

    assert refusals(err) == [
        f"line 2: {placeholder!r} is an erased address (only its hash was kept); "
        "it cannot be imported",
        f"line 3: malformed address_hash {digest[:40]!r} (expected 64 hex digits)",
        f"line 4: the address_hash does not belong to {placeholder!r}",
    ]
    assert not Suppression.objects.exists()


def test_an_erased_row_whose_address_is_listed_in_clear_keeps_that_entry(tmp_path):
    Suppression.objects.create(address="ann@example.com", reason="bounced", source="mailgun")
    path = write(
        tmp_path,
        "address,reason,source,created_at,note,address_hash\n"
        f"{placeholder_for('ann@example.com')},manual,forget,,,{address_hash('ann@example.com')}\n",
    )

    dry, _ = run("import", path, "--dry-run")
    out, _ = run("import", path)

    assert listed() == [("ann@example.com", "bounced", "mailgun")]
    assert "Would add 0 address(es)" in dry and "Added 0 address(es)" in out
    assert "1 already listed" in out


# Encodings
# ------------------------------------------------------------------------------


def test_a_row_that_is_not_utf8_is_reported_and_the_rest_imported(tmp_path):
    rows = [f"user{n}@example.com,ok\n".encode() for n in range(2500)]
    rows[1200] = b"l2@example.com,Bo\xeete pleine\n"  # Latin-1, in the middle of the file
    path = write_bytes(tmp_path, b"email,reason\n" + b"".join(rows))

    out, err = run("import", path)

    assert refusals(err) == ["line 1202: not UTF-8"]
    assert Suppression.objects.count() == 2499
    assert "Added 2499 address(es)" in out and "2500 row(s)" in out


def test_standard_input_is_read_like_a_file(monkeypatch):
    data = b"\xef\xbb\xbfemail\r\nann@example.com\r\nbj\xf6rn@example.com\r\nbob@example.com\r\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))

    out, err = run("import", "-")

    assert refusals(err) == ["line 3: not UTF-8"]
    assert [address for address, _, _ in listed()] == ["ann@example.com", "bob@example.com"]
    assert "from a SendGrid file" in out


def test_a_utf16_file_from_excel_is_read_as_utf16(tmp_path):
    text = "email\r\nann@example.com\r\nbob@b\u00fccher.example\r\n"
    path = write_bytes(tmp_path, text.encode("utf-16"))

    run("import", path)

    assert [address for address, _, _ in listed()] == [
        "ann@example.com",
        "bob@b\u00fccher.example",
    ]


def test_a_nul_character_is_a_bad_row(tmp_path):
    path = write(tmp_path, "email,reason\nann@example.com,a\x00b\nbob@example.com,ok\n")

    _, err = run("import", path)

    assert refusals(err) == ["line 2: contains a NUL character"]
    assert [address for address, _, _ in listed()] == ["bob@example.com"]


# Fields the csv module, Python or the database cannot hold
# ------------------------------------------------------------------------------


def test_a_field_over_the_csv_field_size_limit_is_a_bad_row(tmp_path):
    limit = csv.field_size_limit()
    path = write(
        tmp_path,
        "email,reason\nann@example.com,ok\n"
        f"bob@example.com,{'x' * (limit + 1)}\ncy@example.com,ok\n",
    )

    _, err = run("import", path)

    assert refusals(err) == [f"line 3: field larger than field limit ({limit})"]
    assert [address for address, _, _ in listed()] == ["ann@example.com", "cy@example.com"]


def test_an_esp_date_out_of_range_is_ignored_and_epoch_milliseconds_are_understood(tmp_path):
    path = write(
        tmp_path,
        "email,reason,status,created\n"
        "ann@example.com,r,5.0.0,99999999999999999999\n"
        "bob@example.com,r,5.0.0,1767225600000\n",
    )

    _, err = run("import", path)

    assert err == ""
    ann, bob = Suppression.objects.order_by("address")
    assert ann.created_at.year == datetime.now(tz=UTC).year
    assert bob.created_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_date_of_ours_the_database_cannot_store_is_a_bad_row(tmp_path):
    path = write(
        tmp_path,
        "address,reason,source,created_at,note\n"
        "ann@example.com,manual,x,0001-01-01T00:00:00+14:00,\n"
        "bob@example.com,manual,x,2026-01-01T09:00:00+09:00,\n",
    )

    _, err = run("import", path)

    assert refusals(err) == ["line 2: date out of range '0001-01-01T00:00:00+14:00'"]
    assert Suppression.objects.get().created_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_source_option_longer_than_the_field_is_refused_before_anything_is_imported(tmp_path):
    with pytest.raises(CommandError, match="at most 64 characters, got 65"):
        run("import", write(tmp_path, "ann@example.com\n"), "--source", "s" * 65)

    assert not Suppression.objects.exists()


def test_a_source_column_value_longer_than_the_field_is_a_bad_row(tmp_path):
    path = write(
        tmp_path,
        "address,reason,source,created_at,note\n"
        f"ann@example.com,manual,{'s' * 65},,\nbob@example.com,manual,{'s' * 64},,\n",
    )

    _, err = run("import", path)

    assert refusals(err) == ["line 2: source longer than 64 characters"]
    assert [address for address, _, _ in listed()] == ["bob@example.com"]


# Blank lines, headers, quotes
# ------------------------------------------------------------------------------


def test_leading_blank_lines_are_skipped(tmp_path):
    run("import", write(tmp_path, "\n  \nemail\n\nann@example.com\n"))

    assert listed() == [("ann@example.com", "manual", "import")]


def test_a_file_of_blank_lines_imports_nothing(tmp_path):
    out, _ = run("import", write(tmp_path, "\n\n\n"))

    assert "Added 0 address(es) from an empty file: 0 row(s)" in out


def test_a_first_line_that_is_neither_an_address_nor_a_known_header_is_a_bad_row(tmp_path):
    out, err = run("import", write(tmp_path, "ann.example.com\nbob@example.com\n"))

    assert refusals(err) == ["line 1: not an email address: 'ann.example.com'"]
    assert "Added 1 address(es) from an address list file: 2 row(s)" in out


def test_an_unterminated_quote_is_reported_with_the_lines_it_swallowed(tmp_path):
    path = write(
        tmp_path,
        'email,reason\nann@example.com,"oops\nbob@example.com,ok\ncy@example.com,ok\n',
    )

    _, err = run("import", path)

    assert refusals(err) == [
        "lines 2-4: a field runs over several lines (an unterminated quote?)"
    ]
    assert not Suppression.objects.exists()


def test_a_multi_line_smtp_reply_in_an_esp_export_is_a_note_not_an_error(tmp_path):
    path = write(
        tmp_path,
'address,code,error,created_at\n'
        'ann@example.com,550,"550-5.1.1 The email account does not exist.\n'
        '550 5.1.1 Please try double-checking the address.",Fri 14 Mar 2026 09:30:00 GMT\n'
        "bob@example.com,550,no such user,Fri 14 Mar 2026 09:31:00 GMT\n",
    )

    _, err = run("import", path)

    assert err == ""
    assert [address for address, _, _ in listed()] == ["ann@example.com", "bob@example.com"]
    assert Suppression.objects.get(address="ann@example.com").note.count("550") == 2
