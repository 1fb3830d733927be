"""DMARC: the policy at ``_dmarc.<domain>`` and whether SPF or DKIM aligns with From.

A domain without a record of its own falls back to its organizational
domain's record (``sp=`` then applies), as receivers do (RFC 7489 6.6.3);
``domains.organizational_domain`` approximates that domain.
"""

from dataclasses import dataclass

from .domains import aligned, organizational_domain
from .records import DmarcRecord, is_dmarc, record_line
from .report import Result, failed, passed, warned
from .resolver import DnsLookupError, Lookup
from .target import Target

POLICIES = ("none", "quarantine", "reject")
MODES = {"r": "relaxed", "s": "strict"}
#: Defaults when there is no record: relaxed alignment (RFC 7489 6.3).
NO_RECORD = DmarcRecord({})


@dataclass(frozen=True)
class Found:
    """The DMARC record that applies to a domain, and where it was found."""

    record: DmarcRecord
    #: The domain whose ``_dmarc`` name holds it.
    owner: str
    #: Whether it is the organizational domain's record (so ``sp=`` applies).
    inherited: bool

    @property
    def name(self) -> str:
        """Return the record's DNS name."""
        return f"_dmarc.{self.owner}"

    @property
    def policy(self) -> str:
        """Return the policy that applies: ``sp=`` if inherited, else ``p=``."""
        return self.record.subdomain_policy if self.inherited else self.record.policy


def check_dmarc(resolver: Lookup, target: Target, signers: list[str]) -> list[Result]:
    """Return the record, policy, reporting and alignment results for the From domain."""
    found = find(resolver, target.domain)
    if isinstance(found, Result):
        return [found, *alignment(target, None, signers)]
    record = found.record
    results = [passed("dmarc.record", _where(target, found)), policy(found)]
    if record.policy in POLICIES:
        results.append(reports(found))
    return [*results, *alignment(target, found, signers)]


def find(resolver: Lookup, domain: str) -> Found | Result:
    """Return the DMARC record for ``domain`` (or its organizational domain), or the failure."""
    organization = organizational_domain(domain)
    misses = []
    for owner in dict.fromkeys((domain, organization)):
        name = f"_dmarc.{owner}"
        try:
            texts = [text for text in resolver.txt(name) if is_dmarc(text)]
        except DnsLookupError as err:
            if not err.missing:
                return failed("dmarc.record", str(err))
            misses.append(str(err))
            continue
        if len(texts) > 1:
            return failed(
                "dmarc.record",
                f"{len(texts)} DMARC records at {name}: receivers ignore them all",
                f"keep one: {record_line(name, 'TXT', texts[0])}",
            )
        if texts:
            return Found(DmarcRecord.parse(texts[0]), owner, inherited=owner != domain)
        misses.append(f"no DMARC record at {name}")
    start = f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{organization}"
    return failed(
        "dmarc.record", "; ".join(misses), record_line(f"_dmarc.{organization}", "TXT", start)
    )


def policy(found: Found) -> Result:
    """Check the policy: none is monitoring only; quarantine and reject protect."""
    record, name = found.record, found.name
    if record.policy not in POLICIES:
        return failed(
            "dmarc.policy",
            f"p={record.policy or '(missing)'} is not none, quarantine or reject: "
            "receivers ignore the record",
            record_line(name, "TXT", str(record.with_tags(p="none"))),
        )
    tag = "sp" if found.inherited and "sp" in record.tags else "p"
    detail = f"{tag}={found.policy}" + (f", pct={record.percent}" if record.percent < 100 else "")
    if found.policy == "none":
        next_step = record.with_tags(**{tag: "quarantine", "pct": "25"})
        return warned(
            "dmarc.policy",
            f"{detail}: monitoring only, receivers act on nothing",
            "once the rua reports show only your own mail passing: "
            + record_line(name, "TXT", str(next_step)),
        )
    return passed("dmarc.policy", detail)


