"""The Judge0 CE contract: its statuses, attribute names, limits and language table.

What a Judge0 client relies on to the letter, kept apart from how requests are read and
answered: the release whose language ids we use, the fourteen statuses, every attribute of a
submission in Judge0's order, and the error body (``{"error": ...}`` or, for validation,
``{"attribute": [messages]}``).
"""

from __future__ import annotations

import shlex
from typing import Any

from quart import Response

from app.languages import Language, Limits, Registry
from app.web.errors import ApiError, json_response

# The Judge0 release whose language ids our languages use; the judge0 SDK maps its language
# aliases (judge0.PYTHON...) to ids by the version /about reports.
JUDGE0_VERSION = "1.13.1"
META_EVENT = "judge0"
# Gateway events of a job are numbered within attempt 0: "queued" is 0 and "discarded" is 1.
META_EVENT_N = 2
MAX_BATCH = 20
MAX_RUNS = 20  # number_of_runs, as Judge0 CE's default MAX_NUMBER_OF_RUNS
MAX_TEXT_OPTION = 512  # command_line_arguments / compiler_options, as Judge0 validates them
MAX_ZIP_RATIO = 200  # an additional_files member may expand at most this much (zip bombs by ratio)
MAX_ZIP_ENTRIES = 128  # an additional_files zip's entries, folders included (its files: validate.MAX_FILES)
DEFAULT_STACK_KB = 64000
MAX_STACK_KB = 128000
DEFAULT_CPU_EXTRA_S = 0.5
MAX_CPU_EXTRA_S = 5.0
MAX_EXTRACT_KB = 10240
SYNC_WAIT_SLACK_S = 60.0
# Languages whose compile command takes extra options after its sources (the executor appends
# ``compiler_options`` there, so a later -O0 overrides the unit's -O2). Go (``go build .``
# reads trailing words as packages) and NASM (options would reach the linker) are not here.
COMPILER_OPTION_LANGUAGES = frozenset(
    {"c", "cpp", "c-clang", "cpp-clang", "rust", "d", "fortran", "haskell", "csharp", "cobol", "java", "typescript"}
)

STATUSES: tuple[tuple[int, str], ...] = (
    (1, "In Queue"),
    (2, "Processing"),
    (3, "Accepted"),
    (4, "Wrong Answer"),
    (5, "Time Limit Exceeded"),
    (6, "Compilation Error"),
    (7, "Runtime Error (SIGSEGV)"),
    (8, "Runtime Error (SIGXFSZ)"),
    (9, "Runtime Error (SIGFPE)"),
    (10, "Runtime Error (SIGABRT)"),
    (11, "Runtime Error (NZEC)"),
    (12, "Runtime Error (Other)"),
    (13, "Internal Error"),
    (14, "Exec Format Error"),
)
STATUS_NAMES = dict(STATUSES)
# Judge0 names four signals; any other fatal signal is "Runtime Error (Other)".
SIGNAL_STATUS = {11: 7, 25: 8, 8: 9, 6: 10}

# Every attribute of a Judge0 submission, in Judge0's order; "*" selects them all.
ALL_FIELDS: tuple[str, ...] = (
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "status",
    "language",
)
DEFAULT_FIELDS = ("token", "time", "memory", "stdout", "stderr", "compile_output", "message", "status")
# Text attributes: sent and answered Base64 encoded when base64_encoded=true.
TEXT_FIELDS = ("source_code", "stdin", "expected_output", "stdout", "stderr", "compile_output", "message")
CONVERSION_ERROR = (
    "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter"
)



def error_body(exc: ApiError) -> Any:
    """Judge0's error bodies: per-attribute messages when there are some, else ``{"error"}``."""
    return exc.details if exc.details is not None else {"error": exc.message}


def shape(exc: ApiError) -> Response:
    """Judge0's error body with our status code and headers."""
    return json_response(exc.status, error_body(exc), exc.headers)


def unprocessable(errors: Any) -> ApiError:
    """Judge0's validation failure: 422 with messages per attribute (a list of them for a batch)."""
    return ApiError(422, "invalid_submission", "The submission is not valid.", details=errors)


def judge0_languages(registry: Registry) -> dict[int, Language]:
    """Languages that have a Judge0 id, by id."""
    languages: list[Language] = list(registry)
    return {lang.judge0_id: lang for lang in languages if lang.judge0_id > 0}


def judge0_name(language: Language) -> str:
    """The language's Judge0 display name, e.g. ``Python (3.11.2)``."""
    return language.judge0_name or f"{language.name.capitalize()} ({language.version})"


def describe_language(language: Language) -> dict[str, Any]:
    """``GET /languages/{id}``: the language with its file name and commands."""
    return {
        "id": language.judge0_id,
        "name": judge0_name(language),
        "is_archived": False,
        "source_file": language.source_file,
        "compile_cmd": shlex.join(language.compile.argv) if language.compile else None,
        "run_cmd": shlex.join(language.run),
    }


def compiler_options_allowed(language: Language) -> bool:
    """Whether ``compiler_options`` may be given for this language (see COMPILER_OPTION_LANGUAGES)."""
    return language.compile is not None and language.name in COMPILER_OPTION_LANGUAGES


def compiler_option_languages(registry: Registry) -> list[str]:
    """Judge0 names of the languages that take ``compiler_options``, as config_info lists them."""
    langs = judge0_languages(registry).values()
    return sorted(judge0_name(lang) for lang in langs if compiler_options_allowed(lang))


def limit_bounds(registry: Registry) -> tuple[Limits, Limits]:
    """Defaults and ceilings that hold for every language (config_info is one document for all)."""
    langs: list[Language] = list(registry)
    if not langs:
        return Limits(), Limits()
    first = langs[0].default_limits
    # Shared defaults when the languages agree, else the contract's defaults; the lowest maximums.
    defaults = first if all(lang.default_limits == first for lang in langs) else Limits()
    ceilings = Limits(**{name: min(getattr(lang.max_limits, name) for lang in langs) for name in Limits().to_dict()})
    return defaults, ceilings
