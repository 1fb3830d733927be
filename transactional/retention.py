"""How long each data class is kept: TRANSACTIONAL_RETENTION, parsed and checked.

``messages=365d,bodies=30d,attempts=90d,events=400d,task_results=7d`` (the
defaults); ``off`` (or ``forever``) keeps a class forever. operations.purge()
applies it; docs/configuration.md, "Retention", describes each class.

Imports no models: settings/base.py parses the environment variable with
``parse_retention()`` before any app is loaded.
"""

import re
from collections.abc import Mapping
from datetime import timedelta
from numbers import Real
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .conf import DEFAULTS, get_setting

SETTING = "TRANSACTIONAL_RETENTION"

#: The data classes, in the order operations.purge() handles them.
CLASSES = ("messages", "bodies", "attempts", "events", "task_results")
#: Classes deleted with their message, so never kept longer than it.
PARTS_OF_A_MESSAGE = ("bodies", "attempts")

#: The deprecated settings (whole days) and the classes each still sets.
DEPRECATED_DAYS = {
    "TRANSACTIONAL_BODY_RETENTION_DAYS": ("bodies",),
    "TRANSACTIONAL_METADATA_RETENTION_DAYS": ("messages", "attempts", "events"),
    "TRANSACTIONAL_TASK_RESULT_RETENTION_DAYS": ("task_results",),
}

FOREVER = frozenset({"off", "forever"})
AGE = re.compile(r"([0-9]{1,6})([hdw])")
UNITS = {"h": "hours", "d": "days", "w": "weeks"}
#: Below an hour an age is a unit mistake; the sweep purges hourly anyway.
SHORTEST = timedelta(hours=1)
#: Longer is "forever" in disguise, and ``now - age`` must stay a date.
LONGEST = timedelta(days=100 * 365)

Ages = dict[str, timedelta | None]

_HOW = (
    "write class=age, e.g. bodies=30d,events=400d: a whole number of hours, days or weeks "
    "(36h, 30d, 8w), or off to keep the class forever"
)


def parse_retention(value: str) -> Ages:
    """Parse ``bodies=30d,events=off`` into class -> age (None: kept forever)."""
    entries: dict[str, Any] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, equals, age = (part.strip() for part in item.partition("="))
        if not equals:
            raise ImproperlyConfigured(f"{SETTING} has {item!r}; {_HOW}.")
        name = name.lower()
        if name in entries:
            raise ImproperlyConfigured(f"{SETTING} names {name!r} twice.")
        entries[name] = age
    return validate(entries)


def validate(entries: Mapping[Any, Any]) -> Ages:
    """Check class -> age (``"30d"``, a timedelta, ``None``/``"off"``); return the ages."""
    ages: Ages = {}
    for name, age in entries.items():
        if name not in CLASSES:
            raise ImproperlyConfigured(
                f"{SETTING} names {name!r}, which is not a data class; "
                f"choose among {', '.join(CLASSES)}."
            )
        ages[name] = _age(name, age)
    for part in PARTS_OF_A_MESSAGE:
        mine, whole = ages.get(part), ages.get("messages")
        if mine is not None and whole is not None and mine > whole:
            # Deleting a message deletes its body and attempts: the longer age
            # would be a promise the purge cannot keep.
            raise ImproperlyConfigured(
                f"{SETTING} keeps {part} ({describe(mine)}) longer than messages "
                f"({describe(whole)}), but deleting a message deletes its {part} too; give "
                f"{part} at most {describe(whole)}, or off to keep them as long as their message."
            )
    return ages


def _age(name: str, age: Any) -> timedelta | None:
    """Return ``age`` as a timedelta (None: forever), or raise naming the entry."""
    entry = repr(f"{name}={age}") if isinstance(age, str) else f"{name}={age!r}"
    if age is None or (isinstance(age, str) and age.strip().lower() in FOREVER):
        return None
    if isinstance(age, str):
        match = AGE.fullmatch(age.strip().lower())
        if match is None:
            months = re.fullmatch(r"\s*[0-9]+\s*(m|mo|min|mins|month|months)\s*", age, re.I)
            hint = "; 'm' could mean minutes or months, so write days (180d)" if months else ""
            raise ImproperlyConfigured(f"{SETTING} has {entry}; {_HOW}{hint}.")
        amount, unit = match.groups()
        age = timedelta(**{UNITS[unit]: int(amount)})
    elif not isinstance(age, timedelta):
        # A bare number is ambiguous: days to one reader, seconds to another.
        raise ImproperlyConfigured(
            f"{SETTING} has {entry}; give a timedelta or a string such as '30d' (a bare "
            "number has no unit), or None or 'off' to keep the class forever."
        )
    if not SHORTEST <= age <= LONGEST:
        # 0 means "keep forever" in some tools and "delete at once" in others.
        raise ImproperlyConfigured(
            f"{SETTING} has {entry}; an age is at least 1h and at most 100 years "
            "(write off to keep the class forever)."
        )
    return age


