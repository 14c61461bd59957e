"""The lessons read as lessons (issue 25): benchmarks/notebook_stats.py's numbers, held as rules,
for every notebook of the course."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from diffchat.course import list_notebooks

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("notebook_stats", ROOT / "benchmarks" / "notebook_stats.py")
notebook_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebook_stats)

NOTEBOOKS = list_notebooks()
MAX_MARKDOWN_WORDS = 150
MAX_WORDS_BEFORE_CODE = 200


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_lesson_reaches_code_soon_in_short_cells(path):
    s = notebook_stats.stats(path)
    assert s["longest_md"] <= MAX_MARKDOWN_WORDS, f"{path.name}: a markdown cell of {s['longest_md']} words"
    assert s["before_code"] < MAX_WORDS_BEFORE_CODE, f"{path.name}: {s['before_code']} words before the first code"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_lesson_has_no_run_diary(path):
    """No dates or commit hashes, and "CI" only as content integrity: the test suite is "the tests"."""
    s = notebook_stats.stats(path)
    assert s["dates_commits"] == 0, f"{path.name}: dates or commit hashes belong in the README"
    assert s["ci_as_tests"] == 0, f"{path.name}: 'CI' means content integrity here; say 'the tests' or 'the quick run'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_opens_on_colab(path):
    assert notebook_stats.stats(path)["colab_badge"], f"{path.name}: no Open in Colab badge"


def test_the_rules_catch_what_they_name(tmp_path):
    """The counters see a long cell, a date, a commit and CI as the test suite."""
    import json

    text = "word " * 200 + "measured 2026-11-28 at commit 469b679 in CI's shortened run"
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [text]}], "metadata": {},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "09_x.ipynb"
    path.write_text(json.dumps(nb))
    s = notebook_stats.stats(path)
    assert s["longest_md"] > MAX_MARKDOWN_WORDS and s["before_code"] >= MAX_WORDS_BEFORE_CODE
    assert s["dates_commits"] == 2 and s["ci_as_tests"] == 1 and not s["colab_badge"]
