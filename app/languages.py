"""Languages as data: one JSON file per runnable unit under ``app/languages/``.

A unit is one version of one language: ``<key>.json`` plus ``sandbox_images/<key>/Dockerfile``
make the image ``runbox/sandbox-<key>``, whose queue, pool and metrics are keyed by ``key``.
Clients only ever see the language's public ``name`` and its ``versions``: ``python.json``
(key ``python``) is Python's first, default version, and ``python-trixie.json`` (``"extends":
"python"``, another ``version``) the next. A unit names its main file, an optional compile
step, the command that runs the program, and its default and maximum limits. Adding a
language or a version is a Dockerfile plus one JSON file; no code changes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import versions

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
# Comments and string literals, blanked before a class-named program's first class is looked for.
_NOT_CODE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"', re.S)
# A type declaration; the first public one names the file (javac's rule), else the first one.
_TYPE_DECLARATION = re.compile(
    r"(?:^|[\s;{}])(public\s+)?(?:(?:final|abstract|sealed|non-sealed|strictfp|static)\s+)*"
    r"(?:class|interface|enum|record)\s+([A-Za-z_][A-Za-z0-9_]{0,90})\b"
)
# A Scala object, and what makes one a program's entry (it extends App, or defines main).
_SCALA_OBJECT = re.compile(r"(?:^|[\s;{}])(?:case\s+)?object\s+([A-Za-z_][A-Za-z0-9_]{0,90})\b")
_SCALA_ENTRY = re.compile(r"^\s*extends\s+App\b|\bdef\s+main\s*\(")


def _java_class(code: str) -> str | None:
    """The class javac wants the file named after: the first public one, else the first one."""
    found = list(_TYPE_DECLARATION.finditer(code))
    chosen = next((match for match in found if match.group(1)), found[0] if found else None)
    return chosen.group(2) if chosen else None


def _scala_entry(code: str) -> str | None:
    """The object the JVM is started with: the first one that extends App or defines main,
    else the first one (scalac does not care about file names; the runner needs the object)."""
    found = list(_SCALA_OBJECT.finditer(code))
    if not found:
        return None
    for match, following in zip(found, [*found[1:], None], strict=True):
        body = code[match.end(): following.start() if following else len(code)]
        if _SCALA_ENTRY.search(body):
            return match.group(1)
    return found[0].group(1)


# How a class-named unit's entry is found, by its source file's extension.
_ENTRY_FINDERS = {".java": _java_class, ".scala": _scala_entry}


@dataclass(frozen=True)
class Step:
    """One command run inside the sandbox (the compile step or the run step)."""

    argv: tuple[str, ...]
    timeout_s: float = 10.0
    memory_mb: int = 512
    # How the compiler is started ahead of a job, waiting for the step's arguments (after
    # ``argv[0]``) on the pipe whose number the agent adds (sandbox_images/agent/warm); empty:
    # always cold.
    warm_start: tuple[str, ...] = ()


@dataclass(frozen=True)
class Language:
    """One runnable unit: a version of a language, with its own image, queue and pool."""

    key: str
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
    # Java's rule: a public class lives in a file of its name. The program is written under
    # its first top-level class's name (``Solution.java``) and the run step starts that
    # class, read from $MAIN_FILE, as Java's own source launcher (and Piston) would.
    class_named: bool = False
    # How the run step's interpreter is started ahead of a job, waiting for its program
    # (sandbox_images/agent/warm: the interpreter and its stub, to which the agent adds the
    # number of the pipe the program's name and arguments arrive on); empty: always cold.
    # Only for ``[interpreter, "<file>"]``-shaped run commands the stub knows how to run.
    warm_start: tuple[str, ...] = ()
    # The warm start's stub can also serve as a zygote (``--fork``): started once per container,
    # it forks each job's warm process instead of a whole interpreter starting after every job.
    warm_fork: bool = False
    # How its image is built: sandbox_images/<dockerfile>/Dockerfile with these build arguments
    # (BASE: the shared base it starts from); a unit that extends another reuses its Dockerfile.
    dockerfile: str = ""
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def compiled(self) -> bool:
        return self.compile is not None

    def main_file(self, source: str) -> str:
        """The name the program is written under: ``source_file``, or for a class-named
        language its entry's name with ``source_file``'s extension (Java: its public, else
        first, top-level class; Scala: its entry object). Steps read it as ``$MAIN_FILE``.
        """
        suffix = Path(self.source_file).suffix
        finder = _ENTRY_FINDERS.get(suffix)
        if not self.class_named or finder is None:
            return self.source_file
        entry = finder(_NOT_CODE.sub(" ", source))
        return entry + suffix if entry else self.source_file

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

    def describe(self, versions: tuple[str, ...] = ()) -> dict[str, Any]:
        """The public description for ``GET /api/v1/languages``; ``versions``: the language's, default first."""
        return {
            "name": self.name,
            "version": self.version,
            "versions": list(versions or (self.version,)),
            "aliases": list(self.aliases),
            "compiled": self.compiled,
            "default_limits": self.default_limits.to_dict(),
            "max_limits": self.max_limits.to_dict(),
        }


