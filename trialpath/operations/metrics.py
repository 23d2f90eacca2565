"""Prometheus metrics: what the journey sends, how fast providers answer, how the API is used.

The worker serves two endpoints when `TRIALPATH_WORKER_METRICS_PORT` is set: the Temporal SDK's
own metrics (task latencies, pollers, slots; `temporal_*`) on that port, served by the SDK's
core, and Trialpath's (`trialpath_*`) on the next port. The API serves its metrics at
`GET /metrics` (`trialpath.entry.api.metrics`), behind the API's bearer keys unless
`TRIALPATH_METRICS_PUBLIC` is set.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from trialpath.operations.config import Settings

MESSAGES = Counter(
    "trialpath_messages",
    "Messages whose send finished, by channel and outcome (sent, failed, skipped, unknown).",
    ["channel", "status"],
)
ACTIVATIONS = Counter("trialpath_activation_events", "Trials that reached activation.")
PROVIDER_LATENCY = Histogram(
    "trialpath_provider_latency_seconds",
    "Time a delivery provider takes to accept or refuse one message.",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0),
)
HTTP_REQUESTS = Counter(
    "trialpath_http_requests",
    "API requests by route template, method and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "trialpath_http_request_duration_seconds",
    "API request latency by route template and method.",
    ["method", "route"],
)


# --- worker ----------------------------------------------------------------------------------


def worker_runtime(settings: Settings) -> Runtime:
    """The worker's Temporal runtime: its core serves the SDK's metrics when they are on, and
    its own log lines go through Python logging (so they are formatted and redacted like ours)
    instead of straight to stderr."""
    metrics = None
    if settings.worker_metrics_port:
        address = f"{settings.metrics_host}:{settings.worker_metrics_port}"
        metrics = PrometheusConfig(bind_address=address)
    forwarding = LogForwardingConfig(logger=logging.getLogger("temporalio.core"))
    return Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(
                filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                forwarding=forwarding,
            ),
            metrics=metrics,
        )
    )


def serve_worker_metrics(settings: Settings) -> int | None:
    """Serves Trialpath's metrics next to the SDK's; returns the port, None when off."""
    if not settings.worker_metrics_port:
        return None
    port = settings.worker_metrics_port + 1
    start_http_server(port, addr=settings.metrics_host)
    return port
