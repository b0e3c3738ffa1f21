"""Every Prometheus metric of runbox, in one place, on an injectable registry.

Names follow Prometheus conventions: one ``runbox_`` prefix, base units (seconds, bytes) as
suffixes, ``_total`` on counters. Label values are bounded: languages, statuses, reasons,
route templates; never job ids, keys or client addresses.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.messages import TERMINAL_STATUSES

RUN_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REJECT_REASONS = (
    "rate_limited",
    "concurrency",
    "streams",
    "unauthorized",
    "body_too_large",
    "bad_request",
    "queue_full",
    "broker_unavailable",
    "forbidden",
    "not_found",
    "expired",
    "slow_body",
    "headers_too_large",
    "busy",
    "overloaded",
)
LIMIT_KINDS = ("wall_time", "cpu_time", "memory", "output", "file_size", "processes", "compile_time")
CONTAINER_EVENTS = ("created", "recycled", "reused", "failed", "removed")
CALLBACK_OUTCOMES = ("delivered", "http_error", "timeout", "unreachable", "refused", "not_ready")
CALLBACK_ABANDONED = ("refused", "retries_exhausted")
GATE_ENDPOINTS = ("ping", "version", "info", "create", "list", "remove", "start", "attach", "wait", "kill",
                  "inspect", "runtimes", "events")
GATE_REFUSALS = ("endpoint", "policy", "not_a_sandbox", "uid_in_use", "bad_request")


class Metrics:
    """The metric objects; one instance per app, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # gateway
        self.http_requests = Counter(
            "runbox_http_requests_total", "HTTP requests answered.", ["route", "method", "code"], registry=r
        )
        self.http_duration = Histogram(
            "runbox_http_request_duration_seconds",
            "Time to answer an HTTP request (streams: time to first byte).",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.jobs_submitted = Counter(
            "runbox_jobs_submitted_total", "Jobs accepted with 202 and queued.", ["language", "api"], registry=r
        )
        self.rejections = Counter(
            "runbox_rejections_total", "Requests refused before queueing, by reason.", ["reason"], registry=r
        )
        self.sse_streams = Gauge("runbox_sse_streams", "Open Server-Sent Event streams.", registry=r)
        self.submit_to_result = Histogram(
            "runbox_job_submit_to_result_seconds",
            "Time from a job's acceptance to its terminal event, seen by a gateway.",
            ["language"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.ratelimit_tokens = Gauge(
            "runbox_ratelimit_rate_per_second",
            "This gateway's share of the configured request rate per identity, by tier.",
            ["tier"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "runbox_queue_depth", "Jobs waiting in RabbitMQ for a language.", ["language"], registry=r
        )
        self.executors = Gauge(
            "runbox_executors", "Executors connected and consuming jobs, seen by a gateway.", registry=r
        )
        self.callback_attempts = Counter(
            "runbox_callback_attempts_total",
            "Callback delivery attempts by outcome (delivered, http_error, timeout, unreachable, refused, not_ready).",
            ["outcome"],
            registry=r,
        )
        self.callbacks_abandoned = Counter(
            "runbox_callbacks_abandoned_total",
            "Callbacks given up: the address was refused at delivery, or every retry failed.",
            ["reason"],
            registry=r,
        )
        self.queue_consumers = Gauge(
            "runbox_queue_consumers", "Executors consuming a language's queue.", ["language"], registry=r
        )
        # executor
        self.jobs_finished = Counter(
            "runbox_jobs_finished_total", "Jobs that reached a terminal status.", ["language", "status"], registry=r
        )
        self.limit_hits = Counter(
            "runbox_limit_hits_total", "Jobs stopped or flagged by a limit, by kind.", ["language", "kind"], registry=r
        )
        self.queue_wait = Histogram(
            "runbox_job_queue_wait_seconds",
            "Time from acceptance to the start of the run.",
            ["language"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.run_duration = Histogram(
            "runbox_job_run_seconds",
            "Time from the start of the run to its end, inside the sandbox.",
            ["language"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.executor_waiting = Gauge(
            "runbox_executor_waiting_jobs",
            "Jobs an executor holds (prefetched, unacked) but has not started.",
            ["language"],
            registry=r,
        )
        self.executor_running = Gauge(
            "runbox_executor_running_jobs", "Jobs running in this executor.", ["language"], registry=r
        )
        self.executor_slots = Gauge(
            "runbox_executor_slots", "Jobs this executor may run at once over all languages.", registry=r
        )
        self.pool_containers = Gauge(
            "runbox_pool_containers",
            "Sandbox containers by state (idle; busy, a job or the scrub after it; warming).",
            ["language", "state"],
            registry=r,
        )
        self.pool_target = Gauge(
            "runbox_pool_target_containers",
            "Containers a pool is trying to keep, in all states.",
            ["language"],
            registry=r,
        )
        self.pool_max = Gauge("runbox_pool_max_containers", "A pool's size ceiling.", ["language"], registry=r)
        self.container_events = Counter(
            "runbox_container_events_total",
            "Sandbox container lifecycle events (created, reused, recycled, failed, removed).",
            ["language", "event"],
            registry=r,
        )
        self.container_start = Histogram(
            "runbox_container_start_seconds",
            "Time to create, start and greet a sandbox container.",
            ["language"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "runbox_dead_letters_total",
            "Jobs that exhausted their delivery limit and ended failed.",
            ["language"],
            registry=r,
        )
        self.redeliveries = Counter(
            "runbox_redeliveries_total", "Jobs received again after an earlier attempt.", ["language"], registry=r
        )
        # the Docker gate
        self.gate_requests = Counter(
            "runbox_gate_requests_total", "Docker API requests the gate allowed, by endpoint.", ["endpoint"], registry=r
        )
        self.gate_refusals = Counter(
            "runbox_gate_refusals_total",
            "Docker API requests the gate refused (403), by reason.",
            ["reason"],
            registry=r,
        )
        self.sandbox_runtime = Gauge(
            "runbox_sandbox_runtime_info",
            "1 for each container runtime sandboxes may use, with the engine's name for it and its version.",
            ["runtime", "engine_runtime", "version"],
            registry=r,
        )
        # both roles
        self.broker_reconnects = Counter(
            "runbox_broker_reconnects_total", "Connections to RabbitMQ re-established.", ["role"], registry=r
        )
        self.broker_up = Gauge("runbox_broker_connected", "1 while connected to RabbitMQ.", ["role"], registry=r)
        self.events_published = Counter(
            "runbox_events_published_total", "Job events published to the event stream.", ["role"], registry=r
        )

    def answered(self, route: str, method: str, status: int, seconds: float | None) -> None:
        """Count one HTTP answer (and its time, when known): the application's and those made ahead of it."""
        self.http_requests.labels(route, method, str(status)).inc()
        if seconds is not None:
            self.http_duration.labels(route).observe(seconds)

    def prime(self, languages: Iterable[str], roles: Iterable[str]) -> None:
        """Create every known label combination at zero so dashboards never see gaps."""
        roles = list(roles)
        for reason in REJECT_REASONS:
            self.rejections.labels(reason)
        for outcome in CALLBACK_OUTCOMES:
            self.callback_attempts.labels(outcome)
        for reason in CALLBACK_ABANDONED:
            self.callbacks_abandoned.labels(reason)
        if "gate" in roles:
            for endpoint in GATE_ENDPOINTS:
                self.gate_requests.labels(endpoint)
            for reason in GATE_REFUSALS:
                self.gate_refusals.labels(reason)
        for role in roles:
            self.broker_reconnects.labels(role)
            self.broker_up.labels(role)
            self.events_published.labels(role)
        for lang in languages:
            self.queue_depth.labels(lang)
            self.queue_consumers.labels(lang)
            for api in ("v1", "piston", "judge0"):
                self.jobs_submitted.labels(lang, api)
            self.submit_to_result.labels(lang)
            self.queue_wait.labels(lang)
            self.run_duration.labels(lang)
            self.executor_waiting.labels(lang)
            self.executor_running.labels(lang)
            self.pool_target.labels(lang)
            self.pool_max.labels(lang)
            self.dead_letters.labels(lang)
            self.redeliveries.labels(lang)
            self.container_start.labels(lang)
            for status in TERMINAL_STATUSES:
                self.jobs_finished.labels(lang, status)
            for kind in LIMIT_KINDS:
                self.limit_hits.labels(lang, kind)
            for state in ("idle", "busy", "warming"):
                self.pool_containers.labels(lang, state)
            for event in CONTAINER_EVENTS:
                self.container_events.labels(lang, event)
