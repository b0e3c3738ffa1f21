"""Fixtures: real RabbitMQ and Docker; each test session gets its own queues and executor."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.runbox_client import Client, Service


def _require(cmd: list[str], what: str) -> None:
    if subprocess.run(cmd, capture_output=True, check=False).returncode != 0:
        message = f"{what} is not available ({' '.join(cmd)} failed); run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def real_stack() -> None:
    """RabbitMQ and the Docker engine must answer; on CI their absence is a failure, not a skip."""
    _require(["docker", "info"], "the Docker engine")
    _require(["rabbitmqctl", "-q", "status"] if shutil.which("rabbitmqctl") else ["false"], "RabbitMQ")


@pytest.fixture(scope="session")
def service(real_stack: None) -> Iterator[Service]:
    """One gateway+executor process shared by the tests that only need a working service."""
    svc = Service().start()
    yield svc
    svc.stop()


@pytest.fixture()
def client(service: Service) -> Iterator[Client]:
    c = service.client()
    yield c
    c.close()
