"""Observability: metrics, Grafana dashboards and Prometheus alerts, checked against the real thing.

Static checks: the dashboards are Grafana JSON whose datasource is a template variable
(``${datasource}``, default: the provisioned ``prometheus``), so they import into any Grafana; the
provisioning files point where the deployment mounts them, promtool accepts the rules and the
configs and passes the alert unit tests, docs/observability.md lists every metric.

Live check: a real gateway and a real executor (separate processes, as deployed) against the
real RabbitMQ and Docker, a real Prometheus scraping both every second with the alert rules
loaded, a small mixed load; then every panel query of every dashboard must return data, every
metric a query or an alert names must be exported, and no label value may be a job id or an
address. Grafana template variables are replaced by concrete values (``GRAFANA_VARS``).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart, request

from app.config import hash_key
from app.metrics import Metrics
from app.web import errors, instrumentation
from tests.runbox_client import ROOT, Service, free_port

DASHBOARDS = ROOT / "dashboards"
MONITORING = ROOT / "monitoring"
DOCS = ROOT / "docs" / "observability.md"
DASHBOARD_FILES = ("overview.json", "queues-pools.json", "abuse.json")
DATASOURCE_UID = "prometheus"  # the provisioned datasource, the variable's default
DATASOURCE_VAR = {"type": "prometheus", "uid": "${datasource}"}

# Concrete values for Grafana's template variables when a query is sent to Prometheus directly.
RATE_INTERVAL = "1m"
GRAFANA_VARS = {
    "$__rate_interval": RATE_INTERVAL,
    "$__interval": "15s",
    "$__range": "5m",
    "$language": ".*",
}
# Series Prometheus makes itself; panels and alerts may use them besides runbox_* metrics.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

API_KEY = "obs-" + secrets.token_hex(8)
JOB_ID = re.compile(r"[0-9a-f]{26}")
IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")


# --- reading dashboards and rules ------------------------------------------------------------
def load_dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARDS / name).read_text()) for name in DASHBOARD_FILES}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves are skipped."""
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    legend: str = ""


