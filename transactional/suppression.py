"""The suppression list: addresses we never mail again."""

import logging
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from .models import Suppression, normalize_address

logger = logging.getLogger(__name__)


def suppressed_among(addresses: Iterable[str]) -> set[str]:
    """Return the normalized addresses among ``addresses`` that are suppressed."""
    wanted = {normalize_address(address) for address in addresses}
    if not wanted:
        return set()
    return set(Suppression.objects.filter(address__in=wanted).values_list("address", flat=True))


def suppress(
    address: str, *, reason: str, source: str = "", note: str = ""
) -> tuple[Suppression, bool]:
    """Add ``address`` to the list (once); return the row and whether it is new."""
    address = normalize_address(address)
    try:
        with transaction.atomic():
            row, created = Suppression.objects.get_or_create(
                address=address, defaults={"reason": reason, "source": source, "note": note}
            )
    except IntegrityError:  # a concurrent request added it first
        row, created = Suppression.objects.get(address=address), False
    if created:
        logger.info("Suppressed %s (%s, from %s)", address, reason, source or "unknown")
    return row, created


def unsuppress(address: str, *, by: str) -> bool:
    """Remove ``address`` from the list; return whether it was there. Logged."""
    address = normalize_address(address)
    deleted, _ = Suppression.objects.filter(address=address).delete()
    if deleted:
        logger.warning("Removed %s from the suppression list (by %s)", address, by)
    return bool(deleted)