def _read(directory: Path, key: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A unit's JSON with the one it ``extends`` filled in underneath (fields are replaced, not merged)."""
    if key in seen:
        raise ValueError(f"language definitions extend each other in a loop: {' -> '.join((*seen, key))}")
    data: dict[str, Any] = json.loads((directory / f"{key}.json").read_text())
    parent = data.pop("extends", None)
    if parent is None:
        return data
    inherited = _read(directory, parent, (*seen, key))
    return {**inherited, "dockerfile": inherited.get("dockerfile", parent), **data}


def _load_one(path: Path, image_tag: str = "latest") -> Language:
    key = path.stem
    data = _read(path.parent, key)
    compile_step = data.pop("compile", None)
    defaults = Limits().merged(data.pop("default_limits", {}))
    ceilings = MAX_LIMITS.merged(data.pop("max_limits", {}))
    data.setdefault("dockerfile", key)
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return Language(
        **fields,
        key=key,
        image=f"runbox/sandbox-{key}:{image_tag}",
        compile=Step(
            argv=tuple(compile_step.pop("argv")), warm_start=tuple(compile_step.pop("warm_start", ())), **compile_step,
        ) if compile_step else None,
        default_limits=defaults,
        max_limits=ceilings,
    )


class Registry:
    """Every runnable unit, by key; every language by public name and alias, with its versions.

    Iterating yields units (each with its own image, queue and pool); a language's first unit
    is its default version: the one whose key is the language's name, else the first by key.
    """

    def __init__(self, languages: list[Language]) -> None:
        self._units = {lang.key: lang for lang in sorted(languages, key=lambda lang: lang.key)}
        self._versions: dict[str, list[Language]] = {}
        for lang in sorted(self._units.values(), key=lambda lang: (lang.key != lang.name, lang.key)):
            self._versions.setdefault(lang.name, []).append(lang)
        self._lookup: dict[str, str] = {}
        for name, units in sorted(self._versions.items()):
            for unit in units:
                for alias in (name, *unit.aliases):
                    self._lookup.setdefault(alias.lower(), name)

    @classmethod
    def load(cls, names: tuple[str, ...] = (), directory: Path = LANGUAGE_DIR, image_tag: str = "latest") -> Registry:
        """Load every ``*.json`` in ``directory``, or the units whose key is in ``names``; images get ``image_tag``."""
        langs = [_load_one(p, image_tag) for p in sorted(directory.glob("*.json"))]
        if names:
            missing = set(names) - {lang.key for lang in langs}
            if missing:
                raise ValueError(f"no language definition for {', '.join(sorted(missing))}")
            langs = [lang for lang in langs if lang.key in names]
        return cls(langs)

    def get(self, name: str) -> Language | None:
        """A language's default unit, by name or alias (any case)."""
        units = self._versions.get(self._lookup.get(name.lower(), ""))
        return units[0] if units else None

    def resolve(self, name: str, version: str | None = "") -> Language | None:
        """The unit a request names: its language by name or alias, its version exact, prefix or SemVer range.

        No version (``None`` or ``""``) means the default, the language's first; several matching
        versions give the highest (as Piston picks). ``None`` when the language or the version is
        unknown (:meth:`versions` lists a language's versions for the message).
        """
        default = self.get(name)
        if default is None or not version:
            return default
        units = self._versions[default.name]
        chosen = versions.best(version, [unit.version for unit in units])
        return next((unit for unit in units if unit.version == chosen), None)

    def queue_key(self, name: str, version: str) -> str:
        """The key of the unit a job's language and version name (a job's queue), the name itself if unknown."""
        unit = self.resolve(name, version)
        return unit.key if unit else name

    def unit(self, key: str) -> Language | None:
        """A unit by its key (the queue and pool name)."""
        return self._units.get(key)

    def versions(self, name: str) -> tuple[str, ...]:
        """A language's versions, the default first (empty for an unknown name)."""
        default = self.get(name)
        return tuple(unit.version for unit in self._versions[default.name]) if default else ()

    def describe(self) -> list[dict[str, Any]]:
        """``GET /api/v1/languages``: one entry per language, its default unit's details and every version."""
        return [units[0].describe(self.versions(name)) for name, units in sorted(self._versions.items())]

    def __iter__(self) -> Iterator[Language]:
        return iter(self._units.values())

    def __len__(self) -> int:
        return len(self._units)

    def names(self) -> list[str]:
        """The public language names."""
        return sorted(self._versions)

    def unit_keys(self) -> list[str]:
        """Every unit's key."""
        return list(self._units)
