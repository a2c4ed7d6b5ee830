"""Prometheus metrics shared across the service (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "eventpipe_http_requests_total", "HTTP requests served", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "eventpipe_http_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS
)
EVENTS_PUBLISHED = Counter(
    "eventpipe_events_published_total", "Events acknowledged by the broker", ["topic"]
)
PUBLISH_SECONDS = Histogram(
    "eventpipe_publish_seconds",
    "Time from send to broker acknowledgement, per publish call",
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter("eventpipe_errors_total", "Errors by class", ["error_class"])
