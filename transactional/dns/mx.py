"""MX at the envelope domain, where the provider receives bounces.

SES refuses a custom MAIL FROM domain without its feedback MX (and falls
back to amazonses.com); Mailgun only needs its MX to receive bounces and
replies on the sending domain, so that is a warning.
"""

from .records import record_line
from .report import Result, failed, passed, warned
from .resolver import DnsLookupError, Lookup
from .target import Target


def check_mx(resolver: Lookup, target: Target) -> list[Result]:
    """Return the bounce MX result, or nothing if the provider needs no MX of ours."""
    envelope, expected = target.envelope, target.bounce_mx
    if not expected or not envelope or target.envelope_is_providers:
        return []
    report = failed if target.bounce_mx_required else warned
    try:
        hosts = {host for _, host in resolver.mx(envelope)}
    except DnsLookupError as err:
        return [report("mx.bounce", str(err), _fix(envelope, expected) if err.missing else "")]
    if missing := [host for host in expected if host not in hosts]:
        return [
            report(
                "mx.bounce",
                f"{envelope} has no MX {', '.join(missing)}: bounces cannot reach {target.label}",
                _fix(envelope, missing),
            )
        ]
    return [passed("mx.bounce", f"{envelope} MX {', '.join(expected)}")]


def _fix(envelope: str, hosts: tuple[str, ...] | list[str]) -> str:
    return " and ".join(record_line(envelope, "MX", f"10 {host}") for host in hosts)
