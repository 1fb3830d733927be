"""What a scrape reads (gauges, rates, thresholds), what it costs, OpenTelemetry, the checks."""

import re
import secrets
import sys
from datetime import timedelta

import pytest
from django.core import checks
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.factories import make_message
from transactional.metrics import counters, increment, otel, snapshot
from transactional.metrics.counters import Key
from transactional.models import Message, ProviderState

pytestmark = pytest.mark.django_db

TOKEN = secrets.token_urlsafe(32)


def reading() -> dict[str, list]:
    """Return metric name -> its samples, as a scrape reads them now."""
    return {family.spec.name: family.samples for family in snapshot.collect()}


def values(samples: list) -> dict[tuple, float]:
    return {tuple(sorted(sample.labels.items())): sample.value for sample in samples}


def test_every_metric_is_reported_even_with_nothing_counted():
    read = reading()

    assert list(read) == [spec.name for spec in snapshot.SPECS]
    assert values(read["transactional_outbox_messages"]) == {
        (("status", "queued"),): 0, (("status", "retrying"),): 0, (("status", "sending"),): 0,
    }
    assert values(read["transactional_oldest_due_seconds"]) == {(): 0.0}
    assert read["transactional_bounce_rate"] == []  # no mail, no rate (rather than a healthy 0)


def test_the_outbox_gauges_count_unfinished_mail_and_the_oldest_due():
    now = timezone.now()
    make_message(status=Message.Status.QUEUED, next_attempt_at=now - timedelta(seconds=5), priority=0)
    make_message(status=Message.Status.QUEUED, next_attempt_at=now - timedelta(seconds=300), priority=2)
    make_message(status=Message.Status.RETRYING, next_attempt_at=now + timedelta(minutes=5))  # not due
    make_message(status=Message.Status.SENDING)
    make_message(status=Message.Status.SENT)

    read = reading()

    assert values(read["transactional_outbox_messages"]) == {
        (("status", "queued"),): 2, (("status", "retrying"),): 1, (("status", "sending"),): 1,
    }
    # The low-priority message has waited longest, whatever the claim order.
    assert 300 <= values(read["transactional_oldest_due_seconds"])[()] < 330


def test_rates_per_provider_over_the_window_with_the_thresholds(settings):
    settings.TRANSACTIONAL_METRICS_RATE_DAYS = 7
    settings.TRANSACTIONAL_BOUNCE_RATE_REVIEW = 0.04
    increment({
        Key(counters.RECIPIENTS_SENT, "ses", "transactional"): 150,
        Key(counters.RECIPIENTS_SENT, "ses", "newsletter"): 50,
        Key(counters.HARD_BOUNCES, esp="amazon_ses"): 12,
        Key(counters.COMPLAINTS, esp="amazon_ses"): 1,
        Key(counters.RECIPIENTS_SENT, "smtp", "transactional"): 10,  # no ESP events: no rate
    })
    # Eight days ago: outside the window, still in the totals.
    old = counters.utc_today() - timedelta(days=7)
    counters._upsert([(Key(counters.RECIPIENTS_SENT, "ses", "transactional"), old, 0, 800)])

    read = reading()

    assert values(read["transactional_rate_window_recipients_sent"]) == {(("provider", "ses"),): 200}
    assert values(read["transactional_bounce_rate"]) == {(("provider", "ses"),): 0.06}
    assert values(read["transactional_complaint_rate"]) == {(("provider", "ses"),): 0.005}
    assert values(read["transactional_bounce_rate_threshold"]) == {
        (("level", "review"),): 0.04, (("level", "pause"),): 0.10,
    }
    assert values(read["transactional_complaint_rate_threshold"]) == {
        (("level", "review"),): 0.001, (("level", "pause"),): 0.005,
    }
    assert values(read["transactional_rate_window_days"]) == {(): 7}
    assert values(read["transactional_recipients_sent"])[(("provider", "ses"), ("stream", "transactional"))] == 950


def test_the_lag_histogram_is_cumulative():
    increment({
        Key(counters.WEBHOOK_LAG, esp="mailgun", label="1"): 3,
        Key(counters.WEBHOOK_LAG, esp="mailgun", label="60"): 2,
        Key(counters.WEBHOOK_LAG, esp="mailgun", label="+Inf"): 1,
        Key(counters.WEBHOOK_LAG_MS, esp="mailgun"): 200_500,
    })

    [histogram] = reading()["transactional_webhook_lag_seconds"]

    assert histogram.labels == {"esp": "mailgun"}
    assert dict(histogram.buckets) == {
        "1": 3, "5": 3, "15": 3, "60": 5, "300": 5, "900": 5, "3600": 5, "14400": 5, "86400": 5, "+Inf": 6,
    }
    assert histogram.total == 200.5


def test_circuit_breakers_report_their_state(settings):
    settings.TRANSACTIONAL_PROVIDERS = {
        "ses": "anymail.backends.amazon_ses.EmailBackend",
        "mailgun": "anymail.backends.mailgun.EmailBackend",
    }
    ProviderState.objects.create(provider="ses", state=ProviderState.State.OPEN)

    states = values(reading()["transactional_circuit_breaker_state"])

    assert {labels for labels, on in states.items() if on} == {
        (("provider", "ses"), ("state", "open")), (("provider", "mailgun"), ("state", "closed")),
    }
    assert len(states) == 6


