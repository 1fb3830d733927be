"""Optional OpenTelemetry instruments: the same numbers as /metrics, for an OTel pipeline.

With ``TRANSACTIONAL_METRICS_OTEL = True`` and opentelemetry-api installed,
``install_from_settings()`` (called by the app's ``ready()``) registers one
observable instrument per metric of ``snapshot.SPECS`` on the global meter
provider. The API's proxy provider hands them to the SDK whenever the
application configures one, before or after start-up; without an SDK they
cost nothing. opentelemetry-api is no requirement of ours.

The numbers are the outbox's, not the process's: enable it in one process
(or aggregate with max, not sum), as every process would report the same.
A collection runs every callback at once; they share one reading of the
database (``Reading``), a few queries per export interval.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.db import close_old_connections, connection

from . import config

logger = logging.getLogger(__name__)

#: A reading this recent serves the other callbacks of the same collection.
READING_SECONDS = 5.0

_installed = False


class Reading:
    """The latest snapshot, read again once it is older than ``max_age`` seconds."""

    def __init__(self, max_age: float = READING_SECONDS) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._families: dict[str, Any] = {}
        self._at = float("-inf")

    def family(self, name: str):
        with self._lock:
            if time.monotonic() - self._at > self.max_age:
                self._families = {family.spec.name: family for family in _read()}
                self._at = time.monotonic()
            return self._families[name]


def _read() -> list:
    from . import snapshot

    # An exporter's thread has no request around it to recycle its
    # connection; inside a transaction (a test) the connection is not ours.
    ours = not connection.in_atomic_block
    if ours:
        close_old_connections()
    try:
        return snapshot.collect()
    finally:
        if ours:
            close_old_connections()


def register(meter_provider: Any = None, *, reading: Reading | None = None) -> list[Any]:
    """Register an observable instrument per metric on ``meter_provider`` (default: the global one)."""
    from opentelemetry import metrics as otel_metrics

    from . import snapshot

    provider = meter_provider or otel_metrics.get_meter_provider()
    meter = provider.get_meter("transactional")
    reading = reading or Reading()
    instruments = []
    for spec in snapshot.SPECS:
        if spec.kind == "histogram":
            instruments += _histogram(meter, spec, reading)
            continue
        create = (
            meter.create_observable_counter if spec.kind == "counter" else meter.create_observable_gauge
        )
        callback = _observe(reading, spec.name)
        instruments.append(create(spec.name, callbacks=[callback], unit=spec.unit, description=spec.help))
    return instruments


def _histogram(meter: Any, spec: Any, reading: Reading) -> list[Any]:
    """OpenTelemetry has no observable histogram: cumulative bucket, count and sum counters."""
    def buckets(family) -> Iterable[tuple[float, dict]]:
        for sample in family.samples:
            for bound, count in sample.buckets:
                yield count, {**sample.labels, "le": bound}

    parts: dict[str, Callable] = {
        "_bucket": buckets,
        "_count": lambda family: ((s.buckets[-1][1], s.labels) for s in family.samples),
        "_sum": lambda family: ((s.total, s.labels) for s in family.samples),
    }
    return [
        meter.create_observable_counter(
            spec.name + suffix,
            callbacks=[_observe(reading, spec.name, values)],
            unit="s" if suffix == "_sum" else "{event}",
            description=f"{spec.help} ({suffix[1:]})",
        )
        for suffix, values in parts.items()
    ]


def _observe(reading: Reading, name: str, values: Callable | None = None) -> Callable:
    from opentelemetry.metrics import Observation

    values = values or (lambda family: ((s.value, s.labels) for s in family.samples))

    def callback(options: Any) -> list:
        return [Observation(value, attributes) for value, attributes in values(reading.family(name))]

    return callback


def install_from_settings(meter_provider: Any = None) -> bool:
    """Register the instruments once if TRANSACTIONAL_METRICS_OTEL asks; return whether they are."""
    global _installed
    if _installed or not config.otel_wanted():
        return _installed
    if not config.otel_available():
        logger.warning(
            "TRANSACTIONAL_METRICS_OTEL is on but opentelemetry-api is not installed: no OTel metrics"
        )
        return False
    register(meter_provider)
    _installed = True
    return True
