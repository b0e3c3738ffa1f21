"""Policy tests of the Pulumi program (infra/) under Pulumi's mocks: no engine, no plugin, no Docker.

The mocks answer every resource registration by echoing its inputs and record what was asked
for; the tests then assert policies over the whole program (run as ``infra/__main__``, the way
``pulumi up`` runs it) or over one component. Secret inputs reach the mocks wrapped in Pulumi's
secret signature, which is how "the password only travels as a secret" is checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pulumi
import pytest
import yaml
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import Stack


@dataclass
class Registered:
    """One resource the program asked for."""

    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str = ""  # "urn::id" of the provider that manages it; empty: the default provider


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers registrations with their inputs (plus the ids Docker would compute) and records them."""

    def __init__(self) -> None:
        self.resources: list[Registered] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs), args.provider or ""))
        state = dict(args.inputs)
        if args.typ == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = f"sha256:{args.name}"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


# The mocks must be in place before the infra modules are imported.
pulumi.runtime.set_mocks(RecordingMocks(), project="runbox", stack="test")

from app.config import Settings  # noqa: E402
from app.languages import Registry  # noqa: E402
from infra import config as infra_config  # noqa: E402
from infra.broker import Broker, BrokerArgs  # noqa: E402
from infra.executor import Executor, ExecutorArgs  # noqa: E402
from infra.gateway import Gateway, GatewayArgs  # noqa: E402
from infra.monitoring import PROMETHEUS_CONFIG, PROMETHEUS_RULES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BROKER_PASSWORD = "broker-pw-must-stay-secret"
GRAFANA_PASSWORD = "grafana-pw-must-stay-secret"
METRICS_TOKEN = "metrics-token-must-stay-secret"
API_KEYS = "standard:plain:key-must-stay-secret"
SECRETS = {
    "runbox:brokerPassword": BROKER_PASSWORD,
    "runbox:grafanaAdminPassword": GRAFANA_PASSWORD,
    "runbox:metricsToken": METRICS_TOKEN,
}
CONTAINER = "docker:index/container:Container"
SOCKET = "docker.sock"
SETTING_NAMES = {"RUNBOX_" + name.upper() for name in Settings.__dataclass_fields__}


# --- running the program under mocks -----------------------------------------------------------
@dataclass
class Program:
    """What one run of infra/__main__ registered and exported."""

    resources: list[Registered]
    exports: dict[str, Any]
    secret_exports: dict[str, bool] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    @property
    def containers(self) -> list[Registered]:
        return self.of_type(CONTAINER)

    def role(self, role: str) -> list[Registered]:
        return [c for c in self.containers if labels(c).get("runbox.role") == role]

    def docker_names(self) -> list[str]:
        """Names of the Docker objects (containers, networks, volumes): unique per Docker host."""
        kinds = (CONTAINER, "docker:index/network:Network", "docker:index/volume:Volume")
        return [r.inputs["name"] for r in self.resources if r.typ in kinds]


def use_mocks(stack: str = "test", config: dict[str, str] | None = None) -> RecordingMocks:
    """Fresh mocks, a fresh root stack and the given ``runbox:*`` config (secrets included)."""
    mocks = RecordingMocks()
    pulumi_settings.ROOT.set(None)  # else exports and children of earlier runs would leak in
    pulumi.runtime.set_mocks(mocks, project="runbox", stack=stack)
    values = {**SECRETS, **(config or {})}
    pulumi.runtime.set_all_config(values, [k for k in values if k in SECRETS or k == "runbox:apiKeys"])
    return mocks


def run_program(config: dict[str, str] | None = None, stack: str = "test") -> Program:
    """Run infra/__main__ as Pulumi would (as a script) and wait for every registration."""
    mocks = use_mocks(stack, config)
    exports: dict[str, Any] = {}
    secret_exports: dict[str, bool] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # the SDK's decorator has no annotations
    def program() -> pulumi.Output[Any]:
        runpy.run_path(str(ROOT / "infra"), run_name="__main__")
        root = cast(Stack, pulumi_settings.get_root_resource())
        outputs = {k: pulumi.Output.from_input(v) for k, v in root.outputs.items()}
        flags: dict[str, pulumi.Output[bool]] = {k: pulumi.Output.from_input(v.is_secret()) for k, v in outputs.items()}
        return pulumi.Output.all(pulumi.Output.all(**outputs), pulumi.Output.all(**flags)).apply(
            lambda both: (exports.update(both[0]), secret_exports.update(both[1]))
        )

    program()
    return Program(mocks.resources, exports, secret_exports)


# --- helpers over recorded inputs ----------------------------------------------------------------
def is_secret_value(value: Any) -> bool:
    """True when ``value`` is a secret as the engine sees it (Pulumi's secret signature)."""
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def unwrap(value: Any) -> Any:
    return value["value"] if is_secret_value(value) else value


def plain_strings(value: Any) -> Iterator[str]:
    """Every string in ``value`` that is *not* inside a secret."""
    if is_secret_value(value):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from plain_strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from plain_strings(v)


def labels(container: Registered) -> dict[str, str]:
    return {item["label"]: item["value"] for item in container.inputs.get("labels") or []}


def env(container: Registered) -> dict[str, str]:
    entries = unwrap(container.inputs.get("envs")) or []
    return dict(entry.split("=", 1) for entry in entries)


def mounts_socket(container: Registered) -> bool:
    volumes = container.inputs.get("volumes") or []
    mounts = container.inputs.get("mounts") or []
    return any(
        SOCKET in str(v.get("hostPath", "")) or SOCKET in str(v.get("containerPath", "")) for v in volumes
    ) or any(SOCKET in str(m.get("source", "")) or SOCKET in str(m.get("target", "")) for m in mounts)


def uploads(container: Registered) -> dict[str, str]:
    return {u["file"]: unwrap(u.get("content", "")) for u in unwrap(container.inputs.get("uploads")) or []}


