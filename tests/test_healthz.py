"""GET /healthz: 200 while the database answers, 503 when it does not."""

import socket
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from tests.factories import make_message
from transactional import views
from transactional.models import Message

pytestmark = pytest.mark.django_db


def test_healthy_with_queue_figures(client):
    make_message(
        status=Message.Status.QUEUED, next_attempt_at=timezone.now() - timedelta(seconds=30)
    )
    make_message(status=Message.Status.SENT)

    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == body["database"] == "ok"
    assert body["queue"]["counts"]["queued"] == body["queue"]["counts"]["sent"] == 1
    assert body["queue"]["oldest_due_seconds"] >= 30


def test_is_never_cached(client):
    response = client.get("/healthz")

    assert "no-store" in response["Cache-Control"]


def test_answers_head_and_refuses_post(client):
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def test_is_cheap(client, django_assert_num_queries):
    for status in Message.Status.values:
        make_message(status=status)

    # SELECT 1, the counts by status, the oldest due message.
    with django_assert_num_queries(3):
        client.get("/healthz")


def test_a_lagging_queue_is_no_reason_for_a_503(client, settings):
    settings.TRANSACTIONAL_ALERT_OLDEST_DUE_SECONDS = 1
    make_message(status=Message.Status.QUEUED, next_attempt_at=timezone.now() - timedelta(days=1))

    assert client.get("/healthz").status_code == 200


def test_missing_queue_figures_are_no_reason_for_a_503(client):
    # A real failure, as before `migrate`; the test transaction rolls the rename back.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE transactional_message RENAME TO transactional_message_away")

    response = client.get("/healthz")

    assert response.status_code == 200
    assert set(response.json()["queue"]) == {"error"}


def test_unavailable_when_the_database_does_not_answer(client, monkeypatch):
    # The test itself runs in a transaction on the default connection, so that
    # connection cannot be broken. The view gets a second, real connection to a
    # database that is not there: the driver's own error, nothing faked.
    monkeypatch.setattr(views, "connection", unreachable_copy(connections["default"]))

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "OperationalError"}
    assert b"s3cret" not in response.content


def unreachable_copy(connection: BaseDatabaseWrapper) -> BaseDatabaseWrapper:
    """Return a connection like ``connection`` to a database that cannot be reached."""
    if connection.vendor == "sqlite":
        where = {"NAME": "/nonexistent/s3cret/app.sqlite3"}
    else:
        where = {"HOST": "127.0.0.1", "PORT": str(closed_port()), "PASSWORD": "s3cret"}
    return type(connection)({**connection.settings_dict, **where}, alias="unreachable")


def closed_port() -> int:
    """Return a loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
