"""The course itself: the notebooks' shared first steps and running them headless."""

from __future__ import annotations

import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

from diffchat.profiles import Profile, get_profile
from diffchat.runner import runs_root

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass
class Session:
    """What every notebook starts from: the profile, the runs folder, the device."""

    profile: Profile
    root: Path
    device: str


def seed_everything(seed: int = 0) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start(profile: str | Profile | None = None, runs: str | os.PathLike | None = None) -> Session:
    """Resolve the profile (argument, else $DIFFCHAT_PROFILE, else tiny) and the runs folder.

    A notebook run from ``notebooks/`` writes to the repository's ``runs/`` folder, so the
    notebooks and the CLI share artifacts.
    """
    from diffchat.device import pick_device

    profile = get_profile(profile or os.environ.get("DIFFCHAT_PROFILE"))
    if runs is None and not os.environ.get("DIFFCHAT_RUNS") and Path.cwd().name == "notebooks":
        runs = Path.cwd().parent / "runs"
    root = runs_root(runs)
    os.environ["DIFFCHAT_RUNS"] = str(root)
    os.environ["DIFFCHAT_PROFILE"] = profile.name
    seed_everything(0)
    return Session(profile=profile, root=root, device=str(pick_device()))


def environment_report() -> dict[str, str]:
    """Versions of the stack and what hardware is visible: the quickstart's check."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from diffchat.device import pick_device, pick_dtype

    device = pick_device()
    report = {
        "python": platform.python_version(),
        "device": str(device),
        "dtype": str(pick_dtype(device)).replace("torch.", ""),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch threads": str(torch.get_num_threads()),
    }
    for pkg in ("torch", "transformers", "trl", "peft", "diffusers", "accelerate", "datasets",
                "nltk", "ipywidgets"):
        try:
            report[pkg] = version(pkg)
        except PackageNotFoundError:
            report[pkg] = "missing"
    return report


def list_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, profile: str, out_dir: Path, timeout: int = 1800) -> Path:
    """Execute one notebook in a fresh kernel (cwd = notebooks/) and save the executed copy."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    os.environ["DIFFCHAT_PROFILE"] = profile
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start_time = time.time()
    try:
        client.execute()
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / path.name
        nbformat.write(nb, out)
    print(f"{path.name}: {time.time() - start_time:.0f} s -> {out}")
    return out


def run_course(profile: str | None = None, only: list[str] | None = None,
               runs: str | os.PathLike | None = None) -> list[Path]:
    """Run the notebooks in order (all, or those whose names start with ``only``)."""
    profile_name = get_profile(profile or os.environ.get("DIFFCHAT_PROFILE")).name
    root = runs_root(runs)
    os.environ["DIFFCHAT_RUNS"] = str(root)
    books = [p for p in list_notebooks() if not only or any(p.name.startswith(o) for o in only)]
    if not books:
        raise ValueError(f"no notebook matches {only!r} in {NOTEBOOK_DIR}")
    outputs, seconds = [], {}
    for book in books:
        start_time = time.time()
        outputs.append(run_notebook(book, profile_name, root / profile_name / "notebooks"))
        seconds[book.stem] = round(time.time() - start_time, 1)
    print(timing_report(profile_name, root, seconds))
    return outputs


def timing_report(profile: str, root: Path, notebook_seconds: dict[str, float]) -> str:
    """Each notebook's and each finished stage's seconds, also written to
    ``<root>/<profile>/timings.json`` (the README's measured table comes from it)."""
    import json

    from diffchat.pipeline import COURSE

    stages = {}
    for name in COURSE.stages:
        manifest = COURSE.read_manifest(name, profile, root)
        if manifest:
            stages[name] = manifest["seconds"]
    timings = {"profile": profile, "notebooks": notebook_seconds, "stages": stages,
               "threads": __import__("torch").get_num_threads(), "machine": platform.processor() or platform.machine()}
    (root / profile / "timings.json").write_text(json.dumps(timings, indent=2))
    lines = [f"timings ({profile}, written to {root / profile / 'timings.json'}):"]
    lines += [f"  notebook {name:24s} {sec:8.1f} s" for name, sec in notebook_seconds.items()]
    lines += [f"  stage    {name:24s} {sec:8.1f} s" for name, sec in stages.items()]
    return "\n".join(lines)
