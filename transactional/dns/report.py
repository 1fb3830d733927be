"""Check results and how they print: a pass/warn/fail table, the fixes, JSON."""

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum


class Status(StrEnum):
    """How a check came out."""

    PASS = "pass"
    """The record is there and right."""
    WARN = "warn"
    """Mail goes out, but deliverability or visibility suffers."""
    FAIL = "fail"
    """Receivers will reject, junk or fail to authenticate the mail (exit status 1)."""


@dataclass(frozen=True)
class Result:
    """One row of the report."""

    #: Stable id, e.g. ``spf.record``, ``dkim.s1``, ``dmarc.policy``.
    check: str
    status: Status
    detail: str
    #: The record to publish (zone-file form) or, when there is none, what to do.
    fix: str = ""


def passed(check: str, detail: str) -> Result:
    """Return a passing result."""
    return Result(check, Status.PASS, detail)


def warned(check: str, detail: str, fix: str = "") -> Result:
    """Return a warning."""
    return Result(check, Status.WARN, detail, fix)


def failed(check: str, detail: str, fix: str = "") -> Result:
    """Return a failure."""
    return Result(check, Status.FAIL, detail, fix)


def has_failures(results: list[Result]) -> bool:
    """Return whether any result failed."""
    return any(result.status is Status.FAIL for result in results)


def as_json(results: list[Result]) -> str:
    """Return the results as a JSON list of ``{check, status, detail, fix}``."""
    return json.dumps([asdict(result) for result in results], indent=2)


def render(
    results: list[Result], paint: Callable[[Status, str], str] = lambda status, text: text
) -> str:
    """Return the table, then the fixes for failures and warnings, then a summary line."""
    width = max([len("check"), *(len(r.check) for r in results)])
    lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
    lines += [
        f"{r.check:<{width}}  {paint(r.status, f'{r.status:<6}')}  {r.detail}" for r in results
    ]
    if todo := fixes(results):
        lines += ["", "To fix, publish or change:"]
        lines += [f"  {paint(r.status, r.status.value)}  {r.check}: {r.fix}" for r in todo]
    return "\n".join([*lines, "", summary(results)])


def fixes(results: list[Result]) -> list[Result]:
    """Return the results that say what to change, failures first."""
    order = {Status.FAIL: 0, Status.WARN: 1}
    return sorted(
        (r for r in results if r.fix and r.status in order), key=lambda r: order[r.status]
    )


def summary(results: list[Result]) -> str:
    """Return ``1 failed, 2 warning(s), 8 passed.``."""
    counts = {status: sum(r.status is status for r in results) for status in Status}
    return (
        f"{counts[Status.FAIL]} failed, {counts[Status.WARN]} warning(s), "
        f"{counts[Status.PASS]} passed."
    )
