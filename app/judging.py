"""Judging a program against test cases: the one place outputs are compared and verdicts chosen.

The native API's ``tests`` and Judge0's ``expected_output`` both go through
:func:`outputs_match`, so a program is accepted or not by the same rule whichever API asked.
The rule (the contract's): trailing whitespace is removed from every line, then trailing empty
lines, and what is left must be equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VERDICTS = ("accepted", "wrong_answer", "runtime_error", "timed_out", "memory_exceeded", "output_exceeded")
# Output kept per case in ``result.tests``, per stream: the whole job state travels as one event,
# so 64 cases of a megabyte each must not make it 128 MB. Comparison always sees the whole capture.
REPORTED_OUTPUT_BYTES = 2 * 1024 * 1024
MIN_REPORTED_CASE_BYTES = 8 * 1024


def normalize_output(text: str) -> str:
    """``text`` with trailing whitespace removed from every line and trailing empty lines dropped."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def outputs_match(actual: str, expected: str) -> bool:
    """Whether a program's output counts as the expected one under the contract's rule."""
    return normalize_output(actual) == normalize_output(expected)


def case_verdict(run: dict[str, Any], expected: str) -> str:
    """The verdict of one run: a limit first, then a crash, then the comparison.

    ``run`` is the sandbox's report of the run (``status``, ``exit_code``, ``signal``,
    ``output``, ``truncated``). Output cut at its cap cannot be compared whole, so it counts
    as ``output_exceeded`` like output that made the run be killed.
    """
    status = run.get("status")
    if status in ("timed_out", "memory_exceeded", "output_exceeded"):
        return str(status)
    if (run.get("truncated") or {}).get("stdout"):
        return "output_exceeded"
    if run.get("signal") is not None or (run.get("exit_code") or 0) != 0:
        return "runtime_error"
    return "accepted" if outputs_match(str(run.get("output", "")), expected) else "wrong_answer"


def overall_verdict(verdicts: list[str]) -> str:
    """``accepted`` when every case is, else the first case's verdict that is not."""
    return next((v for v in verdicts if v != "accepted"), "accepted")


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


@dataclass
class Judgement:
    """Folds the sandbox's per-case reports into ``result.tests`` and ``result.verdict``."""

    expected: list[str]
    tests: list[dict[str, Any]] = field(default_factory=list)

    def add(self, run: dict[str, Any]) -> dict[str, Any]:
        """Record one finished case; returns the data of its ``test`` event."""
        index = int(run["i"])
        verdict = case_verdict(run, self.expected[index])
        per_case = max(MIN_REPORTED_CASE_BYTES, REPORTED_OUTPUT_BYTES // max(1, len(self.expected)))
        self.tests.append(
            {
                "index": index,
                "verdict": verdict,
                "stdout": _clip(str(run.get("output", "")), per_case),
                "stderr": _clip(str(run.get("errors", "")), per_case),
                "exit_code": run.get("exit_code"),
                "signal": run.get("signal"),
                "duration_ms": int(run.get("duration_ms", 0)),
                "cpu_ms": int(run.get("cpu_ms", 0)),
                "memory_peak_kb": int(run.get("memory_peak_kb", 0)),
            }
        )
        return {"index": index, "verdict": verdict, "duration_ms": int(run.get("duration_ms", 0))}

    def fill(self, result: dict[str, Any]) -> None:
        """Put the cases and the overall verdict into a job's result, with totals over the cases."""
        result["tests"] = self.tests
        verdict = overall_verdict([t["verdict"] for t in self.tests])
        if verdict == "accepted" and len(self.tests) < len(self.expected):
            verdict = "timed_out"  # the job's total time ran out before every case ran
        result["verdict"] = verdict
        result["duration_ms"] = sum(t["duration_ms"] for t in self.tests)
        result["cpu_ms"] = sum(t["cpu_ms"] for t in self.tests)
        result["memory_peak_kb"] = max((t["memory_peak_kb"] for t in self.tests), default=0)
        if self.tests:
            result["exit_code"] = self.tests[-1]["exit_code"]
            result["signal"] = self.tests[-1]["signal"]