def policy() -> Ages:
    """Return every class's age from settings: TRANSACTIONAL_RETENTION, old settings, defaults.

    A class TRANSACTIONAL_RETENTION leaves out keeps the deprecated
    ``TRANSACTIONAL_*_RETENTION_DAYS`` setting that covered it, if set, else its default.
    """
    configured = getattr(settings, SETTING, None)
    if configured is None:
        configured = {}
    elif isinstance(configured, str):
        configured = parse_retention(configured)
    elif not isinstance(configured, Mapping):
        raise ImproperlyConfigured(
            f"{SETTING} must be a string like 'bodies=30d,events=400d' or a dict of class -> "
            f"age, not {type(configured).__name__}."
        )
    ages = validate(DEFAULTS["RETENTION"]) | _deprecated_ages() | validate(configured)
    return {name: ages[name] for name in CLASSES}


def _deprecated_ages() -> Ages:
    """Return the ages the deprecated whole-day settings still set."""
    ages: Ages = {}
    for setting, classes in DEPRECATED_DAYS.items():
        days = getattr(settings, setting, None)
        if days is None:
            continue
        if not _days(days):
            raise ImproperlyConfigured(
                f"{setting} is {days!r}; give a number of days, at least 1 hour's worth and at "
                f"most 100 years (or set {SETTING} instead, where off keeps a class forever)."
            )
        ages |= {name: timedelta(days=days) for name in classes}
    return ages


def _days(value: Any) -> bool:
    """Is ``value`` a number of days an age may be?"""
    number = isinstance(value, Real) and not isinstance(value, bool)
    return number and SHORTEST / timedelta(days=1) <= value <= LONGEST.days


def _seconds(value: Any) -> bool:
    """Is ``value`` a finite number (a bool is not)?"""
    return isinstance(value, Real) and not isinstance(value, bool) and abs(value) < 10**9


def purge_schedule() -> tuple[float, float]:
    """Return (TRANSACTIONAL_PURGE_INTERVAL_SECONDS, TRANSACTIONAL_PURGE_MAX_SECONDS), checked."""
    interval, budget = get_setting("PURGE_INTERVAL_SECONDS"), get_setting("PURGE_MAX_SECONDS")
    if not _seconds(interval) or interval < 0:
        raise ImproperlyConfigured(
            f"TRANSACTIONAL_PURGE_INTERVAL_SECONDS is {interval!r}; give a number of seconds "
            "(0: the sweep never purges)."
        )
    if not _seconds(budget) or budget <= 0:
        raise ImproperlyConfigured(
            f"TRANSACTIONAL_PURGE_MAX_SECONDS is {budget!r}; give a number of seconds, above 0."
        )
    return float(interval), float(budget)


def describe(age: timedelta | None) -> str:
    """Write ``age`` as the setting would: ``30d``, ``36h``, ``off``."""
    if age is None:
        return "off"
    if age % timedelta(days=1) == timedelta(0):
        return f"{age.days}d"
    if age % timedelta(hours=1) == timedelta(0):
        return f"{int(age.total_seconds() // 3600)}h"
    return str(age)


# System checks
# ------------------------------------------------------------------------------
# Registered on import: settings/base.py and operations.py import this module.


@checks.register(checks.Tags.compatibility)
def check_retention(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Report retention settings every purge (and the sweep's) would refuse."""
    errors = []
    for read in (policy, purge_schedule):
        try:
            read()
        except ImproperlyConfigured as error:
            errors.append(checks.Error(str(error), id="transactional.E020"))
    return errors


@checks.register(checks.Tags.compatibility)
def check_deprecated_retention(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """Point the deprecated whole-day settings at TRANSACTIONAL_RETENTION."""
    warnings = []
    for setting, classes in DEPRECATED_DAYS.items():
        days = getattr(settings, setting, None)
        if days is None:
            continue
        age = describe(timedelta(days=days)) if _days(days) else f"{days}d"
        warnings.append(
            checks.Warning(
                f"{setting} is deprecated; it still sets {', '.join(classes)} where "
                f"{SETTING} does not name them.",
                hint=f"Write {SETTING} = \"{','.join(f'{name}={age}' for name in classes)}\" "
                "instead (docs/configuration.md, Retention).",
                id="transactional.W020",
            )
        )
    return warnings
