"""What to check for a provider: the envelope domain, DKIM selectors, bounce MX.

Each ESP puts different names in DNS (docs/deliverability.md has the
records); one small builder per provider turns the settings, the SES API
and the command's options into a ``Target``.
"""

from collections.abc import Callable
from dataclasses import dataclass

from anymail.utils import get_anymail_setting

from ..mailers import email_setting
from . import ses
from .records import record_line
from .report import Result, passed, warned

SENDGRID_SELECTORS = ("s1", "s2")
SENDGRID_CNAME_SUFFIX = "sendgrid.net"


@dataclass(frozen=True)
class Selector:
    """A DKIM selector, checked at ``<selector>._domainkey.<domain>``."""

    selector: str
    domain: str
    #: The exact CNAME target the provider expects (SES Easy DKIM), if any.
    cname: str = ""
    #: The domain the CNAME target must end in (SendGrid's account-specific hosts).
    cname_suffix: str = ""

    @property
    def name(self) -> str:
        """Return the DNS name of the key record."""
        return f"{self.selector}._domainkey.{self.domain}"


@dataclass(frozen=True)
class Target:
    """Everything the checks need to know about one domain and provider."""

    #: The From (header) domain that DMARC protects.
    domain: str
    #: The provider's name, for the report.
    label: str
    #: The envelope (Return-Path / MAIL FROM) domain SPF checks; "" if unknown.
    envelope: str = ""
    #: Whether the envelope domain is the provider's own (SES without custom MAIL FROM).
    envelope_is_providers: bool = False
    #: Why the envelope is unknown or not ours, and what to publish instead.
    envelope_note: str = ""
    envelope_fix: str = ""
    #: SPF includes that authorize the provider; the first one is suggested.
    spf_includes: tuple[str, ...] = ()
    #: The envelope domain must be a CNAME to a host under this domain (SendGrid).
    envelope_cname_suffix: str = ""
    #: MX hosts the envelope domain needs for bounces, and whether missing them fails.
    bounce_mx: tuple[str, ...] = ()
    bounce_mx_required: bool = False
    selectors: tuple[Selector, ...] = ()
    #: How to find the selectors when none are known.
    dkim_hint: str = ""
    #: How to get a longer key from this provider.
    dkim_rotate_hint: str = "generate a 2048-bit key and publish it under a new selector"
    #: EMAIL_HOST, for SMTP.
    relay: str = ""
    #: Results found while building the target (the SES API's answer).
    notes: tuple[Result, ...] = ()

    def spf_suggestion(self) -> str:
        """Return the SPF record to publish at the envelope domain."""
        include = self.spf_includes[0] if self.spf_includes else "<your SMTP provider's SPF domain>"
        return f"v=spf1 include:{include} ~all"


Builder = Callable[[str, tuple[str, ...], str], Target]


def build(
    domain: str, provider: str, *, selectors: tuple[str, ...] = (), return_path: str = ""
) -> Target:
    """Return what to check for ``domain`` sending through ``provider``."""
    return BUILDERS[provider](domain, selectors, return_path)


def _ses(domain: str, selectors: tuple[str, ...], return_path: str) -> Target:
    identity, note = _ses_identity(domain)
    region = identity.region or "<region>"
    easy_dkim = tuple(
        Selector(token, domain, cname=f"{token}.dkim.amazonses.com")
        for token in identity.dkim_tokens
    )
    common = dict(
        domain=domain,
        label="Amazon SES",
        spf_includes=("amazonses.com",),
        selectors=_dedupe(easy_dkim + _plain(selectors, domain)),
        dkim_hint=f"enable Easy DKIM for {domain} in SES, or pass --dkim-selector",
        dkim_rotate_hint=(
            f"aws sesv2 put-email-identity-dkim-signing-attributes --email-identity {domain} "
            "--signing-attributes-origin AWS_SES "
            "--signing-attributes NextSigningKeyLength=RSA_2048_BIT"
        ),
        notes=(note,),
    )
    mail_from = return_path or identity.mail_from_domain
    if mail_from:
        return Target(
            **common,
            envelope=mail_from,
            # Unknown region: ses.identity already warns; no MX to compare.
            bounce_mx=(f"feedback-smtp.{region}.amazonses.com",) if identity.region else (),
            bounce_mx_required=True,
        )
    bounce = f"bounce.{domain}"
    return Target(
        **common,
        envelope="amazonses.com",
        envelope_is_providers=True,
        envelope_note=(
            "no custom MAIL FROM domain: SES sends with MAIL FROM amazonses.com, so SPF passes "
            f"for Amazon but never aligns with {domain}; DMARC rests on DKIM alone"
        ),
        envelope_fix=(
            f"set a custom MAIL FROM domain (e.g. {bounce}) in SES and publish "
            f"{record_line(bounce, 'MX', f'10 feedback-smtp.{region}.amazonses.com')} and "
            f"{record_line(bounce, 'TXT', 'v=spf1 include:amazonses.com ~all')}"
        ),
    )


