"""Domain arithmetic: names, organizational domains, DMARC alignment.

The organizational domain is approximated without the Public Suffix List:
the last two labels (``mail.acme.com`` -> ``acme.com``), or the last three
when the last two are a common second-level public suffix (``acme.co.uk``).
A domain under a rarer suffix (``acme.pvt.k12.ma.us``) comes out wrong; pass
the domain you publish ``_dmarc`` on explicitly if that matters.
"""

import re
from email.utils import parseaddr

#: Second-level public suffixes common enough to get right.
TWO_LEVEL_SUFFIXES = frozenset(
    """
    co.uk org.uk ac.uk gov.uk ltd.uk plc.uk me.uk com.au net.au org.au edu.au
    gov.au co.nz org.nz net.nz co.jp ne.jp or.jp ac.jp co.za org.za co.in net.in
    org.in firm.in com.br net.br org.br com.mx com.ar com.tr com.cn com.hk com.sg
    com.tw co.kr co.il co.id com.my com.ph com.ua co.at
    """.split()
)

#: Names that can never receive or send real mail (RFC 2606, RFC 6761, RFC 6762).
RESERVED_DOMAINS = frozenset({"example.com", "example.org", "example.net", "localhost"})
RESERVED_TLDS = frozenset({"test", "local", "invalid", "example", "localhost"})

LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def normalize(name: str) -> str:
    """Return ``name`` in lower case, without a final dot, IDNs as punycode."""
    name = name.strip().rstrip(".").lower()
    return name if name.isascii() else name.encode("idna").decode("ascii")


def is_hostname(name: str) -> bool:
    """Return whether ``name`` (normalized) is a syntactically valid domain name."""
    labels = name.split(".")
    return len(name) <= 253 and len(labels) >= 2 and all(LABEL.fullmatch(label) for label in labels)


def address_domain(address: str) -> str:
    """Return the normalized domain of an address like ``Acme <no-reply@acme.com>``, or ""."""
    _, email = parseaddr(address)
    local, at, domain = email.rpartition("@")
    return normalize(domain) if local and at and domain else ""


def organizational_domain(name: str) -> str:
    """Return the approximate registrable domain of ``name`` (see the module docstring)."""
    labels = normalize(name).split(".")
    keep = 3 if ".".join(labels[-2:]) in TWO_LEVEL_SUFFIXES else 2
    return ".".join(labels[-keep:])


def aligned(domain: str, from_domain: str, mode: str = "r") -> bool:
    """Return whether ``domain`` aligns with ``from_domain`` (``s``: same name, ``r``: same org)."""
    domain, from_domain = normalize(domain), normalize(from_domain)
    if mode == "s":
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def is_reserved(domain: str) -> bool:
    """Return whether ``domain`` is a documentation, test or local-only name."""
    domain = normalize(domain)
    under = (domain == reserved or domain.endswith(f".{reserved}") for reserved in RESERVED_DOMAINS)
    return domain.rpartition(".")[2] in RESERVED_TLDS or any(under)
