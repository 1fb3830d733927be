"""Run every check for a target, in the order the report lists them."""

from .dkim import check_dkim, signing_domains
from .dmarc import check_dmarc
from .mx import check_mx
from .report import Result
from .resolver import Lookup
from .spf import check_spf
from .target import Target


def audit(resolver: Lookup, target: Target) -> list[Result]:
    """Return the results of the SPF, MX, DKIM and DMARC checks for ``target``."""
    dkim = check_dkim(resolver, target)
    return [
        *target.notes,
        *check_spf(resolver, target),
        *check_mx(resolver, target),
        *dkim,
        *check_dmarc(resolver, target, signing_domains(target, dkim)),
    ]
