"""A killed training run resumes from its last checkpoint and ends with the weights an
uninterrupted run ends with (diffchat.checkpoints; issue 24 item 11). PB and SFT share
``train_completion_model``; the text reward models train through ``train_reward_model``."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from diffchat.checkpoints import last_checkpoint
from diffchat.data import miniworld
from diffchat.loading import tiny_base
from diffchat.profiles import TinyLMConfig, TrainConfig
from diffchat.reward_models import train_reward_model
from diffchat.sft import sft_rows, train_completion_model
from diffchat.tiny import build_regression_model, train_bpe_tokenizer

# 40 rows in batches of 4 with 2 accumulation steps: 5 optimiser steps an epoch, 10 in all, with
# warm-up and a cosine schedule; checkpoints every 2 steps, so a kill at step 3 resumes mid-epoch.
SFT = TrainConfig(epochs=2, batch_size=4, grad_accum=2, max_length=160, lr=3e-3, unfreeze_layers=None,
                  weight_decay=0.0, warmup_ratio=0.2, save_steps=2)
# 48 rows in batches of 8: 6 steps an epoch, 12 in all; a kill at step 3 resumes at step 2.
RM = TrainConfig(epochs=2, batch_size=8, max_length=32, lr=2e-3, unfreeze_layers=None,
                 weight_decay=1e-3, save_steps=2)
KILL_AT = 3


class Killed(Exception):
    pass


class KillAt(TrainerCallback):
    """Stops training by an exception after step ``KILL_AT`` (a checkpoint was written at 2)."""

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == KILL_AT:
            raise Killed


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kw):
        self.steps += 1


def _rows(n):
    return sft_rows({"beautified_source_prompt": t["input"], "instruction": t["edit"],
                     "beautified_target_prompt": t["output"]} for t in miniworld.generate_triplets(n, seed=1))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    texts = miniworld.vocabulary_texts() + [r["completion"] for r in _rows(200)]
    return tiny_base(texts, tmp_path_factory.mktemp("base"),
                     TinyLMConfig(vocab_size=600, hidden_size=32, n_layer=2, n_head=2))


def _weights(folder: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(folder / name)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ from the uninterrupted run's in {len(different)} " \
                          f"tensors, e.g. {different[:3]}"


def _sft(rows, base, out, cfg, **kw):
    return train_completion_model(rows, base, out, cfg, log=kw.pop("log", lambda m: None), **kw)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_completion_training_resumes_to_the_same_weights(base, tmp_path, lora):
    cfg = dataclasses.replace(SFT, lora=lora)
    rows = _rows(40)
    whole = _sft(rows, base, tmp_path / "whole", cfg)
    assert whole["steps"] == 10 and whole["resumed_from"] == 0

    with pytest.raises(Killed):
        _sft(rows, base, tmp_path / "cut", cfg, callbacks=[KillAt()])
    scratch = tmp_path / "cut" / "trainer"
    assert sorted(p.name for p in scratch.glob("checkpoint-*")) == ["checkpoint-2"]
    # A run killed while writing checkpoint 3 leaves a folder without a readable state file:
    # it is not resumed from, and it is removed.
    partial = scratch / "checkpoint-3"
    shutil.copytree(scratch / "checkpoint-2", partial)
    (partial / "trainer_state.json").write_text('{"global_step": 3, "log_hist')

    said, counted = [], CountSteps()
    resumed = _sft(rows, base, tmp_path / "cut", cfg, log=said.append, callbacks=[counted])
    assert f"resuming from step 2 of 10 ({scratch / 'checkpoint-2'})" in said
    assert resumed["resumed_from"] == 2 and counted.steps == 8 and resumed["steps"] == 10
    assert not partial.exists() and not scratch.exists()
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "cut"))
    assert resumed["loss"] == whole["loss"], "the loss curve before the kill is kept"


class KillAfterLastSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == state.max_steps:
            raise Killed


def test_a_run_killed_after_its_last_step_trains_no_more(base, tmp_path):
    rows = _rows(40)
    with pytest.raises(Killed):
        _sft(rows, base, tmp_path / "cut", SFT, callbacks=[KillAfterLastSave()])
    counted = CountSteps()
    resumed = _sft(rows, base, tmp_path / "cut", SFT, callbacks=[counted])
    assert resumed["resumed_from"] == 10 and counted.steps == 0
    _sft(rows, base, tmp_path / "whole", SFT)
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "cut"))


def test_checkpoints_change_no_weights(base, tmp_path):
    """Saving a checkpoint touches no RNG or state: checkpointing every 2 steps or only at the end
    gives the same weights (why ``save_steps`` is left out of a stage's key)."""
    rows = _rows(40)
    _sft(rows, base, tmp_path / "often", SFT)
    _sft(rows, base, tmp_path / "end", dataclasses.replace(SFT, save_steps=1000))
    _assert_same_weights(_weights(tmp_path / "often"), _weights(tmp_path / "end"))
    from diffchat.pipeline import COURSE
    from diffchat.profiles import get_profile

    tiny = get_profile("tiny")
    other = tiny.with_overrides(**{s: {"save_steps": 7} for s in ("pb", "sft", "rm")})
    for stage in ("pb", "sft", "rewards"):
        assert COURSE.key(stage, other) == COURSE.key(stage, tiny)


def test_checkpoints_of_another_run_are_an_error(base, tmp_path):
    with pytest.raises(Killed):
        _sft(_rows(40), base, tmp_path, SFT, callbacks=[KillAt()])
    with pytest.raises(ValueError, match="checkpoints of another training run"):
        _sft(_rows(41), base, tmp_path, SFT)
    with pytest.raises(ValueError, match="checkpoints of another training run"):
        _sft(_rows(40), base, tmp_path, dataclasses.replace(SFT, lr=1e-3))


class _Touch:
    """Unpickling this creates a file: code run by a checkpoint."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_a_checkpoint_that_would_run_code_is_refused(base, tmp_path):
    with pytest.raises(Killed):
        _sft(_rows(40), base, tmp_path, SFT, callbacks=[KillAt()])
    bait = tmp_path / "trainer" / "checkpoint-2" / "optimizer.pt"
    marker = tmp_path / "code-ran"
    torch.save(_Touch(marker), bait)
    with pytest.raises(ValueError, match=r"checkpoint-2 holds more than tensors and plain data"):
        _sft(_rows(40), base, tmp_path, SFT)
    assert not marker.exists(), "resuming ran code from the checkpoint"
    assert os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") is None, "the forced weights-only load is undone"
    torch.load(bait, weights_only=False)  # the bait is real: an unrestricted load runs it
    assert marker.exists()


def test_last_checkpoint_is_the_newest_complete_one(tmp_path):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()
    assert last_checkpoint(tmp_path / "checkpoint-2") is None


WORDS = ["cat", "dog", "castle", "tree", "river", "sunset", "portrait", "golden"]


def _labels(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(3, 8))
        rows.append({"prompt": " ".join(words), "raw": " ".join(words[:2]),
                     "aesthetic": 5.0 + words.count("golden") + rng.gauss(0, 0.1)})
    return rows


@pytest.fixture(scope="module")
def rm_base(tmp_path_factory):
    tokenizer = train_bpe_tokenizer([r["prompt"] for r in _labels(200, seed=1)], vocab_size=200)
    model = build_regression_model(tokenizer, TinyLMConfig(vocab_size=200, hidden_size=32, n_layer=2,
                                                           n_head=2), seed=0)
    folder = tmp_path_factory.mktemp("rm_base")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_reward_model_training_resumes_to_the_same_weights(rm_base, tmp_path):
    rows, held_out = _labels(48, seed=2), _labels(8, seed=3)
    whole = train_reward_model(rows, "aesthetic", rm_base, tmp_path / "whole", RM, eval_rows=held_out,
                               log=lambda m: None)
    assert whole["resumed_from"] == 0 and whole["loss_steps"][-1] == 12
    with pytest.raises(Killed):
        train_reward_model(rows, "aesthetic", rm_base, tmp_path / "cut", RM, callbacks=[KillAt()])
    said, counted = [], CountSteps()
    resumed = train_reward_model(rows, "aesthetic", rm_base, tmp_path / "cut", RM, eval_rows=held_out,
                                 log=said.append, callbacks=[counted])
    assert any(m.startswith("resuming from step 2 of 12") for m in said), said
    assert resumed["resumed_from"] == 2 and counted.steps == 10
    assert not (tmp_path / "cut" / "trainer").exists()
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "cut"))
    assert resumed["y_pred"] == whole["y_pred"] and resumed["losses"] == whole["losses"]


_KILLED_CHILD = """
import sys, time
from pathlib import Path
from transformers import TrainerCallback
from diffchat.sft import train_completion_model
from tests.test_resume import SFT, _rows

class Hang(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        print("saved", state.global_step, flush=True)
        time.sleep(600)

train_completion_model(_rows(40), Path(sys.argv[1]), Path(sys.argv[2]), SFT, log=lambda m: None,
                       callbacks=[Hang()])
"""


def test_a_sigkilled_run_resumes(base, tmp_path):
    """The real thing: a training process killed with SIGKILL (no exception, no clean-up) just
    after its first checkpoint resumes from it, with the uninterrupted run's weights."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, str(base), str(tmp_path / "cut")],
                             cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    try:
        lines = iter(child.stdout.readline, "")
        assert next((line.split() for line in lines if line.startswith("saved")), None) == ["saved", "2"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    said = []
    resumed = _sft(_rows(40), base, tmp_path / "cut", SFT, log=said.append)
    assert resumed["resumed_from"] == 2 and any(m.startswith("resuming from step 2 of 10") for m in said)
    _sft(_rows(40), base, tmp_path / "whole", SFT)
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(tmp_path / "cut"))


def test_a_stage_killed_in_training_resumes_from_its_cache(base, tmp_path):
    """Through the runner: a stage whose training is killed leaves its checkpoints in the
    stage's cache (``train_once(..., resumable=True)``, as the pb, sft and rewards stages call
    it), and running the stage again resumes from them."""
    from diffchat import runner
    from diffchat.profiles import get_profile

    said, kill = [], [KillAt()]

    def toy_train(ctx):
        runner.train_once(ctx, lambda out: _sft(_rows(40), base, out, SFT, callbacks=kill,
                                               log=lambda m: said.append(f"{ctx.stage}: {m}")),
                          resumable=True)

    pipeline = runner.Pipeline([runner.Stage("toy_train", toy_train, outputs=("model.safetensors",))])
    with pytest.raises(Killed):
        pipeline.run("toy_train", get_profile("tiny"), tmp_path)
    kill.clear()
    final = pipeline.run("toy_train", get_profile("tiny"), tmp_path)
    assert any(m.startswith("toy_train: resuming from step 2 of 10") for m in said), said
    _sft(_rows(40), base, tmp_path / "whole", SFT)
    _assert_same_weights(_weights(tmp_path / "whole"), _weights(final))


# ---- the course runner: no time limit on training cells, passive OpenMP threads -------------


def test_course_kernels_wait_passively_unless_the_user_chose():
    from diffchat.course import thread_env

    assert thread_env({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert thread_env({"OMP_NUM_THREADS": "2"}) == {}, "the user's thread count stands"
    assert thread_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {}


def _notebook(path: Path, *sources: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, path)
    return path


def test_the_kernel_gets_the_thread_setting_and_a_cell_limit_names_the_way_out(tmp_path, monkeypatch):
    import nbformat

    from diffchat.course import run_notebook

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    book = _notebook(tmp_path / "env.ipynb", "import os; print(os.environ.get('OMP_WAIT_POLICY'))")
    out = run_notebook(book, "tiny", tmp_path / "out")
    assert nbformat.read(out, as_version=4).cells[0].outputs[0]["text"].strip() == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ, "the runner's own environment is left alone"

    slow = _notebook(tmp_path / "slow.ipynb", "import time; time.sleep(30)")
    with pytest.raises(RuntimeError, match="slow.ipynb: a cell ran past the 2 s limit .* resumes from the last"):
        run_notebook(slow, "tiny", tmp_path / "out", timeout=2)
