"""Build the sandbox images: ``python -m app.images build [key ...] [--jobs N]``.

Every language image starts ``FROM runbox/sandbox-${BASE}:${TAG}``, where ``BASE`` is one of
the shared bases built from ``sandbox_images/base`` (``base``: Debian 12, ``base-trixie``:
Debian 13). The bases a selection needs are built first, then the units' images (a unit's
``dockerfile`` and ``build_args``, see app/languages.py), a few at a time, all with
``sandbox_images/`` as context (so every image gets the same agent) and the tag
``RUNBOX_IMAGE_TAG`` (so two checkouts on one host can each test their own agent).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.config import Settings
from app.languages import Language, Registry

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ROOT / "sandbox_images"
FROM_BASE = re.compile(r"^FROM runbox/sandbox-\$\{BASE\}:\$\{TAG\}\s*$", re.MULTILINE)
# The shared bases: one Dockerfile, one Debian release each.
BASES = {"base": "bookworm-slim", "base-trixie": "trixie-slim"}
# Two builds at once keep both cores busy: one downloads packages while the other unpacks.
DEFAULT_JOBS = 2


@dataclass(frozen=True)
class Build:
    """One image to build: its tag, its Dockerfile and build arguments, and the base it needs."""

    image: str
    dockerfile: Path
    args: dict[str, str]
    base: str = ""


def unit_build(unit: Language, context: Path = CONTEXT) -> Build:
    """How a unit's image is built; its Dockerfile must start FROM the base its BASE names."""
    dockerfile = context / unit.dockerfile / "Dockerfile"
    base = unit.build_args.get("BASE", "base")
    if base not in BASES:
        raise ValueError(f"{unit.key}: BASE={base!r} is not one of {', '.join(BASES)}")
    if not FROM_BASE.search(dockerfile.read_text()):
        raise ValueError(f"{dockerfile} must start ARG TAG, ARG BASE, FROM runbox/sandbox-${{BASE}}:${{TAG}}")
    tag = unit.image.rpartition(":")[2]
    return Build(unit.image, dockerfile, {"TAG": tag, "BASE": base, **unit.build_args}, base)


def base_build(base: str, tag: str, context: Path = CONTEXT) -> Build:
    """How a shared base is built: sandbox_images/base on its Debian release."""
    return Build(f"runbox/sandbox-{base}:{tag}", context / "base" / "Dockerfile", {"DEBIAN": BASES[base]})


def plan(keys: list[str], tag: str) -> tuple[list[Build], list[Build]]:
    """The bases and the unit images to build for ``keys`` (every unit when empty)."""
    units = [unit_build(unit) for unit in Registry.load(tuple(keys), image_tag=tag)]
    return [base_build(base, tag) for base in sorted({unit.base for unit in units})], units


def build_one(item: Build, quiet: bool) -> bool:
    """Build one image; prints how long it took, and the build's end when it failed."""
    began = time.monotonic()
    args = [f"--build-arg={name}={value}" for name, value in item.args.items()]
    cmd = ["docker", "build", *args, "-t", item.image, "-f", str(item.dockerfile), str(CONTEXT)]
    if quiet:
        cmd.insert(2, "-q")
    proc = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    took = time.monotonic() - began
    if proc.returncode:
        print(f"image {item.image}: FAILED after {took:.0f}s", file=sys.stderr)
        if quiet:
            print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        return False
    print(f"image {item.image}: built in {took:.1f}s", flush=True)
    return True


def build(keys: list[str], quiet: bool = True, jobs: int = DEFAULT_JOBS) -> int:
    """Build the bases, then the named units' images (all when empty); returns how many failed."""
    tag = Settings.from_env().image_tag
    bases, units = plan(keys, tag)
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        if not all(pool.map(lambda item: build_one(item, quiet), bases)):
            return len(units)  # nothing builds on a missing base
        failed = sum(not ok for ok in pool.map(lambda item: build_one(item, quiet), units))
    print(f"{len(units) - failed} of {len(units)} images built in {time.monotonic() - began:.0f}s", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app.images")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("languages", nargs="*", help="unit keys (app/languages/<key>.json); every unit when none")
    parser.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS, help="images built at once")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    sys.exit(1 if build(args.languages, quiet=not args.verbose, jobs=args.jobs) else 0)


if __name__ == "__main__":
    main()
