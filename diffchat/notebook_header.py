"""The first cells every course notebook shares, written by one script so they cannot drift.

After each notebook's own title cell come three cells: an "Open in Colab" badge pointing at
that notebook in the repository, an install cell that on Colab clones the repository, installs
it, fetches its data and turns on widgets (and elsewhere does nothing), and the profile cell.
The repository's address lives in one place, ``pyproject.toml``'s ``[project.urls]``; a fork
changes that line, then runs::

    python -m diffchat.notebook_header
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
HEADER_TAG = "course-header"  # the cells this script owns carry this tag
BRANCH = "main"

INSTALL = '''\
# On Colab: fetch the course, install it, get its NLTK data, turn on widgets. Elsewhere: nothing.
import os, subprocess, sys
if "google.colab" in sys.modules:
    REPO = os.environ.get("DIFFCHAT_REPO", "{repository}")
    CHECKOUT = os.environ.get("DIFFCHAT_CHECKOUT", "/content/diffchat")  # or a folder on Drive
    if not os.path.isdir(CHECKOUT):
        subprocess.run(["git", "clone", "--quiet", REPO, CHECKOUT], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", CHECKOUT + "[paper]"], check=True)
    subprocess.run([sys.executable, "-m", "diffchat.cli", "setup"], check=True, cwd=CHECKOUT)
    sys.path.insert(0, CHECKOUT)
    os.chdir(os.path.join(CHECKOUT, "notebooks"))
    from google.colab import output
    output.enable_custom_widget_manager()'''

PROFILE = '''\
# The profile: "small" on a GPU, "tiny" on a CPU; DIFFCHAT_PROFILE=paper (or tiny, small) overrides.
import os, sys
import torch
PROFILE = os.environ.get("DIFFCHAT_PROFILE") or ("small" if torch.cuda.is_available() else "tiny")
RUNS = None  # None: the repository's runs/ folder
DRIVE = False  # True on Colab: keep the runs on Google Drive, so finished stages survive a disconnect
if DRIVE and "google.colab" in sys.modules:
    from google.colab import drive
    drive.mount("/content/drive")
    RUNS = "/content/drive/MyDrive/diffchat-runs"

from diffchat.course import start
S = start(PROFILE, RUNS)
print(f"profile={S.profile.name}  device={S.device}  runs={S.root}")'''


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``Repository`` of ``[project.urls]`` in pyproject.toml, the one place the address lives."""
    found = re.search(r'^Repository\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.M)
    if not found:
        raise ValueError(f"{pyproject}: no Repository = \"...\" line under [project.urls]")
    return found.group(1).rstrip("/")


def colab_url(repository: str, notebook: str) -> str:
    """Colab's address for a notebook of a GitHub repository."""
    found = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?", repository)
    if not found:
        raise ValueError(f"Colab opens notebooks from GitHub; {repository!r} is not a github.com/OWNER/NAME URL")
    return f"https://colab.research.google.com/github/{found.group(1)}/blob/{BRANCH}/notebooks/{notebook}"


def _cell(kind: str, source: str) -> dict:
    cell = {"cell_type": kind, "metadata": {"tags": [HEADER_TAG]}, "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def header_cells(notebook: str, repository: str | None = None) -> list[dict]:
    """The badge, install and profile cells for ``notebook`` (a file name), in that order."""
    repository = repository or repository_url()
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"({colab_url(repository, notebook)})")
    return [_cell("markdown", badge), _cell("code", INSTALL.format(repository=repository)),
            _cell("code", PROFILE)]


def is_header(cell: dict) -> bool:
    return HEADER_TAG in cell.get("metadata", {}).get("tags", [])


def write_header(path: Path, repository: str | None = None) -> bool:
    """Put the header cells right after the notebook's title cell; True when the file changed."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    if not cells or cells[0]["cell_type"] != "markdown" or not "".join(cells[0]["source"]).startswith("# "):
        raise ValueError(f"{path}: the first cell must be the notebook's title (markdown starting with '# ')")
    old = [c for c in cells[1:] if is_header(c)]
    new = header_cells(path.name, repository)
    for cell, previous in zip(new, old):
        if "id" in previous:  # keep cell ids, so a rewrite changes only what changed
            cell["id"] = previous["id"]
    for n, cell in enumerate(new):
        cell.setdefault("id", f"header-{n}")
    nb["cells"] = [cells[0], *new, *(c for c in cells[1:] if not is_header(c))]
    text = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if text == path.read_text(encoding="utf-8"):
        return False
    path.write_text(text, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    folder = Path(argv[0]) if argv else NOTEBOOK_DIR
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        print(f"{path.name}: {'written' if write_header(path) else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
