"""Faults in the runs folder (issue 24): nothing there runs code, damage is found and named,
damaged stages and cached models are rebuilt, and runs share a folder safely (locks, orphans)."""

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffchat import runner
from diffchat.loading import ModelLoadError, load_causal_lm, tiny_base
from diffchat.profiles import TinyLMConfig

REPO = Path(runner.__file__).resolve().parents[1]
CALLS: list[str] = []
TINY = TinyLMConfig(vocab_size=300, hidden_size=32, n_layer=1, n_head=2)


@pytest.fixture(autouse=True)
def reset():
    CALLS.clear()


class Payload:
    """Unpickling this creates the file ``marker``: what a planted pickle could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state": Payload(marker)}))


# ---- 1. nothing loaded from a runs folder unpickles ------------------------------------------


@pytest.fixture(scope="module")
def ppo_models(tmp_path_factory):
    """A random tiny SFT model and two tiny text reward models."""
    from diffchat.reward_models import save_untrained_reward_model
    from diffchat.tiny import train_bpe_tokenizer

    texts = ["a red cat on a mat", "a blue dog in the snow", "make it night", "a green house"] * 10
    root = tmp_path_factory.mktemp("ppo_models")
    sft = tiny_base(texts, root / "sft", TINY)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=200)
    rms = [save_untrained_reward_model(root / target, tokenizer, TINY, target, seed=seed)
           for seed, target in enumerate(("aesthetic", "pickscore"))]
    rows = [{"beautified_source_prompt": "a red cat on a mat", "instruction": "make it night",
             "beautified_target_prompt": "a red cat on a mat at night"}] * 4
    return sft, rms[0], rms[1], rows


@pytest.mark.parametrize("name", ["state.pt", "state.safetensors"])
def test_a_pickle_in_the_ppo_checkpoint_never_runs(ppo_models, tmp_path, name):
    from diffchat.ppo.trainer import train_ppo
    from diffchat.profiles import PPOConfig, TrainConfig

    sft, aes, pick, rows = ppo_models
    marker = tmp_path / "PWNED"
    plant(tmp_path / "run" / "checkpoint" / name, marker)
    rl = TrainConfig(epochs=1, batch_size=2, max_length=64, lr=1e-3, unfreeze_layers=1, weight_decay=0.0)
    ppo = PPOConfig(rollouts=2, iterations=2, max_new_tokens=4, mini_batch_size=2, checkpoint_every=1,
                    adm_pool_rows=4)
    with pytest.raises(ValueError, match=f"checkpoint/{name}.*remove") as err:
        train_ppo(sft, aes, pick, rows, tmp_path / "run", rl, ppo, seed=0)
    assert not marker.exists(), "the planted pickle ran"
    assert "\n" not in str(err.value)


def test_a_pickled_weights_file_in_a_model_folder_never_runs(tmp_path):
    folder = tiny_base(["a red cat", "a blue dog"] * 10, tmp_path / "m", TINY)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    torch.save({"w": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pytorch_model.bin .*could run code"):
        load_causal_lm(folder)
    assert not marker.exists()


def test_no_loader_in_the_package_unpickles():
    """torch.load only with weights_only=True; no pickle/joblib loads, no allow_pickle."""
    offenders = []
    for path in (REPO / "diffchat").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ("torch.load(" in line and "weights_only=True" not in line) or "allow_pickle=True" in line \
                    or "joblib" in line or "pickle.load" in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


# ---- 2. a damaged model: copies, verified cache, one-line errors -----------------------------


TRAINED: list[str] = []


def toy_model(ctx):
    def train(folder):
        TRAINED.append(ctx.stage)
        tiny_base(["a red cat", "a blue dog"] * 10, folder, TINY)
        (folder / "train_log.json").write_text('{"steps": 1}')
        return {"steps": 1}

    return runner.train_once(ctx, train)


MODEL = runner.Pipeline([runner.Stage("toy_model", toy_model, outputs=("model.safetensors",))])


def damage(path: Path) -> None:
    """Overwrite the middle of a file, keeping its size (what a bad disk or a stray write does)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def test_damaging_a_stage_model_leaves_its_cache_intact_and_it_is_rebuilt(tmp_path, caplog):
    TRAINED.clear()
    out = MODEL.ensure("toy_model", "tiny", tmp_path)
    weights = out / "model.safetensors"
    assert weights.stat().st_nlink == 1, "the stage's weights must be a copy, not a link into the cache"
    damage(weights)
    problem = MODEL.problem("toy_model", "tiny", tmp_path)
    assert problem and "model.safetensors changed since the stage finished" in problem
    with caplog.at_level(logging.WARNING):
        MODEL.run("toy_model", "tiny", tmp_path, force=True)
    assert TRAINED == ["toy_model"], "the cached model was intact: reused, not trained again"
    assert MODEL.is_done("toy_model", "tiny", tmp_path)
    load_causal_lm(out)