def scrape_targets(prometheus: Registered) -> set[str]:
    config = yaml.safe_load(uploads(prometheus)[PROMETHEUS_CONFIG])
    return {
        target
        for job in config["scrape_configs"]
        if job["job_name"] != "prometheus"
        for group in job.get("static_configs", [])
        for target in group["targets"]
    }


@pytest.fixture(scope="module", autouse=True)
def pulumi_event_loop():
    """Pulumi's runtime asks for the current event loop; tests that ran asyncio.run before left none."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(scope="module")
def monitoring_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Monitoring files shaped like the repo's (written by another part of the project), as config."""
    base = tmp_path_factory.mktemp("monitoring")
    dns = {"names": ["gateway"], "type": "A", "port": 8080}
    (base / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                "rule_files": ["alerts.yml"],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]},
                "scrape_configs": [
                    {"job_name": "gateway", "metrics_path": "/metrics", "dns_sd_configs": [dns]},
                    {
                        "job_name": "executor",
                        "scrape_interval": "10s",
                        "dns_sd_configs": [{**dns, "names": ["executor"]}],
                    },
                    {"job_name": "elsewhere", "static_configs": [{"targets": ["127.0.0.1:9100"]}]},
                ],
            }
        )
    )
    (base / "alerts.yml").write_text("groups:\n- name: runbox\n  rules:\n  - alert: RunboxDown\n    expr: up == 0\n")
    dashboards = base / "dashboards"
    (dashboards / "provisioning" / "datasources").mkdir(parents=True)
    (dashboards / "provisioning" / "dashboards").mkdir(parents=True)
    (dashboards / "overview.json").write_text(json.dumps({"title": "runbox overview", "panels": []}))
    (dashboards / "provisioning" / "datasources" / "prometheus.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": 1,
                "datasources": [
                    {"name": "Prometheus", "type": "prometheus", "uid": "runbox-prom", "url": "http://localhost:9090"}
                ],
            }
        )
    )
    (dashboards / "provisioning" / "dashboards" / "runbox.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": 1, "providers": [{"name": "runbox", "options": {"path": "/var/lib/grafana/dashboards"}}]}
        )
    )
    return {
        "runbox:prometheusConfig": str(base / "prometheus.yml"),
        "runbox:alertRules": str(base / "alerts.yml"),
        "runbox:dashboardsDir": str(dashboards),
        "runbox:grafanaProvisioningDir": str(dashboards / "provisioning"),
    }


@pytest.fixture(scope="module")
def program(monitoring_files: dict[str, str]) -> Program:
    """The program with three gateways, two executors (one under gVisor) and API keys."""
    return run_program(
        {
            **monitoring_files,
            "runbox:gatewayCount": "3",
            "runbox:executorCount": "2",
            "runbox:executorRuntimes": '["runsc"]',
            "runbox:trustedProxies": "10.0.0.1,10.0.0.2",
            "runbox:apiKeys": API_KEYS,
            "runbox:requireKeys": "true",
            "runbox:dockerGid": "998",
            "runbox:brokerManagementPort": "15672",
        }
    )


# --- the Docker socket, privileges, identity -------------------------------------------------------
def test_only_the_gate_mounts_the_docker_socket(program: Program) -> None:
    (gate,) = program.role("gate")
    for container in program.containers:
        assert mounts_socket(container) == (container is gate), container.name
    assert env(gate)["RUNBOX_ROLES"] == "gate"
    assert env(gate)["RUNBOX_ENGINE_URL"] == "unix:///var/run/docker.sock"
    socket_dir = next(v for v in gate.inputs["volumes"] if v["containerPath"] == "/run/runbox")
    executors = program.role("executor")
    assert len(executors) == 2
    for executor in executors:
        # The executor reaches the engine only through the gate's socket, in a read-only mount.
        assert env(executor)["RUNBOX_DOCKER_URL"] == "unix://" + env(gate)["RUNBOX_GATE_SOCKET"]
        # ...and the host's directory of agent sockets at its own path, the one the gate lets
        # each sandbox mount its own directory of (the engine resolves it on the host).
        agents = env(gate)["RUNBOX_AGENT_SOCKET_DIR"]
        assert env(executor)["RUNBOX_AGENT_SOCKET_DIR"] == agents
        assert executor.inputs["volumes"] == [
            {"hostPath": socket_dir["hostPath"], "containerPath": "/run/runbox", "readOnly": True},
            {"hostPath": agents, "containerPath": agents},
        ]
    assert not [v for v in gate.inputs["volumes"] if "runsc" in v["hostPath"] and not v.get("readOnly")]
    # The gate's API is on its socket, never on a network: no published port, the backend only.
    assert not gate.inputs.get("ports")
    assert [n["name"] for n in gate.inputs["networksAdvanced"]] == [program.exports["networks"]["backend"]]


def test_gateways_do_not_get_the_docker_socket(program: Program) -> None:
    gateways = program.role("gateway")
    assert len(gateways) == 3
    for gateway in gateways:
        assert not mounts_socket(gateway)
        assert "RUNBOX_DOCKER_URL" not in env(gateway)
        assert not gateway.inputs.get("groupAdds")
        assert gateway.inputs.get("user") in (None, "")  # the image's non-root user


def test_no_container_is_privileged_or_shares_host_namespaces(program: Program) -> None:
    for container in program.containers:
        inputs = container.inputs
        assert not inputs.get("privileged"), container.name
        assert not (inputs.get("capabilities") or {}).get("adds"), container.name
        assert inputs.get("networkMode") in (None, "", "bridge"), container.name
        assert inputs.get("pidMode") in (None, ""), container.name
        assert inputs.get("ipcMode") in (None, "", "private", "shareable"), container.name
        for opt in inputs.get("securityOpts") or []:
            assert "unconfined" not in opt, (container.name, opt)


