"""The Prometheus exposition of the snapshot, through prometheus-client's own types.

Only our collector is registered: prometheus-client's process and platform
collectors describe the one process that answers, not the outbox, and every
gunicorn worker would answer with other figures.
"""

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import snapshot

FAMILY_TYPES = {
    "counter": CounterMetricFamily,
    "gauge": GaugeMetricFamily,
    "histogram": HistogramMetricFamily,
}


class OutboxCollector(Collector):
    """Read the outbox's metrics from the database at every scrape."""

    def collect(self) -> Iterator[Metric]:
        for family in snapshot.collect():
            yield to_prometheus(family)


def to_prometheus(family: snapshot.Family) -> Metric:
    # The unit is in our names already (webhook_lag_seconds); passing it again
    # would only make OpenMetrics repeat it in a # UNIT line.
    spec = family.spec
    metric = FAMILY_TYPES[spec.kind](spec.name, spec.help, labels=spec.labels)
    for sample in family.samples:
        values = [sample.labels[label] for label in spec.labels]
        if isinstance(sample, snapshot.Histogram):
            # "15.0", "+Inf": the spelling prometheus-client's own histograms use.
            buckets = [(floatToGoString(float(bound)), count) for bound, count in sample.buckets]
            metric.add_metric(values, buckets=buckets, sum_value=sample.total)
        else:
            metric.add_metric(values, sample.value)
    return metric


registry = CollectorRegistry(auto_describe=False)
registry.register(OutboxCollector())


def render(accept: str = "") -> tuple[bytes, str]:
    """Return the exposition for an ``Accept`` header (OpenMetrics if asked for), and its type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
