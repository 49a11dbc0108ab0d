"""Prometheus metrics shared by all services (one registry per process; labelled by service)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_REQUESTS = Counter(
    "instructrec_rpc_requests_total", "RPCs handled, by final status code.", ["service", "method", "code"]
)
RPC_LATENCY = Histogram(
    "instructrec_rpc_latency_seconds",
    "Server-side RPC latency.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
STAGE_LATENCY = Histogram(
    "instructrec_stage_latency_seconds",
    "Latency of one stage of a request (downstream call or model call).",
    ["service", "stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DEGRADED = Counter("instructrec_degraded_responses_total", "Responses with a skipped stage.", ["service", "stage"])
PREFERENCE_EVENTS = Counter(
    "instructrec_preference_events_total",
    "Preference statements: memory_hit, store_hit, miss, enqueued, deduplicated, dropped_queue_full, written, "
    "unservable (nothing servable left after cleaning), generation_failed.",
    ["event"],
)
PREFERENCE_QUEUE = Gauge("instructrec_preference_queue", "Histories queued or being written by the background workers.")
SHED = Counter(
    "instructrec_shed_requests_total",
    "RPCs refused with RESOURCE_EXHAUSTED before any work, by reason (expected_wait: the queue ahead would "
    "outlast the caller's deadline; queue_full: the waiting room is full).",
    ["service", "method", "reason"],
)
ADMISSION_INFLIGHT = Gauge("instructrec_admission_inflight", "RPCs being served (past admission).", ["service"])
ADMISSION_WAITING = Gauge("instructrec_admission_waiting", "RPCs admitted and waiting for a slot.", ["service"])
ADMISSION_SERVICE_TIME = Gauge(
    "instructrec_admission_service_time_seconds", "Moving average of one RPC's service time (admission's estimate).",
    ["service"],
)


def start_metrics_server(port: int | None, host: str = "0.0.0.0") -> int | None:
    """Serve /metrics on ``port`` (0 picks a free port); returns the bound port, None when disabled."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=host)
    return server.server_port
