"""Which of a language's versions a request means: exact, prefix or SemVer range.

One rule for every API: the native ``version`` field, Piston's ``version`` and the version in
Judge0's language names all resolve here. A request matches a version when it is

- that exact version (``"3.11.2"``),
- a dotted prefix of it, with optional wildcards (``"3.11"``, ``"3"``, ``"3.11.x"``, ``"3.*"``), or
- an npm-style SemVer range, as Piston accepts (``"*"``, ``"^3.10"``, ``">=18 <21"``, ``"~1.19"``).

Debian's versions are not all SemVer (``"8.7"``, ``"2.16.01"``), so each is coerced to the
nearest SemVer version before a range is checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import semantic_version

_WILDCARD = re.compile(r"^(?:\d+|[x*X])(?:\.(?:\d+|[x*X]))*$")


def coerce(version: str) -> semantic_version.Version:
    """The SemVer version nearest to a Debian version string (missing parts are 0)."""
    numbers = re.findall(r"\d+", version)[:3]
    major, minor, patch = ([int(n) for n in numbers] + [0, 0, 0])[:3]
    return semantic_version.Version(major=major, minor=minor, patch=patch)


def _prefix_matches(requested: str, actual: str) -> bool:
    wanted = requested.split(".")
    have = actual.split(".")
    if len(wanted) > len(have):
        return False
    return all(w in ("x", "X", "*") or w == h for w, h in zip(wanted, have, strict=False))


def matches(requested: str, actual: str) -> bool:
    """Whether a requested version (exact, prefix or SemVer range) selects ``actual``."""
    requested = requested.strip()
    if requested == actual:
        return True
    if _WILDCARD.match(requested):
        return _prefix_matches(requested, actual)
    try:
        spec = semantic_version.NpmSpec(requested)
    except ValueError:
        return False
    return coerce(actual) in spec


def best(requested: str, versions: Sequence[str]) -> str | None:
    """The version ``requested`` selects among ``versions``: an exact match, else the highest match."""
    if requested in versions:
        return requested
    found = [v for v in versions if matches(requested, v)]
    return max(found, key=coerce) if found else None
