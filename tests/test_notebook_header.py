"""Every notebook's first cells are the ones `python -m diffchat.notebook_header` writes, and its
install cell sets the course up on (a simulation of) Colab and does nothing elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from diffchat.course import list_notebooks
from diffchat.notebook_header import ROOT, colab_url, header_cells, repository_url, write_header

NOTEBOOKS = list_notebooks()


def _plain(cell: dict) -> tuple:
    return cell["cell_type"], "".join(cell["source"]), tuple(cell.get("metadata", {}).get("tags", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_first_cells_are_the_scripts(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith(f"# {path.name[:2]} ")
    want = [_plain(c) for c in header_cells(path.name)]
    assert [_plain(c) for c in cells[1:4]] == want, (
        f"{path.name}: the first cells differ from the script's: run `python -m diffchat.notebook_header`")
    assert colab_url(repository_url(), path.name) in "".join(cells[1]["source"])


def test_the_script_puts_the_header_after_the_title_and_is_idempotent(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "id": "t", "metadata": {}, "source": ["# 09 · A lesson\n"]},
                    {"cell_type": "code", "id": "c", "execution_count": None, "metadata": {}, "outputs": [],
                     "source": ["print(1)"]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "09_lesson.ipynb"
    path.write_text(json.dumps(nb))
    assert write_header(path, "https://github.com/someone/fork")
    cells = json.loads(path.read_text())["cells"]
    assert [c["id"] for c in cells][::4] == ["t", "c"] and len(cells) == 5
    assert "github/someone/fork/blob/main/notebooks/09_lesson.ipynb" in "".join(cells[1]["source"])
    assert '"https://github.com/someone/fork"' in "".join(cells[2]["source"])
    assert not write_header(path, "https://github.com/someone/fork")
    assert write_header(path, "https://github.com/other/fork") and len(json.loads(path.read_text())["cells"]) == 5


def test_a_repository_colab_cannot_open_is_refused():
    with pytest.raises(ValueError, match="github.com/OWNER/NAME"):
        colab_url("https://gitlab.com/a/b", "00_quickstart.ipynb")


def _install_cell() -> str:
    return "".join(header_cells("00_quickstart.ipynb")[1]["source"])


def test_the_install_cell_does_nothing_outside_colab(tmp_path):
    before = os.getcwd()
    scope: dict = {}
    exec(_install_cell(), scope)  # noqa: S102 - the cell's own code
    assert os.getcwd() == before and "CHECKOUT" not in scope


FAKE_COLAB = {
    "google/__init__.py": "",
    "google/colab/__init__.py": "",
    "google/colab/output.py": (
        "import os\n"
        "def enable_custom_widget_manager():\n"
        "    open(os.environ['FAKE_COLAB_LOG'], 'a').write('widgets on\\n')\n"),
}

DRIVER = """
import json, os, sys
sys.path.insert(0, os.environ["FAKE_COLAB"])
import google.colab  # what Colab's kernel has imported
exec(open(os.environ["CELL"]).read())
import diffchat
print(json.dumps({"diffchat": diffchat.__file__, "cwd": os.getcwd()}))
"""


@pytest.mark.slow
def test_the_install_cell_sets_up_the_course_on_colab(tmp_path):
    """A fresh virtual environment with a fake ``google.colab`` module: the cell clones the
    repository (a local clone of this checkout, by $DIFFCHAT_REPO), pip-installs it, runs
    ``diffchat setup`` and turns on Colab's widget manager. Offline: pip installs no
    dependencies (they come from this environment's site-packages) and builds without isolation."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]  # torch, nltk, setuptools...: what Colab has preinstalled
    # Python 3.11's venv brings setuptools 65; pip's build isolation would fetch setuptools>=77.
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True, capture_output=True)
    Path(site, "colab_preinstalled.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    fake = tmp_path / "fake_colab"
    for name, text in FAKE_COLAB.items():
        (fake / name).parent.mkdir(parents=True, exist_ok=True)
        (fake / name).write_text(text)
    cell = tmp_path / "install_cell.py"
    cell.write_text(_install_cell())
    checkout = tmp_path / "content" / "diffchat"
    env = {**os.environ, "DIFFCHAT_REPO": str(ROOT), "DIFFCHAT_CHECKOUT": str(checkout),
           "FAKE_COLAB": str(fake), "FAKE_COLAB_LOG": str(tmp_path / "colab.log"), "CELL": str(cell),
           "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([python, "-c", DRIVER], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["diffchat"] == str(checkout / "diffchat" / "__init__.py")
    assert result["cwd"] == str(checkout / "notebooks")
    assert (tmp_path / "colab.log").read_text() == "widgets on\n"
    assert "wordnet" in done.stdout and "CLIP tokenizer" in done.stdout  # `diffchat setup` ran
    shown = subprocess.run([python, "-m", "pip", "show", "-f", "diffchat"], env=env, capture_output=True,
                           text=True, check=True).stdout
    assert "Editable project location: " + str(checkout) in shown
    assert "warning" not in done.stderr.lower(), done.stderr[-3000:]


PROFILE_DRIVER = """
import json, os
exec(open(os.environ["CELL"]).read())
print(json.dumps({"profile": S.profile.name, "device": S.device, "runs": str(S.root)}))
"""


@pytest.mark.parametrize("chosen,expected", [(None, "tiny"), ("paper", "paper"), ("small", "small")])
def test_the_profile_cell_picks_tiny_on_a_cpu_unless_told(tmp_path, chosen, expected):
    """No GPU here: tiny by default; DIFFCHAT_PROFILE names any profile (small is the GPU default)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the default would be small")
    cell = tmp_path / "profile_cell.py"
    cell.write_text("".join(header_cells("00_quickstart.ipynb")[2]["source"]))
    env = {k: v for k, v in os.environ.items() if k != "DIFFCHAT_PROFILE"}
    env.update(CELL=str(cell), DIFFCHAT_RUNS=str(tmp_path / "runs"), PYTHONPATH=str(ROOT), DIFFCHAT_QUICK="0")
    if chosen:
        env["DIFFCHAT_PROFILE"] = chosen
    done = subprocess.run([sys.executable, "-c", PROFILE_DRIVER], env=env, capture_output=True, text=True,
                          check=True, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"profile": expected, "device": "cpu", "runs": str(tmp_path / "runs")}
