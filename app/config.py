"""Every setting of runbox, read once from the environment and validated at start.

Each field maps to an environment variable named ``RUNBOX_`` plus the field name in upper
case (``RUNBOX_AMQP_URL``, ``RUNBOX_ROLES``...). Nothing else in the package reads the
environment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def hash_key(key: str) -> str:
    """The stored form of an API key: keys are compared by hash and never kept in clear."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyTier:
    """Rate and concurrency allowances for one API key (or for anonymous clients)."""

    name: str
    rate_per_s: float
    burst: int
    max_concurrent_jobs: int
    max_streams: int


@dataclass(frozen=True)
class Settings:
    """The whole configuration. Build it with :meth:`from_env`; tests build it directly."""

    roles: tuple[str, ...] = ("gateway", "executor")
    host: str = "127.0.0.1"
    port: int = 8080
    # A second port answering GET /healthz from a loop of its own (app/web/probe.py), for
    # orchestrators: answered while the event loop is busy, 503 once it stalls. 0: none.
    probe_port: int = 0
    liveness_stall_s: float = 10.0  # the loop not running this long makes the probe port say "stalled"
    public_url: str = ""

    # One URL, or one per node of a RabbitMQ cluster separated by commas (failover in order).
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    amqp_prefix: str = "runbox"
    amqp_reconnect_s: float = 1.0  # pause between reconnection rounds (each round tries every node)
    amqp_quorum_size: int = 0  # replicas of each queue and the stream; 0: RabbitMQ's default (all nodes)
    stats_ttl_s: float = 1.0  # queue figures and executor counts are at most this old
    publish_timeout_s: float = 5.0
    # Runs of a job the system may fail (engine, sandbox, broker, executor) before it ends
    # failed: counted by the executors from the runs that began, not by RabbitMQ.
    delivery_limit: int = 3
    # RabbitMQ's own count beneath it (x-delivery-limit): every hand-out counts there, also a
    # job put back because a consumer's channel closed (each node of a restarting cluster
    # closes its connections), so it is only the net for a job no executor can even begin.
    return_limit: int = 20
    queue_max_length: int = 1000
    events_max_age: str = "1D"
    events_lookback_s: float = 600.0
    events_cache_mb: int = 256  # job histories a gateway keeps in memory, in MiB (output counted once)
    events_max_mb: int = 20480  # the event stream's size bound (x-max-length-bytes), beside its age

    # The executor's Docker API: the gate's socket. Only the gate holds the engine's own.
    docker_url: str = "unix:///run/runbox/gate.sock"
    engine_url: str = "unix:///var/run/docker.sock"  # the real engine, for the gate alone
    gate_socket: str = "/run/runbox/gate.sock"  # where the gate listens ("" for none)
    gate_tcp: str = ""  # and/or host:port, loopback only
    gate_socket_gid: int = -1  # group given the gate's socket (mode 0660); -1 keeps the gate's own
    # Where executors offer each sandbox's agent a socket (a directory per sandbox, mounted
    # read-only): job data then bypasses the engine. The same path on the host, the executor
    # and the gate; empty: the container's attach stream through the engine.
    agent_socket_dir: str = "/run/runbox/agents"
    runtime: str = "runc"
    gvisor_runtime: str = "runbox-runsc"  # the engine's name for the gVisor that serves RUNBOX_RUNTIME=runsc
    runtime_overrides: tuple[str, ...] = ()  # "language=runtime" pairs
    executor_name: str = ""  # empty: unique per process (host, pid, random); set it for a stable identity
    engine_check_s: float = 2.0  # how often an executor checks its Docker engine and runtimes
    pool_min: int = 1
    pool_size: int = 5
    pool_max: int = 8
    pool_overrides: tuple[str, ...] = ()  # "language=min:target:max"
    container_max_uses: int = 200
    max_running: int = 0  # 0: twice the host's cores
    memory_budget_mb: int = 0  # 0: half the host's memory
    languages: tuple[str, ...] = ()  # empty: every language whose image exists
    image_tag: str = "latest"  # tag of every sandbox image; lets two checkouts on one host keep their own builds
    sandbox_cpus: float = 1.0
    # Every sandbox runs as a host uid of its own from this range, so per-user kernel
    # quotas (inotify instances, message queues, pipe buffers) are never shared by two jobs.
    sandbox_uid_base: int = 200000
    sandbox_uid_count: int = 60000

    max_body_kb: int = 2048
    max_header_kb: int = 16  # request line and header fields together (431 above it)
    body_timeout_s: float = 10.0  # a request body must arrive within this long (408)
    retry_after_s: int = 2
    # An executor gathers a job's events this long and publishes them as one message, so a
    # short job's started, output and result are one publish; output of a long one streams at
    # this interval. 0: publish every event at once.
    event_linger_ms: int = 20
    # Submissions one gateway handles at once (admitted, not yet answered); more are shed at
    # once with 503 + Retry-After instead of waiting inside the gateway. 0: no bound.
    max_pending_submits: int = 64
    # New submissions are shed the same way while at least SHED_MIN_PUBLISHING of this
    # gateway's publishes await RabbitMQ's confirm and the oldest has waited longer than this:
    # the queue's own delay, which a slow client's body cannot hold up. 0: never on delay.
    shed_after_ms: int = 250
    require_keys: bool = False
    api_keys: tuple[str, ...] = ()  # "tier:sha256hex" or "tier:plain:KEY" entries
    anonymous_rate_per_s: float = 5.0
    anonymous_burst: int = 20
    anonymous_max_concurrent: int = 8
    anonymous_max_streams: int = 16
    tiers: tuple[str, ...] = ("standard=20:60:16:64", "premium=100:300:64:256")
    trusted_proxies: tuple[str, ...] = ()
    gateway_count: int = 1
    allow_anonymous_playground: bool = False  # with keys required, let the playground in anonymously
    read_rate_factor: float = 10.0  # reads (job state, streams) per identity: this many times the tier's rate
    max_replays: int = 4  # old-job history reads running at once on one gateway; more wait, then 503
    replay_timeout_s: float = 15.0  # an old job's history must be read back within this long
    metrics_allow_cidrs: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # peers that may read /metrics
    metrics_token: str = ""  # a bearer token that may read /metrics from anywhere
    callback_allow_cidrs: tuple[str, ...] = ()  # private/loopback ranges callback URLs may still target
    id_secret: str = ""  # keys the check digits of job ids; set the same on every gateway

    judge_max_total_s: float = 60.0  # ceiling on a judged job's run time over all its cases
    interactive_idle_s: float = 30.0  # an interactive program waiting this long for input ends timed_out
    stdin_max_kb: int = 1024  # input an interactive job may receive in all
    stdin_rate_kb_s: int = 64  # ...and per second (also the burst)
    callback_secret: str = ""  # HMAC key of Runbox-Signature; required to accept callback_url
    callback_timeout_s: float = 10.0
    # Waits between delivery attempts (seconds); the defaults span 84 minutes.
    callback_retry_delays_s: tuple[str, ...] = ("5", "15", "30", "60", "120", "300", "600", "900", "1200", "1800")

    log_level: str = "INFO"
    fault_crash_marker: str = ""  # tests only: an executor exits when a job's source holds it

    # Derived once per process, never read from the environment.
    executor_id: str = field(init=False, compare=False, repr=False, default="")

    def __post_init__(self) -> None:
        # Two executors on one host must never share a name: an executor removes the
        # sandboxes labelled with its own name (a crashed predecessor's) when it starts.
        name = self.executor_name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        object.__setattr__(self, "executor_id", name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``RUNBOX_*`` variable, converting and checking its type."""
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            name = "RUNBOX_" + f.name.upper()
            if name not in env:
                continue
            raw = env[name]
            kind = hints[f.name]
            try:
                if kind is bool:
                    if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(raw)
                    values[f.name] = raw.lower() in ("1", "true", "yes", "on")
                elif kind is int:
                    values[f.name] = int(raw)
                elif kind is float:
                    values[f.name] = float(raw)
                elif kind == tuple[str, ...]:
                    values[f.name] = _split(raw)
                else:
                    values[f.name] = raw
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from exc
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject combinations that cannot work, naming the variable to fix."""
        unknown = set(self.roles) - {"gateway", "executor", "gate"}
        if unknown or not self.roles:
            raise ConfigError(f"RUNBOX_ROLES must name gateway and/or executor, or gate, not {self.roles!r}")
        if "gate" in self.roles and len(self.roles) > 1:
            raise ConfigError("RUNBOX_ROLES=gate runs alone: the gate is the only process holding the engine's socket")
        if "gate" in self.roles and not (self.gate_socket or self.gate_tcp):
            raise ConfigError("the gate needs RUNBOX_GATE_SOCKET and/or RUNBOX_GATE_TCP")
        if self.gate_tcp and self.gate_tcp.rpartition(":")[0] not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise ConfigError("RUNBOX_GATE_TCP must be a loopback address: the gate's API is for local executors")
        if self.runtime not in ("runc", "runsc"):
            raise ConfigError(f"RUNBOX_RUNTIME must be runc or runsc, not {self.runtime!r}")
        if not 0 <= self.probe_port <= 65535 or (self.probe_port and self.probe_port == self.port):
            raise ConfigError("RUNBOX_PROBE_PORT must be 0 (none) or a port other than RUNBOX_PORT")
        if self.liveness_stall_s <= 0:
            raise ConfigError("RUNBOX_LIVENESS_STALL_S must be a positive number of seconds")
        if self.sandbox_uid_base < 1000 or self.sandbox_uid_count < 64:
            raise ConfigError("RUNBOX_SANDBOX_UID_BASE must be >= 1000 and RUNBOX_SANDBOX_UID_COUNT >= 64")
        if not 0 <= self.pool_min <= self.pool_size <= self.pool_max:
            raise ConfigError("pool sizes must satisfy 0 <= RUNBOX_POOL_MIN <= RUNBOX_POOL_SIZE <= RUNBOX_POOL_MAX")
        if self.delivery_limit < 1:
            raise ConfigError("RUNBOX_DELIVERY_LIMIT must be at least 1")
        if self.return_limit <= self.delivery_limit:
            raise ConfigError("RUNBOX_RETURN_LIMIT must be greater than RUNBOX_DELIVERY_LIMIT")
        for url in self.amqp_urls or ("",):
            if not url.startswith(("amqp://", "amqps://")):
                raise ConfigError(f"RUNBOX_AMQP_URL entries must be amqp:// or amqps:// URLs, not {url!r}")
        if self.amqp_quorum_size < 0:
            raise ConfigError("RUNBOX_AMQP_QUORUM_SIZE must be 0 (RabbitMQ's default) or a replica count")
        self.tier_table()
        self.key_table()
        self.callback_delays()
        _ = self.events_max_age_s
        self.pool_table()
        self.runtime_table()
        for name in ("trusted_proxies", "metrics_allow_cidrs", "callback_allow_cidrs"):
            for cidr in getattr(self, name):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError as exc:
                    raise ConfigError(f"RUNBOX_{name.upper()} entry {cidr!r} is not an address range") from exc
        positive = ("max_body_kb", "max_header_kb", "events_cache_mb", "events_max_mb", "max_replays")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"RUNBOX_{name.upper()} must be at least 1")

    # --- derived views ---------------------------------------------------------------------
    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """Every RabbitMQ node to try, in order."""
        return _split(self.amqp_url)

    @property
    def events_max_age_s(self) -> float:
        """The event stream's retention in seconds, from RabbitMQ's ``x-max-age`` syntax (``1D``, ``12h``)."""
        units = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}
        number, unit = self.events_max_age[:-1], self.events_max_age[-1:]
        if unit not in units or not number.isdigit():
            raise ConfigError(f"RUNBOX_EVENTS_MAX_AGE={self.events_max_age!r} is not like 1D, 12h or 30m")
        return int(number) * units[unit]

    @property
    def job_id_key(self) -> bytes:
        """The key of job ids' check digits: ``RUNBOX_ID_SECRET``, else one derived from the broker.

        Every gateway of a deployment shares the broker URL and prefix, so the derived key
        agrees between them without configuration; an operator sets a secret to make forged
        ids unguessable as well as cheap to refuse.
        """
        seed = self.id_secret or f"runbox-job-id:{self.amqp_url}:{self.amqp_prefix}"
        return hashlib.sha256(seed.encode()).digest()

    @property
    def memory_budget(self) -> int:
        """Memory (MB) the warm containers of one executor may reserve in all."""
        if self.memory_budget_mb:
            return self.memory_budget_mb
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        return max(1024, total // 2)

    @property
    def running_slots(self) -> int:
        """How many jobs this executor runs at once."""
        return self.max_running or 2 * (os.cpu_count() or 1)

    def anonymous_tier(self) -> KeyTier:
        return KeyTier(
            "anonymous",
            self.anonymous_rate_per_s,
            self.anonymous_burst,
            self.anonymous_max_concurrent,
            self.anonymous_max_streams,
        )

    def tier_table(self) -> dict[str, KeyTier]:
        """Tiers by name, from ``name=rate:burst:concurrent:streams`` entries."""
        table = {"anonymous": self.anonymous_tier()}
        for entry in self.tiers:
            try:
                name, spec = entry.split("=", 1)
                rate, burst, concurrent, streams = spec.split(":")
                table[name] = KeyTier(name, float(rate), int(burst), int(concurrent), int(streams))
            except ValueError as exc:
                raise ConfigError(f"RUNBOX_TIERS entry {entry!r} is not name=rate:burst:jobs:streams") from exc
        return table

    def key_table(self) -> dict[str, str]:
        """Map of sha256(key) to tier name, from ``tier:sha256hex`` or ``tier:plain:KEY`` entries."""
        tiers = self.tier_table()
        table: dict[str, str] = {}
        for entry in self.api_keys:
            parts = entry.split(":", 2)
            if len(parts) == 3 and parts[1] == "plain":
                tier, digest = parts[0], hash_key(parts[2])
            elif len(parts) == 2 and len(parts[1]) == 64:
                tier, digest = parts[0], parts[1].lower()
            else:
                raise ConfigError("RUNBOX_API_KEYS entries are tier:sha256hex or tier:plain:KEY")
            if tier not in tiers:
                raise ConfigError(f"RUNBOX_API_KEYS names unknown tier {tier!r}")
            table[digest] = tier
        return table

    def pool_table(self) -> dict[str, tuple[int, int, int]]:
        """Per-language (min, target, max) pool sizes that differ from the defaults."""
        table: dict[str, tuple[int, int, int]] = {}
        for entry in self.pool_overrides:
            try:
                lang, spec = entry.split("=", 1)
                lo, target, hi = (int(x) for x in spec.split(":"))
            except ValueError as exc:
                raise ConfigError(f"RUNBOX_POOL_OVERRIDES entry {entry!r} is not lang=min:target:max") from exc
            if not 0 <= lo <= target <= hi:
                raise ConfigError(f"RUNBOX_POOL_OVERRIDES entry {entry!r} needs min <= target <= max")
            table[lang] = (lo, target, hi)
        return table

    def pool_sizes(self, language: str) -> tuple[int, int, int]:
        return self.pool_table().get(language, (self.pool_min, self.pool_size, self.pool_max))

    def callback_delays(self) -> tuple[float, ...]:
        """Seconds to wait before each retry of a callback delivery, in order."""
        try:
            delays = tuple(float(d) for d in self.callback_retry_delays_s)
        except ValueError as exc:
            raise ConfigError("RUNBOX_CALLBACK_RETRY_DELAYS_S must be numbers of seconds") from exc
        if any(not 0 < d <= 86400 for d in delays):
            raise ConfigError("RUNBOX_CALLBACK_RETRY_DELAYS_S entries must be between 0 and 86400 s")
        return delays

    def runtime_table(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for entry in self.runtime_overrides:
            lang, _, runtime = entry.partition("=")
            if runtime not in ("runc", "runsc"):
                raise ConfigError(f"RUNBOX_RUNTIME_OVERRIDES entry {entry!r} must be language=runc|runsc")
            table[lang] = runtime
        return table

    def runtime_for(self, language: str) -> str:
        return self.runtime_table().get(language, self.runtime)

    def engine_runtime(self, runtime: str) -> str:
        """The Docker engine's name for a runtime: ``runsc`` is the gVisor setup.sh registers."""
        return self.gvisor_runtime if runtime == "runsc" else runtime

