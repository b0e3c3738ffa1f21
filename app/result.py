"""The outcome of a job, as one typed value shared by the executor and every renderer.

The executor builds a :class:`Result` and publishes its :meth:`Result.to_dict` inside the
job's terminal event; every gateway folds that event back with :meth:`Result.from_dict`, and
the v1, Piston and Judge0 renderers read typed attributes instead of ``.get()`` on a dict.
The public shape (``to_dict``) is the contract's ``result`` object plus two extras:
``error`` (why a job ``failed``) and ``limit`` (which limit stopped or flagged it); judged
jobs add ``verdict`` and ``tests``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Truncated:
    """Whether each stream hit its output cap and was cut."""

    stdout: bool = False
    stderr: bool = False

    def to_dict(self) -> dict[str, bool]:
        return {"stdout": self.stdout, "stderr": self.stderr}

    @classmethod
    def from_dict(cls, data: Any) -> Truncated:
        if not isinstance(data, dict):
            return cls()
        return cls(stdout=bool(data.get("stdout")), stderr=bool(data.get("stderr")))


@dataclass(frozen=True)
class TestOutcome:
    """One judged run of a job with test cases (``result.tests[i]``)."""

    index: int
    verdict: str
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    duration_ms: int = 0
    cpu_ms: int = 0
    memory_peak_kb: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestOutcome:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Result:
    """What a job produced: exit, output, resource use, and why it stopped."""

    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    compile_output: str = ""
    duration_ms: int = 0
    cpu_ms: int = 0
    memory_peak_kb: int = 0
    truncated: Truncated = field(default_factory=Truncated)
    error: str | None = None
    limit: str | None = None
    verdict: str | None = None  # judged jobs only: accepted, or the first failing case's verdict
    tests: tuple[TestOutcome, ...] = ()

    def replace(self, **changes: Any) -> Result:
        """A copy with ``changes`` applied (the value is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The public ``result`` object; ``verdict`` and ``tests`` only for judged jobs."""
        out: dict[str, Any] = {
            "exit_code": self.exit_code,
            "signal": self.signal,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "compile_output": self.compile_output,
            "duration_ms": self.duration_ms,
            "cpu_ms": self.cpu_ms,
            "memory_peak_kb": self.memory_peak_kb,
            "truncated": self.truncated.to_dict(),
            "error": self.error,
            "limit": self.limit,
        }
        if self.verdict is not None or self.tests:
            out["verdict"] = self.verdict
            out["tests"] = [t.to_dict() for t in self.tests]
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Result:
        """Read a published result leniently: missing or mistyped fields take their defaults."""
        if not isinstance(data, dict):
            return cls()

        def num(name: str) -> int:
            value = data.get(name)
            return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

        def opt_int(name: str) -> int | None:
            value = data.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        def opt_text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) else None

        tests = data.get("tests")
        return cls(
            exit_code=opt_int("exit_code"),
            signal=opt_int("signal"),
            stdout=text("stdout"),
            stderr=text("stderr"),
            compile_output=text("compile_output"),
            duration_ms=num("duration_ms"),
            cpu_ms=num("cpu_ms"),
            memory_peak_kb=num("memory_peak_kb"),
            truncated=Truncated.from_dict(data.get("truncated")),
            error=opt_text("error"),
            limit=opt_text("limit"),
            verdict=opt_text("verdict"),
            tests=tuple(TestOutcome.from_dict(t) for t in tests if isinstance(t, dict)) if isinstance(tests, list)
            else (),
        )
