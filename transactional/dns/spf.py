"""SPF at the envelope (Return-Path / MAIL FROM) domain: the one receivers check.

One record, authorizing the provider, at most 10 DNS-querying terms counted
through every include and redirect (RFC 7208 4.6.4), ending in ``~all`` or
``-all``.
"""

from dataclasses import dataclass, field

from .domains import normalize
from .records import SPF_ALL_MEANINGS, SPF_LOOKUP_LIMIT, SpfRecord, is_spf, merged_spf, record_line
from .report import Result, Status, failed, passed, warned
from .resolver import DnsLookupError, Lookup
from .target import Target

#: Stop following includes this far past the limit: the verdict is settled.
WALK_CAP = 5 * SPF_LOOKUP_LIMIT


@dataclass
class SpfWalk:
    """What following a record's includes and redirects found."""

    lookups: int = 0
    #: Every domain reached through include: or redirect=.
    reached: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    #: Includes that do not resolve to exactly one SPF record.
    broken: list[str] = field(default_factory=list)
    cache: dict[str, SpfRecord | None] = field(default_factory=dict)


def check_spf(resolver: Lookup, target: Target) -> list[Result]:
    """Return the SPF results for the target's envelope domain."""
    if not target.envelope or target.envelope_is_providers:
        return [warned("spf.record", target.envelope_note, target.envelope_fix)]
    results = []
    if target.envelope_cname_suffix:
        results.append(return_path(resolver, target))
        if results[-1].status is not Status.PASS:
            return results
    found = published(resolver, target)
    if isinstance(found, Result):
        return [*results, found]
    tree = walk(resolver, target.envelope, found)
    return [
        *results,
        passed("spf.record", f"one SPF record at {target.envelope}: {found}"),
        authorizes(target, found, tree),
        lookups(tree),
        *([includes(tree)] if tree.broken else []),
        ending(target, found),
    ]


def return_path(resolver: Lookup, target: Target) -> Result:
    """Check that the envelope host is a CNAME into the provider's domain (SendGrid)."""
    suffix, host = target.envelope_cname_suffix, target.envelope
    example = record_line(host, "CNAME", f"u1234567.wl123.{suffix}")
    try:
        points_to = resolver.cname(host)
    except DnsLookupError as err:
        return failed(
            "spf.return_path",
            str(err),
            f"{example} (your values: {target.label}'s dashboard)" if err.missing else "",
        )
    if points_to == suffix or points_to.endswith(f".{suffix}"):
        return passed("spf.return_path", f"{host} is a CNAME to {points_to}")
    return failed(
        "spf.return_path",
        f"{host} is a CNAME to {points_to}, not to a host under {suffix}",
        example,
    )


def published(resolver: Lookup, target: Target) -> SpfRecord | Result:
    """Return the one SPF record at the envelope domain, or the failure."""
    domain, fix = target.envelope, _fix(target, target.spf_suggestion())
    try:
        texts = resolver.txt(domain)
    except DnsLookupError as err:
        return failed("spf.record", str(err), fix if err.missing else "")
    records = [SpfRecord.parse(text) for text in texts if is_spf(text)]
    if not records:
        return failed(
            "spf.record", f"no SPF record at {domain} ({len(texts)} other TXT record(s))", fix
        )
    if len(records) > 1:
        merged = merged_spf(records)
        if target.spf_includes and not set(target.spf_includes) & set(merged.referenced()):
            merged = merged.with_include(target.spf_includes[0])
        return failed(
            "spf.record",
            f"{len(records)} SPF records at {domain}: receivers treat that as a permanent "
            "error (RFC 7208 4.5); merge them into one",
            _fix(target, str(merged)),
        )
    return records[0]


def walk(resolver: Lookup, domain: str, record: SpfRecord) -> SpfWalk:
    """Count the record's DNS-querying terms through its includes and redirect."""
    tree = SpfWalk()
    _walk(resolver, record, (normalize(domain),), tree)
    return tree


