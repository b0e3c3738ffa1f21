"""Build the sandbox images: ``python -m app.images build [language ...]``.

Each language's image is ``sandbox_images/<name>/Dockerfile`` built with ``sandbox_images/``
as context (so every image gets the same agent) and tagged with the language's ``image``
(its tag replaced by ``RUNBOX_IMAGE_TAG``, so two checkouts on one host can each test their
own agent).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from app.config import Settings
from app.languages import Registry

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ROOT / "sandbox_images"


def build(names: list[str], quiet: bool = True) -> int:
    """Build the named languages' images (all when empty); returns how many failed."""
    registry = Registry.load(tuple(names), image_tag=Settings.from_env().image_tag)
    failed = 0
    for language in registry:
        dockerfile = CONTEXT / language.name / "Dockerfile"
        began = time.monotonic()
        cmd = ["docker", "build", "-t", language.image, "-f", str(dockerfile), str(CONTEXT)]
        if quiet:
            cmd.insert(2, "-q")
        proc = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
        took = time.monotonic() - began
        if proc.returncode:
            failed += 1
            print(f"image {language.image}: FAILED after {took:.0f}s", file=sys.stderr)
            if quiet:
                print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        else:
            print(f"image {language.image}: built in {took:.1f}s")
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m app.images")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("languages", nargs="*")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    sys.exit(1 if build(args.languages, quiet=not args.verbose) else 0)


if __name__ == "__main__":
    main()