def test_app_containers_are_hardened(program: Program) -> None:
    for container in program.role("gateway") + program.role("executor") + program.role("gate"):
        inputs = container.inputs
        assert inputs["readOnly"] is True
        assert inputs["capabilities"]["drops"] == ["ALL"]
        assert "no-new-privileges:true" in inputs["securityOpts"]
        assert inputs["stopTimeout"] >= 35  # the app drains for up to 30 s on SIGTERM
        # Liveness is checked on the probe port, answered outside the app's event loop.
        probe_port = env(container)["RUNBOX_PROBE_PORT"]
        assert probe_port != env(container)["RUNBOX_PORT"]
        assert f":{probe_port}/healthz" in " ".join(inputs["healthcheck"]["tests"])


def test_executors_and_the_gate_run_as_the_docker_group_or_root(program: Program) -> None:
    for container in program.role("executor") + program.role("gate"):
        assert container.inputs["user"] == "10000:10000"
        assert container.inputs["groupAdds"] == ["998"]
    (gate,) = program.role("gate")
    assert env(gate)["RUNBOX_GATE_SOCKET_GID"] == "998"  # the executors' group may use its socket
    as_root = run_program({"runbox:monitoring": "false"})
    for container in as_root.role("executor") + as_root.role("gate"):
        assert container.inputs["user"] == "0:0"
        assert not container.inputs.get("privileged")


# --- secrets ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("secret", [BROKER_PASSWORD, GRAFANA_PASSWORD, METRICS_TOKEN, "key-must-stay-secret"])
def test_secrets_appear_only_inside_secret_values(program: Program, secret: str) -> None:
    for resource in program.resources:
        leaks = [s for s in plain_strings(resource.inputs) if secret in s]
        assert not leaks, f"{resource.typ} {resource.name} holds {secret!r} in clear"


def test_broker_password_reaches_the_app_only_through_the_secret_amqp_url(program: Program) -> None:
    holders = {c.name for c in program.containers if BROKER_PASSWORD in json.dumps(c.inputs)}
    app = {c.name for c in program.role("gateway") + program.role("executor")}
    assert holders == app | {"broker"}
    for container in program.containers:
        if container.name in holders:
            assert is_secret_value(container.inputs["envs"]), container.name
    for name in app:
        container = next(c for c in program.containers if c.name == name)
        assert f":{BROKER_PASSWORD}@" in env(container)["RUNBOX_AMQP_URL"]
    assert program.secret_exports["amqp_url"] is True
    assert not any(program.secret_exports[k] for k in ("gateway_urls", "grafana_url", "executors"))


# --- images -----------------------------------------------------------------------------------------
def test_every_language_has_a_sandbox_image_built_from_its_dockerfile(program: Program) -> None:
    languages = list(Registry.load(directory=ROOT / "app" / "languages"))
    built = {r.inputs["imageName"]: r.inputs for r in program.of_type("docker:index/image:Image")}
    for language in languages:
        assert language.image in built, f"no image resource for {language.name}"
        image = built[language.image]
        assert image["build"]["context"] == str(ROOT / "sandbox_images")
        assert image["build"]["dockerfile"] == str(ROOT / "sandbox_images" / language.dockerfile / "Dockerfile")
        # FROM the shared base of the same tag
        assert image["build"]["args"] == {"TAG": "latest", "BASE": "base", **language.build_args}
        assert image["skipPush"] is True  # no registry reachable or needed
    app = built["runbox/app:latest"]
    assert app["build"]["dockerfile"] == str(ROOT / "Dockerfile")
    assert app["build"]["context"] == str(ROOT)
    assert app["skipPush"] is True
    for base in ("base", "base-trixie"):  # the shared bases every language image starts from
        dockerfile = built[f"runbox/sandbox-{base}:latest"]["build"]["dockerfile"]
        assert dockerfile == str(ROOT / "sandbox_images" / "base" / "Dockerfile")
    assert len(built) == len(languages) + 2 + 1
    assert program.exports["sandbox_images"] == sorted(lang.key for lang in languages)


def test_pull_mode_pulls_the_same_images_instead(monitoring_files: dict[str, str]) -> None:
    pulled = run_program({**monitoring_files, "runbox:buildImages": "false", "runbox:appImage": "example/runbox:1.0"})
    assert not pulled.of_type("docker:index/image:Image")
    names = {r.inputs["name"] for r in pulled.of_type("docker:index/remoteImage:RemoteImage")}
    assert {lang.image for lang in Registry.load(directory=ROOT / "app" / "languages")} <= names
    assert "example/runbox:1.0" in names
    for container in pulled.role("gateway"):
        assert container.inputs["image"] == "sha256:images-app"  # the pulled image's id


def test_app_containers_use_the_app_image_and_carry_its_hash(program: Program) -> None:
    hashes = set()
    for container in program.role("gateway") + program.role("executor"):
        assert container.inputs["image"] == "runbox/app:latest"
        hashes.add(labels(container)["runbox.image-hash"])
    assert len(hashes) == 1 and len(hashes.pop()) == 16


