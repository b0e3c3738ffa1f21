"""``GET /openapi.json``: an OpenAPI 3.1 document of every route, built from the wire models.

Request and response schemas come from :mod:`app.gateway.models` (the classes the adapters
parse with), the language names from the registry, and every operation lists every answer
it can give, success and refusal alike, in its flavour's error shape. The route table below
is checked against the app's URL map by the test suite, so no route goes undocumented.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from quart import Blueprint, jsonify

from app.gateway import gateway, models
from app.languages import Registry

bp = Blueprint("openapi", __name__)
REF = "#/components/schemas/{model}"
JSON = "application/json"

# (flavour, error model) for each API's refusals.
ERRORS: dict[str, type[BaseModel]] = {"v1": models.ErrorOut, "piston": models.PistonError, "judge0": models.Judge0Error}
REFUSALS = {
    "400": "malformed or invalid input",
    "401": "missing or unknown API key",
    "403": "not allowed",
    "404": "unknown id or address",
    "405": "method not allowed",
    "408": "the body did not arrive in time",
    "410": "the job's history is older than the deployment keeps",
    "413": "the body is over the size cap",
    "429": "rate, job or stream allowance exceeded (Retry-After)",
    "503": "queue full or broker unreachable (Retry-After)",
}


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def content(schema: dict[str, Any], media: str = JSON) -> dict[str, Any]:
    return {"content": {media: {"schema": schema}}}


def answers(flavour: str, ok: dict[str, tuple[str, dict[str, Any]]], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Responses: the successes given, then every refusal in the flavour's error shape."""
    out: dict[str, Any] = {code: {"description": text, **body} for code, (text, body) in ok.items()}
    error_schema: dict[str, Any] = ref(ERRORS[flavour])
    if flavour == "judge0":
        # A batch whose every item is invalid answers the list of per-item errors.
        error_schema = {"anyOf": [error_schema, {"type": "array", "items": {"type": "object"}}]}
    error = content(error_schema)
    for code, text in REFUSALS.items():
        out.setdefault(code, {"description": text, **error})
    for code in extra:
        out.setdefault(code, {"description": "see the API documentation", **error})
    return out


def op(summary: str, flavour: str, ok: dict[str, tuple[str, dict[str, Any]]], *, body: type[BaseModel] | None = None,
       params: list[dict[str, Any]] | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "tags": [flavour], "responses": answers(flavour, ok, extra)}
    if body is not None:
        out["requestBody"] = {"required": True, **content(ref(body))}
    if params:
        out["parameters"] = params
    return out


def path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def array(model: type[BaseModel]) -> dict[str, Any]:
    return {"type": "array", "items": ref(model)}


TRUE_FALSE = {"type": "string", "enum": ["true", "false"]}
JUDGE0_QUERY = [
    query("base64_encoded", TRUE_FALSE, "text attributes are Base64 both ways"),
    query("fields", {"type": "string"}, "comma-separated attributes to answer, or *"),
]


