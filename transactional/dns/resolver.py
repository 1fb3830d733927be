"""The one seam between our checks and DNS: a thin wrapper of dnspython.

Every failure becomes a ``DnsLookupError`` whose text is fit for the report
("no TXT record at _dmarc.acme.com (NXDOMAIN)"), never a traceback. Tests
pass any object with the same three methods (the ``Lookup`` protocol).
"""

from typing import Literal, Protocol

import dns.exception
import dns.resolver

Kind = Literal["nxdomain", "noanswer", "timeout", "servfail"]

#: dnspython's exceptions -> ours; the first match wins (Timeout before its base).
KINDS: tuple[tuple[type[Exception], Kind], ...] = (
    (dns.resolver.NXDOMAIN, "nxdomain"),
    (dns.resolver.NoAnswer, "noanswer"),
    (dns.exception.Timeout, "timeout"),
    (dns.exception.DNSException, "servfail"),  # NoNameservers, YXDOMAIN, no resolv.conf...
)


class DnsLookupError(Exception):
    """A name did not resolve; ``kind`` says why."""

    def __init__(self, kind: Kind, name: str, rdtype: str = "TXT", *, timeout: float = 0) -> None:
        self.kind, self.name, self.rdtype, self.timeout = kind, name, rdtype, timeout
        super().__init__(self.describe())

    @property
    def missing(self) -> bool:
        """Return whether the name answered that it has no such record (not an outage)."""
        return self.kind in ("nxdomain", "noanswer")

    def describe(self) -> str:
        """Return the report's words for this failure."""
        if self.kind == "timeout":
            return f"DNS timeout after {self.timeout:g}s ({self.rdtype} {self.name})"
        if self.kind == "servfail":
            return (
                f"no DNS server answered for {self.rdtype} {self.name} (SERVFAIL / NoNameservers)"
            )
        reason = "NXDOMAIN" if self.kind == "nxdomain" else "NoAnswer"
        return f"no {self.rdtype} record at {self.name} ({reason})"


class Lookup(Protocol):
    """What the checks need from DNS."""

    def txt(self, name: str) -> list[str]: ...

    def cname(self, name: str) -> str: ...

    def mx(self, name: str) -> list[tuple[int, str]]: ...


class DnsResolver:
    """Resolve TXT, CNAME and MX records with dnspython, within ``timeout`` seconds each."""

    def __init__(self, timeout: float = 5.0, resolver: dns.resolver.Resolver | None = None) -> None:
        self.timeout = timeout
        self.resolver = resolver or _system_resolver()
        self.resolver.lifetime = timeout

    def txt(self, name: str) -> list[str]:
        """Return the TXT records at ``name``, each record's strings joined (RFC 7208 3.3)."""
        return [
            b"".join(rdata.strings).decode("utf-8", "replace")
            for rdata in self._resolve(name, "TXT")
        ]

    def cname(self, name: str) -> str:
        """Return the target of the CNAME at ``name``, lower case, without the final dot."""
        return _host(self._resolve(name, "CNAME")[0].target)

    def mx(self, name: str) -> list[tuple[int, str]]:
        """Return ``(preference, host)`` for each MX record at ``name``, best first."""
        return sorted(
            (rdata.preference, _host(rdata.exchange)) for rdata in self._resolve(name, "MX")
        )

    def _resolve(self, name: str, rdtype: str) -> list:
        try:
            return list(self.resolver.resolve(name, rdtype, search=False))
        except dns.exception.DNSException as err:
            kind = next(kind for error, kind in KINDS if isinstance(err, error))
            raise DnsLookupError(kind, name, rdtype, timeout=self.timeout) from err


def _system_resolver() -> dns.resolver.Resolver:
    try:
        return dns.resolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        # No /etc/resolv.conf (a slim container): every lookup then fails
        # with NoNameservers, which the report shows as such.
        return dns.resolver.Resolver(configure=False)


def _host(name: object) -> str:
    return str(name).rstrip(".").lower()