def test_a_damaged_cached_model_is_trained_again(tmp_path):
    TRAINED.clear()
    MODEL.ensure("toy_model", "tiny", tmp_path)
    cached = next((tmp_path / "tiny" / ".cache" / "toy_model").glob("model-*/model.safetensors"))
    damage(cached)
    MODEL.run("toy_model", "tiny", tmp_path, force=True)
    assert TRAINED == ["toy_model", "toy_model"], "a cached model whose files changed must not be reused"
    load_causal_lm(runner.stage_dir("toy_model", "tiny", tmp_path))


@pytest.mark.parametrize("how", ["overwrite", "cut", "delete"])
def test_loading_a_damaged_stage_model_is_one_line_naming_the_file(tmp_path, how):
    out = MODEL.ensure("toy_model", "tiny", tmp_path)
    weights = out / "model.safetensors"
    if how == "overwrite":
        damage(weights)
    elif how == "cut":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.unlink()
    with pytest.raises(ValueError, match="model.safetensors") as err:
        load_causal_lm(out)
    assert "\n" not in str(err.value)


def test_loading_a_damaged_model_folder_without_manifest_names_the_file(tmp_path):
    folder = tiny_base(["a red cat", "a blue dog"] * 10, tmp_path / "m", TINY)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="model.safetensors is damaged") as err:
        load_causal_lm(folder)
    assert "\n" not in str(err.value)


def _finished_course_stage(name, root, files):
    """A finished stage of the course (and its upstream), with these files, as the runner records it."""
    from diffchat import pipeline
    from diffchat.profiles import get_profile

    for stage in pipeline.COURSE.stages:
        folder = pipeline.stage_dir(stage, "tiny", root)
        folder.mkdir(parents=True, exist_ok=True)
        if stage == name:
            files(folder)
        key = pipeline.COURSE.key(stage, get_profile("tiny"), root)
        runner.write_json(folder / runner.MANIFEST, {"stage": stage, "profile": "tiny", "key": key,
                                                     "key_hash": runner._hash(key),
                                                     "files": runner.file_record(folder)})
        if stage == name:
            return folder


