"""Metrics of the outbox: shared counters, cheap gauges, Prometheus and OpenTelemetry.

The code that sends and records calls the counting functions below
(counters.py); ``/metrics`` (views.py) and the optional OpenTelemetry
instruments (otel.py) read everything back through snapshot.py. Importing
this package imports no more than the counters, so the delivery and webhook
code can use it without a cycle.
"""

from .counters import count_events, count_messages, count_sent, event_counts, increment

__all__ = ["count_events", "count_messages", "count_sent", "event_counts", "increment"]
