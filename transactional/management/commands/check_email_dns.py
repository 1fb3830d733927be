"""Check the sending domain's SPF, DKIM, DMARC and bounce MX records for the provider."""

import json
import sys
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from transactional.conf import providers
from transactional.dns import report
from transactional.dns.audit import audit
from transactional.dns.domains import address_domain, is_hostname, normalize
from transactional.dns.report import Status
from transactional.dns.resolver import DnsResolver
from transactional.dns.target import BUILDERS, build


def domain_name(value: str) -> str:
    """Parse a domain name (or an address, whose domain is taken)."""
    try:
        name = normalize(value.rpartition("@")[2])
    except UnicodeError:
        name = ""
    if not is_hostname(name):
        raise ArgumentTypeError(f"expected a domain name like acme.com, got {value!r}")
    return name


def selector_name(value: str) -> str:
    """Parse a DKIM selector: one or more DNS labels, e.g. ``pic`` or ``k1``."""
    if not is_hostname(f"{value.lower()}._domainkey.example.com"):
        raise ArgumentTypeError(f"expected a DKIM selector like s1 or k1, got {value!r}")
    return value.lower()


def positive_seconds(value: str) -> float:
    """Parse a positive number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not seconds > 0:
        raise ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


class Command(BaseCommand):
    help = (
        "Check the DNS records receivers use to authenticate our mail (SPF at the envelope "
        "domain, DKIM, DMARC and alignment, bounce MX) for the provider. Exits 1 if any check "
        "fails. See docs/deliverability.md."
    )

    #: Builds the DNS seam from ``timeout``; tests put a stub resolver here.
    resolver_class = DnsResolver

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "domain",
            nargs="?",
            type=domain_name,
            help="The From domain to check (default: DEFAULT_FROM_EMAIL's domain).",
        )
        parser.add_argument(
            "--provider",
            choices=list(BUILDERS),
            help="The provider that sends for the domain (default: every configured provider, "
            "EMAIL_PROVIDERS or EMAIL_PROVIDER).",
        )
        parser.add_argument(
            "--dkim-selector",
            dest="selectors",
            type=selector_name,
            action="append",
            default=[],
            metavar="SELECTOR",
            help="A DKIM selector to check, e.g. pic or k1 for Mailgun; repeatable. "
            "SendGrid's s1/s2 and SES's Easy DKIM tokens are checked without it.",
        )
        parser.add_argument(
            "--return-path-domain",
            type=domain_name,
            metavar="DOMAIN",
            help="The envelope (Return-Path / MAIL FROM) domain, where SPF is checked: the SES "
            "custom MAIL FROM domain (default: read from the SES API), SendGrid's em1234... "
            "host (required to check its SPF), the Mailgun sending domain (default: "
            "MAILGUN_SENDER_DOMAIN).",
        )
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="Print the results as JSON."
        )
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            default=5.0,
            metavar="SECONDS",
            help="Seconds each DNS lookup may take (default: %(default)r).",
        )

    def handle(
        self,
        *args: Any,
        domain: str | None,
        provider: str | None,
        selectors: list[str],
        return_path_domain: str | None,
        as_json: bool,
        timeout: float,
        **options: Any,
    ) -> None:
        # Mail may go out through any configured provider (failover), so each
        # must be authorized for the domain unless one is named.
        names = [provider] if provider else self.configured_providers()
        failed, documents = False, []
        for number, name in enumerate(names):
            target = build(
                domain or self.default_domain(),
                name,
                selectors=tuple(dict.fromkeys(selectors)),
                return_path=return_path_domain or "",
            )
            results = audit(self.resolver_class(timeout=timeout), target)
            failed = failed or report.has_failures(results)
            if as_json:
                documents.append((name, json.loads(report.as_json(results))))
                continue
            envelope = target.envelope or "unknown"
            self.stdout.write(
                ("\n" if number else "")
                + f"{target.domain} sending through {target.label} (envelope domain: {envelope})\n"
            )
            self.stdout.write(report.render(results, self.paint))
        if as_json:
            if len(documents) == 1:
                self.stdout.write(json.dumps(documents[0][1], indent=2))
            else:  # one list, each result saying which provider it is about
                rows = [{"provider": name, **row} for name, rows in documents for row in rows]
                self.stdout.write(json.dumps(rows, indent=2))
        if failed:
            sys.exit(1)  # the exit status is the verdict, as with `outbox status --check`

    def configured_providers(self) -> list[str]:
        """Return the configured providers (EMAIL_PROVIDERS or EMAIL_PROVIDER) that send mail."""
        names = list(providers())
        sending = [name for name in names if name in BUILDERS]
        if not sending:
            raise CommandError(f"EMAIL_PROVIDER={names[0]} does not send mail; pass --provider.")
        return sending

    def default_domain(self) -> str:
        """Return DEFAULT_FROM_EMAIL's domain."""
        if domain := address_domain(settings.DEFAULT_FROM_EMAIL):
            return domain
        raise CommandError(
            f"DEFAULT_FROM_EMAIL={settings.DEFAULT_FROM_EMAIL!r} has no domain; pass the domain."
        )

    def paint(self, status: Status, text: str) -> str:
        """Colour a status word (on a terminal)."""
        style = {
            Status.PASS: self.style.SUCCESS,
            Status.WARN: self.style.WARNING,
            Status.FAIL: self.style.ERROR,
        }
        return style[status](text)
