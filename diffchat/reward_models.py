"""Text reward models (section 3.3): a prompt's aesthetic score and PickScore, without images.

PPO needs a reward for every sampled prompt, and making and scoring images inside the
loop is slow. As BeautifulPrompt does, we train one text regression model per score on the
reward labels (``diffchat.labels``) that predicts it from the prompt alone. Inputs
(BeautifulPrompt): the aesthetic RM sees ``prompt + eos``; the PickScore RM sees
``"Input: {raw}\\nOutput: {prompt}{eos}"`` when the raw prompt is known, else
``prompt + eos``; long inputs are cut on the left so the end of the prompt stays.
Labels are standardised for training; the mean and std are saved beside the model and
undone at prediction, so predictions are in the scorer's own units.

If the tokenizer pads with its eos token, the appended eos counts as padding and the head
reads the prompt's last real token instead (harmless; BLOOM has a separate pad token).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from diffchat import checkpoints
from diffchat.device import MASTER_DTYPE, pick_device, train_precision
from diffchat.labels import TARGETS, label_prompts, read_labels
from diffchat.loading import freeze_all_but_last, load_regression_model, load_tokenizer
from diffchat.profiles import TrainConfig
from diffchat.runner import StageContext, train_once, write_json

LABEL_STATS = "label_stats.json"


# ---------------------------------------------------------------- metrics


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation, ties given their mean rank.

    0.0 when either side is constant: it ranks nothing (scipy would answer nan), as with the
    baseline that predicts the training mean for every prompt.
    """
    if len(a) != len(b):
        raise ValueError(f"{len(a)} values against {len(b)}")
    if len(a) < 2 or len(set(a)) == 1 or len(set(b)) == 1:
        return 0.0
    return float(spearmanr(a, b).statistic)


def _mse(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))


# ---------------------------------------------------------------- text reward models


def format_input(target: str, prompt: str, raw: str | None, eos: str) -> str:
    """The text a reward model reads (BeautifulPrompt's formats)."""
    if target not in TARGETS:
        raise ValueError(f"unknown reward target {target!r}: choose one of {', '.join(TARGETS)}")
    if target == "pickscore" and raw is not None:
        return f"Input: {raw}\nOutput: {prompt}{eos}"
    return f"{prompt}{eos}"


def _prepare_tokenizer(tokenizer: Any, max_length: int) -> Any:
    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = max_length
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class TextRewardModel:
    """A trained text reward model: prompts in, scores in the scorer's units out."""

    def __init__(self, model: Any, tokenizer: Any, target: str, mean: float, std: float,
                 max_length: int, device: torch.device):
        self.model = model.to(device).eval()
        self.tokenizer = _prepare_tokenizer(tokenizer, max_length)
        self.target = target
        self.mean = mean
        self.std = std
        self.max_length = max_length
        self.device = device

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: str = "auto") -> TextRewardModel:
        """Load a folder written by ``train_reward_model``."""
        path = Path(path)
        stats = json.loads((path / LABEL_STATS).read_text())
        dev = pick_device(str(device) if device is not None else None)
        model = load_regression_model(path, dtype=dtype, device=dev)
        return cls(model, load_tokenizer(path), stats["target"], stats["mean"], stats["std"],
                   stats["max_length"], dev)

    @torch.no_grad()
    def predict(self, prompts: Sequence[str], raws: Sequence[str | None] | None = None,
                batch_size: int = 32) -> list[float]:
        """Predicted scores, batched, without gradients.

        ``raws``: the raw prompt behind each prompt (None where unknown); only the PickScore
        model reads them.
        """
        if raws is not None and len(raws) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(raws)} raw prompts")
        eos = self.tokenizer.eos_token or ""
        texts = [format_input(self.target, p, None if raws is None else raws[i], eos)
                 for i, p in enumerate(prompts)]
        preds: list[float] = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, add_special_tokens=False,
                                 return_tensors="pt").to(self.device)
            logits = self.model(**enc).logits.squeeze(-1).float().cpu()
            preds.extend((logits * self.std + self.mean).tolist())
        return preds


def encode_rows(rows: Sequence[dict], target: str, tokenizer: Any, max_length: int,
                mean: float, std: float) -> Any:
    """Label rows -> the training dataset: the model's input text (``format_input``) tokenised,
    and the label standardised with the training labels' ``mean`` and ``std``."""
    from datasets import Dataset

    eos = tokenizer.eos_token or ""
    texts = [format_input(target, r["prompt"], r.get("raw"), eos) for r in rows]
    enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=False)
    labels = [(float(r[target]) - mean) / std for r in rows]
    return Dataset.from_dict({"input_ids": enc["input_ids"],
                              "attention_mask": enc["attention_mask"], "labels": labels})