def paths() -> dict[str, Any]:
    """Every route of the gateway role (and the health routes every role serves)."""
    job = path_param("job_id", "a job id as answered by POST /api/v1/jobs")
    token = path_param("token", "a submission token")
    sse = ("the job's events", content({"type": "string"}, "text/event-stream"))
    judge0_one = {"type": "object", "oneOf": [ref(models.Judge0Token), ref(models.Judge0View)]}
    return {
        "/api/v1/jobs": {"post": op("Submit a job", "v1", {"202": ("queued", content(ref(models.Accepted)))},
                                    body=models.SubmitBody)},
        "/api/v1/jobs/{job_id}/stdin": {"post": op(
            "Send input to an interactive job", "v1", {"202": ("accepted", content(ref(models.StdinAccepted)))},
            body=models.StdinBody, params=[job], extra=("409",),
        )},
        "/api/v1/jobs/{job_id}": {"get": op("A job's state", "v1", {"200": ("the state", content(ref(models.JobOut)))},
                                        params=[job])},
        "/api/v1/jobs/{job_id}/events": {"get": op("Follow a job's events (SSE)", "v1", {"200": sse}, params=[
            job, query("last_event_id", {"type": "string", "pattern": "^[0-9]{1,12}$"}, "resume after this event"),
        ])},
        "/api/v1/languages": {"get": op("Languages", "v1", {"200": ("languages", content(array(models.LanguageOut)))})},
        "/openapi.json": {"get": op("This document", "v1", {"200": ("OpenAPI 3.1", content({"type": "object"}))})},
        "/healthz": {"get": op("Liveness", "v1", {"200": ("alive", content(ref(models.HealthOut)))})},
        "/readyz": {"get": op("Readiness", "v1", {"200": ("ready", content(ref(models.ReadyOut)))})},
        "/metrics": {"get": op("Prometheus metrics (allowed peers or token)", "v1",
                               {"200": ("metrics", content({"type": "string"}, "text/plain"))})},
        "/": {"get": op("The playground page", "v1", {"200": ("HTML", content({"type": "string"}, "text/html"))})},
        "/api/v2/runtimes": {"get": op("Piston runtimes", "piston",
                                       {"200": ("runtimes", content(array(models.PistonRuntime)))})},
        "/api/v2/packages": {"get": op("Piston packages (read-only: every language installed)", "piston",
                                       {"200": ("packages", content(array(models.PistonPackage)))})},
        "/api/v2/execute": {"post": op("Piston: run to the end", "piston",
                                       {"200": ("the result", content(ref(models.PistonResult)))},
                                       body=models.PistonExecute, extra=("504",))},
        "/about": {"get": op("Judge0 about", "judge0", {"200": ("about", content({"type": "object"}))})},
        "/version": {"get": op("Judge0 version", "judge0", {"200": ("version", content({"type": "string"},
                                                                                      "text/plain"))})},
        "/config_info": {"get": op("Judge0 configuration", "judge0", {"200": ("config", content({"type": "object"}))})},
        "/statuses": {"get": op("Judge0 statuses", "judge0",
                                {"200": ("statuses", content(array(models.Judge0Status)))})},
        "/languages": {"get": op("Judge0 languages", "judge0",
                                 {"200": ("languages", content(array(models.Judge0Language)))})},
        "/languages/all": {"get": op("Judge0 languages, archived too", "judge0",
                                     {"200": ("languages", content(array(models.Judge0Language)))})},
        "/languages/{language_id}": {"get": op("A Judge0 language", "judge0",
                                               {"200": ("language", content(ref(models.Judge0Language)))},
                                               params=[path_param("language_id", "a Judge0 language id")])},
        "/submissions": {
            "post": op("Judge0: create a submission", "judge0",
                       {"201": ("token, or the result with wait=true", content(judge0_one))},
                       body=models.Judge0Submission, extra=("422",),
                       params=[*JUDGE0_QUERY, query("wait", TRUE_FALSE, "answer when it ends")]),
            "get": op("Judge0: the caller's submissions this gateway still holds, newest first", "judge0",
                      {"200": ("a page of submissions", content(ref(models.Judge0Page)))},
                      params=[*JUDGE0_QUERY, query("page", {"type": "integer"}, "from 1"),
                              query("per_page", {"type": "integer"}, "20 by default, at most 100")]),
        },
        "/statistics": {"get": op("Judge0 statistics of the jobs this gateway holds", "judge0",
                                  {"200": ("statistics", content({"type": "object"}))})},
        "/workers": {"get": op("Judge0 workers: each language queue's backlog and executors", "judge0",
                               {"200": ("queues", content(array(models.Judge0Worker)))})},
        "/system_info": {"get": op("Judge0 system information (the answering gateway's machine)", "judge0",
                                   {"200": ("facts", content({"type": "object"}))})},
        "/authenticate": {"post": op("Judge0: check an X-Auth-Token", "judge0", {"200": ("accepted", {})})},
        "/authorize": {"post": op("Judge0: administrator check (none is configured: 403)", "judge0", {})},
        "/submissions/batch": {
            "post": op("Judge0: create up to 20 submissions", "judge0",
                       {"201": ("a token or errors per item", content({"type": "array", "items": {"type": "object"}}))},
                       body=models.Judge0Batch, extra=("422",), params=[JUDGE0_QUERY[0]]),
            "get": op("Judge0: several submissions", "judge0",
                      {"200": ("submissions", content(ref(models.Judge0Batched)))},
                      params=[*JUDGE0_QUERY, query("tokens", {"type": "string"}, "comma-separated tokens")]),
        },
        "/submissions/{token}": {
            "get": op("Judge0: one submission", "judge0", {"200": ("the submission", content(ref(models.Judge0View)))},
                      params=[token, *JUDGE0_QUERY]),
            "delete": op("Judge0: delete (disabled)", "judge0", {}, params=[token]),
        },
    }


def document(registry: Registry) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document for a deployment running ``registry``'s languages."""
    wanted: list[type[BaseModel]] = [
        models.SubmitBody, models.StdinBody, models.StdinAccepted, models.Accepted, models.JobOut, models.LanguageOut,
        models.ErrorOut, models.HealthOut, models.ReadyOut, models.PistonExecute, models.PistonRuntime,
        models.PistonResult, models.PistonError, models.PistonPackage,
        models.Judge0Submission, models.Judge0Batch, models.Judge0Status, models.Judge0Language, models.Judge0Token,
        models.Judge0View, models.Judge0Batched, models.Judge0Error, models.Judge0Page, models.Judge0Worker,
    ]
    _, schemas = models_json_schema([(m, "validation") for m in wanted], ref_template=REF)
    components = schemas.get("$defs", {})
    names = registry.names()
    submit = components["SubmitBody"]["properties"]["language"]
    submit["examples"] = names
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runbox",
            "version": "1",
            "description": "Run untrusted code: the native v1 API, and Piston v2 and Judge0 CE compatible APIs. "
                           "Every error of the v1 API is {\"error\": {\"code\", \"message\"}}; see docs/api.md.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths(),
    }


@bp.get("/openapi.json")
async def openapi() -> Any:
    return jsonify(document(gateway().registry))
