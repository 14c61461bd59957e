"""Stage runner: course stages, their artifacts and manifests.

A stage is a function that writes files into a folder. Its artifacts live in
``<root>/<profile>/<stage>/`` with a ``manifest.json`` recording the config that made
them. The runner skips a finished stage whose config (and whose inputs' configs) are
unchanged, rebuilds it when they change, and builds missing inputs first (``ensure``).

Writes are atomic: a stage writes into a temporary sibling folder and only a complete
folder with its manifest is renamed into place, so a crash never leaves a half-written
artifact that looks finished, and the previous finished artifact survives the crash.
Work a stage wants to keep across crashes (teacher answers, labelled rows) goes in
``ctx.cache``, which is never cleaned by the runner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffchat.profiles import Profile, get_profile

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """The runs folder: the argument, else $DIFFCHAT_RUNS, else ./runs."""
    return Path(root or os.environ.get("DIFFCHAT_RUNS") or "runs").expanduser().resolve()


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


@dataclass
class Stage:
    name: str
    fn: Callable[[StageContext], dict[str, Any] | None]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()  # files the stage must produce (checked before commit)
    config: Callable[[Profile], dict[str, Any]] = field(default=lambda p: {})
    description: str = ""


STAGES: dict[str, Stage] = {}


def register(
    name: str,
    *,
    inputs: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    config: Callable[[Profile], dict[str, Any]] | None = None,
    description: str = "",
) -> Callable:
    """Decorator: register ``fn(ctx) -> summary dict`` as the stage ``name``."""

    def wrap(fn: Callable[[StageContext], dict[str, Any] | None]) -> Callable:
        STAGES[name] = Stage(
            name=name,
            fn=fn,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            config=config or (lambda p: {}),
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
        )
        return fn

    return wrap


def get_stage(name: str) -> Stage:
    from diffchat import stages  # noqa: F401  (registers the course's stages)

    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}: known stages are {', '.join(STAGES)}")
    return STAGES[name]


def stage_dir(name: str, profile: Profile | str, root: str | os.PathLike | None = None) -> Path:
    return runs_root(root) / get_profile(profile).name / name


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_key(name: str, profile: Profile) -> dict[str, Any]:
    """The stage's own config plus the keys of its inputs (an upstream change rebuilds)."""
    stage = get_stage(name)
    return {
        "config": stage.config(profile),
        "inputs": {i: _hash(stage_key(i, profile)) for i in stage.inputs},
    }


def read_manifest(name: str, profile: Profile | str, root: str | os.PathLike | None = None) -> dict | None:
    path = stage_dir(name, profile, root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_done(name: str, profile: Profile | str, root: str | os.PathLike | None = None) -> bool:
    """True when the stage's artifacts exist and were made with the current config."""
    profile = get_profile(profile)
    manifest = read_manifest(name, profile, root)
    return bool(manifest) and manifest.get("key_hash") == _hash(stage_key(name, profile))


def run(
    name: str,
    profile: Profile | str | None = None,
    root: str | os.PathLike | None = None,
    *,
    force: bool = False,
    ensure_inputs: bool = True,
) -> Path:
    """Run one stage (and, with ``ensure_inputs``, whatever inputs it lacks).

    Returns the artifact folder. A finished stage with the same config is skipped
    unless ``force``.
    """
    profile = get_profile(profile)
    stage = get_stage(name)
    root = runs_root(root)
    final = stage_dir(name, profile, root)
    for dep in stage.inputs:
        if not is_done(dep, profile, root):
            if not ensure_inputs:
                raise RuntimeError(
                    f"stage {name!r} needs stage {dep!r}, which has not run for profile "
                    f"{profile.name!r}: run `diffchat run {dep} --profile {profile.name}` first"
                )
            run(dep, profile, root, ensure_inputs=True)
    if not force and is_done(name, profile, root):
        log.info("stage %s (%s) is up to date: %s", name, profile.name, final)
        return final

    key = stage_key(name, profile)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{name}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    cache = final.parent / ".cache" / name
    cache.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(stage=name, profile=profile, root=root, out=tmp, cache=cache, config=key["config"],
                       key_hash=_hash(key))
    start = time.time()
    try:
        summary = stage.fn(ctx) or {}
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


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp``; the old folder is removed only after the rename."""
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{time.time_ns()}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure(name: str, profile: Profile | str | None = None, root: str | os.PathLike | None = None) -> Path:
    """The stage's artifact folder, building it (and its inputs) only if needed."""
    return run(name, profile, root, force=False, ensure_inputs=True)


def status(profile: Profile | str | None = None, root: str | os.PathLike | None = None) -> list[dict]:
    """One row per registered stage: done or not, and when."""
    from diffchat import stages  # noqa: F401

    profile = get_profile(profile)
    rows = []
    for name in STAGES:
        manifest = read_manifest(name, profile, root)
        rows.append(
            {
                "stage": name,
                "done": is_done(name, profile, root),
                "stale": bool(manifest) and not is_done(name, profile, root),
                "finished": (manifest or {}).get("finished"),
                "path": str(stage_dir(name, profile, root)),
            }
        )
    return rows
