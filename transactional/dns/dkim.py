"""DKIM key records at ``<selector>._domainkey.<domain>``.

SES Easy DKIM and SendGrid publish the key on their side and want a CNAME
to it; a resolver follows the CNAME when asked for the TXT, so the key is
checked the same way either way: RSA at least 1024 bits (2048 recommended),
an empty ``p=`` is a revoked key.
"""

from .records import DkimKey, is_dkim_key, record_line
from .report import Result, Status, failed, passed, warned
from .resolver import DnsLookupError, Lookup
from .target import Selector, Target

MIN_RSA_BITS = 1024
GOOD_RSA_BITS = 2048


def check_dkim(resolver: Lookup, target: Target) -> list[Result]:
    """Return one result per selector, or a warning if no selector is known."""
    if not target.selectors:
        return [warned("dkim", f"no DKIM selector known for {target.label}", target.dkim_hint)]
    return [check_selector(resolver, target, selector) for selector in target.selectors]


def signing_domains(target: Target, results: list[Result]) -> list[str]:
    """Return the ``d=`` domains whose keys are usable, from ``check_dkim``'s results."""
    usable = {result.check for result in results if result.status is not Status.FAIL}
    return sorted({s.domain for s in target.selectors if f"dkim.{s.selector}" in usable})


def check_selector(resolver: Lookup, target: Target, selector: Selector) -> Result:
    """Check the CNAME the provider expects (if any), then the key behind it."""
    if selector.cname or selector.cname_suffix:
        problem = _cname_problem(resolver, selector)
        if problem:
            return problem
    try:
        texts = [text for text in resolver.txt(selector.name) if is_dkim_key(text)]
    except DnsLookupError as err:
        return failed(_check(selector), str(err), _txt_fix(selector) if err.missing else "")
    if len(texts) != 1:
        count = "no" if not texts else str(len(texts))
        return failed(
            _check(selector), f"{count} DKIM key records at {selector.name}", _txt_fix(selector)
        )
    return key_result(target, selector, DkimKey.parse(texts[0]))


def key_result(target: Target, selector: Selector, key: DkimKey) -> Result:
    """Judge the key: revoked, unreadable, too short, short, or fine."""
    check, where = _check(selector), selector.name
    if key.revoked:
        return failed(check, f"key at {where} is revoked (empty p=)", target.dkim_rotate_hint)
    if key.key_type != "rsa":
        return passed(check, f"{key.key_type} key at {where}")
    try:
        bits = key.rsa_bits()
    except ValueError as err:
        return failed(check, f"key at {where}: {err}", _txt_fix(selector))
    if bits < MIN_RSA_BITS:
        return failed(
            check,
            f"{bits}-bit RSA key at {where}: receivers ignore keys under {MIN_RSA_BITS} bits",
            target.dkim_rotate_hint,
        )
    if bits < GOOD_RSA_BITS:
        return warned(
            check,
            f"{bits}-bit RSA key at {where}: {GOOD_RSA_BITS} bits recommended",
            target.dkim_rotate_hint,
        )
    return passed(check, f"{bits}-bit RSA key at {where}")


def _cname_problem(resolver: Lookup, selector: Selector) -> Result | None:
    expected = selector.cname or f"<the host {selector.cname_suffix} shows you>"
    fix = record_line(selector.name, "CNAME", expected)
    try:
        points_to = resolver.cname(selector.name)
    except DnsLookupError as err:
        # SendGrid without "automated security" has the key as a plain TXT.
        if selector.cname_suffix and err.kind == "noanswer":
            return None
        return failed(_check(selector), str(err), fix if err.missing else "")
    if selector.cname and points_to != selector.cname:
        return failed(
            _check(selector),
            f"{selector.name} is a CNAME to {points_to}, expected {selector.cname}",
            fix,
        )
    if selector.cname_suffix and not points_to.endswith(f".{selector.cname_suffix}"):
        return failed(
            _check(selector),
            f"{selector.name} is a CNAME to {points_to}, "
            f"not to a host under {selector.cname_suffix}",
            fix,
        )
    return None


def _check(selector: Selector) -> str:
    return f"dkim.{selector.selector}"


def _txt_fix(selector: Selector) -> str:
    return record_line(
        selector.name, "TXT", "v=DKIM1; k=rsa; p=<the public key your provider shows>"
    )