def _n_steps(n_rows: int, cfg: TrainConfig) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = math.ceil(n_rows / cfg.batch_size / cfg.grad_accum)
    return math.ceil(per_epoch * cfg.epochs)


def train_reward_model(
    rows: list[dict],
    target: str,
    base: str | Path,
    out_dir: Path,
    cfg: TrainConfig,
    seed: int = 0,
    eval_rows: list[dict] | None = None,
    dtype: str = "auto",
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Fit a regression head on ``base`` (a folder or hub id) to predict ``target`` from text.

    ``rows`` are reward labels (``prompt``, the target, optionally ``raw``). Settings come
    from ``cfg`` (the profile's rm section: Table 3 trains all layers for 1 epoch). The model,
    tokenizer and label statistics are saved in ``out_dir``. Returns the training losses
    per step and, with ``eval_rows``, held-out MSE and Spearman beside those of predicting
    the training mean (``loss_steps`` gives each loss's step: at most ~200 are logged).
    ``dtype`` is the compute precision; weights train in fp32 (``diffchat.device.train_precision``).
    Checkpoints go to ``out_dir/trainer`` every ``cfg.save_steps`` steps: called again with the
    same arguments after a kill, it resumes from the last one and ends with the same weights
    (``diffchat.checkpoints``); ``resumed_from`` in the result says from which step.
    ``callbacks``: more ``TrainerCallback``s.
    """
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    if target not in TARGETS:
        raise ValueError(f"unknown reward target {target!r}: choose one of {', '.join(TARGETS)}")
    if cfg.lora:
        raise ValueError("reward models train their layers directly, not LoRA (Table 3, RMs)")
    if not rows:
        raise ValueError("no training rows")
    out_dir = Path(out_dir)
    labels = np.array([float(r[target]) for r in rows])
    mean, std = float(labels.mean()), float(labels.std())
    std = std if std > 0 else 1.0

    device = pick_device()
    precision = train_precision(device, dtype)
    tokenizer = _prepare_tokenizer(load_tokenizer(base), cfg.max_length)
    # A causal-LM backbone gets a new score head, drawn from torch's global generator: seeded
    # here, or the head (and the trained model) would depend on what the process ran before
    # (in notebook 04, on whether it trained the CLIP first).
    torch.manual_seed(seed)
    model = load_regression_model(base, dtype=str(MASTER_DTYPE).replace("torch.", ""), device=device,
                                  pad_token_id=tokenizer.pad_token_id)
    freeze_all_but_last(model, cfg.unfreeze_layers)
    train = encode_rows(rows, target, tokenizer, cfg.max_length, mean, std)

    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        **precision.trainer_flags,
        use_cpu=device.type == "cpu",
        logging_steps=max(1, _n_steps(len(rows), cfg) // 200),  # at most ~200 curve points
        dataloader_pin_memory=device.type == "cuda",
        **checkpoints.checkpoint_args(cfg),
        report_to="none",
        seed=seed,
        disable_tqdm=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=DataCollatorWithPadding(tokenizer), callbacks=list(callbacks))
    settings = checkpoints.run_settings(rows, cfg, target=target, base=str(base), seed=seed, dtype=dtype)
    resumed = checkpoints.train(trainer, settings, log)
    trainer.save_model(str(out_dir))
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    tokenizer.save_pretrained(str(out_dir))
    stats = {"target": target, "mean": mean, "std": std, "max_length": cfg.max_length,
             "n_train": len(rows), "base": str(base)}
    (out_dir / LABEL_STATS).write_text(json.dumps(stats, indent=2))

    logged = [e for e in trainer.state.log_history if "loss" in e]
    result: dict[str, Any] = {"target": target, "losses": [e["loss"] for e in logged],
                              "loss_steps": [e["step"] for e in logged], "label_mean": mean,
                              "label_std": std, "n_train": len(rows), "precision": str(precision),
                              "resumed_from": resumed}
    if eval_rows:
        rm = TextRewardModel(trainer.model, tokenizer, target, mean, std, cfg.max_length,
                             trainer.model.device)
        y = [float(r[target]) for r in eval_rows]
        pred = rm.predict([r["prompt"] for r in eval_rows], [r.get("raw") for r in eval_rows])
        baseline = [mean] * len(y)
        result.update(
            n_eval=len(y), y_true=y, y_pred=pred,
            mse=_mse(y, pred), spearman=spearman(y, pred),
            baseline_mse=_mse(y, baseline), baseline_spearman=spearman(y, baseline),
        )
    return result


def plot_reward_fit(y_true: Sequence[float], y_pred: Sequence[float], path_or_ax: Any,
                    title: str | None = None) -> Any:
    """Scatter of predicted against true scores with the y = x line.

    ``path_or_ax``: a matplotlib Axes to draw on (returned), or a file path to save a new
    figure to (the Path is returned). Uses no pyplot state, so it works under Agg.
    """
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    ax = path_or_ax if isinstance(path_or_ax, Axes) else Figure(figsize=(4, 4)).add_subplot()
    ax.scatter(y_true, y_pred, s=8, alpha=0.6)
    lo = float(min(min(y_true), min(y_pred)))
    hi = float(max(max(y_true), max(y_pred)))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, linestyle="--")
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score")
    ax.set_title(title or f"Spearman {spearman(y_true, y_pred):.3f}")
    if isinstance(path_or_ax, Axes):
        return ax
    path = Path(path_or_ax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=100)
    return path



def save_untrained_reward_model(folder: Path, tokenizer: Any, config: Any, target: str, *, seed: int = 0,
                                mean: float = 5.0, std: float = 1.0, max_length: int = 64) -> Path:
    """A random-init text reward model folder with label statistics, laid out as
    ``train_reward_model`` writes one: what PPO's tests and benchmarks score with where the
    reward's values do not matter (``config`` is a ``TinyLMConfig``)."""
    from diffchat.tiny import build_regression_model

    build_regression_model(tokenizer, config, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (Path(folder) / LABEL_STATS).write_text(json.dumps(
        {"target": target, "mean": mean, "std": std, "max_length": max_length}))
    return Path(folder)


# ---------------------------------------------------------------- the rewards stage


def rewards_stage(ctx: StageContext) -> dict:
    from diffchat.data.collect import read_instructpe
    from diffchat.images import load_tis
    from diffchat.loading import base_path
    from diffchat.scorers import profile_scorer

    p = ctx.profile
    rows = read_instructpe(ctx.input("instructpe"), "train")[:p.data.n_reward_labels]
    raw_of = {r["beautified_target_prompt"]: r["beautified_source_prompt"] for r in rows}
    # Labels depend on the TIS model, the scorers and the image settings: cache them per setup.
    setup = {k: v for k, v in ctx.config.items() if k not in ("rm", "n", "base")}
    setup["clip"] = json.loads((ctx.input("clip") / "manifest.json").read_text())["key_hash"]
    tag = hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()[:12]
    labels_path = ctx.cache / f"labels-{tag}.jsonl"
    clip = ctx.input("clip")
    tis = [load_tis(name) for name in p.models.tis[:p.images.label_tis]]
    label_prompts(list(raw_of), tis, profile_scorer("aesthetic", p, clip_dir=clip),
                  profile_scorer("pickscore", p, clip_dir=clip), labels_path, seed=p.images.seeds[0],
                  images=p.images)
    by_prompt = {r["prompt"]: r for r in read_labels(labels_path)}
    labels = [{**by_prompt[q], "raw": raw} for q, raw in raw_of.items()]
    with (ctx.out / "labels.jsonl").open("w", encoding="utf-8") as f:
        for r in labels:
            f.write(json.dumps({k: r[k] for k in ("prompt", *TARGETS)}) + "\n")
    reward_base = base_path(ctx) if p.models.reward in ("tiny", p.models.policy) else p.models.reward
    n_eval = max(1, len(labels) // 5)
    train, held_out = labels[n_eval:], labels[:n_eval]

    def fit(folder: Path) -> dict[str, Any]:
        """Both RMs, each resuming from its checkpoints; one that finished is not trained again."""
        results = {}
        for target in TARGETS:
            done = folder / f"rm_{target}" / "train_log.json"
            if not done.is_file():
                write_json(done, train_reward_model(train, target, reward_base, done.parent, p.rm,
                                                    seed=p.data.seed, eval_rows=held_out,
                                                    log=lambda m, t=target: ctx.log(f"rewards ({t}): {m}")))
            results[target] = json.loads(done.read_text())
        write_json(folder / "train_log.json", results)
        return results

    results = train_once(ctx, fit, resumable=True)
    write_json(ctx.out / "rewards_eval.json", results)
    return {t: {k: float(f"{r[k]:.4g}") for k in ("mse", "spearman", "baseline_mse", "baseline_spearman")}
            for t, r in results.items()}
