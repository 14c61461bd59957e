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

A finished stage is trusted only while its files are the ones it wrote: the manifest records
each file's size and sha256, and a stage whose files changed (or whose manifest predates that
record) counts as not done, so ``ensure`` rebuilds it and says which file was wrong. One process
builds a stage at a time: ``run`` holds ``<root>/<profile>/.locks/<stage>.lock`` (``flock``,
which the kernel releases when the process dies, however it dies) while it builds, and removes
the temporary folders that killed runs left behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffchat.profiles import Profile, data_dir, get_profile

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Files at least this big are rehashed only when their modification time changed.
REHASH_BELOW = 64 * 2**20
REBUILD = "rerun with --force"
UNRECORDED = "its manifest was written by an older diffchat and records no files, so they cannot be checked"


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(folder: Path, skip: Iterable[str] = (MANIFEST,)) -> dict[str, dict[str, Any]]:
    """{relative path: size, sha256, mtime_ns} of every file under ``folder`` (what a stage wrote)."""
    skip = set(skip)
    record = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel not in skip:
            stat = path.stat()
            record[rel] = {"size": stat.st_size, "sha256": _sha256(path), "mtime_ns": stat.st_mtime_ns}
    return record


def record_problem(folder: Path, record: dict[str, dict[str, Any]]) -> str | None:
    """Why ``folder`` no longer holds the files of ``record`` (the first wrong one), or None.

    Sizes are always compared and contents hashed, except that a file of at least
    ``REHASH_BELOW`` bytes whose size and modification time are unchanged is taken as is
    (hashing a model of gigabytes at every check would cost seconds)."""
    for rel, want in record.items():
        path = folder / rel
        try:
            stat = path.stat()
        except OSError:
            return f"{rel} is missing"
        if stat.st_size != want["size"]:
            return f"{rel} changed since it was written (size {stat.st_size} != {want['size']})"
        if stat.st_size >= REHASH_BELOW and stat.st_mtime_ns == want.get("mtime_ns"):
            continue
        if _sha256(path) != want["sha256"]:
            return f"{rel} changed since it was written (its sha256 differs)"
    return None


def folder_problem(folder: Path) -> str | None:
    """For a finished stage's folder: why its files cannot be trusted, or None.

    A folder without a manifest (a model saved by hand, say) has nothing to check against."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"{MANIFEST} is damaged (not JSON)"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return UNRECORDED
    problem = record_problem(Path(folder), manifest["files"])
    return problem.replace("since it was written", "since the stage finished") if problem else None


class StageFilesError(ValueError):
    """A finished stage's files are not the ones it wrote."""


