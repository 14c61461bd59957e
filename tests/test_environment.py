"""environment.yml installs what pyproject.toml declares."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req, maxsplit=1)[0].lower()


def _pip_entries() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    return [line.strip()[2:] for line in lines[start + 1:] if line.startswith("      - ")]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r for r in project["dependencies"]}
    for extra in ("dev", "notebooks"):
        wanted.update({_name(r): r for r in project["optional-dependencies"][extra]})
    entries = [e for e in _pip_entries() if not e.startswith("-e ")]
    got = {_name(e): e for e in entries}
    assert set(got) == set(wanted), f"differ: {set(got) ^ set(wanted)}"
    for name, req in got.items():
        if name == "torch":
            assert req == "torch==2.13.0"
        else:
            assert req == wanted[name], f"{name}: environment.yml {req!r} vs pyproject {wanted[name]!r}"
    assert "-e .[dev,notebooks]" in _pip_entries()


def test_makefile_pins_the_same_torch():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH ?= torch==2.13.0" in makefile
