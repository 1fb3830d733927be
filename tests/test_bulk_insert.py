"""transactional/bulk_insert.py: PreparedInsert (values converted ahead, duplicates
skipped) and insert() (the outbox's plain insert)."""

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.core import checks
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from transactional import db_limits
from transactional.bulk_insert import PreparedInsert, insert
from transactional.models import Event, Message, Recipient

pytestmark = pytest.mark.django_db

KEY = ("esp", "event_id", "address")
WHEN = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)


def event(event_id: str, address: str = "ann@example.com", **fields) -> Event:
    return Event(
        esp="sendgrid",
        event_id=event_id,
        address=address,
        event_type="delivered",
        timestamp=WHEN,
        **fields,
    )


@pytest.fixture
def two_rows_per_statement(monkeypatch) -> Iterator[None]:
    """Lower the database's own parameter limit so that a statement holds two Event rows."""
    width = len([f for f in Event._meta.concrete_fields if not f.primary_key])
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        before = connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 2 * width + 1)
        yield
        connection.connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, before)
    else:
        monkeypatch.setattr(db_limits, "POSTGRESQL_MAX_PARAMS", 2 * width + 1)
        yield


def test_inserts_the_new_rows_and_returns_them_with_their_keys_in_order():
    event("e2").save()
    rows = [event("e3", "bob@example.com"), event("e2"), event("e1"), event("e3")]

    inserted = PreparedInsert(rows, key=KEY).execute()

    assert inserted == [rows[0], rows[2], rows[3]]  # in the given order, not the insert's
    assert {row.pk: row.event_id for row in inserted} == dict(
        Event.objects.filter(pk__in=[row.pk for row in inserted]).values_list("pk", "event_id")
    )
    assert Event.objects.count() == 4
    assert rows[1].pk is None and rows[1]._state.adding


def test_a_row_repeated_within_the_batch_is_inserted_once():
    first, again = event("e1", description="first"), event("e1", description="again")

    inserted = PreparedInsert([first, again], key=KEY).execute()

    assert inserted == [first]
    assert Event.objects.get().description == "first"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="psycopg encodes JSON as it sends it")
def test_values_are_converted_when_prepared_not_when_executed():
    row = event("e1", raw={"sg_event_id": "e1", "nested": {"attempt": 1}}, tags=["receipt"])
    insert = PreparedInsert([row], key=KEY)
    row.raw["nested"]["attempt"] = 2  # too late: the JSON was encoded already

    insert.execute()

    stored = Event.objects.get()
    assert stored.raw == {"sg_event_id": "e1", "nested": {"attempt": 1}}
    assert stored.tags == ["receipt"] and stored.timestamp == WHEN


@pytest.mark.usefixtures("two_rows_per_statement")
def test_a_batch_over_the_parameter_limit_is_split_into_statements():
    rows = [event(f"e{n}") for n in range(5)]

    with CaptureQueriesContext(connection) as queries:
        inserted = PreparedInsert(rows, key=KEY).execute()

    assert len([q for q in queries if q["sql"].startswith("INSERT")]) == 3
    assert inserted == rows and Event.objects.count() == 5


def test_rows_are_inserted_in_key_order():
    """Concurrent inserts of overlapping rows then wait in one order instead of deadlocking."""
    rows = [event("e3"), event("e1", "bob@example.com"), event("e2"), event("e1")]

    PreparedInsert(rows, key=KEY).execute()

    by_id = Event.objects.order_by("pk").values_list("event_id", "address")
    assert list(by_id) == sorted((row.event_id, row.address) for row in rows)


def test_keys_must_be_text():
    with pytest.raises(ValueError, match="text fields only"):
        PreparedInsert([event("e1")], key=("esp", "timestamp"))


def test_nothing_to_insert_runs_no_query():
    with CaptureQueriesContext(connection) as queries:
        assert PreparedInsert([], key=KEY).execute() == []
    assert not queries


def test_insert_stores_the_rows_as_save_would_and_sets_their_keys():
    message = Message(
        from_email="Acme <shop@acme.test>", subject="Receipt", message_id="<1@acme.test>",
        payload={"body": "Paid", "headers": {"X-Order": "7"}}, size=120, next_attempt_at=WHEN,
    )
    insert([message])
    recipients = [Recipient(message=message, address=f"{name}@example.org", kind="to") for name in "abc"]
    insert(recipients)

    assert message.pk is not None and not message._state.adding
    stored = Message.objects.get(pk=message.pk)
    assert (stored.payload, stored.next_attempt_at, stored.status) == (message.payload, WHEN, "queued")
    assert stored.updated_at is not None  # auto_now, as save() sets it
    assert [(r.pk, r.address) for r in recipients] == list(
        message.recipients.order_by("pk").values_list("pk", "address")
    )


@pytest.mark.usefixtures("two_rows_per_statement")
def test_insert_splits_rows_over_the_parameter_limit_and_keeps_their_keys_in_order():
    rows = [event(f"e{n}") for n in range(5)]

    with CaptureQueriesContext(connection) as queries:
        insert(rows)

    assert len([q for q in queries if q["sql"].startswith("INSERT")]) == 3
    assert [(row.pk, row.event_id) for row in rows] == list(
        Event.objects.order_by("pk").values_list("pk", "event_id")
    )


def test_insert_raises_integrity_error_on_a_duplicate_as_save_would():
    event("e1").save()

    with pytest.raises(IntegrityError), transaction.atomic():
        insert([event("e1")])
    assert Event.objects.count() == 1  # the connection is still usable


def test_insert_of_nothing_runs_no_query():
    with CaptureQueriesContext(connection) as queries:
        insert([])
    assert not queries


@pytest.mark.skipif(connection.vendor != "sqlite", reason="checks the SQLite library")
def test_a_sqlite_too_old_for_insert_returning_fails_the_system_check(monkeypatch):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")

    errors = [e for e in checks.run_checks() if e.id == "transactional.E003"]

    assert len(errors) == 1 and "SQLite 3.31.1 is too old" in errors[0].msg


def test_a_current_sqlite_passes_the_system_check():
    assert not [e for e in checks.run_checks() if e.id == "transactional.E003"]