def check_folder(folder: str | os.PathLike) -> None:
    """Raise ``StageFilesError`` naming the wrong file when a stage folder was damaged (a folder
    whose older manifest records no files passes: the loaders then catch what they can)."""
    problem = folder_problem(Path(folder))
    if problem and problem != UNRECORDED:
        raise StageFilesError(f"stage folder {folder}: {problem}; rebuild its stage ({REBUILD})")


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

    def problem(self, name: str, profile: Profile | str,
                root: str | os.PathLike | None = None) -> str | None:
        """Why the stage cannot be trusted as finished (not run, another key, a changed or
        missing file), as one line naming the stage and file, or None when it is done."""
        profile = get_profile(profile)
        folder = stage_dir(name, profile, root)
        manifest = self.read_manifest(name, profile, root)
        if manifest is None:
            if (folder / MANIFEST).is_file():
                return f"stage {name!r} at {folder}: {MANIFEST} is damaged (not JSON); {REBUILD}"
            return f"stage {name!r} has not run for profile {profile.name!r}"
        if manifest.get("key_hash") != _hash(self.key(name, profile, root)):
            return f"stage {name!r} at {folder} was made with another config or inputs"
        problem = folder_problem(folder)
        return f"stage {name!r} at {folder}: {problem}; {REBUILD}" if problem else None

    def is_done(self, name: str, profile: Profile | str, root: str | os.PathLike | None = None) -> bool:
        """True when the stage's artifacts exist, were made with the current key and are
        the files it wrote."""
        return self.problem(name, profile, root) is None

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
            problem = self.problem(dep, profile, root)
            if problem:
                if not ensure_inputs:
                    raise RuntimeError(
                        f"stage {name!r} needs stage {dep!r}: {problem}: run "
                        f"`diffchat {dep} --profile {profile.name}` first")
                self.run(dep, profile, root, ensure_inputs=True)
        if not force and self.is_done(name, profile, root):
            log.info("stage %s (%s) is up to date: %s", name, profile.name, final)
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        with StageLock(final.parent / ".locks" / f"{name}.lock", f"stage {name} ({profile.name})") as lock:
            _clean_orphans(final, lock.held)
            problem = self.problem(name, profile, root)
            if problem is None and (not force or lock.waited):
                log.info("stage %s (%s) is up to date: %s", name, profile.name, final)
                return final
            if problem and problem.endswith(REBUILD):  # its files, not its key: say which
                log.warning("%s", problem.replace(REBUILD, "rebuilding it"))
            return self._build(stage, profile, root, final)

    def _build(self, stage: Stage, profile: Profile, root: Path, final: Path) -> Path:
        """Run the stage's body into a temporary folder and swap it into place (lock held)."""
        name = stage.name
        key = self.key(name, profile, root)
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
                "files": file_record(tmp),
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
        """One row per stage, in pipeline order: done, stale or missing, when, and (for a stale
        one) why: another key, or which file changed."""
        profile = get_profile(profile)
        rows = []
        for name in self.stages:
            manifest = self.read_manifest(name, profile, root)
            problem = self.problem(name, profile, root)
            rows.append({"stage": name, "done": problem is None, "stale": bool(manifest) and bool(problem),
                         "problem": problem if manifest else None,
                         "finished": (manifest or {}).get("finished"),
                         "path": str(stage_dir(name, profile, root))})
        return rows


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp``; the old folder is removed only after the rename."""
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}-{time.time_ns()}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_orphans(final: Path, locked: bool = True) -> None:
    """Remove the ``.tmp-<stage>-<pid>-*`` and ``.old-<stage>-*`` folders killed runs left.

    Called with the stage's lock held, so no live run owns them; without a lock (``locked``
    False) only those whose process is no longer running are touched. A run killed between
    the two renames of ``_swap_into_place`` left no stage folder: its newest finished folder
    (one with a manifest) is put back first, and checked like any other."""
    pattern = re.compile(rf"^\.(tmp|old)-{re.escape(final.name)}-(?:(\d+)-)?(\d+)$")
    found = []
    for path in final.parent.iterdir():
        match = pattern.match(path.name)
        pid = int(match.group(2) or 0) if match else 0
        if match and path.is_dir() and (locked or not (pid and _pid_alive(pid))):
            found.append((int(match.group(3)), path, pid))
    if not found:
        return
    if not final.exists():
        finished = sorted((f for f in found if (f[1] / MANIFEST).is_file()), reverse=True)
        if finished:
            finished[0][1].rename(final)
            log.warning("%s: put back %s, left by a run killed while it replaced the stage folder",
                        final, finished[0][1].name)
            found.remove(finished[0])
    for _, path, pid in found:
        alive = bool(pid) and _pid_alive(pid)
        owner = (f"pid {pid}, " + ("not holding the lock" if alive else "no longer running")
                 if pid else "no pid")
        log.warning("removing %s (%s): left by a run that was killed", path, owner)
        shutil.rmtree(path, ignore_errors=True)


class StageLock:
    """An exclusive ``flock`` on a lock file, held while one process builds one stage.

    The kernel releases it when the process exits or is killed, so a lock is never left
    behind; the file itself stays (removing it would let a waiter and a newcomer lock two
    different files). A second process logs who holds the lock, then waits for it. On a
    filesystem without ``flock`` (some network and FUSE mounts) it warns and goes on unlocked
    (``held`` is False)."""

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what, self.waited, self.held = path, what, False, True
        self._fd: int | None = None

    def __enter__(self) -> StageLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.path.read_text().strip() or "another process"
                log.warning("%s: waiting for %s, which is building it (lock %s)", self.what, holder, self.path)
                self.waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:
                log.warning("%s: cannot lock %s (%s): runs into this folder must not overlap",
                            self.what, self.path, err.strerror or err)
                self.held = False
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the only descriptor releases the lock
            self._fd = None


def _cache_record(done: Path) -> Path:
    return done.parent / f"{done.name}.files.json"


def _cached_model_problem(done: Path) -> str | None:
    """Why the cached model folder cannot be reused, or None."""
    if not (done / "train_log.json").is_file():
        return "not trained"
    try:
        record = json.loads(_cache_record(done).read_text())
    except FileNotFoundError:
        return f"{_cache_record(done).name} is missing (a cache from an older diffchat), so it cannot be checked"
    except ValueError:
        return f"{_cache_record(done).name} is damaged (not JSON)"
    return record_problem(done, record)


def train_once(ctx: StageContext, train: Callable[[Path], dict], *, resumable: bool = False) -> dict:
    """Run ``train(folder)`` unless this stage, with this exact key, already trained a model.

    The model is kept in the stage's cache under its key hash, so a crash later in the stage
    (evaluation, say) does not throw away hours of training: the rerun goes straight on.
    The stage gets a copy (a hard link would let damage to the stage's files reach the cache),
    and the cached files' sizes and hashes are recorded next to it: a cached model whose files
    changed is trained again rather than reused.
    ``resumable``: the trainer checkpoints into its folder and resumes from it, so a crashed
    run's folder is kept for the rerun instead of being cleared.
    """
    done = ctx.cache / f"model-{ctx.key_hash}"
    problem = _cached_model_problem(done)
    if problem:
        if problem != "not trained":
            ctx.log(f"{ctx.stage}: not reusing the cached model in {done}: {problem}; training again")
        tmp = ctx.cache / f".training-{ctx.key_hash}"
        if not resumable:
            shutil.rmtree(tmp, ignore_errors=True)
        train(tmp)
        write_json(_cache_record(done), file_record(tmp, skip=()))
        shutil.rmtree(done, ignore_errors=True)
        tmp.rename(done)
    else:
        ctx.log(f"{ctx.stage}: reusing the model trained with this config in {done}")
    shutil.copytree(done, ctx.out, dirs_exist_ok=True)
    return json.loads((done / "train_log.json").read_text())