# --- broker ---------------------------------------------------------------------------------------
def test_rabbitmq_keeps_its_data_on_a_volume(program: Program) -> None:
    (broker,) = program.role("broker")
    (volume,) = [v for v in program.of_type("docker:index/volume:Volume") if v.name == "broker-data"]
    assert {"volumeName": volume.inputs["name"], "containerPath": "/var/lib/rabbitmq"} in [
        {k: v for k, v in vol.items() if k in ("volumeName", "containerPath")} for vol in broker.inputs["volumes"]
    ]
    assert broker.inputs["hostname"] == broker.inputs["name"]  # the node name, hence the data dir, is stable
    assert broker.inputs["healthcheck"]["tests"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert broker.inputs["wait"] is True
    (image,) = [r for r in program.of_type("docker:index/remoteImage:RemoteImage") if r.name == "broker-image"]
    assert image.inputs["name"] == "rabbitmq:3.13-management"
    # the management UI, when published, is on loopback only
    assert [(p["external"], p["ip"]) for p in broker.inputs["ports"]] == [(15672, "127.0.0.1")]


def test_broker_image_is_configurable() -> None:
    local = run_program({"runbox:brokerImage": "runbox/rabbitmq:local", "runbox:monitoring": "false"})
    (image,) = [r for r in local.of_type("docker:index/remoteImage:RemoteImage") if r.name == "broker-image"]
    assert image.inputs["name"] == "runbox/rabbitmq:local"


# --- networks -------------------------------------------------------------------------------------
def test_broker_and_executors_are_only_on_the_internal_network(program: Program) -> None:
    networks = {r.inputs["name"]: r.inputs for r in program.of_type("docker:index/network:Network")}
    backend = program.exports["networks"]["backend"]
    edge = program.exports["networks"]["edge"]
    assert networks[backend]["internal"] is True
    assert networks[edge]["internal"] is False
    for executor in program.role("executor"):
        assert [n["name"] for n in executor.inputs["networksAdvanced"]] == [backend]
        assert not executor.inputs.get("ports")
    (broker,) = program.role("broker")
    assert backend in [n["name"] for n in broker.inputs["networksAdvanced"]]
    for gateway in program.role("gateway"):
        assert {n["name"] for n in gateway.inputs["networksAdvanced"]} == {backend, edge}
    # sandboxes are the executors' business at run time (network "none"), never Pulumi's
    assert not [c for c in program.containers if c.inputs.get("networkMode") == "none"]
    assert not program.role("sandbox")


# --- gateways and executors -------------------------------------------------------------------------
def test_gateways_publish_ports_and_know_their_count(program: Program) -> None:
    gateways = sorted(program.role("gateway"), key=lambda c: c.name)
    assert [g.inputs["ports"][0]["external"] for g in gateways] == [8080, 8081, 8082]
    for gateway in gateways:
        variables = env(gateway)
        assert variables["RUNBOX_ROLES"] == "gateway"
        assert variables["RUNBOX_GATEWAY_COUNT"] == "3"
        assert variables["RUNBOX_TRUSTED_PROXIES"] == "10.0.0.1,10.0.0.2"
        assert variables["RUNBOX_REQUIRE_KEYS"] == "true"
        assert variables["RUNBOX_API_KEYS"] == API_KEYS
        assert variables["RUNBOX_HOST"] == "0.0.0.0"
        assert gateway.inputs["ports"][0]["internal"] == int(variables["RUNBOX_PORT"])
    assert program.exports["gateway_urls"] == [
        "http://localhost:8080",
        "http://localhost:8081",
        "http://localhost:8082",
    ]


def test_executors_have_stable_names_and_their_runtime(program: Program) -> None:
    executors = sorted(program.role("executor"), key=lambda c: c.name)
    assert [env(e)["RUNBOX_RUNTIME"] for e in executors] == ["runsc", "runc"]
    for executor in executors:
        variables = env(executor)
        assert variables["RUNBOX_ROLES"] == "executor"
        assert variables["RUNBOX_EXECUTOR_NAME"] == executor.inputs["name"] == executor.inputs["hostname"]
        assert labels(executor)["runbox.runtime"] == variables["RUNBOX_RUNTIME"]
    assert program.exports["executors"] == {"runbox-test-executor-0": "runsc", "runbox-test-executor-1": "runc"}
    again = run_program({"runbox:executorCount": "2", "runbox:monitoring": "false"})
    assert sorted(env(e)["RUNBOX_EXECUTOR_NAME"] for e in again.role("executor")) == sorted(
        program.exports["executors"]
    )


def test_every_runbox_variable_is_one_the_app_reads(program: Program) -> None:
    for container in program.role("gateway") + program.role("executor") + program.role("gate"):
        unknown = {k for k in env(container) if k.startswith("RUNBOX_")} - SETTING_NAMES
        assert not unknown, (container.name, unknown)


def test_restart_policies_are_set(program: Program) -> None:
    assert len(program.containers) == 3 + 2 + 1 + 1 + 2  # gateways, executors, gate, broker, Prometheus, Grafana
    for container in program.containers:
        assert container.inputs.get("restart") in ("unless-stopped", "always"), container.name


# --- monitoring -----------------------------------------------------------------------------------------
def test_prometheus_scrapes_every_gateway_and_executor(program: Program) -> None:
    (prometheus,) = program.role("prometheus")
    config = yaml.safe_load(uploads(prometheus)[PROMETHEUS_CONFIG])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"gateway", "executor", "gate", "rabbitmq", "prometheus"}  # "elsewhere" is not in the stack
    for role in ("gateway", "executor", "gate"):
        expected = [f"{c.inputs['name']}:{env(c)['RUNBOX_PORT']}" for c in program.role(role)]
        assert sorted(jobs[role]["static_configs"][0]["targets"]) == sorted(expected)
        assert "dns_sd_configs" not in jobs[role]
    (broker,) = program.role("broker")
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == [f"{broker.inputs['name']}:15692"]
    assert "rabbitmq_prometheus" in uploads(broker)["/etc/rabbitmq/enabled_plugins"]
    assert len(scrape_targets(prometheus)) == 7
    # the repo's settings for each job, and its job names (alerts select on them), are kept
    assert jobs["gateway"]["metrics_path"] == "/metrics"
    assert jobs["executor"]["scrape_interval"] == "10s"
    assert config["global"]["scrape_interval"] == "5s"
    assert "alerting" not in config  # no Alertmanager in the stack
    assert config["rule_files"] == [PROMETHEUS_RULES]
    assert "RunboxDown" in uploads(prometheus)[PROMETHEUS_RULES]
    backend = program.exports["networks"]["backend"]
    assert backend in [n["name"] for n in prometheus.inputs["networksAdvanced"]]
    assert all(p["ip"] == "127.0.0.1" for p in prometheus.inputs["ports"])


