"""The repository documents itself: the README's configuration table is Settings, and no
document or source points outside the repository."""

from __future__ import annotations

import dataclasses
import re
import subprocess

from app.config import Settings
from tests.runbox_client import ROOT


def rendered(value: object) -> str:
    """A default as the README writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def readme_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(RUNBOX_[A-Z0-9_]+)` \|([^|]*)\|", section, re.M)
    return {name: default.strip().strip("`") for name, default in rows}


def test_readme_configuration_table_is_settings() -> None:
    table = readme_table()
    fields = {"RUNBOX_" + f.name.upper(): f for f in dataclasses.fields(Settings) if f.init}
    assert set(table) == set(fields), (
        f"missing from the README: {sorted(set(fields) - set(table))}; "
        f"not settings: {sorted(set(table) - set(fields))}"
    )
    for name, field in fields.items():
        assert table[name] == rendered(field.default), f"{name}: README says {table[name]!r}"
    # Every documented default is what Settings reads back from that text.
    env = {name: value for name, value in table.items() if value}
    assert Settings.from_env(env) == Settings()


def test_nothing_points_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = [path for path in tracked
               if path.endswith((".md", ".py", ".toml", ".yml", ".yaml", ".sh", ".json", ".html"))
               and "../shared/" in (ROOT / path).read_text(errors="replace")
               and path != "tests/test_docs.py"]
    assert not outside, outside
    for linked in re.findall(r"\]\(([^)#]+)\)", (ROOT / "README.md").read_text()):
        if "://" not in linked:
            assert (ROOT / linked).exists(), f"README links to {linked}, which is not in the repository"
