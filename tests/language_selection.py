"""Which units tests/test_languages.py runs end to end: ``RUNBOX_TEST_LANGUAGES`` (unit keys), or all."""

from __future__ import annotations

import os


def selected_units(every: list[str]) -> list[str]:
    """The selected unit keys in registry order; an unknown key is an error, not a silent no-op."""
    raw = os.environ.get("RUNBOX_TEST_LANGUAGES", "").replace(" ", ",")
    wanted = [key for key in raw.split(",") if key]
    if not wanted:
        return list(every)
    unknown = sorted(set(wanted) - set(every))
    if unknown:
        raise ValueError(f"RUNBOX_TEST_LANGUAGES names unknown units: {', '.join(unknown)}")
    return [key for key in every if key in wanted]
