"""How the course's notebooks read: cells, markdown words, longest markdown cell, words before the
first code cell, figures, and the style rules a lesson keeps (issue 25).

A figure is a markdown image (``![...](...)`` or ``<img``; the Colab badge is not one) or a code cell that draws one (matplotlib,
an image grid, a rendered image shown with ``display``). "CI" as continuous integration, dates and
commit hashes are counted in markdown and code comments: a lesson has none of them.

    python benchmarks/notebook_stats.py [notebooks/]
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

FIGURE_CODE = re.compile(r"\bplt\.|\bplot_\w+\(|image_grid\(|\.imshow\(|display\(\s*\w*(image|grid|img)", re.I)
FIGURE_MD = re.compile(r"!\[[^\]]*\]\((?!https://colab\.research\.google\.com/assets/)|<img\b", re.I)
# "CI" is the content-integrity score in this course; these are the other meaning.
CI_AS_TESTS = re.compile(
    r"\bCI(?:'s)? (?:shortened |quick )?(?:run|runs|machine|time|job|pipeline|test)|\bin CI\b|\.ci/run|continuous integration")
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
COMMIT = re.compile(r"\b(?:commit|at) [0-9a-f]{7,40}\b")


def words(text: str) -> int:
    return len(text.split())


def stats(path: Path) -> dict:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    md = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
    before = sum(words("".join(c["source"])) for c in cells[:first_code] if c["cell_type"] == "markdown")
    text = "\n".join("".join(c["source"]) for c in cells)
    figures = sum(len(FIGURE_MD.findall(m)) for m in md) + sum(
        1 for c in cells if c["cell_type"] == "code" and FIGURE_CODE.search("".join(c["source"])))
    return {
        "notebook": path.name,
        "cells": len(cells),
        "md_words": sum(words(m) for m in md),
        "longest_md": max((words(m) for m in md), default=0),
        "before_code": before,
        "figures": figures,
        "ci_as_tests": len(CI_AS_TESTS.findall(text)),
        "dates_commits": len(DATE.findall(text)) + len(COMMIT.findall(text)),
        "colab_badge": "colab.research.google.com" in text,
    }


def main(folder: str = "notebooks") -> list[dict]:
    rows = [stats(p) for p in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))]
    cols = list(rows[0]) if rows else []
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"all: {sum(r['cells'] for r in rows)} cells, {sum(r['md_words'] for r in rows)} markdown words, "
          f"longest markdown cell {max((r['longest_md'] for r in rows), default=0)} words, "
          f"{sum(r['figures'] for r in rows)} figures, {sum(r['ci_as_tests'] for r in rows)} 'CI' as the tests, "
          f"{sum(r['dates_commits'] for r in rows)} dates or commits, "
          f"{sum(r['colab_badge'] for r in rows)}/{len(rows)} Colab badges")
    return rows


if __name__ == "__main__":
    main(*sys.argv[1:])
