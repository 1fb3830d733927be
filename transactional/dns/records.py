"""Parse SPF, DKIM and DMARC records; no DNS here.

SPF is RFC 7208, DKIM key records RFC 6376 section 3.6.1, DMARC RFC 7489
section 6.3. Parsing is lenient where receivers are (case, spacing) and
strict where they are (one record per name, ``v=`` first).
"""

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

#: SPF terms that cost a DNS lookup (RFC 7208 section 4.6.4); at most 10 in all.
SPF_LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
SPF_LOOKUP_LIMIT = 10
#: What an ``all`` qualifier means, for the report.
SPF_ALL_MEANINGS = {
    "+": "anyone may send as this domain",
    "?": "neutral: receivers learn nothing from SPF",
    "~": "softfail for everyone else",
    "-": "fail for everyone else",
}

SPF_MODIFIER = re.compile(r"([a-z][a-z0-9_.-]*)=(.*)", re.IGNORECASE)
SPF_MECHANISM = re.compile(r"([+?~-]?)([a-z][a-z0-9_.-]*)(?::([^/]*))?(/.*)?", re.IGNORECASE)


def record_line(name: str, rdtype: str, value: str) -> str:
    """Return a record in zone-file form: ``mg.acme.com. TXT "v=spf1 ..."``."""
    if rdtype == "TXT":
        value = f'"{value}"'
    elif rdtype in ("CNAME", "MX"):
        value = f"{value}."
    return f"{name}. {rdtype} {value}"


# SPF
# ------------------------------------------------------------------------------


def is_spf(text: str) -> bool:
    """Return whether a TXT record is an SPF record (``v=spf1`` then a space or nothing)."""
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


@dataclass(frozen=True)
class SpfTerm:
    """One SPF mechanism (``~all``, ``include:x``) or modifier (``redirect=x``)."""

    name: str
    value: str = ""
    qualifier: str = "+"
    modifier: bool = False
    cidr: str = ""

    def __str__(self) -> str:
        if self.modifier:
            return f"{self.name}={self.value}"
        prefix = "" if self.qualifier == "+" else self.qualifier
        value = f":{self.value}" if self.value else ""
        return f"{prefix}{self.name}{value}{self.cidr}"


@dataclass(frozen=True)
class SpfRecord:
    """A parsed ``v=spf1`` record."""

    terms: tuple[SpfTerm, ...]

    @classmethod
    def parse(cls, text: str) -> "SpfRecord":
        """Parse the text of one SPF record."""
        return cls(tuple(_spf_term(word) for word in text.split()[1:]))

    def __str__(self) -> str:
        return " ".join(("v=spf1", *map(str, self.terms)))

    @property
    def all(self) -> SpfTerm | None:
        """Return the ``all`` mechanism, if any."""
        return next((term for term in self.terms if term.name == "all" and not term.modifier), None)

    @property
    def redirect(self) -> str:
        """Return the ``redirect=`` domain, or "" (ignored next to ``all``, RFC 7208 6.1)."""
        if self.all:
            return ""
        return next(
            (term.value for term in self.terms if term.name == "redirect" and term.modifier), ""
        )

    def lookups(self) -> list[SpfTerm]:
        """Return this record's own terms that cost a DNS lookup."""
        return [
            term
            for term in self.terms
            if term.name in SPF_LOOKUP_TERMS and (term.name != "redirect" or self.redirect)
        ]

    def referenced(self) -> list[str]:
        """Return the domains this record pulls in: includes, then the redirect."""
        includes = [term.value for term in self.terms if term.name == "include" and term.value]
        return includes + ([self.redirect] if self.redirect else [])

    def with_include(self, domain: str) -> "SpfRecord":
        """Return this record with ``include:domain`` before its ``all`` (or at the end)."""
        include = SpfTerm("include", domain)
        terms = list(self.terms)
        position = terms.index(self.all) if self.all else len(terms)
        return SpfRecord((*terms[:position], include, *terms[position:]))

    def with_all(self, qualifier: str = "~") -> "SpfRecord":
        """Return this record ending in ``<qualifier>all`` instead of its current ``all``."""
        terms = [term for term in self.terms if term != self.all and term.name != "redirect"]
        return SpfRecord((*terms, SpfTerm("all", qualifier=qualifier)))


