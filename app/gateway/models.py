"""Wire models of every API flavour (pydantic): what the adapters parse and what /openapi.json says.

The v1 submit body is parsed with :class:`SubmitBody` (strict JSON types, unknown limits
refused); a failure is a 400 whose code names the field. Piston and Judge0 accept looser
types the way those services do (numeric strings, numbers as arguments), so their models
describe the accepted shapes and their adapters read the details; answers are described by
the response models below. The same classes generate the OpenAPI document, so the document
cannot drift from what the validator checks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.gateway.validate import MAX_ARGS, MAX_FILES, MAX_TESTS, bad
from app.messages import STATUSES

Status = Literal["queued", "running", "completed", "timed_out", "memory_exceeded", "output_exceeded",
                 "compile_error", "failed"]
assert set(Status.__args__) == set(STATUSES)  # type: ignore[attr-defined]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


# --- v1 requests ------------------------------------------------------------------------------------
class LimitsBody(Strict):
    """Requested limits; each finite, positive and at most the language's ``max_limits``."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")
    timeout_s: float | None = Field(None, gt=0, description="wall time, seconds")
    cpu_time_s: float | None = Field(None, gt=0, description="CPU time, seconds")
    memory_mb: float | None = Field(None, gt=0, description="memory, MiB")
    processes: float | None = Field(None, gt=0, description="processes and threads")
    output_kb: float | None = Field(None, gt=0, description="stdout and stderr, KiB each")
    file_size_kb: float | None = Field(None, gt=0, description="largest file written, KiB")
    open_files: float | None = Field(None, gt=0, description="open file descriptors")


class FileBody(Strict):
    name: str = Field(description="a plain relative name: letters, digits, '.', '_' or '-'; no '/', '..', NUL")
    content: str


class TestBody(Strict):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")
    stdin: str = ""
    expected_stdout: str = ""


class SubmitBody(Strict):
    """``POST /api/v1/jobs``."""

    language: str = Field(description="a name or alias from GET /api/v1/languages")
    source: str = Field(description="the main file's text")
    files: list[FileBody] | None = Field(None, max_length=MAX_FILES)
    stdin: str | None = None
    args: list[str] | None = Field(None, max_length=MAX_ARGS)
    limits: LimitsBody | None = None
    version: str | None = Field(None, description="one of the language's versions (default: its first)")
    tests: list[TestBody] | None = Field(None, max_length=MAX_TESTS)
    interactive: bool | None = None
    callback_url: str | None = Field(None, description="http(s) URL told the final state; public addresses only")


class StdinBody(Strict):
    """``POST /api/v1/jobs/{id}/stdin``: input for an interactive job."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")
    data: str | None = None
    eof: bool | None = None


def parse_submit(body: Any) -> SubmitBody:
    """The v1 body, or a 400 naming the first wrong field (``invalid_<field>``)."""
    if not isinstance(body, dict):
        raise bad("invalid_body", "The body must be a JSON object.")
    try:
        return SubmitBody.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        field = loc[0] if loc else "body"
        where = ".".join(loc) or "the body"
        required = " is required and" if error["type"] == "missing" else ""
        raise bad(f"invalid_{field}", f"'{where}'{required}: {error['msg']}.") from None


# --- v1 answers -------------------------------------------------------------------------------------
class Accepted(BaseModel):
    id: str
    status: Literal["queued"]
    events_url: str
    result_url: str


class StdinAccepted(BaseModel):
    id: str
    accepted_bytes: int
    eof: bool


class TruncatedOut(BaseModel):
    stdout: bool
    stderr: bool


class TestOut(BaseModel):
    index: int
    verdict: str
    stdout: str
    stderr: str
    exit_code: int | None
    duration_ms: int
    cpu_ms: int
    memory_peak_kb: int


class ResultOut(BaseModel):
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    compile_output: str
    duration_ms: int
    cpu_ms: int
    memory_peak_kb: int
    truncated: TruncatedOut
    error: str | None = Field(description="why a job failed")
    limit: str | None = Field(description="which limit stopped or flagged it")
    verdict: str | None = None
    tests: list[TestOut] | None = None


class JobOut(BaseModel):
    id: str
    language: str
    status: Status
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    result: ResultOut | None


class LimitsOut(BaseModel):
    timeout_s: float
    cpu_time_s: float
    memory_mb: int
    processes: int
    output_kb: int
    file_size_kb: int
    open_files: int


class LanguageOut(BaseModel):
    name: str
    version: str
    versions: list[str] | None = None
    aliases: list[str]
    compiled: bool
    default_limits: LimitsOut
    max_limits: LimitsOut


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    """The v1 error shape."""

    error: ErrorDetail


class HealthOut(BaseModel):
    status: str
    roles: list[str]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    executors: int
    backlog: dict[str, int]


# --- Piston -----------------------------------------------------------------------------------------
class PistonFile(BaseModel):
    name: str | None = None
    content: str
    encoding: Literal["utf8", "utf-8", "base64", "hex"] | None = None


class PistonExecute(BaseModel):
    """``POST /api/v2/execute`` as Piston documents it (times in ms, memory in bytes; 0/-1: default)."""

    model_config = ConfigDict(allow_inf_nan=False)
    language: str
    version: str | None = Field(None, description="exact ('3.11.2'), prefix ('3.11') or SemVer range ('3.x', '*')")
    files: list[PistonFile]
    stdin: str | None = None
    args: list[str | float] | None = None
    compile_timeout: float | None = None
    run_timeout: float | None = None
    compile_cpu_time: float | None = None
    run_cpu_time: float | None = None
    compile_memory_limit: float | None = None
    run_memory_limit: float | None = None


class PistonRuntime(BaseModel):
    language: str
    version: str
    aliases: list[str]


class PistonPackage(BaseModel):
    """One entry of ``GET /api/v2/packages``: every language unit, all installed."""

    language: str
    language_version: str
    installed: bool


class PistonStage(BaseModel):
    stdout: str
    stderr: str
    output: str
    code: int | None
    signal: str | None
    message: str | None
    status: str | None
    cpu_time: int | None
    wall_time: int | None
    memory: int | None


class PistonResult(BaseModel):
    language: str
    version: str
    run: PistonStage
    compile: PistonStage | None = None


class PistonError(BaseModel):
    """Piston's error shape."""

    message: str


