"""Every course notebook runs, in order, in the tiny profile (what a student's first run does)."""

import os

import pytest

from diffchat.course import list_notebooks, run_notebook

NOTEBOOKS = list_notebooks()


@pytest.fixture(scope="session")
def course_runs(tmp_path_factory):
    """One runs folder for the session, so each notebook finds the stages the previous built.
    CI's shortened tiny run unless DIFFCHAT_QUICK=0 asks for the full one."""
    root = os.environ.get("DIFFCHAT_TEST_RUNS") or tmp_path_factory.mktemp("runs")
    os.environ["DIFFCHAT_RUNS"] = str(root)
    os.environ.setdefault("DIFFCHAT_QUICK", "1")
    return root


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, course_runs, tmp_path):
    out = run_notebook(path, "tiny", tmp_path)
    import nbformat

    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
