"""Staging safety: keep mail sent from a staging deployment away from real customers."""

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import getaddresses
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage

from .models import normalize_address

ALLOWED_SETTING = "TRANSACTIONAL_ALLOWED_RECIPIENTS"
REDIRECT_SETTING = "TRANSACTIONAL_REDIRECT_TO"
#: Longest X-Original-* value; longer lists end in " (+N more)".
HEADER_LIMIT = 2000
#: Headers replaced on a rewritten message: a To/Cc override would still show the customers.
REWRITTEN_HEADERS = frozenset({"to", "cc", "x-original-to", "x-original-cc", "x-original-bcc"})

# Stricter than RFC 5322 on purpose: whatever this accepts must mean the same
# address to every parser downstream (Django, anymail, the ESP), so quoted
# local parts, comments and control characters count as "not allowed".
_LOCAL = re.compile(r"[\w!#$%&'*+/=?^`{|}~.-]+")
_DOMAIN = re.compile(r"[\w-]+(\.[\w-]+)+")


@dataclass(frozen=True)
class Rules:
    allowed: tuple[str, ...]
    redirect_to: tuple[str, ...]

    @cached_property
    def _targets(self) -> frozenset[str]:
        return frozenset(filter(None, map(_bare, self.redirect_to)))

    def allows(self, address: str) -> bool:
        """Return whether staging safety lets mail go to this address as it is."""
        bare = _bare(address)
        if bare is None:
            return False
        if bare in self._targets:
            return True
        domain = bare.rpartition("@")[2]
        return any(
            bare == entry
            if "@" in entry
            else domain.endswith(entry[1:])
            if entry.startswith("*.")
            else domain == entry
            for entry in self.allowed
        )


@dataclass
class Outcome:
    email: EmailMessage | None
    redirected: list[str]
    blocked: list[str]


def rules() -> Rules | None:
    """Return the staging rules from settings, or None when staging safety is off."""
    allowed = _setting(ALLOWED_SETTING)
    redirect_to = _setting(REDIRECT_SETTING)
    if not allowed and not redirect_to:
        return None
    for entry in redirect_to:
        if "\r" in entry or "\n" in entry or _bare(entry) is None:
            raise ImproperlyConfigured(
                f"{REDIRECT_SETTING}: {entry!r} is not one email address "
                "(e.g. 'QA <qa@acme.com>')."
            )
    return Rules(tuple(map(_allowed_entry, allowed)), tuple(redirect_to))


def apply(email: EmailMessage, rules: Rules | None) -> Outcome:
    """Return the message as staging safety lets it go out."""
    if rules is None:
        return Outcome(email, [], [])
    kept: dict[str, list[str]] = {}
    dropped: list[str] = []
    for kind in ("to", "cc", "bcc"):
        kept[kind] = []
        for recipient in getattr(email, kind):
            if rules.allows(str(recipient)):
                kept[kind].append(recipient)
            else:
                dropped.extend(_recorded(str(recipient)))
    clone = copy.copy(email)
    clone.to, clone.cc, clone.bcc = kept["to"], kept["cc"], kept["bcc"]
    clone.extra_headers = dict(email.extra_headers)
    dropped = list(dict.fromkeys(dropped))
    if not dropped:
        return Outcome(clone, [], [])
    if rules.redirect_to:
        present = {_bare(str(r)) for r in clone.to + clone.cc + clone.bcc}
        for target in rules.redirect_to:
            if _bare(target) not in present:
                clone.to.append(target)
                present.add(_bare(target))
    headers = {k: v for k, v in clone.extra_headers.items() if k.lower() not in REWRITTEN_HEADERS}
    headers["X-Original-To"] = _header_value(email.to)
    if email.cc:
        headers["X-Original-Cc"] = _header_value(email.cc)
    if email.bcc:
        headers["X-Original-Bcc"] = _header_value(email.bcc)
    clone.extra_headers = headers
    if rules.redirect_to:
        return Outcome(clone, dropped, [])
    return Outcome(clone if clone.recipients() else None, [], dropped)


def describe(rules: Rules | None) -> str:
    """Return one line saying what staging safety does with mail."""
    if rules is None:
        return "staging safety is off"
    allowed = ", ".join(rules.allowed)
    if not rules.redirect_to:
        return f"mail outside {allowed} is blocked"
    where = f"mail outside {allowed}" if allowed else "all mail"
    return f"{where} is redirected to {', '.join(rules.redirect_to)}"


def _setting(name: str) -> list[str]:
    value = getattr(settings, name, None) or []
    if isinstance(value, str):
        raise ImproperlyConfigured(f"{name} must be a list of strings, not the string {value!r}.")
    return list(value)


def _allowed_entry(entry: str) -> str:
    text = normalize_address(entry) if isinstance(entry, str) else ""
    local, at, domain = text.rpartition("@")
    wildcard = not at and domain.startswith("*.")
    domain = normalize_address(f"@{domain.removeprefix('*.') if wildcard else domain}")[1:]
    if _DOMAIN.fullmatch(domain) and (not local or _LOCAL.fullmatch(local)):
        return f"{local}@{domain}" if local else f"*.{domain}" if wildcard else domain
    raise ImproperlyConfigured(
        f"{ALLOWED_SETTING}: {entry!r} is neither an address (qa@acme.com), a domain "
        "(acme.com or @acme.com) nor a subdomain wildcard (*.acme.com)."
    )


def _bare(address: str) -> str | None:
    """Return the one address in ``address``, normalized, or None if it is not exactly one."""
    pairs = getaddresses([address])
    if len(pairs) != 1:
        return None
    local, at, domain = normalize_address(pairs[0][1]).rpartition("@")
    if at and _LOCAL.fullmatch(local) and _DOMAIN.fullmatch(domain):
        return f"{local}@{domain}"
    return None


def _recorded(recipient: str) -> list[str]:
    # As the outbox stores Recipient rows: one per address getaddresses finds.
    found = [normalize_address(address) for _, address in getaddresses([recipient]) if address]
    return found or [normalize_address(recipient)]


def _header_value(addresses: Iterable[str]) -> str:
    values = [re.sub(r"[\r\n]", "", str(address)) for address in addresses]
    if len(joined := ", ".join(values)) <= HEADER_LIMIT:
        return joined
    kept: list[str] = []
    for value in values:
        more = len(values) - len(kept) - 1
        if len(", ".join([*kept, value]) + f" (+{more} more)") > HEADER_LIMIT:
            break
        kept.append(value)
    return f"{', '.join(kept)} (+{len(values) - len(kept)} more)".lstrip()