def merged_spf(records: list["SpfRecord"]) -> SpfRecord:
    """Return one record holding every mechanism of ``records``, ending in ``~all``."""
    terms: list[SpfTerm] = []
    for record in records:
        terms += [
            term
            for term in record.terms
            if term.name not in ("all", "redirect") and term not in terms
        ]
    return SpfRecord((*terms, SpfTerm("all", qualifier="~")))


def _spf_term(word: str) -> SpfTerm:
    if modifier := SPF_MODIFIER.fullmatch(word):
        return SpfTerm(modifier[1].lower(), modifier[2], qualifier="", modifier=True)
    mechanism = SPF_MECHANISM.fullmatch(word)
    if mechanism is None:
        return SpfTerm(word.lower())  # unknown syntax: kept, counted as nothing
    qualifier, name, value, cidr = mechanism.groups()
    return SpfTerm(name.lower(), value or "", qualifier or "+", cidr=cidr or "")


# DKIM and DMARC tag lists
# ------------------------------------------------------------------------------


def parse_tags(text: str) -> dict[str, str]:
    """Parse ``tag=value; tag=value`` (RFC 6376 3.2); tag names in lower case."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals and name.strip():
            tags.setdefault(name.strip().lower(), value.strip())
    return tags


def format_tags(tags: dict[str, str]) -> str:
    """Return ``tags`` as a record's text, in their order."""
    return "; ".join(f"{name}={value}" for name, value in tags.items())


def is_dkim_key(text: str) -> bool:
    """Return whether a TXT record is a DKIM key record (``v=DKIM1`` first, or a ``p=`` tag)."""
    tags = parse_tags(text)
    first = next(iter(tags), "")
    return (first == "v" and tags["v"] == "DKIM1") or (first != "v" and "p" in tags)


@dataclass(frozen=True)
class DkimKey:
    """A DKIM public key record."""

    key_type: str
    public_key: str

    @classmethod
    def parse(cls, text: str) -> "DkimKey":
        """Parse the text of one DKIM key record."""
        tags = parse_tags(text)
        return cls(tags.get("k", "rsa").lower(), re.sub(r"\s+", "", tags.get("p", "")))

    @property
    def revoked(self) -> bool:
        """Return whether the key is revoked (an empty ``p=``)."""
        return not self.public_key

    def rsa_bits(self) -> int:
        """Return the RSA key size; raise ValueError if ``p=`` is not an RSA public key."""
        try:
            key = load_der_public_key(base64.b64decode(self.public_key, validate=True))
        except (binascii.Error, ValueError, TypeError) as err:
            raise ValueError("p= is not a base64 DER public key") from err
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("p= is not an RSA public key")
        return key.key_size


def is_dmarc(text: str) -> bool:
    """Return whether a TXT record is a DMARC record (``v=DMARC1`` first)."""
    return re.match(r"v\s*=\s*DMARC1\s*(;|$)", text.strip()) is not None


@dataclass(frozen=True)
class DmarcRecord:
    """A parsed ``v=DMARC1`` record; defaults per RFC 7489 6.3."""

    tags: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> "DmarcRecord":
        """Parse the text of one DMARC record."""
        return cls(parse_tags(text))

    def __str__(self) -> str:
        return format_tags(self.tags)

    @property
    def policy(self) -> str:
        """Return ``p=`` in lower case, or "" if absent."""
        return self.tags.get("p", "").lower()

    @property
    def subdomain_policy(self) -> str:
        """Return ``sp=``, else ``p=``: the policy for subdomains."""
        return self.tags.get("sp", "").lower() or self.policy

    @property
    def percent(self) -> int:
        """Return ``pct=`` (100 when absent or unreadable)."""
        value = self.tags.get("pct", "100")
        return int(value) if value.isdigit() else 100

    def mode(self, tag: str) -> str:
        """Return the alignment mode ``adkim`` or ``aspf``: ``s`` strict or ``r`` relaxed."""
        return "s" if self.tags.get(tag, "r").lower() == "s" else "r"

    def with_tags(self, **changes: str) -> "DmarcRecord":
        """Return a copy with ``changes`` set (new tags go after the existing ones)."""
        return DmarcRecord({**self.tags, **changes})