def _ses_identity(domain: str) -> tuple[ses.SesIdentity, Result]:
    try:
        identity = ses.read_identity(domain)
    except ses.SesUnavailable as err:
        note = warned(
            "ses.identity",
            f"could not read the SES identity {domain}: {err}; "
            "custom MAIL FROM and Easy DKIM tokens not checked",
            "grant ses:GetEmailIdentity to these credentials, or pass --return-path-domain "
            "and --dkim-selector",
        )
        return ses.SesIdentity(region=err.region), note
    status = f" ({identity.mail_from_status})" if identity.mail_from_status else ""
    mail_from = (
        f"MAIL FROM {identity.mail_from_domain}{status}"
        if identity.mail_from_domain
        else "no custom MAIL FROM"
    )
    tokens = len(identity.dkim_tokens)
    detail = f"{domain} in {identity.region}: {mail_from}, {tokens} Easy DKIM token(s)"
    if identity.mail_from_domain and identity.mail_from_status != "SUCCESS":
        return identity, warned(
            "ses.identity", detail, "SES has not verified the MAIL FROM domain's MX record yet"
        )
    return identity, passed("ses.identity", detail)


def _mailgun(domain: str, selectors: tuple[str, ...], return_path: str) -> Target:
    sending = return_path or _anymail("sender_domain", "Mailgun", "") or domain
    eu = "api.eu.mailgun.net" in _anymail("api_url", "Mailgun", "")
    base, other = ("eu.mailgun.org", "mailgun.org") if eu else ("mailgun.org", "eu.mailgun.org")
    return Target(
        domain=domain,
        label="Mailgun",
        envelope=sending.lower(),
        spf_includes=(base, other),
        bounce_mx=(f"mxa.{base}", f"mxb.{base}"),
        selectors=_plain(selectors, sending.lower()),
        dkim_hint=(
            f"pass --dkim-selector: Mailgun shows it for {sending} under Sending > Domain "
            "settings > DNS records (e.g. pic, k1, mx)"
        ),
    )


def _sendgrid(domain: str, selectors: tuple[str, ...], return_path: str) -> Target:
    fixed = tuple(
        Selector(name, domain, cname_suffix=SENDGRID_CNAME_SUFFIX) for name in SENDGRID_SELECTORS
    )
    return Target(
        domain=domain,
        label="SendGrid",
        envelope=return_path,
        envelope_note=""
        if return_path
        else (
            f"SendGrid's return-path host is account specific (em1234.{domain}, a CNAME to "
            "u1234567.wl123.sendgrid.net); SPF was not checked"
        ),
        envelope_fix=""
        if return_path
        else (
            "pass --return-path-domain with the em... host SendGrid shows under Settings > "
            "Sender Authentication"
        ),
        spf_includes=("sendgrid.net",),
        envelope_cname_suffix=SENDGRID_CNAME_SUFFIX,
        selectors=_dedupe(fixed + _plain(selectors, domain)),
    )


def _smtp(domain: str, selectors: tuple[str, ...], return_path: str) -> Target:
    return Target(
        domain=domain,
        label="SMTP",
        envelope=return_path or domain,
        selectors=_plain(selectors, domain),
        dkim_hint="pass --dkim-selector with the selector your SMTP provider signs with",
        relay=email_setting("EMAIL_HOST", ""),
    )


BUILDERS: dict[str, Builder] = {
    "ses": _ses,
    "mailgun": _mailgun,
    "sendgrid": _sendgrid,
    "smtp": _smtp,
}


def _plain(selectors: tuple[str, ...], domain: str) -> tuple[Selector, ...]:
    return tuple(Selector(selector, domain) for selector in selectors)


def _dedupe(selectors: tuple[Selector, ...]) -> tuple[Selector, ...]:
    seen: dict[str, Selector] = {}
    for selector in selectors:
        seen.setdefault(selector.name, selector)
    return tuple(seen.values())


def _anymail(name: str, esp_name: str, default: str) -> str:
    return get_anymail_setting(name, esp_name=esp_name, default=default) or default