def test_prometheus_presents_the_metrics_token_every_scraped_app_container_accepts(program: Program) -> None:
    """/metrics answers loopback only by default: every scraped app container must know the token."""
    (prometheus,) = program.role("prometheus")
    config = yaml.safe_load(uploads(prometheus)[PROMETHEUS_CONFIG])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    token_file = jobs["gateway"]["authorization"]["credentials_file"]
    assert uploads(prometheus)[token_file] == METRICS_TOKEN
    for role in ("gateway", "executor", "gate"):
        assert jobs[role]["authorization"] == {"type": "Bearer", "credentials_file": token_file}
        for container in program.role(role):
            assert env(container)["RUNBOX_METRICS_TOKEN"] == METRICS_TOKEN, container.name
            assert is_secret_value(container.inputs["envs"]), container.name


def test_app_containers_answer_to_the_service_names_of_dns_discovery(program: Program) -> None:
    backend = program.exports["networks"]["backend"]
    for role in ("gateway", "executor"):
        for container in program.role(role):
            (net,) = [n for n in container.inputs["networksAdvanced"] if n["name"] == backend]
            assert net["aliases"] == [role]


def test_prometheus_follows_the_scaling() -> None:
    scaled = run_program({"runbox:gatewayCount": "1", "runbox:executorCount": "4"})
    (prometheus,) = scaled.role("prometheus")
    (broker,) = scaled.role("broker")
    assert scrape_targets(prometheus) == {
        f"{c.inputs['name']}:8080" for c in scaled.role("gateway") + scaled.role("executor") + scaled.role("gate")
    } | {f"{broker.inputs['name']}:15692"}
    assert len(scrape_targets(prometheus)) == 7


def test_the_rendered_repo_config_passes_promtool(tmp_path: Path) -> None:
    """What Prometheus will load, from the repo's monitoring/ files, checked by Prometheus's own tool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        message = "promtool is not installed (Debian's prometheus package; scripts/setup.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    (prometheus,) = run_program().role("prometheus")
    files = uploads(prometheus)
    config = yaml.safe_load(files[PROMETHEUS_CONFIG])
    if PROMETHEUS_RULES in files:  # the path inside the container, moved to where promtool can read it
        (tmp_path / "alerts.yml").write_text(files[PROMETHEUS_RULES])
        config["rule_files"] = [str(tmp_path / "alerts.yml")]
    for job in config["scrape_configs"]:  # the token file too: promtool checks that it exists
        auth = job.get("authorization")
        if auth:
            (tmp_path / "token").write_text(files[auth["credentials_file"]])
            auth["credentials_file"] = str(tmp_path / "token")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_gets_the_datasource_and_the_dashboards(program: Program) -> None:
    (grafana,) = program.role("grafana")
    (prometheus,) = program.role("prometheus")
    files = uploads(grafana)
    datasources = yaml.safe_load(files["/etc/grafana/provisioning/datasources/runbox.yaml"])["datasources"]
    assert datasources == [
        {
            "name": "Prometheus",
            "type": "prometheus",
            "uid": "runbox-prom",
            "url": f"http://{prometheus.inputs['name']}:9090",
        }
    ]
    providers = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/runbox.yaml"])["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"
    assert json.loads(files["/etc/grafana/dashboards/overview.json"])["title"] == "runbox overview"
    assert not [f for f in files if "provisioning" in f and f.endswith(".json")]
    assert is_secret_value(grafana.inputs["envs"])
    assert env(grafana)["GF_SECURITY_ADMIN_PASSWORD"] == GRAFANA_PASSWORD


def test_the_repo_monitoring_files_render(program: Program) -> None:
    """With the default paths (the repo's monitoring/ and dashboards/, present or not yet)."""
    default = run_program()
    (prometheus,) = default.role("prometheus")
    assert scrape_targets(prometheus) == {
        "runbox-test-gateway-0:8080",
        "runbox-test-gateway-1:8080",
        "runbox-test-executor-0:8080",
        "runbox-test-broker:15692",
        "runbox-test-gate:8080",
    }
    (grafana,) = default.role("grafana")
    repo_dashboards = (
        [
            p
            for p in (ROOT / "dashboards").rglob("*.json")
            if "provisioning" not in p.relative_to(ROOT / "dashboards").parts
        ]
        if (ROOT / "dashboards").is_dir()
        else []
    )
    assert len([f for f in uploads(grafana) if f.startswith("/etc/grafana/dashboards/")]) == len(repo_dashboards)
    assert default.exports["grafana_url"] == "http://127.0.0.1:3000"


def test_monitoring_can_be_left_out() -> None:
    bare = run_program({"runbox:monitoring": "false"})
    assert not bare.role("prometheus") and not bare.role("grafana")
    assert "grafana_url" not in bare.exports


# --- names ----------------------------------------------------------------------------------------------
def test_names_are_unique_within_a_stack(program: Program) -> None:
    keys = [(r.typ, r.name) for r in program.resources]
    assert len(keys) == len(set(keys))
    names = program.docker_names()
    assert len(names) == len(set(names))


def test_two_stacks_on_one_docker_host_do_not_collide() -> None:
    first = run_program({"runbox:monitoring": "true"}, stack="staging")
    second = run_program({"runbox:monitoring": "true"}, stack="production")
    assert set(first.docker_names()).isdisjoint(second.docker_names())
    assert all(n.startswith("runbox-staging-") for n in first.docker_names())
    assert set(first.exports["executors"]).isdisjoint(second.exports["executors"])


@pulumi.runtime.test  # type: ignore[untyped-decorator]  # the SDK's decorator has no annotations
def test_two_components_of_one_kind_do_not_collide() -> pulumi.Output[Any]:
    mocks = use_mocks("components")
    url = pulumi.Output.secret("amqp://u:p@broker:5672/")
    image = "runbox/app:latest"
    a = Gateway("gw-a", GatewayArgs("runbox-x", image, url, backend_network="b", edge_network="e", count=2))
    b = Gateway("gw-b", GatewayArgs("runbox-x", image, url, "b", "e", count=2, host_port=9080))
    e1 = Executor("ex-a", ExecutorArgs("runbox-x", image, url, network="b"))
    e2 = Executor("ex-b", ExecutorArgs("runbox-x", image, url, network="b"))

    def check(_: Any) -> None:
        keys = [(r.typ, r.name) for r in mocks.resources]
        assert len(keys) == len(set(keys))
        names = [r.inputs["name"] for r in mocks.resources if r.typ == CONTAINER]
        assert len(names) == len(set(names)) == 6
        assert a.names != b.names and e1.names != e2.names

    return pulumi.Output.all(*(c.id for c in a.containers + b.containers + e1.containers + e2.containers)).apply(check)


@pulumi.runtime.test  # type: ignore[untyped-decorator]  # the SDK's decorator has no annotations
def test_broker_component_makes_its_url_a_secret_even_from_a_plain_password() -> pulumi.Output[Any]:
    use_mocks("broker")
    broker = Broker(
        "mq", BrokerArgs(prefix="runbox-y", network="backend", password=pulumi.Output.from_input("p@ss/w:rd"))
    )

    def check(args: list[Any]) -> None:
        url, secret = args
        assert secret is True
        assert url == "amqp://runbox:p%40ss%2Fw%3Ard@runbox-y-mq:5672/"

    secret: pulumi.Output[bool] = pulumi.Output.from_input(broker.amqp_url.is_secret())
    return pulumi.Output.all(broker.amqp_url, secret).apply(check)


# --- configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("runbox:runtime", "kata", "runc or runsc"),
        ("runbox:executorRuntimes", '["runsc", "runc"]', "more runtimes"),
        ("runbox:gatewayCount", "0", "gatewayCount"),
        ("runbox:gatewayEnv", '{"RUNBOX_NO_SUCH_SETTING": "1"}', "does not read"),
        ("runbox:executorEnv", '{"RUNBOX_ROLES": "gateway"}', "may not set"),
        ("runbox:grafanaPort", "8081", "overlap"),
    ],
)
def test_bad_settings_are_refused_before_planning(key: str, value: str, message: str) -> None:
    use_mocks("config", {key: value})
    with pytest.raises(infra_config.InfraConfigError, match=message):
        infra_config.load()


