"""The course itself: the notebooks' shared first steps and running them headless."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from diffchat.pipeline import VARIANTS
from diffchat.profiles import Profile, get_profile
from diffchat.runner import runs_root

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# A headless run has no one to watch progress bars: in an executed notebook they stay frozen
# at 0% (the widgets never render), so the course's kernels run without them.
QUIET = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
# tqdm.auto picks its widget bar in a kernel, and that one ignores TQDM_DISABLE: the course's kernels
# start with tqdm.auto pointing at the console bar, which obeys it.
HEADLESS_TQDM = "--IPKernelApp.exec_lines=import tqdm.auto, tqdm.std; tqdm.auto.tqdm = tqdm.std.tqdm"


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


def thread_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The OpenMP setting the course's kernels get: passive waiting, unless the user set
    OMP_NUM_THREADS or OMP_WAIT_POLICY (then theirs stand, untouched).

    Torch runs its CPU ops on one OpenMP thread per core, and between ops the idle threads
    spin. On a machine busy with other work the spinning threads take the cores the working
    ones wait for: on the course's 2-core machine at load 8 to 9, a tiny-profile training step
    took 4.4 to 7.4 s with torch's default, 0.9 to 1.2 s on one thread and 1.0 to 1.3 s on two
    passive threads (``benchmarks/bench_threads.py``). Passive threads sleep instead of
    spinning. The thread count stays torch's default, so the trained models (whose last bits
    depend on the thread count) do not depend on how busy the machine was.
    """
    if "OMP_NUM_THREADS" in environ or "OMP_WAIT_POLICY" in environ:
        return {}
    return {"OMP_WAIT_POLICY": "PASSIVE"}


def run_notebook(path: Path, profile: str, out_dir: Path, timeout: int | None = None) -> Path:
    """Execute one notebook in a fresh kernel (cwd = notebooks/) and save the executed copy.

    No cell has a time limit unless ``timeout`` (seconds) sets one: a training cell on a busy
    machine may take hours, and nothing tells a slow cell from a stuck one. A run stopped or
    killed anyway loses little: run it again and each training stage resumes from its last
    checkpoint (``diffchat.checkpoints``). The kernel gets ``thread_env``'s OpenMP setting.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError
    from traitlets.config import Config

    nb = nbformat.read(path, as_version=4)
    os.environ["DIFFCHAT_PROFILE"] = profile
    start_time = time.time()
    # IPC sockets (over TCP the kernel warns, once per notebook, that it is unencrypted), in a
    # folder of their own that goes away with the kernel.
    with tempfile.TemporaryDirectory(prefix="diffchat-kernel-") as sockets:
        ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}})
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", config=ipc,
                                extra_arguments=[HEADLESS_TQDM], resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute(env={**os.environ, **thread_env(), **QUIET})
        except CellTimeoutError:
            raise RuntimeError(f"{path.name}: a cell ran past the {timeout} s limit and was stopped; run it "
                               "again (without a limit): training resumes from the last checkpoint") from None
        finally:
            out_dir.mkdir(parents=True, exist_ok=True)
            out = out_dir / path.name
            nbformat.write(nb, out)
    print(f"{path.name}: {time.time() - start_time:.0f} s -> {out}")
    return out


def spare_cores() -> int:
    """Cores this process may use beyond the threads torch's kernels take (OMP_NUM_THREADS,
    else all of them): where that leaves one, a stage can train beside the notebooks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return max(0, cores - int(threads)) if threads.isdigit() else 0


def build_in_background(stage: str, profile: str, root: str | os.PathLike, log_path: Path) -> subprocess.Popen:
    """Start ``diffchat run <stage>`` in a child process, its output going to ``log_path``.

    Only for a stage that needs no other (the tiny CLIP, which reads nothing but the lexicon):
    on a spare core it trains while the notebooks before it run. Whoever asks for the stage
    meanwhile waits on its lock, then uses what the child built; if the child fails or is
    killed, the next ``ensure`` builds the stage itself (its environment is this process's).
    """
    from diffchat.pipeline import COURSE

    needs = COURSE.get(stage).inputs
    if needs:
        raise ValueError(f"stage {stage!r} needs {', '.join(needs)}: only a stage without inputs "
                         "can be built beside the notebooks")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "diffchat.cli", "run", stage, "--profile", profile,
                                 "--root", str(root)], stdout=out, stderr=subprocess.STDOUT)


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
    print(course_summary(profile_name, root))
    return outputs


