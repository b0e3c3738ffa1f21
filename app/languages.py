"""Languages as data: one JSON file per language under ``app/languages/``.

A language names its sandbox image, its main file, an optional compile step, the command
that runs the program, and its default and maximum limits. Adding a language is a
Dockerfile under ``sandbox_images/`` plus one JSON file here; no code changes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LANGUAGE_DIR = Path(__file__).parent / "languages"


class LimitError(ValueError):
    """A requested limit is unknown, malformed or above the language's maximum."""


@dataclass(frozen=True)
class Limits:
    """Per-job resource limits. Defaults are the contract's defaults."""

    timeout_s: float = 5.0
    cpu_time_s: float = 5.0
    memory_mb: int = 256
    processes: int = 64
    output_kb: int = 64
    file_size_kb: int = 10240
    open_files: int = 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def merged(self, overrides: dict[str, Any]) -> Limits:
        return dataclasses.replace(self, **overrides)


LIMIT_NAMES = tuple(f.name for f in dataclasses.fields(Limits))
MAX_LIMITS = Limits(
    timeout_s=30.0,
    cpu_time_s=30.0,
    memory_mb=1024,
    processes=256,
    output_kb=1024,
    file_size_kb=65536,
    open_files=1024,
)
# Output past the per-stream cap is dropped; past this many times the cap the job is killed.
HARD_OUTPUT_FACTOR = 16


@dataclass(frozen=True)
class Step:
    """One command run inside the sandbox (the compile step or the run step)."""

    argv: tuple[str, ...]
    timeout_s: float = 10.0
    memory_mb: int = 512


@dataclass(frozen=True)
class Language:
    name: str
    version: str
    image: str
    source_file: str
    run: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    compile: Step | None = None
    env: dict[str, str] = field(default_factory=dict)
    version_command: tuple[str, ...] = ()
    default_limits: Limits = Limits()
    max_limits: Limits = MAX_LIMITS
    workdir_mb: int = 64
    judge0_id: int = 0
    judge0_name: str = ""
    piston_name: str = ""

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    def resolve_limits(self, requested: Any) -> Limits:
        """Fill a request's ``limits`` object from the defaults and check it against the maximums."""
        if requested is None:
            return self.default_limits
        if not isinstance(requested, dict):
            raise LimitError("limits must be an object")
        unknown = sorted(set(requested) - set(LIMIT_NAMES))
        if unknown:
            raise LimitError(f"unknown limit(s) {', '.join(unknown)}; known limits: {', '.join(LIMIT_NAMES)}")
        values: dict[str, Any] = {}
        for name, value in requested.items():
            default = getattr(self.default_limits, name)
            ceiling = getattr(self.max_limits, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LimitError(f"limits.{name} must be a number")
            if not math.isfinite(value):
                # NaN passes every comparison below; a limit must be a real number.
                raise LimitError(f"limits.{name} must be a finite number")
            if value <= 0:
                raise LimitError(f"limits.{name} must be positive")
            if value > ceiling:
                raise LimitError(f"limits.{name}={value} is above this language's maximum of {ceiling}")
            values[name] = type(default)(value)
        return self.default_limits.merged(values)

    def describe(self) -> dict[str, Any]:
        """The public description served by ``GET /api/v1/languages``."""
        return {
            "name": self.name,
            "version": self.version,
            "aliases": list(self.aliases),
            "compiled": self.compiled,
            "default_limits": self.default_limits.to_dict(),
            "max_limits": self.max_limits.to_dict(),
        }


def _load_one(path: Path, image_tag: str = "latest") -> Language:
    data = json.loads(path.read_text())
    data["image"] = data["image"].rpartition(":")[0] + ":" + image_tag
    compile_step = data.pop("compile", None)
    defaults = Limits().merged(data.pop("default_limits", {}))
    ceilings = MAX_LIMITS.merged(data.pop("max_limits", {}))
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return Language(
        **fields,
        compile=Step(argv=tuple(compile_step.pop("argv")), **compile_step) if compile_step else None,
        default_limits=defaults,
        max_limits=ceilings,
    )


class Registry:
    """All languages by name and alias."""

    def __init__(self, languages: list[Language]) -> None:
        self._by_name = {lang.name: lang for lang in sorted(languages, key=lambda lang: lang.name)}
        self._lookup: dict[str, Language] = {}
        for lang in self._by_name.values():
            for key in (lang.name, *lang.aliases):
                self._lookup[key.lower()] = lang

    @classmethod
    def load(cls, names: tuple[str, ...] = (), directory: Path = LANGUAGE_DIR, image_tag: str = "latest") -> Registry:
        """Load every ``*.json`` in ``directory``, or only those listed in ``names``; images get ``image_tag``."""
        langs = [_load_one(p, image_tag) for p in sorted(directory.glob("*.json"))]
        if names:
            missing = set(names) - {lang.name for lang in langs}
            if missing:
                raise ValueError(f"no language definition for {', '.join(sorted(missing))}")
            langs = [lang for lang in langs if lang.name in names]
        return cls(langs)

    def get(self, name: str) -> Language | None:
        return self._lookup.get(name.lower())

    def resolve(self, name: str, version: str = "") -> Language | None:
        """The language called ``name`` (or an alias) in ``version``; None when either is unknown.

        An empty version means the language's default; otherwise the version must equal the
        language's version or be a dotted prefix of it (``3`` and ``3.11`` select 3.11.2).
        """
        language = self.get(name)
        if language is None or not version:
            return language
        wanted = version.strip()
        have = language.version
        if wanted == have or have.startswith(wanted + "."):
            return language
        return None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return list(self._by_name)