def test_passwords_are_required() -> None:
    use_mocks("config")
    pulumi.runtime.set_all_config({"runbox:grafanaAdminPassword": GRAFANA_PASSWORD, "runbox:metricsToken": "t"})
    with pytest.raises(pulumi.ConfigMissingError):
        infra_config.load()
    use_mocks("config")
    pulumi.runtime.set_all_config({"runbox:brokerPassword": "b", "runbox:grafanaAdminPassword": GRAFANA_PASSWORD})
    with pytest.raises(pulumi.ConfigMissingError, match="metricsToken"):
        infra_config.load()


def test_extra_settings_pass_through_to_their_role() -> None:
    extra = run_program(
        {
            "runbox:gatewayEnv": '{"RUNBOX_MAX_BODY_KB": "512"}',
            "runbox:executorEnv": '{"RUNBOX_POOL_SIZE": "3", "RUNBOX_MAX_RUNNING": "4"}',
            "runbox:monitoring": "false",
        }
    )
    for gateway in extra.role("gateway"):
        assert env(gateway)["RUNBOX_MAX_BODY_KB"] == "512"
        assert "RUNBOX_POOL_SIZE" not in env(gateway)
    for executor in extra.role("executor"):
        assert env(executor)["RUNBOX_POOL_SIZE"] == "3"
        assert env(executor)["RUNBOX_MAX_RUNNING"] == "4"


# --- many hosts -------------------------------------------------------------------------------------
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\nAAAA\n-----END CERTIFICATE-----\n"
DIGEST = "@sha256:" + "ab" * 32
THREE_HOSTS = [
    {"name": "h1", "url": "ssh://deploy@10.0.0.1", "roles": ["broker", "gateway", "monitoring"]},
    {"name": "h2", "url": "ssh://deploy@10.0.0.2", "roles": ["broker", "executor"]},
    {"name": "h3", "url": "tcp://10.0.0.3:2376", "roles": ["broker", "executor", "gateway"]},
]
MANY = {
    "runbox:dockerHosts": json.dumps(THREE_HOSTS),
    "runbox:brokerTlsCa": CA_PEM,
    "runbox:brokerTlsCert": "-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n",
    "runbox:brokerTlsKey": "-----BEGIN PRIVATE KEY-----\nkey-must-stay-secret\n-----END PRIVATE KEY-----\n",
    "runbox:erlangCookie": "cookie-must-stay-secret",
    "runbox:brokerImage": "rabbitmq:3.13-management" + DIGEST,
    "runbox:prometheusImage": "prom/prometheus:v2.53.2" + DIGEST,
    "runbox:grafanaImage": "grafana/grafana:11.2.0" + DIGEST,
    "runbox:gatewayCount": "3",
    "runbox:executorCount": "4",
    "runbox:executorRuntimes": '["runsc", "runc", "runc", "runc"]',
}
MANY_SECRETS = ("runbox:brokerTlsKey", "runbox:brokerTlsCert", "runbox:brokerTlsCa", "runbox:erlangCookie")