def reports(found: Found) -> Result:
    """Check that aggregate reports (``rua=``) go somewhere."""
    record = found.record
    if rua := record.tags.get("rua"):
        return passed("dmarc.rua", f"aggregate reports to {rua}")
    with_rua = record.with_tags(rua=f"mailto:dmarc-reports@{found.owner}")
    return warned(
        "dmarc.rua",
        "no rua=: no aggregate reports, so no way to see who sends as this domain",
        record_line(found.name, "TXT", str(with_rua)),
    )


def alignment(target: Target, found: Found | None, signers: list[str]) -> list[Result]:
    """Check SPF (envelope) and DKIM (``d=``) alignment with the From domain; one must pass."""
    record = found.record if found else NO_RECORD
    envelope = target.envelope
    spf_ok = bool(envelope) and aligned(envelope, target.domain, record.mode("aspf"))
    dkim_ok = any(aligned(signer, target.domain, record.mode("adkim")) for signer in signers)
    return [
        spf_alignment(target, found, spf_ok, dkim_ok),
        dkim_alignment(target, found, signers, dkim_ok, spf_ok),
    ]


def spf_alignment(target: Target, found: Found | None, ok: bool, other_ok: bool) -> Result:
    """Report whether the envelope domain aligns with From."""
    check, mode = "dmarc.spf_alignment", (found.record if found else NO_RECORD).mode("aspf")
    envelope, domain = target.envelope, target.domain
    if not envelope:
        return warned(
            check, "envelope domain unknown: SPF alignment not checked", target.envelope_fix
        )
    if ok:
        return passed(check, f"envelope {envelope} aligns with From {domain} ({MODES[mode]})")
    detail = f"envelope {envelope} does not align with From {domain} ({MODES[mode]})"
    fix = (
        _relax(target, found, "aspf", envelope)
        or target.envelope_fix
        or (f"send with an envelope (Return-Path) domain under {organizational_domain(domain)}")
    )
    return _unaligned(check, detail, fix, other_ok, "DKIM")


def dkim_alignment(
    target: Target, found: Found | None, signers: list[str], ok: bool, other_ok: bool
) -> Result:
    """Report whether a usable DKIM key's domain aligns with From."""
    check, domain = "dmarc.dkim_alignment", target.domain
    mode = (found.record if found else NO_RECORD).mode("adkim")
    if not target.selectors:
        return warned(check, "no DKIM selector checked: DKIM alignment unknown", target.dkim_hint)
    if ok:
        signer = next(signer for signer in signers if aligned(signer, domain, mode))
        return passed(check, f"d={signer} aligns with From {domain} ({MODES[mode]})")
    if not signers:
        return _unaligned(
            check,
            "no usable DKIM key, so nothing to align",
            "fix the dkim.* failures",
            other_ok,
            "SPF",
        )
    detail = f"d={', '.join(signers)} does not align with From {domain} ({MODES[mode]})"
    fix = (
        _relax(target, found, "adkim", signers[0])
        or f"sign with a key on {domain} or a subdomain of it"
    )
    return _unaligned(check, detail, fix, other_ok, "SPF")


def _unaligned(check: str, detail: str, fix: str, other_ok: bool, other: str) -> Result:
    if other_ok:
        return warned(check, f"{detail}; {other} alignment carries DMARC", fix)
    return failed(check, f"{detail}, and {other} does not align either: DMARC fails", fix)


def _relax(target: Target, found: Found | None, tag: str, domain: str) -> str:
    """Return the record with relaxed ``tag`` if that would align ``domain``, else ""."""
    if found is None or found.record.mode(tag) != "s" or not aligned(domain, target.domain, "r"):
        return ""
    return record_line(found.name, "TXT", str(found.record.with_tags(**{tag: "r"})))


def _where(target: Target, found: Found) -> str:
    text = f"{found.name}: {found.record}"
    if found.inherited:
        return f"{text} (no record at _dmarc.{target.domain}: the organizational domain's applies)"
    return text