def course_summary(profile: str, root: str | os.PathLike) -> str:
    """What `make course` ends with: each finished stage's headline numbers (from its manifest),
    where the executed notebooks and the models are, and how to open the chat demo."""
    from diffchat.pipeline import COURSE

    root = Path(root)
    done = {name: (COURSE.read_manifest(name, profile, root) or {}).get("summary") for name in COURSE.stages}
    folder = root / profile
    lines = [f"DiffChat course, profile {profile}: what you built (runs folder {folder})"]
    if pb := done.get("pb"):
        lines.append(f"  PB model (02):   keeps {pb.get('keep_ci', float('nan')):.2f} of the input's keywords "
                     f"(raw CI), adds quality tags to {pb.get('tagged', float('nan')):.0%} of prompts")
    if rows := (done.get("instructpe") or {}).get("rows"):
        lines.append("  InstructPE (02): " + ", ".join(f"{split} {n}" for split, n in rows.items()) + " rows")
    for split, res in (done.get("sft") or {}).items():
        if isinstance(res, dict) and "edit" in res:
            lines.append(f"  SFT (03), {split}: edit {res['edit']:.3f}, strict {res['strict']:.3f}, exact "
                         f"{res['exact']:.3f} (append baseline edit {res.get('append_edit', float('nan')):.3f}), "
                         f"n={res['n']}")
        elif isinstance(res, dict) and "exact" in res:
            lines.append(f"  SFT (03), {split}: exact {res['exact']:.3f}, CI {res.get('ci', float('nan')):.1f}, n={res['n']}")
    if rm := done.get("rewards"):
        lines.append("  reward models (04): Spearman " + ", ".join(
            f"{name} {r['spearman']:.2f}" for name, r in rm.items() if isinstance(r, dict) and "spearman" in r))
    for name in VARIANTS:
        ppo = done.get(name) or {}
        held, seen = ppo.get("held_out"), (ppo.get("test_seen") or {})
        if held:
            sft, new = held["sft"], held["ppo"]
            edit = (f"; seen-subject edit {seen['sft']['edit']:.3f} -> {seen['ppo']['edit']:.3f}"
                    if "edit" in seen.get("sft", {}) else "")
            lines.append(f"  {name} (05): held-out reward {sft['reward']:.3f} -> {new['reward']:.3f}, raw CI "
                         f"{sft['ci_raw']:.3f} -> {new['ci_raw']:.3f} (SFT -> PPO, n={new['n']}){edit}; "
                         f"max KL {ppo['max_kl']:.2f}")
    if (done.get("eval") or {}).get("methods"):
        lines.append(f"  evaluation (06): Table 1 in {folder / 'eval' / 'table1.md'}")
    lines += [f"  executed notebooks: {folder / 'notebooks'}",
              f"  models: {folder / 'sft'}" + (f", {folder / 'ppo'}" if done.get("ppo") else ""),
              f"  chat with it: `diffchat chat --profile {profile}` in a terminal, notebook 07_chat_demo in "
              "Jupyter, or `voila notebooks/07_chat_demo.ipynb`"]
    return "\n".join(lines)


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
               "threads": __import__("torch").get_num_threads(),
               "omp_wait_policy": {**os.environ, **thread_env()}.get("OMP_WAIT_POLICY", "default"),
               "machine": platform.processor() or platform.machine()}
    (root / profile / "timings.json").write_text(json.dumps(timings, indent=2))
    lines = [f"timings ({profile}, written to {root / profile / 'timings.json'}):"]
    lines += [f"  notebook {name:24s} {sec:8.1f} s" for name, sec in notebook_seconds.items()]
    lines += [f"  stage    {name:24s} {sec:8.1f} s" for name, sec in stages.items()]
    return "\n".join(lines)
