"""The OpenAPI document: valid 3.1, served as built, covering every route; and fuzzing from it.

The fuzzing (schemathesis, bounded by a modest ``max_examples``) sends generated requests to
every documented operation of a real service and accepts zero 5xx answers and zero answers
outside the documented statuses, content types and schemas.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.gateway.openapi import document
from app.languages import Registry
from app.server import create_app
from tests.runbox_client import Service

REGISTRY = Registry.load(image_tag=Settings.from_env().image_tag)
DOCUMENT = document(REGISTRY)
# Not fuzzed: the event stream (a long-lived response; tests/test_api.py and tests/abuse cover it).
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/api/v1/jobs/{job_id}/events")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_document_is_openapi_3_1_and_covers_every_route() -> None:
    from openapi_spec_validator import validate

    validate(DOCUMENT)
    app = create_app(Settings(roles=("gateway",)), REGISTRY)
    documented = {(path, method.upper()) for path, ops in DOCUMENT["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.websocket:
            continue  # OpenAPI cannot describe a WebSocket; docs/api.md does (Piston's /api/v2/connect)
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                assert (path, method) in documented, f"{method} {path} is not in /openapi.json"


def test_every_refusal_is_documented_in_the_flavours_shape() -> None:
    for path, ops in DOCUMENT["paths"].items():
        for method, operation in ops.items():
            for code in ("400", "401", "404", "413", "429", "503"):
                assert code in operation["responses"], f"{method} {path} does not document {code}"


@pytest.fixture(scope="module")
def fuzz_target(real_stack: None) -> Iterator[Service]:
    svc = Service(
        RUNBOX_LANGUAGES="python",
        RUNBOX_POOL_SIZE="2",
        RUNBOX_ANONYMOUS_RATE_PER_S="50",
        RUNBOX_ANONYMOUS_BURST="100",
    ).start()
    yield svc
    svc.stop()


def test_served_document_is_the_built_one(fuzz_target: Service) -> None:
    import httpx

    served = httpx.get(fuzz_target.url + "/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == document(Registry.load(("python",), image_tag=Settings.from_env().image_tag))


@SCHEMA.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fuzz_every_route(case: schemathesis.Case, fuzz_target: Service) -> None:
    case.call_and_validate(base_url=fuzz_target.url, checks=CHECKS, timeout=120)