def run_many(extra: dict[str, str] | None = None) -> Program:
    original = SECRETS.copy()
    SECRETS.update({k: MANY[k] for k in MANY_SECRETS})
    try:
        return run_program({**{k: v for k, v in MANY.items() if k not in MANY_SECRETS}, **(extra or {})})
    finally:
        SECRETS.clear()
        SECRETS.update(original)


@pytest.fixture(scope="module")
def three_hosts() -> Program:
    return run_many()


def host_of(program: Program, resource: Registered) -> str:
    """The dockerHosts name of the provider that manages ``resource``."""
    providers = {f"urn:pulumi:test::runbox::runbox:hosts:Hosts$pulumi:providers:docker::hosts-{h['name']}": h["name"]
                 for h in THREE_HOSTS}
    urn = resource.provider.split("::" + resource.provider.rsplit("::", 1)[-1])[0] if resource.provider else ""
    return providers.get(urn, "")


def test_one_explicit_provider_per_host(three_hosts: Program) -> None:
    providers = three_hosts.of_type("pulumi:providers:docker")
    assert sorted(p.inputs["host"] for p in providers) == sorted(h["url"] for h in THREE_HOSTS)
    docker_resources = [r for r in three_hosts.resources if r.typ.startswith("docker:")]
    assert docker_resources and all(host_of(three_hosts, r) for r in docker_resources), (
        "every Docker object is made through its host's provider, never the default one"
    )


def test_each_role_lands_on_the_hosts_that_carry_it(three_hosts: Program) -> None:
    def hosts(role: str) -> list[str]:
        return sorted(host_of(three_hosts, c) for c in three_hosts.role(role))

    assert hosts("broker") == ["h1", "h2", "h3"]
    assert hosts("gateway") == ["h1", "h1", "h3"]
    assert hosts("executor") == ["h2", "h2", "h3", "h3"], "executors spread evenly over the executor hosts"
    assert hosts("prometheus") == ["h1"] and hosts("grafana") == ["h1"]
    names = [c.inputs["name"] for c in three_hosts.role("executor")]
    assert len(set(names)) == 4 and all(env(c)["RUNBOX_EXECUTOR_NAME"] == c.inputs["name"]
                                         for c in three_hosts.role("executor"))
    sandbox_images = [r for r in three_hosts.of_type("docker:index/image:Image") if "-sandbox-" in r.name]
    assert {host_of(three_hosts, r) for r in sandbox_images} == {"h2", "h3"}, "sandbox images only where executors run"


def test_every_executor_host_has_its_gate_and_only_gates_mount_the_socket(three_hosts: Program) -> None:
    gates = three_hosts.role("gate")
    assert sorted(host_of(three_hosts, g) for g in gates) == ["h2", "h3"], "one Docker gate per executor host"
    for container in three_hosts.containers:
        assert mounts_socket(container) == (container in gates), container.name
    for executor in three_hosts.role("executor"):
        (gate,) = [g for g in gates if host_of(three_hosts, g) == host_of(three_hosts, executor)]
        assert env(executor)["RUNBOX_DOCKER_URL"] == "unix://" + env(gate)["RUNBOX_GATE_SOCKET"]


