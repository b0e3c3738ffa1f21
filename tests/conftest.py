"""Fixtures: real RabbitMQ and Docker; each test session gets its own queues and executor."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.runbox_client import CREATED_PREFIXES, Client, Service, delete_prefixes, start_gate

CALLBACK_SECRET = "session-callback-secret"
API_KEY = "session-premium-key"  # a premium-tier key of the session service (many jobs at once)


def _require(cmd: list[str], what: str) -> None:
    if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        message = f"{what} is not available ({' '.join(cmd)} failed); run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def docker_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """The session's Docker gate process and the ``RUNBOX_DOCKER_URL`` of its socket."""
    _require(["docker", "info"], "the Docker engine")
    gate, url = start_gate(tmp_path_factory.mktemp("gate"))
    yield gate, url
    gate.stop()


@pytest.fixture(scope="session")
def real_stack(docker_gate: tuple[Service, str]) -> Iterator[None]:
    """RabbitMQ and the Docker engine must answer; on CI their absence is a failure, not a skip.

    Executors reach the engine only through the Docker gate, as in production: every service
    started from here on gets the gate's socket as RUNBOX_DOCKER_URL.
    """
    _require(["rabbitmq-diagnostics", "-q", "check_port_connectivity"] if shutil.which("rabbitmq-diagnostics")
             else ["false"], "RabbitMQ")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RUNBOX_DOCKER_URL", docker_gate[1])
        yield


@pytest.fixture(scope="session", autouse=True)
def delete_test_queues() -> Iterator[None]:
    """Every prefix a test created is deleted at the end, so RabbitMQ does not fill with test queues."""
    yield
    delete_prefixes(CREATED_PREFIXES)


@pytest.fixture(scope="session")
def service(real_stack: None) -> Iterator[Service]:
    """One gateway+executor process shared by the tests that only need a working service.

    Callbacks are on and may reach loopback, so a test can receive them on a local server;
    ``API_KEY`` is a premium key (keys are not required).
    """
    svc = Service(
        RUNBOX_CALLBACK_SECRET=CALLBACK_SECRET, RUNBOX_CALLBACK_ALLOW_CIDRS="127.0.0.0/8",
        RUNBOX_API_KEYS=f"premium:plain:{API_KEY}",
    ).start()
    yield svc
    svc.stop()


@pytest.fixture()
def client(service: Service) -> Iterator[Client]:
    c = service.client()
    yield c
    c.close()


def _language_selection() -> str:
    """Which units tests/test_languages.py runs end to end, and which it leaves out (never silently)."""
    from app.languages import Registry
    from tests.language_selection import selected_units

    every = Registry.load().unit_keys()
    chosen = selected_units(every)
    left = [key for key in every if key not in chosen]
    line = f"languages: {len(chosen)} of {len(every)} units run end to end"
    return line + (f"; NOT run (RUNBOX_TEST_LANGUAGES selects them out): {', '.join(left)}" if left else "")


def pytest_report_header() -> str:
    return _language_selection()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_sep("-", _language_selection())
