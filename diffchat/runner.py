"""A generic stage runner: artifacts, manifests, skip / rebuild, ``ensure``. It knows no stage.

A stage is a function that writes files into a folder. A ``Pipeline`` is a list of stages
(``diffchat.pipeline`` holds the course's). Each stage's artifacts live in
``<root>/<profile>/<stage>/`` with a ``manifest.json`` recording the key that made them:
the stage's config, a hash of every data file it reads, and its inputs' keys. A finished
stage whose key is unchanged is skipped, a changed one is rebuilt, and ``ensure`` builds
missing inputs first.

Writes are atomic: a stage writes into a temporary sibling folder and only a complete
folder with its manifest is renamed into place, so a crash never leaves a half-written
artifact that looks finished, and the previous finished artifact survives the crash.
Work a stage wants to keep across crashes (teacher answers, labelled rows, a trained model
via ``train_once``) goes in ``ctx.cache``, which the runner never cleans.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffchat.profiles import Profile, data_dir, get_profile

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """The runs folder: the argument, else $DIFFCHAT_RUNS, else ./runs."""
    return Path(root or os.environ.get("DIFFCHAT_RUNS") or "runs").expanduser().resolve()


def stage_dir(name: str, profile: Profile | str, root: str | os.PathLike | None = None) -> Path:
    return runs_root(root) / get_profile(profile).name / name


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StageContext:
    """What a stage function gets: its profile, where to write, where its inputs are."""

    stage: str
    profile: Profile
    root: Path
    out: Path  # temporary folder; becomes the artifact folder on success
    cache: Path  # survives crashes and reruns (resumable work)
    config: dict[str, Any]
    key_hash: str = ""
    log: Callable[[str], None] = print

    def input(self, name: str) -> Path:
        """The finished artifact folder of an input stage."""
        return stage_dir(name, self.profile, self.root)


@dataclass(frozen=True)
class Stage:
    """One stage: its body ``fn`` (a function, or "module:function", imported when it runs, so
    that listing the pipeline stays fast), the stages it reads, the files it must write, its
    config (a function of the profile), and the data files (globs under the data folder) it
    reads, whose contents are part of its key.

    ``optional`` stages are read when they have finished and never built for it (evaluation
    takes whichever PPO variants exist); which of them had finished, and with what key, is part
    of the key, so a variant finishing later makes the stage rerun."""

    name: str
    fn: Callable[[StageContext], dict[str, Any] | None] | str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    config: Callable[[Profile], dict[str, Any]] = field(default=lambda p: {})
    data_files: tuple[str, ...] = ()
    description: str = ""
    optional: tuple[str, ...] = ()

    def body(self) -> Callable[[StageContext], dict[str, Any] | None]:
        if callable(self.fn):
            return self.fn
        module, _, attr = self.fn.partition(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def module(self) -> str:
        return self.fn.partition(":")[0] if isinstance(self.fn, str) else self.fn.__module__


def data_files_hash(patterns: Iterable[str], folder: Path | None = None) -> dict[str, str]:
    """{relative path: content hash} of every file matching the globs under the data folder."""
    folder = folder or data_dir()
    found = {}
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            if path.is_file():
                found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return found


class Pipeline:
    """Stages in order; runs one (and the inputs it lacks), skipping what is up to date."""

    def __init__(self, stages: Iterable[Stage]):
        self.stages: dict[str, Stage] = {}
        for stage in stages:
            unknown = [i for i in stage.inputs + stage.optional if i not in self.stages]
            if unknown:
                raise ValueError(f"stage {stage.name!r} reads {unknown}, which no earlier stage makes")
            self.stages[stage.name] = stage

    def get(self, name: str) -> Stage:
        if name not in self.stages:
            raise ValueError(f"unknown stage {name!r}: known stages are {', '.join(self.stages)}")
        return self.stages[name]

    def key(self, name: str, profile: Profile, root: str | os.PathLike | None = None) -> dict[str, Any]:
        """The stage's config, its data files' hashes and its inputs' keys (an upstream change
        rebuilds); for optional inputs, the key of each one that has finished, else None."""
        stage = self.get(name)
        key: dict[str, Any] = {
            "config": stage.config(profile),
            "inputs": {i: _hash(self.key(i, profile, root)) for i in stage.inputs},
        }
        if stage.optional:
            key["optional"] = {o: _hash(self.key(o, profile, root)) if self.is_done(o, profile, root)
                               else None for o in stage.optional}
        if stage.data_files:
            key["data_files"] = data_files_hash(stage.data_files)
        return key

    def read_manifest(self, name: str, profile: Profile | str,
                      root: str | os.PathLike | None = None) -> dict | None:
        path = stage_dir(name, profile, root) / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def is_done(self, name: str, profile: Profile | str, root: str | os.PathLike | None = None) -> bool:
        """True when the stage's artifacts exist and were made with the current key."""
        profile = get_profile(profile)
        manifest = self.read_manifest(name, profile, root)
        return bool(manifest) and manifest.get("key_hash") == _hash(self.key(name, profile, root))

    def run(self, name: str, profile: Profile | str | None = None, root: str | os.PathLike | None = None,
            *, force: bool = False, ensure_inputs: bool = True) -> Path:
        """Run one stage (and, with ``ensure_inputs``, whatever inputs it lacks).

        Returns the artifact folder. A finished stage with the same key is skipped unless ``force``.
        """
        profile = get_profile(profile)
        stage = self.get(name)
        root = runs_root(root)
        final = stage_dir(name, profile, root)
        for dep in stage.inputs:
            if not self.is_done(dep, profile, root):
                if not ensure_inputs:
                    raise RuntimeError(
                        f"stage {name!r} needs stage {dep!r}, which has not run for profile "
                        f"{profile.name!r}: run `diffchat {dep} --profile {profile.name}` first")
                self.run(dep, profile, root, ensure_inputs=True)
        if not force and self.is_done(name, profile, root):
            log.info("stage %s (%s) is up to date: %s", name, profile.name, final)
            return final

        key = self.key(name, profile, root)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{name}-{os.getpid()}-{time.time_ns()}"
        tmp.mkdir()
        cache = final.parent / ".cache" / name
        cache.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(stage=name, profile=profile, root=root, out=tmp, cache=cache,
                           config=key["config"], key_hash=_hash(key))
        start = time.time()
        try:
            summary = stage.body()(ctx) or {}
            missing = [o for o in stage.outputs if not (tmp / o).exists()]
            if missing:
                raise RuntimeError(f"stage {name!r} finished without writing {', '.join(missing)}")
            manifest = {
                "stage": name,
                "profile": profile.name,
                "key": key,
                "key_hash": _hash(key),
                "summary": summary,
                "seconds": round(time.time() - start, 2),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _swap_into_place(tmp, final)
        return final

    def ensure(self, name: str, profile: Profile | str | None = None,
               root: str | os.PathLike | None = None) -> Path:
        """The stage's artifact folder, building it (and its inputs) only if needed."""
        return self.run(name, profile, root, force=False, ensure_inputs=True)

    def status(self, profile: Profile | str | None = None, root: str | os.PathLike | None = None) -> list[dict]:
        """One row per stage, in pipeline order: done, stale or missing, and when."""
        profile = get_profile(profile)
        rows = []
        for name in self.stages:
            manifest = self.read_manifest(name, profile, root)
            done = self.is_done(name, profile, root)
            rows.append({"stage": name, "done": done, "stale": bool(manifest) and not done,
                         "finished": (manifest or {}).get("finished"),
                         "path": str(stage_dir(name, profile, root))})
        return rows


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp``; the old folder is removed only after the rename."""
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{time.time_ns()}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def train_once(ctx: StageContext, train: Callable[[Path], dict], *, resumable: bool = False) -> dict:
    """Run ``train(folder)`` unless this stage, with this exact key, already trained a model.

    The model is kept in the stage's cache under its key hash, so a crash later in the stage
    (evaluation, say) does not throw away hours of training: the rerun goes straight on.
    ``resumable``: the trainer checkpoints into its folder and resumes from it, so a crashed
    run's folder is kept for the rerun instead of being cleared.
    """
    done = ctx.cache / f"model-{ctx.key_hash}"
    if not (done / "train_log.json").is_file():
        tmp = ctx.cache / f".training-{ctx.key_hash}"
        if not resumable:
            shutil.rmtree(tmp, ignore_errors=True)
        train(tmp)
        shutil.rmtree(done, ignore_errors=True)
        tmp.rename(done)
    else:
        ctx.log(f"{ctx.stage}: reusing the model trained with this config in {done}")
    shutil.copytree(done, ctx.out, dirs_exist_ok=True, copy_function=_link_or_copy)
    return json.loads((done / "train_log.json").read_text())