def test_brokers_cluster_over_tls_with_their_own_credentials(three_hosts: Program) -> None:
    brokers = three_hosts.role("broker")
    for broker in brokers:
        files = uploads(broker)
        conf = files["/etc/rabbitmq/conf.d/90-runbox.conf"]
        assert "listeners.tcp = none" in conf and "listeners.ssl.default = 5671" in conf
        assert sorted(line.split(" = ")[1] for line in conf.splitlines() if "classic_config.nodes" in line) == [
            f"rabbit@runbox-test-{h}-broker" for h in ("h1", "h2", "h3")
        ]
        assert is_secret_value(broker.inputs["uploads"]), "the TLS key is uploaded as a secret"
        assert "key-must-stay-secret" in files["/etc/rabbitmq/tls/key.pem"]
        address = {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"}[host_of(three_hosts, broker)]
        published = {(int(p["internal"]), p["ip"]) for p in broker.inputs["ports"]}
        assert {(5671, address), (15692, address), (25672, address), (4369, address)} <= published
        assert 5672 not in {int(p["internal"]) for p in broker.inputs["ports"]}, "no plain AMQP across hosts"
        assert {h["host"] for h in broker.inputs["hosts"]} == {
            f"runbox-test-{h}-broker" for h in ("h1", "h2", "h3")} - {broker.inputs["name"]}
        broker_env = env(broker)
        assert broker_env["RABBITMQ_DEFAULT_USER"] == "runbox"
        assert broker_env["RABBITMQ_DEFAULT_PASS"] == BROKER_PASSWORD
        assert "-setcookie cookie-must-stay-secret" in broker_env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
        assert is_secret_value(broker.inputs["envs"])
    for role in ("gateway", "executor"):
        for container in three_hosts.role(role):
            assert is_secret_value(container.inputs["envs"])
            urls = env(container)["RUNBOX_AMQP_URL"].split(",")
            assert [u.split("@")[1].split("/")[0] for u in urls] == ["10.0.0.1:5671", "10.0.0.2:5671", "10.0.0.3:5671"]
            assert all(u.startswith(f"amqps://runbox:{BROKER_PASSWORD}@") and "cadata=" in u for u in urls)
            assert env(container)["RUNBOX_AMQP_QUORUM_SIZE"] == "3"


@pytest.mark.parametrize("secret", ["key-must-stay-secret", "cookie-must-stay-secret", BROKER_PASSWORD])
def test_many_host_secrets_stay_secret(three_hosts: Program, secret: str) -> None:
    for resource in three_hosts.resources:
        assert not any(secret in s for s in plain_strings(resource.inputs)), resource.name


def test_gvisor_is_checked_on_every_executor_host_that_uses_it(three_hosts: Program) -> None:
    checks = three_hosts.role("runtime-check")
    assert [host_of(three_hosts, c) for c in checks] == ["h2"], "h2 runs the runsc executor; h3 only runc"
    (check,) = checks
    # The check runs the engine runtime the executors' sandboxes use (RUNBOX_GVISOR_RUNTIME, the
    # gVisor setup.sh registers), not Debian's own ``runsc``, and every executor and gate agrees.
    assert check.inputs["runtime"] == "runbox-runsc" and check.inputs["attach"] is True
    assert check.inputs["networkMode"] == "none"
    for role in ("executor", "gate"):
        assert {env(c)["RUNBOX_GVISOR_RUNTIME"] for c in three_hosts.role(role)} == {"runbox-runsc"}, role
    everywhere = run_many({"runbox:runtime": "runsc", "runbox:executorRuntimes": "[]",
                           "runbox:gvisorRuntime": "gvisor-2024"})
    assert sorted(host_of(everywhere, c) for c in everywhere.role("runtime-check")) == ["h2", "h3"]
    assert {c.inputs["runtime"] for c in everywhere.role("runtime-check")} == {"gvisor-2024"}
    assert {env(c)["RUNBOX_RUNTIME"] for c in everywhere.role("executor")} == {"runsc"}
    for role in ("executor", "gate"):
        assert {env(c)["RUNBOX_GVISOR_RUNTIME"] for c in everywhere.role(role)} == {"gvisor-2024"}, role


def test_app_containers_run_their_image_by_content_id(three_hosts: Program) -> None:
    for role in ("gateway", "executor", "runtime-check"):
        for container in three_hosts.role(role):
            assert str(container.inputs["image"]).startswith("sha256:"), (role, container.inputs["image"])
    for role in ("broker", "prometheus", "grafana"):
        for container in three_hosts.role(role):
            assert str(container.inputs["image"]).startswith("sha256:")
    pinned = [r.inputs["name"] for r in three_hosts.of_type("docker:index/remoteImage:RemoteImage")
              if "broker" in r.name or "prometheus" in r.name or "grafana" in r.name]
    assert pinned and all(DIGEST in name for name in pinned)


def test_prometheus_scrapes_every_host(three_hosts: Program) -> None:
    (prometheus,) = three_hosts.role("prometheus")
    config = yaml.safe_load(uploads(prometheus)[PROMETHEUS_CONFIG])
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert sorted(jobs["rabbitmq"]) == ["10.0.0.1:15692", "10.0.0.2:15692", "10.0.0.3:15692"]
    assert sorted(jobs["executor"]) == ["10.0.0.2:9180", "10.0.0.2:9181", "10.0.0.3:9180", "10.0.0.3:9181"]
    assert sorted(jobs["gateway"]) == ["10.0.0.1:8080", "10.0.0.1:8081", "10.0.0.3:8080"]
    assert sorted(jobs["gate"]) == ["10.0.0.2:9179", "10.0.0.3:9179"], "every executor host's Docker gate"
    for container in three_hosts.role("executor") + three_hosts.role("gate"):
        published = {(int(p["internal"]), p["ip"]) for p in container.inputs["ports"]}
        assert {ip for _, ip in published} == {{"h2": "10.0.0.2", "h3": "10.0.0.3"}[host_of(three_hosts, container)]}, (
            "metrics only on the host's own address"
        )
        assert {port for port, _ in published} == {8080}, "nothing but /metrics is published"
        assert any(n["name"].endswith("-net-edge") for n in container.inputs["networksAdvanced"]), (
            "a network that can publish: the backend network is internal"
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"runbox:dockerHosts": "not json"}, "JSON list"),
        ({"runbox:dockerHosts": json.dumps([{"name": "a", "url": "ssh://a", "roles": ["chef"]}])}, "roles"),
        ({"runbox:dockerHosts": json.dumps([{"name": "a", "url": "ssh://a", "roles": ["broker", "gateway"]}])},
         "executor role"),
        ({"runbox:dockerHosts": json.dumps([*THREE_HOSTS, THREE_HOSTS[0]])}, "unique"),
        ({"runbox:brokerImage": "rabbitmq:3.13-management"}, "pinned by digest"),
        ({"runbox:buildImages": "false", "runbox:appImage": "example/runbox:1.0"}, "pinned by digest"),
    ],
)
def test_bad_host_settings_are_refused(extra: dict[str, str], message: str) -> None:
    with pytest.raises(Exception, match=message):
        run_many(extra)


def test_tls_is_required_across_hosts() -> None:
    config = {k: v for k, v in MANY.items() if k not in MANY_SECRETS}
    with pytest.raises(Exception, match="brokerTlsCa"):
        run_program(config)


def test_one_host_carrying_every_role_places_what_the_one_host_stack_does(monitoring_files: dict[str, str]) -> None:
    one = [{"name": "solo", "url": "ssh://deploy@10.0.0.9", "roles": ["broker", "gateway", "executor", "monitoring"]}]
    solo = run_many({"runbox:dockerHosts": json.dumps(one), "runbox:gatewayCount": "2", "runbox:executorCount": "2",
                     "runbox:executorRuntimes": "[]"})
    plain = run_program({**monitoring_files, "runbox:gatewayCount": "2", "runbox:executorCount": "2"})
    roles = ("broker", "gateway", "gate", "executor", "prometheus", "grafana")
    assert {r: len(solo.role(r)) for r in roles} == {r: len(plain.role(r)) for r in roles}
    assert sorted(solo.exports["executors"]) == [n.replace("runbox-test-", "runbox-test-solo-")
                                                 for n in sorted(plain.exports["executors"])]
    (prometheus,) = solo.role("prometheus")
    config = yaml.safe_load(uploads(prometheus)[PROMETHEUS_CONFIG])
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
            if job.get("static_configs")}
    assert sorted(jobs["gate"]) == ["10.0.0.9:9179"] and len(jobs["executor"]) == 2
