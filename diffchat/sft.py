"""Supervised fine-tuning (section 3.2): maximise log P(y | T(x, i)), loss on y only.

The same completion-only trainer serves the PB model (section 3.1), which maps a
simplified prompt to a high-quality one. Training runs through TRL's ``SFTTrainer``
on prompt-completion rows, which masks the prompt tokens out of the loss and appends
EOS to every completion, so the model learns where a rewrite ends. Weights train in fp32
with bf16 (or fp16) autocast on a GPU: ``diffchat.device`` says why and decides.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffchat import checkpoints
from diffchat.data.miniworld import SPLITS
from diffchat.loading import base_path
from diffchat.profiles import TEMPLATE_T, TrainConfig
from diffchat.runner import StageContext, train_once, write_json

TEST_SPLITS = SPLITS[1:]


def sft_rows(triplets: Iterable[dict], template: str = TEMPLATE_T) -> list[dict[str, str]]:
    """InstructPE rows -> prompt-completion rows: prompt = T(x, i), completion = ' ' + y."""
    rows = []
    for n, t in enumerate(triplets, 1):
        for key in ("beautified_source_prompt", "instruction", "beautified_target_prompt"):
            if not isinstance(t.get(key), str) or not t[key].strip():
                raise ValueError(f"InstructPE row {n}: field {key!r} is missing or empty")
        rows.append({
            "prompt": template.format(x=t["beautified_source_prompt"].strip(), i=t["instruction"].strip()),
            "completion": " " + t["beautified_target_prompt"].strip(),
        })
    return rows


def _total_steps(n_rows: int, cfg: TrainConfig) -> int:
    return cfg.max_steps or math.ceil(math.ceil(n_rows / (cfg.batch_size * cfg.grad_accum)) * cfg.epochs)


def training_args(cfg: TrainConfig, n_rows: int, out_dir: str | Path, *, seed: int = 0,
                  dtype: str = "auto") -> dict[str, Any]:
    """The keyword arguments of the ``SFTConfig`` a completion trainer on ``n_rows`` rows runs
    with: ``cfg``'s numbers (a Table 3 column or a profile's scaled-down one), loss on the
    completion only, a cosine schedule, the precision ``diffchat.device.train_precision`` picks
    for ``dtype``. ``describe_call`` prints them as the call."""
    from diffchat.device import pick_device, train_precision

    device = pick_device()
    total_steps = _total_steps(n_rows, cfg)
    return dict(
        output_dir=str(Path(out_dir) / "trainer"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=int(cfg.warmup_ratio * total_steps),
        max_length=cfg.max_length,
        completion_only_loss=True,
        activation_checkpointing=cfg.activation_checkpointing,  # transformers 5's name (the old one warns)
        logging_steps=max(1, total_steps // 50),
        **checkpoints.checkpoint_args(cfg),
        report_to="none",
        seed=seed,
        **train_precision(device, dtype).trainer_flags,
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def describe_call(name: str, kwargs: dict[str, Any]) -> str:
    """``name(key=value, ...)``, one argument a line: a call as code, to print before running it."""
    return f"{name}(\n" + "".join(f"    {k}={v!r},\n" for k, v in kwargs.items()) + ")"


def completion_trainer(
    rows: list[dict[str, str]],
    base: str | Path,
    out_dir: Path,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    dtype: str = "auto",
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] = print,
) -> Any:
    """The TRL ``SFTTrainer`` that ``train_completion_model`` runs, ready to train.

    fp32 master weights with the autocast ``diffchat.device.train_precision`` picks for
    ``dtype`` (the compute precision, a profile's ``models.dtype``); completion-only loss
    (its collator sets the labels of the prompt's tokens to -100); LoRA or frozen layers as
    ``cfg`` says. Scratch files go to ``out_dir/trainer``, checkpoints every ``cfg.save_steps``
    steps among them (``diffchat.checkpoints``). Its ``train_dataset`` holds the tokenised rows
    with their labels (``row_loss`` reads one).
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from diffchat.device import MASTER_DTYPE, pick_device
    from diffchat.loading import freeze_all_but_last, load_causal_lm, load_tokenizer

    if not rows:
        raise ValueError("no training rows: the dataset is empty")
    device = pick_device()
    tokenizer = load_tokenizer(base)
    model = load_causal_lm(base, dtype=str(MASTER_DTYPE).replace("torch.", ""), device=device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _check_room(rows, tokenizer, cfg.max_length, log)
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    elif cfg.unfreeze_layers is not None:
        freeze_all_but_last(model, cfg.unfreeze_layers)
    args = SFTConfig(**training_args(cfg, len(rows), out_dir, seed=seed, dtype=dtype))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks))
    return trainer


def train_completion_model(
    rows: list[dict[str, str]],
    base: str | Path,
    out_dir: Path,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    dtype: str = "auto",
    log: Callable[[str], None] = print,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Fine-tune ``base`` on prompt-completion rows; save the (merged) model to ``out_dir``.

    ``cfg`` is a Table 3 column (or a profile's scaled-down version): epochs or max_steps,
    batch size, max length, learning rate, weight decay, layers to unfreeze, LoRA.
    ``dtype`` is the compute precision (a profile's ``models.dtype``); weights train and are
    saved in fp32 (``completion_trainer``). A run killed before it finished resumes from its
    last checkpoint in ``out_dir/trainer`` when called again with the same arguments, and ends
    with the same weights (``diffchat.checkpoints``). ``callbacks``: more ``TrainerCallback``s.
    Returns the loss curve, timings and the step it resumed from; also written to
    ``out_dir/train_log.json``.
    """
    from transformers import TrainerCallback

    from diffchat.device import pick_device, train_precision

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total_steps = _total_steps(len(rows), cfg)

    class _Progress(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs and state.global_step % max(1, total_steps // 10) == 0:
                log(f"step {state.global_step}/{total_steps} loss {logs['loss']:.4f}")

    trainer = completion_trainer(rows, base, out_dir, cfg, seed=seed, dtype=dtype,
                                 callbacks=[_Progress(), *callbacks], log=log)
    tokenizer = trainer.processing_class
    precision = train_precision(pick_device(), dtype)
    log(f"training in {precision} on {trainer.args.device.type}")
    start = time.time()
    settings = checkpoints.run_settings(rows, cfg, base=str(base), seed=seed, dtype=dtype)
    resumed = checkpoints.train(trainer, settings, log)
    seconds = time.time() - start
    trained = trainer.model
    if cfg.lora:
        trained = trained.merge_and_unload()
    trained.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    result = {
        "steps": trainer.state.global_step,
        "resumed_from": resumed,
        "seconds": round(seconds, 1),
        "rows": len(rows),
        "tokens_per_step_max": cfg.tokens_per_step(),
        "loss": history,
        "lora": cfg.lora,
        "precision": str(precision),
    }
    (out_dir / "train_log.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    return result


def _check_room(rows: list[dict[str, str]], tokenizer, max_length: int, log: Callable[[str], None]) -> None:
    """TRL drops a row whose prompt fills ``max_length`` (no completion token is left to learn):
    say how many, and stop with a clear error when that is every row."""
    lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in rows])["input_ids"]]
    full = sum(n >= max_length for n in lengths)
    if full == len(rows):
        raise ValueError(f"every one of the {len(rows)} prompts takes max_length={max_length} tokens "
                         f"or more (longest {max(lengths)}), leaving no room for the completion: "
                         "raise max_length or shorten the prompts")
    if full:
        log(f"{full} of {len(rows)} prompts take max_length={max_length} tokens or more and are dropped")


@dataclass
class RowLoss:
    """One training row as the trainer sees it (see ``row_loss``)."""

    input_ids: list[int]
    labels: list[int]  # input_ids, with -100 where no loss is taken (the prompt T(x, i))
    tokens: list[str]  # each input id decoded alone
    loss: float  # the trainer's own loss on this row alone


def row_loss(trainer, index: int = 0) -> RowLoss:
    """Row ``index`` of a ``completion_trainer``'s dataset: its tokens, its labels and the loss
    the trainer computes for it (``compute_loss`` on a batch of that row alone, no gradient).
    TRL drops rows that truncation to ``max_length`` leaves without a completion token, so the
    index counts the rows kept."""
    import torch

    data = trainer.train_dataset
    if not 0 <= index < len(data):
        raise IndexError(f"row {index} is not in the trainer's {len(data)} rows")
    example = {k: data[index][k] for k in ("input_ids", "labels") if k in data.column_names}
    batch = trainer._prepare_inputs(trainer.data_collator([example]))
    model = trainer.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    model.train(was_training)
    tokenizer = trainer.processing_class
    ids = batch["input_ids"][0].tolist()
    return RowLoss(ids, batch["labels"][0].tolist(), [tokenizer.decode([t]) for t in ids], float(loss))


def completion_labels(prompt_ids: Sequence[int], completion_ids: Sequence[int], eos_id: int) -> list[int]:
    """The labels of the row ``prompt + completion + [EOS]``: -100 ("no loss") under every prompt
    token, the token's own id under the completion and the EOS. What TRL's collator gives a
    prompt-completion row (``tests/test_sft.py`` checks it on the real trainer)."""
    return [-100] * len(prompt_ids) + [*completion_ids, eos_id]


def token_losses(model: Any, input_ids: Sequence[int], labels: Sequence[int]) -> list[float]:
    """-log P(token) for every token that carries loss, from the model's logits: the logits at
    position t predict token t + 1, so the labels shift by one. Their mean is the row's loss."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(torch.tensor([list(input_ids)], device=device)).logits[0, :-1].float()
    targets = torch.tensor(list(labels)[1:], device=device)
    keep = targets != -100
    logp = logits[keep].log_softmax(-1)
    return (-logp.gather(1, targets[keep][:, None]).squeeze(1)).tolist()


def plot_loss(history: list[dict], ax=None, label: str = "loss"):
    """Loss curve from ``train_completion_model``'s history."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (completion tokens)")
    ax.legend()
    return ax


# ---- the sft stage: train, then evaluate on both held-out splits --------------------------


def sft_init(ctx: StageContext) -> str:
    """Where SFT starts: the base model, or (tiny) the trained PB model."""
    if ctx.profile.models.sft_init == "pb":
        return str(ctx.input("pb"))
    return base_path(ctx)


def sft_stage(ctx: StageContext) -> dict:
    from diffchat.data.collect import read_instructpe
    from diffchat.edit_metrics import evaluate_model
    from diffchat.model import DiffChat

    ipe = ctx.input("instructpe")
    rows = sft_rows(read_instructpe(ipe, "train"))
    log = train_once(ctx, lambda out: train_completion_model(
        rows, sft_init(ctx), out, ctx.profile.sft, seed=ctx.profile.data.seed,
        dtype=ctx.profile.models.dtype, log=lambda m: ctx.log(f"sft: {m}")), resumable=True)
    # Tiny trains on sequences of at most 128 tokens (all of its rows fit); at inference the
    # budget also has to hold 96 new tokens, so it is at least 192.
    model = DiffChat.from_pretrained(ctx.out, max_length=max(ctx.profile.sft.max_length, 192))
    evaluation = {split: evaluate_model(model, read_instructpe(ipe, split)) for split in TEST_SPLITS}
    write_json(ctx.out / "sft_eval.json", {"splits": evaluation, "loss": log["loss"],
                                            "seconds": log["seconds"], "steps": log["steps"]})
    summary = {"train_seconds": log["seconds"], "steps": log["steps"]}
    for split, ev in evaluation.items():
        if "skipped" in ev:
            summary[split] = {"skipped": ev["skipped"]}
            ctx.log(f"sft: {split}: evaluation skipped: {ev['skipped']}")
            continue
        res, append = ev["results"]["diffchat_sft"]["all"], ev["results"]["append"]["all"]
        summary[split] = {k: res[k] for k in ("n", "edit", "strict", "exact", "loop", "ci") if k in res}
        summary[split].update({f"append_{k}": append[k] for k in ("edit", "ci") if k in append})
        if "skipped" in res:
            summary[split]["skipped"] = res["skipped"]
            ctx.log(f"sft: {split}: {res['skipped']}")
    return summary
