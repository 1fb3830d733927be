"""TRANSACTIONAL_RETENTION: parsing, the ages in effect, and the checks that refuse bad ones."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from transactional import retention
from transactional.retention import describe, parse_retention, policy, purge_schedule

ROOT = Path(__file__).resolve().parent.parent
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def no_retention_settings(settings):
    """Start from the defaults, whatever a test before set."""
    for name in ("TRANSACTIONAL_RETENTION", *retention.DEPRECATED_DAYS):
        if hasattr(settings, name):
            delattr(settings, name)


def ids(found: list[checks.CheckMessage]) -> list[str]:
    return [message.id for message in found if message.id.startswith("transactional.")]


# parse_retention
# ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, ages",
    [
        ("bodies=30d", {"bodies": 30 * DAY}),
        ("bodies=36h,attempts=8w", {"bodies": timedelta(hours=36), "attempts": timedelta(weeks=8)}),
        (" Bodies = 30D , events=off, task_results=forever,", {"bodies": 30 * DAY, "events": None,
                                                              "task_results": None}),
        ("messages=365d,bodies=365d,attempts=365d", {"messages": 365 * DAY, "bodies": 365 * DAY,
                                                    "attempts": 365 * DAY}),
        # off: a body lives as long as its message, whatever the messages age.
        ("messages=30d,bodies=off", {"messages": 30 * DAY, "bodies": None}),
        # Events are not part of a message: any age goes.
        ("messages=30d,events=400d", {"messages": 30 * DAY, "events": 400 * DAY}),
        ("bodies=1h", {"bodies": timedelta(hours=1)}),
        ("messages=36500d", {"messages": 36500 * DAY}),
    ],
)
def test_parse_reads_class_equals_age(text, ages):
    assert parse_retention(text) == ages


@pytest.mark.parametrize(
    "text, error",
    [
        ("bodys=30d", "TRANSACTIONAL_RETENTION names 'bodys', which is not a data class; choose "
                      "among messages, bodies, attempts, events, task_results."),
        ("bodies", "TRANSACTIONAL_RETENTION has 'bodies'; write class=age"),
        ("30d", "TRANSACTIONAL_RETENTION has '30d'; write class=age"),
        ("bodies=30", "TRANSACTIONAL_RETENTION has 'bodies=30'; write class=age"),
        ("bodies=30s", "TRANSACTIONAL_RETENTION has 'bodies=30s'; write class=age"),
        ("bodies=1y", "TRANSACTIONAL_RETENTION has 'bodies=1y'; write class=age"),
        ("bodies=1.5d", "TRANSACTIONAL_RETENTION has 'bodies=1.5d'; write class=age"),
        ("bodies=-3d", "TRANSACTIONAL_RETENTION has 'bodies=-3d'; write class=age"),
        ("bodies=", "TRANSACTIONAL_RETENTION has 'bodies='; write class=age"),
        ("bodies=never", "TRANSACTIONAL_RETENTION has 'bodies=never'; write class=age"),
        ("bodies=6m", "'m' could mean minutes or months, so write days (180d)"),
        ("bodies=90min", "'m' could mean minutes or months"),
        ("bodies=0d", "TRANSACTIONAL_RETENTION has 'bodies=0d'; an age is at least 1h"),
        ("bodies=0h", "an age is at least 1h and at most 100 years (write off"),
        ("messages=36501d", "TRANSACTIONAL_RETENTION has 'messages=36501d'; an age is at least 1h "
                            "and at most 100 years"),
        ("messages=999999w", "at most 100 years"),
        ("messages=9999999999d", "write class=age"),
        ("bodies=30d,bodies=10d", "TRANSACTIONAL_RETENTION names 'bodies' twice."),
        ("bodies=30d,BODIES=10d", "TRANSACTIONAL_RETENTION names 'bodies' twice."),
        ("messages=30d,bodies=90d", "TRANSACTIONAL_RETENTION keeps bodies (90d) longer than "
                                    "messages (30d), but deleting a message deletes its bodies "
                                    "too; give bodies at most 30d, or off"),
        ("attempts=31d,messages=30d", "keeps attempts (31d) longer than messages (30d)"),
    ],
)
def test_parse_refuses_anything_else_naming_the_entry(text, error):
    with pytest.raises(ImproperlyConfigured) as raised:
        parse_retention(text)

    assert error in str(raised.value)


def test_parse_of_nothing_changes_nothing():
    assert parse_retention(" , ") == {}


@pytest.mark.parametrize(
    "age, text", [(30 * DAY, "30d"), (timedelta(hours=36), "36h"), (None, "off"),
                  (timedelta(hours=1, minutes=30), "1:30:00")],
)
def test_describe_writes_an_age_as_the_setting_would(age, text):
    assert describe(age) == text


# policy(): the ages in effect
# ------------------------------------------------------------------------------


def test_the_defaults():
    assert policy() == {
        "messages": 365 * DAY,
        "bodies": 30 * DAY,
        "attempts": 90 * DAY,
        "events": 400 * DAY,
        "task_results": 7 * DAY,
    }


def test_the_classes_a_string_leaves_out_keep_their_defaults(settings):
    settings.TRANSACTIONAL_RETENTION = "bodies=7d,events=off"

    assert policy() == {
        "messages": 365 * DAY, "bodies": 7 * DAY, "attempts": 90 * DAY, "events": None,
        "task_results": 7 * DAY,
    }


def test_a_python_dict_of_timedeltas_strings_and_none(settings):
    settings.TRANSACTIONAL_RETENTION = {
        "bodies": timedelta(days=3), "attempts": "2w", "events": None,
    }

    ages = policy()

    assert (ages["bodies"], ages["attempts"], ages["events"]) == (3 * DAY, 14 * DAY, None)


@pytest.mark.parametrize(
    "value, error",
    [
        (["bodies=30d"], "TRANSACTIONAL_RETENTION must be a string like 'bodies=30d,events=400d' "
                         "or a dict of class -> age, not list."),
        (30, "must be a string like"),
        ({"bodies": 30}, "TRANSACTIONAL_RETENTION has bodies=30; give a timedelta or a string "
                         "such as '30d' (a bare number has no unit)"),
        ({"bodies": 2.5}, "a bare number has no unit"),
        ({"bodies": True}, "a bare number has no unit"),
        ({"bodies": timedelta(0)}, "an age is at least 1h"),
        ({"bodies": timedelta(days=-30)}, "an age is at least 1h"),
        ({"bodies": timedelta(minutes=59)}, "an age is at least 1h"),
        ({"bodies": timedelta.max}, "at most 100 years"),
        ({"body": "30d"}, "names 'body', which is not a data class"),
        ({"messages": timedelta(days=10), "attempts": "11d"}, "keeps attempts (11d) longer than "
                                                              "messages (10d)"),
        ("bodies=30d;events=1d", "TRANSACTIONAL_RETENTION has 'bodies=30d;events=1d'"),
    ],
)
def test_a_bad_python_value_is_refused(settings, value, error):
    settings.TRANSACTIONAL_RETENTION = value

    with pytest.raises(ImproperlyConfigured) as raised:
        policy()

    assert error in str(raised.value)


def test_the_deprecated_day_settings_still_set_their_classes(settings):
    settings.TRANSACTIONAL_BODY_RETENTION_DAYS = 10
    settings.TRANSACTIONAL_METADATA_RETENTION_DAYS = 200
    settings.TRANSACTIONAL_TASK_RESULT_RETENTION_DAYS = 2

    assert policy() == {
        # METADATA covered messages, their attempts and events, as it always did.
        "messages": 200 * DAY, "bodies": 10 * DAY, "attempts": 200 * DAY, "events": 200 * DAY,
        "task_results": 2 * DAY,
    }


def test_transactional_retention_wins_over_a_deprecated_setting(settings):
    settings.TRANSACTIONAL_METADATA_RETENTION_DAYS = 200
    settings.TRANSACTIONAL_RETENTION = "events=400d,attempts=30d"

    ages = policy()

    assert (ages["messages"], ages["attempts"], ages["events"]) == (200 * DAY, 30 * DAY, 400 * DAY)


def test_a_deprecated_setting_with_bodies_longer_than_messages_still_works(settings):
    # Accepted before: the message's deletion takes its body along.
    settings.TRANSACTIONAL_BODY_RETENTION_DAYS = 400
    settings.TRANSACTIONAL_METADATA_RETENTION_DAYS = 365

    assert policy()["bodies"] == 400 * DAY


@pytest.mark.parametrize("days", [0, -5, True, "30", float("nan"), float("inf"), 36501])
def test_a_bad_deprecated_setting_is_refused_by_name(settings, days):
    settings.TRANSACTIONAL_BODY_RETENTION_DAYS = days

    with pytest.raises(ImproperlyConfigured) as raised:
        policy()

    assert str(raised.value).startswith(
        f"TRANSACTIONAL_BODY_RETENTION_DAYS is {days!r}; give a number of days"
    )


def test_a_fractional_deprecated_setting_still_works(settings):
    settings.TRANSACTIONAL_BODY_RETENTION_DAYS = 0.5

    assert policy()["bodies"] == timedelta(hours=12)


# purge_schedule()
# ------------------------------------------------------------------------------


def test_the_purge_schedule_defaults():
    assert purge_schedule() == (3600.0, 10.0)


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("INTERVAL", -1, "TRANSACTIONAL_PURGE_INTERVAL_SECONDS is -1; give a number of seconds (0: "
                         "the sweep never purges)."),
        ("INTERVAL", "3600", "TRANSACTIONAL_PURGE_INTERVAL_SECONDS is '3600'"),
        ("INTERVAL", float("nan"), "TRANSACTIONAL_PURGE_INTERVAL_SECONDS is nan"),
        ("MAX", 0, "TRANSACTIONAL_PURGE_MAX_SECONDS is 0; give a number of seconds, above 0."),
        ("MAX", None, "TRANSACTIONAL_PURGE_MAX_SECONDS is None"),
        ("MAX", float("inf"), "TRANSACTIONAL_PURGE_MAX_SECONDS is inf"),
    ],
)
def test_a_bad_purge_schedule_is_refused(settings, name, value, error):
    setattr(settings, f"TRANSACTIONAL_PURGE_{name}_SECONDS", value)

    with pytest.raises(ImproperlyConfigured) as raised:
        purge_schedule()

    assert str(raised.value).startswith(error)


# System checks
# ------------------------------------------------------------------------------


def test_the_defaults_pass_the_checks():
    assert not {"transactional.E020", "transactional.W020"} & set(ids(checks.run_checks()))


def test_a_bad_python_value_is_a_check_error(settings):
    settings.TRANSACTIONAL_RETENTION = {"bodies": 30}
    settings.TRANSACTIONAL_PURGE_MAX_SECONDS = 0

    found = [m for m in checks.run_checks() if m.id == "transactional.E020"]

    assert [m.level for m in found] == [checks.ERROR, checks.ERROR]
    assert found[0].msg.startswith("TRANSACTIONAL_RETENTION has bodies=30;")
    assert found[1].msg.startswith("TRANSACTIONAL_PURGE_MAX_SECONDS is 0;")


def test_a_deprecated_setting_is_a_check_warning_with_its_replacement(settings):
    settings.TRANSACTIONAL_METADATA_RETENTION_DAYS = 200

    [warning] = [m for m in checks.run_checks() if m.id == "transactional.W020"]

    assert warning.msg == (
        "TRANSACTIONAL_METADATA_RETENTION_DAYS is deprecated; it still sets messages, attempts, "
        "events where TRANSACTIONAL_RETENTION does not name them."
    )
    assert warning.hint.startswith(
        'Write TRANSACTIONAL_RETENTION = "messages=200d,attempts=200d,events=200d" instead'
    )


def test_the_deprecation_hint_writes_a_fraction_of_a_day_in_hours(settings):
    settings.TRANSACTIONAL_BODY_RETENTION_DAYS = 0.5

    [warning] = [m for m in checks.run_checks() if m.id == "transactional.W020"]

    assert warning.hint.startswith('Write TRANSACTIONAL_RETENTION = "bodies=12h" instead')


# Settings: the environment variable, at start-up
# ------------------------------------------------------------------------------


def settings_of(retention_env: str) -> subprocess.CompletedProcess:
    """Load the dev settings in a fresh interpreter with TRANSACTIONAL_RETENTION set."""
    environ = {"PATH": os.environ["PATH"], "TRANSACTIONAL_RETENTION": retention_env,
               "DJANGO_SETTINGS_MODULE": "settings.dev"}
    script = "from django.conf import settings; print(repr(settings.TRANSACTIONAL_RETENTION))"
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environ, capture_output=True, text=True,
        timeout=60,
    )


def test_the_environment_variable_is_parsed_at_start_up():
    result = settings_of("bodies=7d, events=off")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'bodies': datetime.timedelta(days=7), 'events': None}"


def test_a_hostile_environment_variable_stops_start_up():
    result = settings_of("bodies=0d")

    assert result.returncode != 0
    assert ("ImproperlyConfigured: TRANSACTIONAL_RETENTION has 'bodies=0d'; an age is at least 1h"
            in result.stderr)

