"""The suppression list: addresses we never mail again."""

import logging
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from . import db_limits
from .models import Suppression, address_hash, normalize_address

logger = logging.getLogger(__name__)


def suppressed_among(addresses: Iterable[str]) -> set[str]:
    """Return the normalized addresses among ``addresses`` that are suppressed."""
    wanted = {normalize_address(address) for address in addresses}
    if not wanted:
        return set()
    # A forgotten address is stored as a placeholder; only its hash still matches.
    by_hash = {address_hash(address): address for address in wanted}
    rows = [
        row
        for chunk in db_limits.chunks(sorted(wanted))
        for row in Suppression.objects.for_addresses(chunk).values_list("address", "address_hash")
    ]
    return {address if address in wanted else by_hash[digest] for address, digest in rows}


def suppress_many(rows: Iterable[Suppression]) -> list[Suppression]:
    """Add the unsaved ``rows`` whose address is not listed yet, in bulk; return those."""
    fresh: dict[str, Suppression] = {}
    for row in rows:
        row.address = normalize_address(row.address)
        row.address_hash = row.address_hash or address_hash(row.address)
        fresh.setdefault(row.address, row)
    listed = suppressed_among(fresh)
    # In address order, so that concurrent inserts of the same addresses cannot deadlock.
    added = [row for address, row in sorted(fresh.items()) if address not in listed]
    # ignore_conflicts: a concurrent request may have listed one meanwhile.
    Suppression.objects.bulk_create(added, ignore_conflicts=True)
    if added:
        logger.info("Suppressed %d address(es)", len(added))
    return added


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
    # Also by hash: `forget` replaces an erased address with a placeholder.
    deleted, _ = Suppression.objects.for_addresses([address]).delete()
    if deleted:
        logger.warning("Removed %s from the suppression list (by %s)", address, by)
    return bool(deleted)