@pytest.mark.parametrize("command", ["rewrite", "chat"])
def test_cli_on_a_damaged_model_prints_one_line(tmp_path, capsys, command):
    from diffchat.cli import main

    sft = _finished_course_stage("sft", tmp_path, lambda f: tiny_base(["a red cat", "make it blue"] * 10, f, TINY))
    damage(sft / "model.safetensors")
    capsys.readouterr()
    args = (["rewrite", "a red cat", "-i", "make it blue"] if command == "rewrite" else ["chat"])
    assert main([*args, "--profile", "tiny", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors changed" in err, err


# ---- 3. a finished stage is trusted only while its files are the ones it wrote ----------------


def toy_data(ctx):
    CALLS.append("data")
    (ctx.out / "triplets_train.jsonl").write_text("".join(f'{{"row": {i}}}\n' for i in range(300)))


def toy_next(ctx):
    CALLS.append("next")
    rows = (ctx.input("toy_data") / "triplets_train.jsonl").read_text().splitlines()
    (ctx.out / "n.txt").write_text(str(len(rows)))


DATA = runner.Pipeline([
    runner.Stage("toy_data", toy_data, outputs=("triplets_train.jsonl",)),
    runner.Stage("toy_next", toy_next, inputs=("toy_data",), outputs=("n.txt",)),
])


def test_a_data_file_cut_at_a_line_is_found_named_and_rebuilt(tmp_path, caplog):
    data = DATA.ensure("toy_data", "tiny", tmp_path)
    path = data / "triplets_train.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:100]))
    problem = DATA.problem("toy_data", "tiny", tmp_path)
    assert problem.startswith(f"stage 'toy_data' at {data}: triplets_train.jsonl changed since the stage "
                              "finished (size ")
    assert problem.endswith("rerun with --force")
    assert not DATA.is_done("toy_data", "tiny", tmp_path)
    row = next(r for r in DATA.status("tiny", tmp_path) if r["stage"] == "toy_data")
    assert row["stale"] and not row["done"] and "triplets_train.jsonl" in row["problem"]
    with caplog.at_level(logging.WARNING):
        out = DATA.ensure("toy_next", "tiny", tmp_path)
    assert CALLS == ["data", "data", "next"]
    assert (out / "n.txt").read_text() == "300", "the next stage must train on the rebuilt data"
    assert "triplets_train.jsonl changed" in caplog.text and "rebuilding" in caplog.text


def test_a_deleted_output_makes_the_stage_not_done(tmp_path):
    data = DATA.ensure("toy_data", "tiny", tmp_path)
    (data / "triplets_train.jsonl").unlink()
    assert "triplets_train.jsonl is missing" in DATA.problem("toy_data", "tiny", tmp_path)
    with pytest.raises(RuntimeError, match="triplets_train.jsonl is missing"):
        DATA.run("toy_next", "tiny", tmp_path, ensure_inputs=False)


def test_an_old_manifest_without_a_file_record_loads_and_is_rebuilt(tmp_path, caplog):
    data = DATA.ensure("toy_data", "tiny", tmp_path)
    manifest = json.loads((data / runner.MANIFEST).read_text())
    del manifest["files"]
    (data / runner.MANIFEST).write_text(json.dumps(manifest))
    assert DATA.read_manifest("toy_data", "tiny", tmp_path)["stage"] == "toy_data"
    assert "records no files" in DATA.problem("toy_data", "tiny", tmp_path)
    with caplog.at_level(logging.WARNING):
        DATA.ensure("toy_data", "tiny", tmp_path)
    assert CALLS == ["data", "data"] and "records no files" in caplog.text
    assert DATA.is_done("toy_data", "tiny", tmp_path)


# ---- 6 and 12. one process per stage; what killed runs leave is cleaned ----------------------


SCRIPT = """
import logging, os, sys, time
sys.path.insert(0, {repo!r})
from diffchat import runner

logging.basicConfig(level=logging.WARNING, format="%(message)s")

def slow(ctx):
    with open({log!r}, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    (ctx.out / "partial.txt").write_text("half")
    time.sleep(float(sys.argv[2]))
    (ctx.out / "s.txt").write_text("done")

def train(ctx):
    def fit(folder):
        with open({log!r}, "a") as f:
            f.write(f"train {{os.getpid()}}\\n")
        folder.mkdir(parents=True, exist_ok=True)
        time.sleep(0.5)
        (folder / "train_log.json").write_text("{{}}")
        return {{}}
    return runner.train_once(ctx, fit)

pipe = runner.Pipeline([runner.Stage("slow", slow, outputs=("s.txt",)),
                        runner.Stage("pb", train, outputs=("train_log.json",))])
for _ in range(int(sys.argv[4])):
    pipe.run(sys.argv[1], "tiny", {root!r}, force=sys.argv[3] == "force")
"""


def _script(tmp_path) -> Path:
    path = tmp_path / "stage.py"
    path.write_text(SCRIPT.format(repo=str(REPO), log=str(tmp_path / "builds.txt"), root=str(tmp_path / "runs")))
    return path


def _start(script, stage="slow", sleep=1.0, force=False, times=1):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), stage, str(sleep), "force" if force else "-", str(times)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _leftovers(root):
    folder = root / "tiny"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-"))) if folder.is_dir() else []


def test_four_processes_on_one_stage_build_it_once(tmp_path):
    script = _script(tmp_path)
    procs = [_start(script) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * 4, results
    assert len((tmp_path / "builds.txt").read_text().splitlines()) == 1, "the stage was built more than once"
    assert any("waiting for pid" in err and "which is building it" in err for _, err in results), results
    assert _leftovers(tmp_path / "runs") == []
    assert (tmp_path / "runs" / "tiny" / "slow" / "s.txt").read_text() == "done"


def test_forced_runs_side_by_side_never_fail_in_the_swap(tmp_path):
    script = _script(tmp_path)
    procs = [_start(script, sleep=0, force=True, times=40) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * 4, results
    assert _leftovers(tmp_path / "runs") == []
    pipe = runner.Pipeline([runner.Stage("slow", toy_data)])
    assert pipe.read_manifest("slow", "tiny", tmp_path / "runs")["files"]["s.txt"]["size"] == 4


def test_two_trainings_into_one_cache_train_once(tmp_path):
    script = _script(tmp_path)
    procs = [_start(script, stage="pb") for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len((tmp_path / "builds.txt").read_text().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_leaves_nothing_behind_for_long(tmp_path, caplog, sig):
    script = _script(tmp_path)
    proc = _start(script, sleep=60)
    deadline = time.time() + 60
    while not _leftovers(tmp_path / "runs") and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    (tmp_path / "runs" / "tiny" / ".cache" / "slow" / "keep.txt").write_text("checkpoint")
    tmp = _leftovers(tmp_path / "runs")
    assert tmp == [n for n in tmp if n.startswith(f".tmp-slow-{proc.pid}-")] and tmp

    def quick(ctx):
        CALLS.append("slow")
        (ctx.out / "s.txt").write_text("done")

    pipe = runner.Pipeline([runner.Stage("slow", quick, outputs=("s.txt",))])
    with caplog.at_level(logging.WARNING):
        pipe.ensure("slow", "tiny", tmp_path / "runs")  # would hang if the lock outlived its process
    assert _leftovers(tmp_path / "runs") == []
    assert f"removing {tmp_path / 'runs' / 'tiny' / tmp[0]} (pid {proc.pid}, no longer running)" in caplog.text
    assert (tmp_path / "runs" / "tiny" / ".cache" / "slow" / "keep.txt").is_file(), "the cache is never cleaned"
    assert CALLS == ["slow"]


def test_a_run_killed_between_the_renames_gets_its_stage_back(tmp_path, caplog):
    data = DATA.ensure("toy_data", "tiny", tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data.rename(data.parent / f".old-toy_data-{dead.pid}-1")
    (data.parent / f".old-toy_data-{dead.pid}-0").mkdir()  # an older leftover
    with caplog.at_level(logging.WARNING):
        DATA.ensure("toy_data", "tiny", tmp_path)
    assert CALLS == ["data"], "the finished folder was put back, not rebuilt"
    assert "put back .old-toy_data-" in caplog.text
    assert _leftovers(tmp_path) == []
    assert DATA.is_done("toy_data", "tiny", tmp_path)


def test_a_big_file_is_rehashed_when_its_modification_time_changed(tmp_path, monkeypatch):
    data = DATA.ensure("toy_data", "tiny", tmp_path)
    monkeypatch.setattr(runner, "REHASH_BELOW", 1)  # every file counts as big
    path = data / "triplets_train.jsonl"
    text = path.read_text()
    recorded = path.stat().st_mtime_ns
    path.write_text(text.replace('{"row": 5}', '{"row": 6}'))
    os.utime(path, ns=(recorded + 10**9, recorded + 10**9))  # a write a second later
    assert "sha256 differs" in DATA.problem("toy_data", "tiny", tmp_path)


def test_without_flock_a_run_goes_on_and_spares_live_runs_folders(tmp_path, monkeypatch, caplog):
    """Some network and FUSE mounts refuse flock: warn, build, and leave a live process's folder."""
    import errno
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    live = tmp_path / "tiny" / f".tmp-toy_data-{os.getpid()}-1"
    live.mkdir(parents=True)
    monkeypatch.setattr(fcntl, "flock", refuse)
    with caplog.at_level(logging.WARNING):
        DATA.ensure("toy_data", "tiny", tmp_path)
    assert "cannot lock" in caplog.text and "must not overlap" in caplog.text
    assert DATA.is_done("toy_data", "tiny", tmp_path) and live.is_dir()
