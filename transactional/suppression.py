"""The suppression list: addresses we never mail again, on every stream or on one.

A hard bounce or a complaint stops every stream (``stream=""``); an
unsubscribe stops only the stream it came from, so a person who left the
newsletter still gets their password resets.
"""

import logging
from collections.abc import Iterable

from django.db import IntegrityError, connection, transaction

from . import db_limits, signals
from .models import DEFAULT_STREAM, Suppression, address_hash, normalize_address

logger = logging.getLogger(__name__)

EVERY_STREAM = Suppression.EVERY_STREAM


def suppressed_among(addresses: Iterable[str], *, stream: str = DEFAULT_STREAM) -> set[str]:
    """Return the normalized addresses among ``addresses`` that mail on ``stream`` skips."""
    wanted = {normalize_address(address) for address in addresses}
    if not wanted:
        return set()
    # A forgotten address is stored as a placeholder; only its hash still matches.
    by_hash = {address_hash(address): address for address in wanted}
    rows = [row for chunk in db_limits.chunks(sorted(wanted)) for row in _listed(chunk, stream)]
    return {address if address in wanted else by_hash[digest] for address, digest in rows}


def _listed(addresses: list[str], stream: str) -> list[tuple[str, str]]:
    """``Suppression.objects.for_addresses(addresses).for_stream(stream)``, as (address, hash) rows.

    Written in SQL: every message checks the list as it is queued and again
    as it is sent, and building this statement through the ORM took ten
    times longer than running it (a third of the cost of queueing a message).
    """
    table = connection.ops.quote_name(Suppression._meta.db_table)
    marks = ", ".join(["%s"] * len(addresses))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT address, address_hash FROM {table} "
            f"WHERE (address IN ({marks}) OR address_hash IN ({marks})) AND stream IN (%s, %s)",
            [*addresses, *map(address_hash, addresses), EVERY_STREAM, stream],
        )
        return cursor.fetchall()


def suppress_many(rows: Iterable[Suppression]) -> list[Suppression]:
    """Add the unsaved ``rows`` not covered by the list yet, in bulk; return those.

    A row for one stream is covered by one for the same stream or for every
    stream.
    """
    fresh: dict[tuple[str, str], Suppression] = {}
    for row in rows:
        row.address = normalize_address(row.address)
        row.address_hash = row.address_hash or address_hash(row.address)
        fresh.setdefault((row.address, row.stream), row)
    by_stream: dict[str, set[str]] = {}
    for address, stream in fresh:
        by_stream.setdefault(stream, set()).add(address)
    # For every stream, only a row for every stream covers it (for_stream("")).
    listed = {
        (address, stream)
        for stream, addresses in by_stream.items()
        for address in suppressed_among(addresses, stream=stream)
    }
    # In key order, so that concurrent inserts of the same addresses cannot deadlock.
    added = [row for key, row in sorted(fresh.items()) if key not in listed]
    # ignore_conflicts: a concurrent request may have listed one meanwhile.
    Suppression.objects.bulk_create(added, ignore_conflicts=True)
    if added:
        logger.info("Suppressed %d address(es)", len(added))
    signals.announce_suppressed(added)
    return added


def suppress(
    address: str, *, reason: str, source: str = "", note: str = "", stream: str = EVERY_STREAM
) -> tuple[Suppression, bool]:
    """Add ``address`` to the list for ``stream`` (or every stream); return the row and whether it is new."""
    address = normalize_address(address)
    covering = Suppression.objects.for_addresses([address]).filter(stream__in={EVERY_STREAM, stream})
    if existing := covering.order_by("stream").first():
        return existing, False
    try:
        with transaction.atomic():
            row, created = Suppression.objects.get_or_create(
                address=address, stream=stream,
                defaults={"reason": reason, "source": source, "note": note},
            )
    except IntegrityError:  # a concurrent request added it first
        row, created = Suppression.objects.get(address=address, stream=stream), False
    if created:
        scope = f"stream {stream}" if stream else "every stream"
        logger.info("Suppressed %s on %s (%s, from %s)", address, scope, reason, source or "unknown")
        signals.announce_suppressed([row])
    return row, created


def unsuppress(address: str, *, by: str, stream: str | None = None) -> bool:
    """Remove ``address`` from the list (for ``stream`` only, if given); return whether it was there."""
    address = normalize_address(address)
    # Also by hash: `forget` replaces an erased address with a placeholder.
    rows = Suppression.objects.for_addresses([address])
    if stream is not None:
        rows = rows.filter(stream=stream)
    deleted, _ = rows.delete()
    if deleted:
        scope = f" of stream {stream}" if stream else ""
        logger.warning("Removed %s from the suppression list%s (by %s)", address, scope, by)
    return bool(deleted)