def panel_queries() -> list[Query]:
    return [
        Query(f"{name} / {panel['title']} / {target['refId']}", target["expr"], target.get("legendFormat", ""))
        for name, dashboard in load_dashboards().items()
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_queries() -> list[Query]:
    return [Query(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]


def concrete(expr: str) -> str:
    """The query as Grafana would send it, with every template variable replaced."""
    for name in sorted(GRAFANA_VARS, key=len, reverse=True):
        value = GRAFANA_VARS[name]
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    assert "$" not in expr, f"unknown template variable in {expr!r}"
    return expr


def referenced_series(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: runbox_* names and any ``name{`` selector."""
    names = set(re.findall(r"\b(runbox_[a-zA-Z0-9_]+)\b", expr))
    names |= set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr))
    return names


def matcher_labels(expr: str) -> Iterator[tuple[str, str]]:
    """(metric, label) for every label matcher inside ``metric{...}``."""
    for metric, body in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body):
            yield metric, label


def base_name(series: str, histograms: set[str]) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in histograms:
            return series[: -len(suffix)]
    return series


def exposition(metrics: Metrics) -> tuple[dict[str, set[str]], set[str]]:
    """Series names the registry can export, each with its label names; plus the histogram names."""
    series: dict[str, set[str]] = {}
    histograms: set[str] = set()
    for family in metrics.registry.collect():
        labels = set(registry_labels(metrics, family.name))
        if family.type == "counter":
            series[family.name + "_total"] = labels
        elif family.type == "histogram":
            histograms.add(family.name)
            for suffix in HISTOGRAM_SUFFIXES:
                series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            series[family.name] = labels
    return series, histograms


def registry_labels(metrics: Metrics, family: str) -> tuple[str, ...]:
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        if name in (family, family + "_total"):
            return tuple(value._labelnames)
    raise AssertionError(f"no metric object for {family}")


# --- static checks ----------------------------------------------------------------------------
def test_dashboards_are_grafana_json_on_a_datasource_variable() -> None:
    dashboards = load_dashboards()
    assert len({d["uid"] for d in dashboards.values()}) == len(dashboards)
    for name, dashboard in dashboards.items():
        text = (DASHBOARDS / name).read_text()
        assert "${DS_" not in text and "__inputs" not in dashboard, name
        assert 36 <= dashboard["schemaVersion"] <= 41, name
        assert dashboard["title"].startswith("runbox") and "runbox" in dashboard["tags"]
        assert dashboard.get("id") is None, "provisioned dashboards carry no database id"
        ids = [p["id"] for p in dashboard["panels"]]
        ids += [p["id"] for row in dashboard["panels"] for p in row.get("panels", [])]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        assert source["name"] == "datasource" and source["query"] == "prometheus", name
        assert source["current"]["value"] == DATASOURCE_UID, "defaults to the provisioned datasource"
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["datasource"] == DATASOURCE_VAR
        for panel in panels(dashboard):
            where = f"{name} / {panel['title']}"
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            assert panel["datasource"] == DATASOURCE_VAR, where
            assert panel["targets"], f"{where} has no query"
            assert panel.get("description"), f"{where} has no description"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), where
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE_VAR, where
                assert target["expr"].strip(), where
                concrete(target["expr"])  # only known template variables


def test_dashboards_cover_what_the_issue_asks_for() -> None:
    text = {name: json.dumps(d) for name, d in load_dashboards().items()}
    expected = {
        "overview.json": [
            "runbox_jobs_finished_total",
            "runbox_job_submit_to_result_seconds_bucket",
            "runbox_job_run_seconds_bucket",
            "runbox_rejections_total",
            'status=\\"failed\\"',
        ],
        "queues-pools.json": [
            "runbox_queue_depth",
            "runbox_executor_waiting_jobs",
            "runbox_executor_running_jobs",
            "runbox_pool_containers",
            "runbox_pool_max_containers",
            "runbox_container_events_total",
            "runbox_job_queue_wait_seconds_bucket",
            "runbox_broker_reconnects_total",
        ],
        "abuse.json": [
            "timed_out",
            "runbox_limit_hits_total",
            "rate_limited",
            "runbox_sse_streams",
            "runbox_dead_letters_total",
            "runbox_redeliveries_total",
        ],
    }
    for name, needles in expected.items():
        for needle in needles:
            assert needle in text[name], f"{name} lacks {needle}"
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}" in text["overview.json"]


def test_provisioning_points_at_the_datasource_and_the_mounted_dashboards() -> None:
    ds = yaml.safe_load((DASHBOARDS / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE_UID
    assert source["url"] == "http://prometheus:9090"
    boards = yaml.safe_load((DASHBOARDS / "provisioning/dashboards/runbox.yml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_config_scrapes_gateways_and_executors() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"gateway", "executor", "rabbitmq"}
    for name, job in jobs.items():
        assert job.get("metrics_path", "/metrics") == "/metrics"
        (sd,) = job["dns_sd_configs"]
        assert sd["names"] == [name] and sd["port"] == (15692 if name == "rabbitmq" else 8080)


def test_alerts_have_for_severity_and_annotations_and_unit_tests() -> None:
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    assert {
        "RunboxBacklogGrowing",
        "RunboxPoolSaturated",
        "RunboxTimeoutSpike",
        "RunboxNoExecutorConsuming",
        "RunboxJobsFailing",
        "RunboxHttpErrors",
        "RunboxBrokerDisconnected",
    } <= names
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for name in names:
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name} is never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{name} is never tested quiet"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (Debian package prometheus)")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return subprocess.run([tool, *args], capture_output=True, text=True, cwd=ROOT, check=False, timeout=60)


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "monitoring/alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_runs_the_alert_unit_tests() -> None:
    result = promtool("test", "rules", "monitoring/alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def prometheus_test_config(gateway_port: int, executor_port: int, token_file: Path) -> dict[str, Any]:
    """monitoring/prometheus.yml with 1 s intervals, local static targets instead of DNS names, and
    the metrics token read from ``token_file`` instead of the deployment's path."""
    config: dict[str, Any] = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(MONITORING / name) for name in config["rule_files"]]
    ports = {"gateway": gateway_port, "executor": executor_port}
    # RabbitMQ's own metrics need its Prometheus plugin, which the machine's default node does
    # not run; tests/test_cluster.py scrapes the cluster's nodes instead.
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in ports]
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs")
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
        job["authorization"]["credentials_file"] = str(token_file)
    return config


def test_promtool_checks_the_configs(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    # promtool checks that the token file exists: the repo's config with only that path moved
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["rule_files"] = [str(MONITORING / name) for name in config["rule_files"]]
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
    (tmp_path / "repo.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(tmp_path / "repo.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    variant = tmp_path / "prometheus.yml"
    variant.write_text(yaml.safe_dump(prometheus_test_config(free_port(), free_port(), token)))
    result = promtool("check", "config", str(variant))
    assert result.returncode == 0, result.stdout + result.stderr


def test_queries_name_only_defined_metrics_and_labels() -> None:
    series, _ = exposition(Metrics())
    for query in panel_queries() + alert_queries():
        for name in referenced_series(query.expr):
            assert name in series or name in PROMETHEUS_SERIES, f"{query.where}: {name} is not a metric"
        for metric, label in matcher_labels(query.expr):
            if metric in series:
                assert label in series[metric] | TARGET_LABELS, f"{query.where}: {metric} has no label {label}"


def test_docs_list_every_metric() -> None:
    docs = DOCS.read_text()
    metrics = Metrics()
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = ", ".join(registry_labels(metrics, family.name)) or "none"
        row = re.search(rf"^\| `{re.escape(name)}` \| (\w+) \| ([^|]*) \|", docs, re.M)
        assert row, f"docs/observability.md does not list {name}"
        assert row.group(1) == family.type, f"{name} is a {family.type}"
        assert row.group(2).strip().replace("`", "") == labels, f"{name} has labels {labels}"


async def test_http_instrumentation_labels_route_templates() -> None:
    metrics = Metrics()
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16
    app.extensions["runbox.metrics"] = metrics
    errors.register(app)
    instrumentation.register(app)

    @app.post("/things/<thing_id>")
    async def thing(thing_id: str) -> str:
        await request.get_data()
        return "ok"

    client = app.test_client()
    job_id = "0" * 26
    assert (await client.post(f"/things/{job_id}", data=b"x")).status_code == 200
    assert (await client.post(f"/things/{job_id}", data=b"x" * 64)).status_code == 413
    assert (await client.get(f"/nowhere/{job_id}")).status_code == 404
    assert (await client.open("/things/x", method="BREW", json=None)).status_code == 405
    value = metrics.registry.get_sample_value
    assert value("runbox_http_requests_total", {"route": "/things/<thing_id>", "method": "POST", "code": "200"}) == 1
    assert value("runbox_http_requests_total", {"route": "/things/<thing_id>", "method": "POST", "code": "413"}) == 1
    assert value("runbox_http_requests_total", {"route": "unmatched", "method": "GET", "code": "404"}) == 1
    assert value("runbox_http_requests_total", {"route": "unmatched", "method": "OTHER", "code": "405"}) == 1
    assert value("runbox_http_request_duration_seconds_count", {"route": "/things/<thing_id>"}) == 2
    assert value("runbox_rejections_total", {"reason": "body_too_large"}) == 1


# --- live: real runbox, real Prometheus -------------------------------------------------------
@dataclass
class Live:
    prometheus: str
    gateway: Service
    executor: Service
    metrics_text: dict[str, str]
    accepted: int

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])


def start_prometheus(config: dict[str, Any], workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (Debian package prometheus)")
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("ab")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
    )
    log.close()  # the child keeps its own descriptor
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(workdir / 'prometheus.log').read_text()}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("prometheus did not become ready")


def wait_for(what: str, check: Any, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
            if last is True:
                return
        except (AssertionError, httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def run_load(gateway: Service) -> int:
    """A mixed load; returns how many jobs were accepted (each must finish)."""
    accepted = 0
    keyed = gateway.client(Authorization=f"Bearer {API_KEY}")
    anonymous = gateway.client()
    try:
        # successes, several at once so pools and executors are busy for a moment
        def ok(n: int) -> dict[str, Any]:
            client = gateway.client(Authorization=f"Bearer {API_KEY}")
            try:
                return client.run({"language": "python", "source": f"print(sum(range({n})))"})
            finally:
                client.close()

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(ok, range(24)))
        assert all(r["status"] == "completed" for r in results), results
        accepted += len(results)
        # a program that fails is still a completed job
        assert keyed.run({"language": "python", "source": "raise SystemExit(3)"})["status"] == "completed"
        # a timeout
        state = keyed.run({"language": "python", "source": "while True: pass", "limits": {"timeout_s": 1}})
        assert state["status"] == "timed_out", state
        # output truncation, and output far past the cap
        state = keyed.run({"language": "python", "source": "print('x' * 3000)", "limits": {"output_kb": 1}})
        assert state["result"]["truncated"]["stdout"], state
        state = keyed.run({"language": "python", "source": "print('x' * 100000)", "limits": {"output_kb": 1}})
        assert state["status"] == "output_exceeded", state
        accepted += 4
        # reading a job's state and a missing job (job ids in paths must not become labels)
        job_id = keyed.submit_ok({"language": "python", "source": "print(1)"})
        accepted += 1
        keyed.wait_state(job_id)
        assert keyed.http.get("/api/v1/jobs/" + "f" * 26).status_code == 404
        # bad requests, unknown key, oversized body
        assert keyed.submit({"language": "cobol-77", "source": ""}).status_code == 400
        assert keyed.http.post("/api/v1/jobs", content=b"{not json").status_code == 400
        bad_limits = {"language": "python", "source": "", "limits": {"timeout_s": 999}}
        assert keyed.submit(bad_limits).status_code == 400
        unknown_key = {"Authorization": "Bearer nope"}
        assert anonymous.submit({"language": "python", "source": ""}, headers=unknown_key).status_code == 401
        assert keyed.http.post("/api/v1/jobs", content=b"x" * 40_000).status_code == 413
        # an anonymous burst past its bucket
        codes = []
        ids = []
        for _ in range(8):
            response = anonymous.submit({"language": "python", "source": "print('burst')"})
            codes.append(response.status_code)
            if response.status_code == 202:
                ids.append(response.json()["id"])
        assert 429 in codes and 202 in codes, codes
        accepted += len(ids)
        for job_id in ids:
            assert anonymous.wait_state(job_id)["status"] == "completed"
    finally:
        keyed.close()
        anonymous.close()
    return accepted


@pytest.fixture(scope="module")
def live(real_stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    workdir = tmp_path_factory.mktemp("prometheus")
    prefix = f"test-obs-{secrets.token_hex(4)}"
    token = secrets.token_hex(16)
    (workdir / "token").write_text(token)
    # Loopback may not read /metrics here (TEST-NET-1 only): Prometheus gets in with the token alone,
    # as it does in a deployment where it scrapes over a Docker network.
    common = {
        "RUNBOX_LANGUAGES": "python",
        "RUNBOX_LOG_LEVEL": "WARNING",
        "RUNBOX_METRICS_TOKEN": token,
        "RUNBOX_METRICS_ALLOW_CIDRS": "192.0.2.0/24",
    }
    executor = Service(roles="executor", prefix=prefix, **common)
    gateway = Service(
        roles="gateway",
        prefix=prefix,
        RUNBOX_API_KEYS=f"premium:plain:{API_KEY}",
        RUNBOX_ANONYMOUS_BURST="5",
        RUNBOX_ANONYMOUS_RATE_PER_S="0.2",
        RUNBOX_MAX_BODY_KB="32",
        **common,
    )
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        # Prometheus first, so it sees both processes from their first scrape.
        prometheus, url = start_prometheus(
            prometheus_test_config(gateway.port, executor.port, workdir / "token"), workdir
        )
        executor.start(wait_ready=False)
        gateway.start()
        live = Live(url, gateway, executor, {}, 0)
        wait_for("both targets up", lambda: live.scalar('sum(up{job=~"gateway|executor"})') == 2)
        live.accepted = run_load(gateway)
        # Every accepted job finished, and Prometheus has scraped the final counts.
        wait_for(
            "Prometheus to see every finished job",
            lambda: (
                live.scalar("sum(runbox_jobs_finished_total)") == live.accepted
                and live.scalar("sum(runbox_job_submit_to_result_seconds_count)") == live.accepted
            ),
        )
        time.sleep(2)  # a couple more scrapes so the last requests count in every rate
        for role, service in (("gateway", gateway), ("executor", executor)):
            response = httpx.get(service.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            live.metrics_text[role] = response.text
        yield live
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(30)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()
        gateway.stop()
        executor.stop()


def test_every_dashboard_query_returns_data(live: Live) -> None:
    empty, unlabelled, nan = [], [], []
    for query in panel_queries():
        result = live.query(concrete(query.expr))
        if not result:
            empty.append(f"{query.where}: {query.expr}")
            continue
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", query.legend):
            if any(label not in series["metric"] for series in result):
                unlabelled.append(f"{query.where}: legend label {label} missing from {result[0]['metric']}")
        if all(math.isnan(float(series["value"][1])) for series in result):
            nan.append(f"{query.where}: {query.expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert not unlabelled, "\n".join(unlabelled)
    assert not nan, "queries that only return NaN:\n" + "\n".join(nan)


def test_dashboard_variables_have_values(live: Live) -> None:
    for name, dashboard in load_dashboards().items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"])
            assert match, f"{name}: unsupported variable query {variable['definition']}"
            metric, label = match.groups()
            response = httpx.get(f"{live.prometheus}/api/v1/label/{label}/values", params={"match[]": metric})
            assert "python" in response.json()["data"], f"{name}: ${variable['name']} has no values"


def test_the_load_shows_in_prometheus(live: Live) -> None:
    def total(expr: str) -> float:
        return live.scalar(f"sum({expr})")

    assert total('runbox_jobs_finished_total{status="completed"}') >= 30
    assert total('runbox_jobs_finished_total{status="timed_out"}') == 1
    assert total('runbox_jobs_finished_total{status="output_exceeded"}') == 1
    assert total('runbox_limit_hits_total{kind="wall_time"}') == 1
    assert total('runbox_limit_hits_total{kind="output"}') >= 2
    for reason in ("rate_limited", "bad_request", "unauthorized", "body_too_large"):
        assert total(f'runbox_rejections_total{{reason="{reason}"}}') >= 1, reason
    assert total('runbox_http_requests_total{route="/api/v1/jobs/<job_id>/events",code="200"}') >= 28
    assert total('runbox_http_requests_total{route="/api/v1/jobs",code="429"}') >= 1
    assert total(f"rate(runbox_jobs_finished_total[{RATE_INTERVAL}])") > 0
    assert live.scalar("histogram_quantile(0.5, sum by (le) (rate(runbox_job_run_seconds_bucket[1m])))") > 0
    assert total('runbox_queue_consumers{job="gateway"}') == 1
    assert total('runbox_pool_max_containers{job="executor"}') > 0
    assert total("runbox_broker_connected") == 2


def test_alert_rules_load_and_evaluate_cleanly(live: Live) -> None:
    def evaluated() -> bool:
        groups = httpx.get(f"{live.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
        bad = [(rule["name"], rule["health"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
        assert not bad, bad
        return True

    wait_for("every rule evaluated without error", evaluated, timeout=10)
    firing = [a for a in live.query("ALERTS") if a["metric"]["alertstate"] == "firing"]
    assert not firing, firing


def test_every_referenced_metric_is_exported(live: Live) -> None:
    exported: set[str] = set()
    histograms: set[str] = set()
    for text in live.metrics_text.values():
        for family in text_string_to_metric_families(text):
            if family.type == "histogram":
                histograms.add(family.name)
            exported |= {sample.name for sample in family.samples}
    for query in panel_queries() + alert_queries():
        for name in referenced_series(query.expr):
            if name in PROMETHEUS_SERIES:
                continue
            assert name in exported, f"{query.where}: {name} is not in /metrics"
            assert base_name(name, histograms).startswith("runbox_")


def test_metrics_carry_no_job_ids_keys_or_addresses(live: Live) -> None:
    for role, text in live.metrics_text.items():
        assert API_KEY not in text and hash_key(API_KEY) not in text, role
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for label, value in sample.labels.items():
                    where = f"{role} {sample.name}{{{label}={value!r}}}"
                    assert not JOB_ID.search(value), f"job id in {where}"
                    assert not IPV4.search(value), f"address in {where}"
                    try:
                        ipaddress.ip_address(value)
                    except ValueError:
                        continue
                    raise AssertionError(f"address in {where}")
    routes = {
        sample.labels["route"]
        for family in text_string_to_metric_families(live.metrics_text["gateway"])
        for sample in family.samples
        if "route" in sample.labels
    }
    assert {"/api/v1/jobs", "/api/v1/jobs/<job_id>", "/api/v1/jobs/<job_id>/events", "/metrics"} <= routes, routes