def _walk(resolver: Lookup, record: SpfRecord, path: tuple[str, ...], tree: SpfWalk) -> None:
    tree.lookups += len(record.lookups())
    for reference in record.referenced():
        if "%" in reference:  # a macro, expanded per message: cannot follow it here
            continue
        domain = normalize(reference)
        tree.reached.append(domain)
        if domain in path:
            tree.loops.append(" -> ".join((*path, domain)))
        elif tree.lookups <= WALK_CAP and (child := _fetch(resolver, domain, tree)):
            _walk(resolver, child, (*path, domain), tree)


def _fetch(resolver: Lookup, domain: str, tree: SpfWalk) -> SpfRecord | None:
    if domain not in tree.cache:
        tree.cache[domain] = None
        try:
            records = [text for text in resolver.txt(domain) if is_spf(text)]
        except DnsLookupError as err:
            tree.broken.append(f"{domain}: {err}")
            return None
        if len(records) == 1:
            tree.cache[domain] = SpfRecord.parse(records[0])
        else:
            tree.broken.append(f"{domain} has {len(records)} SPF records, not one")
    return tree.cache[domain]


def authorizes(target: Target, record: SpfRecord, tree: SpfWalk) -> Result:
    """Check that the record (or one it includes) includes the provider."""
    if not target.spf_includes:
        return passed(
            "spf.provider",
            "not verifiable for SMTP: make sure it covers the servers of "
            f"EMAIL_HOST={target.relay or '(unset)'}",
        )
    if found := [domain for domain in target.spf_includes if domain in tree.reached]:
        return passed("spf.provider", f"authorizes {target.label} (include:{found[0]})")
    wanted = target.spf_includes[0]
    return failed(
        "spf.provider",
        f"{target.envelope}'s SPF record does not include {wanted}: "
        f"{target.label} is not authorized",
        _fix(target, str(record.with_include(wanted))),
    )


def lookups(tree: SpfWalk) -> Result:
    """Check the DNS lookup count against RFC 7208's limit of 10, and for loops."""
    count = f"{tree.lookups}{'+' if tree.lookups > WALK_CAP else ''} DNS-querying terms"
    if tree.loops:
        return failed(
            "spf.lookups",
            f"include loop {'; '.join(tree.loops)}: receivers give up with a permerror "
            f"({count} before the loop)",
            "remove the include that points back",
        )
    if tree.lookups > SPF_LOOKUP_LIMIT:
        return failed(
            "spf.lookups",
            f"{count} (include, a, mx, ptr, exists, redirect) counted through includes; "
            f"RFC 7208 allows {SPF_LOOKUP_LIMIT}, receivers return a permerror",
            "remove includes of services that no longer send for you, "
            "or replace them with their ip4:/ip6: ranges",
        )
    return passed("spf.lookups", f"{count} of {SPF_LOOKUP_LIMIT} allowed, counted through includes")


def includes(tree: SpfWalk) -> Result:
    """Report includes that do not resolve to one SPF record (a permerror or temperror)."""
    return failed(
        "spf.includes",
        "; ".join(tree.broken),
        "remove or fix the include(s) named: each must have exactly one SPF record",
    )


def ending(target: Target, record: SpfRecord) -> Result:
    """Check the record ends in ``~all`` or ``-all``."""
    term = record.all
    if term and term.qualifier in "~-":
        return passed("spf.all", f"ends in {term}: {SPF_ALL_MEANINGS[term.qualifier]}")
    if term is None and record.redirect:
        return passed("spf.all", f"no all; redirect={record.redirect} decides")
    if term:
        problem = f"{term.qualifier}all means {SPF_ALL_MEANINGS[term.qualifier]}"
    else:
        problem = "no all mechanism: mail from anywhere else gets neutral"
    return failed("spf.all", problem, _fix(target, str(record.with_all("~"))))


def _fix(target: Target, spf: str) -> str:
    if target.envelope_cname_suffix:
        return (
            f"{target.label} publishes this record behind {target.envelope}: it should read {spf!r}"
        )
    return record_line(target.envelope, "TXT", spf)
