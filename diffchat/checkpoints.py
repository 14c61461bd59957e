"""Checkpoints that a killed or slow training run resumes from.

PB and SFT (``diffchat.sft``) and the text reward models (``diffchat.reward_models``) train
through the transformers ``Trainer``. With ``checkpoint_args`` it saves a checkpoint every
``TrainConfig.save_steps`` optimiser steps and at the last one into its output folder, keeping
only the newest (the previous one is deleted after the new one is complete). ``train`` resumes
from the newest complete checkpoint there: the weights, AdamW's state, the LR schedule, the RNG
states and the place in the shuffled data come back, so a resumed run ends with the weights an
uninterrupted run of the same seed ends with (tests/test_resume.py checks it bit for bit).

Nothing loaded executes code. The Trainer (read in transformers 5.25) reads the weights from
safetensors, ``trainer_state.json`` as JSON, and ``optimizer.pt``, ``scheduler.pt``,
``rng_state.pth`` and ``scaler.pt`` with ``torch.load(weights_only=True)``; it writes
``training_args.bin``, a full pickle, and never reads it. The resumed ``train`` call also runs
with TORCH_FORCE_WEIGHTS_ONLY_LOAD=1, which makes every ``torch.load`` weights-only whatever a
library version asks, so a checkpoint that holds anything but tensors and plain data is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from diffchat.profiles import SPEED_ONLY, TrainConfig

SETTINGS = "resume_settings.json"
PREFIX = "checkpoint-"


def checkpoint_args(cfg: TrainConfig) -> dict[str, Any]:
    """The ``TrainingArguments`` that make the Trainer checkpoint every ``cfg.save_steps`` steps."""
    return {"save_strategy": "steps", "save_steps": cfg.save_steps, "save_total_limit": 1}


def run_settings(rows: Any, cfg: TrainConfig, **more: Any) -> dict[str, Any]:
    """What makes a training run the same run, for ``train``: a hash of its rows, its config
    (less the fields that change only speed or checkpointing) and ``more`` (seed, base model)."""
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in SPEED_ONLY}
    rows_hash = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return json.loads(json.dumps({"rows": rows_hash, "config": config, **more}, sort_keys=True, default=str))


def _step(path: Path) -> int | None:
    number = path.name.removeprefix(PREFIX)
    return int(number) if path.name.startswith(PREFIX) and number.isdigit() and path.is_dir() else None


def _state(path: Path) -> dict[str, Any] | None:
    """A checkpoint's ``trainer_state.json``, when it is complete: the Trainer writes that file
    last, so one that reads back with the folder's own step means all the files are there."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        return state if state["global_step"] == _step(path) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in ``folder``, or None. Newer incomplete ones (a run
    killed while saving) are removed, so the resumed run rewrites them."""
    found = sorted(((s, p) for p in Path(folder).glob(PREFIX + "*") if (s := _step(p)) is not None),
                   reverse=True)
    for _, path in found:
        if _state(path) is not None:
            return path
        shutil.rmtree(path, ignore_errors=True)
    return None


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def train(trainer: Any, settings: dict[str, Any], log: Callable[[str], None] = print) -> int:
    """``trainer.train()``, resumed from the newest complete checkpoint in the trainer's output
    folder when there is one. ``settings`` (``run_settings``) are saved beside the checkpoints;
    checkpoints written with other settings are an error, not a silent resume. Returns the step
    resumed from (0: a fresh start).
    """
    folder = Path(trainer.args.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = last_checkpoint(folder)
    if checkpoint is None:
        (folder / SETTINGS).write_text(json.dumps(settings, indent=2))
        trainer.train()
        return 0
    try:
        saved = json.loads((folder / SETTINGS).read_text())
    except (OSError, ValueError):
        saved = None
    if saved != settings:
        raise ValueError(f"{folder} holds checkpoints of another training run (other rows or settings "
                         f"than {folder / SETTINGS} records): remove the folder to start over")
    state = _state(checkpoint) or {}
    step = state.get("global_step", 0)
    log(f"resuming from step {step} of {state.get('max_steps', '?')} ({checkpoint})")
    with _weights_only_loads():
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint))
        except pickle.UnpicklingError as e:
            raise ValueError(f"{checkpoint} holds more than tensors and plain data "
                             f"({str(e).strip().splitlines()[0]}): remove it to start over") from None
    return step