def test_a_scrape_costs_the_same_few_queries_however_much_mail_there_is(django_assert_num_queries):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            snapshot.collect()
        return len(captured)

    empty = queries()
    for status in Message.Status.values:
        make_message(status=status)
    increment({Key(counters.MESSAGES, "ses", f"s{n}", label="sent"): 1 for n in range(30)})

    # Compaction check, counters, unfinished counts, one seek per priority, breakers.
    assert queries() == empty == 7


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's plans; PostgreSQL's: scripts/bench_metrics.py")
def test_no_query_of_a_scrape_scans_the_messages_table():
    for status in Message.Status.values:
        make_message(status=status)
    with CaptureQueriesContext(connection) as captured:
        snapshot.collect()

    plans = []
    with connection.cursor() as cursor:
        for query in captured:
            cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
            plans.append(" / ".join(row[-1] for row in cursor.fetchall()))
    for query, plan in zip(captured, plans, strict=True):
        # SQLite says "SCAN <table>" for a full scan, "SEARCH ... USING INDEX" for a range.
        assert not re.search(r"\bSCAN transactional_message\b", plan), (query["sql"], plan)
    # The oldest due message: a seek per priority into the partial due index.
    assert sum("USING INDEX message_due_priority_idx (priority=? AND next_attempt_at<?)" in p for p in plans) == 3


# OpenTelemetry
# ------------------------------------------------------------------------------


@pytest.fixture
def otel_reader():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider
    provider.shutdown()


def otel_points(reader) -> dict[str, dict[tuple, float]]:
    data = reader.get_metrics_data()
    return {
        metric.name: {tuple(sorted(point.attributes.items())): point.value for point in metric.data.data_points}
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def test_opentelemetry_reports_the_same_numbers(otel_reader):
    reader, provider = otel_reader
    otel.register(provider)
    make_message(status=Message.Status.QUEUED, next_attempt_at=timezone.now() - timedelta(seconds=60))
    increment({
        Key(counters.MESSAGES, "ses", "transactional", label="sent"): 7,
        Key(counters.RECIPIENTS_SENT, "ses", "transactional"): 10,
        Key(counters.HARD_BOUNCES, esp="amazon_ses"): 1,
        Key(counters.WEBHOOK_LAG, esp="amazon_ses", label="5"): 2,
        Key(counters.WEBHOOK_LAG_MS, esp="amazon_ses"): 4000,
    })

    points = otel_points(reader)

    sent = (("provider", "ses"), ("status", "sent"), ("stream", "transactional"))
    assert points["transactional_messages"][sent] == 7
    assert points["transactional_bounce_rate"] == {(("provider", "ses"),): 0.1}
    assert points["transactional_outbox_messages"][(("status", "queued"),)] == 1
    assert points["transactional_oldest_due_seconds"][()] >= 60
    assert points["transactional_webhook_lag_seconds_bucket"][(("esp", "amazon_ses"), ("le", "5"))] == 2
    assert points["transactional_webhook_lag_seconds_count"] == {(("esp", "amazon_ses"),): 2}
    assert points["transactional_webhook_lag_seconds_sum"] == {(("esp", "amazon_ses"),): 4.0}
    # Every metric with a value; counters nothing has added to have no points yet.
    assert set(points) == {
        spec.name for spec in snapshot.SPECS if spec.kind == "gauge"
    } | {
        "transactional_messages", "transactional_recipients_sent", "transactional_hard_bounces",
        "transactional_webhook_lag_seconds_bucket", "transactional_webhook_lag_seconds_count",
        "transactional_webhook_lag_seconds_sum",
    }


def test_one_database_reading_serves_every_instrument_of_a_collection(otel_reader):
    reader, provider = otel_reader
    otel.register(provider)

    with CaptureQueriesContext(connection) as captured:
        otel_points(reader)

    assert len(captured) == 7  # the queries of one snapshot.collect(), not one set per instrument


def test_installed_only_when_the_setting_asks(otel_reader, settings, monkeypatch):
    reader, provider = otel_reader
    monkeypatch.setattr(otel, "_installed", False)  # ready() ran with the setting off

    assert otel.install_from_settings(provider) is False
    settings.TRANSACTIONAL_METRICS_OTEL = True
    assert otel.install_from_settings(provider) is True
    assert otel.install_from_settings(provider) is True  # once only
    assert "transactional_outbox_messages" in otel_points(reader)


def test_without_opentelemetry_it_warns_instead_of_failing(settings, monkeypatch, caplog):
    monkeypatch.setattr(otel, "_installed", False)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    settings.TRANSACTIONAL_METRICS_OTEL = True

    assert otel.install_from_settings() is False
    assert "opentelemetry-api is not installed" in caplog.text
    assert [m.id for m in run_checks()] == ["transactional.W030"]


# System checks
# ------------------------------------------------------------------------------


def run_checks() -> list[checks.CheckMessage]:
    return [m for m in checks.run_checks() if m.id and m.id.startswith(("transactional.E03", "transactional.W03"))]


def test_a_good_token_and_the_defaults_pass(settings):
    settings.TRANSACTIONAL_METRICS_TOKEN = f"{TOKEN} {secrets.token_urlsafe(40)}"
    assert run_checks() == []


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("short-token", "is 11 characters long"),
        (f"{TOKEN} short", "token 2 of 2 is 5 characters long"),
        ("é" * 40, "characters a Bearer header cannot carry"),
        (12345, "must be a string"),
    ],
)
def test_a_bad_token_is_an_error(settings, token, says):
    settings.TRANSACTIONAL_METRICS_TOKEN = token

    [message] = run_checks()

    assert (message.id, message.level) == ("transactional.E030", checks.ERROR)
    assert says in message.msg


@pytest.mark.parametrize("days", [0, 32, "7", True, 1.5])
def test_a_bad_rate_window_is_an_error(settings, days):
    settings.TRANSACTIONAL_METRICS_RATE_DAYS = days

    [message] = run_checks()

    assert message.id == "transactional.E031"
    assert "from 1 to 31" in message.msg