# --- Judge0 -----------------------------------------------------------------------------------------
Loose = str | float | bool | None


class Judge0Submission(BaseModel):
    """``POST /submissions``: Judge0's attributes; numbers may come as numeric strings, text as Base64."""

    language_id: int | str
    source_code: str
    stdin: str | None = None
    expected_output: str | None = None
    cpu_time_limit: Loose = None
    cpu_extra_time: Loose = None
    wall_time_limit: Loose = None
    memory_limit: Loose = None
    stack_limit: Loose = None
    max_processes_and_or_threads: Loose = None
    enable_per_process_and_thread_time_limit: Loose = None
    enable_per_process_and_thread_memory_limit: Loose = None
    max_file_size: Loose = None
    number_of_runs: Loose = None
    redirect_stderr_to_stdout: Loose = None
    compiler_options: str | None = None
    command_line_arguments: str | None = None
    callback_url: str | None = None
    additional_files: str | None = Field(None, description="a Base64 zip, at most 32 files")
    enable_network: Loose = None


class Judge0Batch(BaseModel):
    submissions: list[Judge0Submission]


class Judge0Status(BaseModel):
    id: int
    description: str


class Judge0Language(BaseModel):
    id: int
    name: str
    is_archived: bool | None = None
    source_file: str | None = None
    compile_cmd: str | None = None
    run_cmd: str | None = None


class Judge0Token(BaseModel):
    token: str


class Judge0View(BaseModel):
    """A submission as answered; ``?fields=`` chooses which attributes appear."""

    model_config = ConfigDict(extra="allow")
    token: str | None = None
    status: Judge0Status | None = None
    status_id: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    compile_output: str | None = None
    message: str | None = None
    time: str | None = None
    wall_time: str | None = None
    memory: int | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    error: str | None = None


class Judge0Batched(BaseModel):
    submissions: list[Judge0View | None]


class Judge0PageMeta(BaseModel):
    current_page: int
    next_page: int | None
    prev_page: int | None
    total_pages: int
    total_count: int


class Judge0Page(BaseModel):
    """``GET /submissions``: one page of the caller's submissions this gateway still holds."""

    submissions: list[Judge0View]
    meta: Judge0PageMeta


class Judge0Worker(BaseModel):
    """``GET /workers``: one language queue, its backlog and the executors consuming it."""

    queue: str
    size: int
    available: int
    idle: int
    working: int
    paused: int
    failed: int


class Judge0Error(BaseModel):
    """Judge0's error shape: ``{"error"}``; validation failures list messages per attribute."""

    model_config = ConfigDict(extra="allow")
    error: str | None = None

