"""The prompt-beautification (PB) model of section 3.1.

Fine-tuned on <simplified, high-quality> prompt pairs, it turns a user-friendly caption
("a cute boy") into a model-friendly prompt with descriptions and tags (appendix A.1,
Fig. 8). InstructPE assembly runs it on InstructPix2Pix's raw prompts x_o and y_o.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from diffchat.generation import TemplateLM, check_text
from diffchat.profiles import TrainConfig
from diffchat.runner import StageContext, train_once, write_json

# BeautifulPrompt's template (same authors); the paper does not print the PB template.
PB_TEMPLATE = (
    "Instruction: Give a simple description of the image to generate a drawing prompt.\n"
    "Input: {x}\nOutput:"
)


def pb_rows(pairs: Iterable[dict]) -> list[dict[str, str]]:
    """<simplified, prompt> pairs -> prompt-completion rows for completion-only training."""
    rows = []
    for n, p in enumerate(pairs, 1):
        for key in ("simplified", "prompt"):
            if not isinstance(p.get(key), str) or not p[key].strip():
                raise ValueError(f"PB pair {n}: field {key!r} is missing or empty")
        rows.append({"prompt": PB_TEMPLATE.format(x=p["simplified"].strip()),
                     "completion": " " + p["prompt"].strip()})
    return rows


def train_pb(pairs: Sequence[dict], base: str | Path, out_dir: Path, cfg: TrainConfig,
             *, seed: int = 0, dtype: str = "auto", log=print) -> dict[str, Any]:
    """Fine-tune the PB model; returns the loss curve (see ``sft.train_completion_model``)."""
    from diffchat.sft import train_completion_model

    return train_completion_model(pb_rows(pairs), base, out_dir, cfg, seed=seed, dtype=dtype, log=log)


class PBModel(TemplateLM):
    """Beautify simplified prompts with a trained PB model.

    Greedy, with repeated 2-grams of the output blocked: a prompt never lists the same tag
    twice, and a small model that is unsure of the next tag otherwise loops on one
    ("trending on pixiv, trending on pixiv"). With 3-grams it invents near-repeats instead
    ("trending by artstation"); measured on the tiny PB model, 2-grams give clean tags and
    the same keyword retention.
    """

    template = PB_TEMPLATE

    def beautify(self, prompts: Sequence[str], *, batch_size: int | None = None, progress: bool = False,
                 **decoding: Any) -> list[str]:
        if isinstance(prompts, str):
            raise TypeError("beautify takes a list of prompts, not one string: pass [prompt]")
        new = decoding.get("max_new_tokens", self.max_new_tokens)
        texts = [self.fill(new, x=check_text(p, "prompt", n)) for n, p in enumerate(prompts)]
        decoding = {"no_repeat_output_ngram": 2, **decoding}
        return self.generate(texts, batch_size=batch_size, progress=progress, **decoding)


def mentions_any_tag(prompt: str, tags: Iterable[str]) -> bool:
    """True when one of ``tags`` appears anywhere in the prompt as whole words. (The mini-world's
    ``has_quality_tag`` is stricter: a tag of its own list, standing alone between commas.)"""
    low = prompt.lower()
    return any(re.search(rf"(?<!\w){re.escape(t.lower())}(?!\w)", low) for t in tags)


def source_tags(pairs: Iterable[dict], top: int = 50, max_words: int = 4) -> list[str]:
    """The quality tags of a real PB data set: the comma-separated phrases after a prompt's
    description ("highly detailed", "artstation") that recur in at least 1% of the
    high-quality prompts (and at least twice), most frequent first. The mini-world has its
    own tag list; real prompts do not, so the tags are read off the data."""
    counts: Counter[str] = Counter()
    n = 0
    for p in pairs:
        n += 1
        phrases = {t.strip().lower() for t in p["prompt"].split(",")[1:]}
        counts.update(t for t in phrases if t and len(t.split()) <= max_words)
    least = max(2, math.ceil(0.01 * n))
    return [t for t, c in counts.most_common(top) if c >= least]


def evaluate_pb(inputs: Sequence[str], outputs: Sequence[str], tags: Iterable[str]) -> dict[str, float]:
    """Does beautification keep the input's content and add tags?

    keep: mean raw CI score of the output against the input (the input plays x_o and y_o,
    with no instruction, so every keyword weighs 1); tagged: share of outputs carrying a
    quality tag; input_tagged: the same for the inputs (should be 0).
    """
    from diffchat.integrity import ci_score

    tags = list(tags)
    # With i = x_o no keyword is highlighted (highlighted needs a keyword not in x_o).
    keep = [ci_score(x, x, x, y, threshold=None) for x, y in zip(inputs, outputs)]
    return {
        "n": len(inputs),
        "keep_ci": round(sum(keep) / max(1, len(keep)), 4),
        "tagged": round(sum(mentions_any_tag(y, tags) for y in outputs) / max(1, len(outputs)), 4),
        "input_tagged": round(sum(mentions_any_tag(x, tags) for x in inputs) / max(1, len(inputs)), 4),
    }


# ---- the pb stage ------------------------------------------------------------------------


def pb_stage(ctx: StageContext) -> dict:
    from diffchat.data.collect import read_split
    from diffchat.data.miniworld import quality_tags
    from diffchat.loading import base_path

    data = ctx.input("data")
    train = read_split(data, "train", "pb")
    log = train_once(ctx, lambda out: train_pb(train, base_path(ctx), out, ctx.profile.pb,
                                               seed=ctx.profile.data.seed, dtype=ctx.profile.models.dtype,
                                               log=lambda m: ctx.log(f"pb: {m}")), resumable=True)
    if ctx.profile.data.source == "miniworld":
        tags, tags_from = quality_tags(), "the mini-world's quality tags"
    else:
        tags, tags_from = source_tags(train), "tags recurring in the PB training prompts"
    test = read_split(data, "test", "pb")[:300]
    report: dict[str, Any] = {"tags_from": tags_from, "tags": list(tags)}
    skipped = []
    if not test:
        skipped.append("all metrics: the data stage wrote no PB test pairs")
        metrics: dict[str, Any] = {"n": 0}
        report["examples"] = []
    else:
        pb = PBModel.from_pretrained(ctx.out)
        inputs = [r["simplified"] for r in test]
        outputs = pb.beautify(inputs)
        metrics = evaluate_pb(inputs, outputs, tags)
        report["examples"] = [{"simplified": i, "beautified": o, "reference": r["prompt"]}
                              for i, o, r in list(zip(inputs, outputs, test))[:12]]
        if not tags:
            skipped.append("tagged, input_tagged: no tag recurs in the PB training prompts")
            metrics = {k: v for k, v in metrics.items() if k not in ("tagged", "input_tagged")}
    for why in skipped:
        ctx.log(f"pb: skipped {why}")
    write_json(ctx.out / "pb_eval.json", {"metrics": metrics, **report, "skipped": skipped,
                                           "loss": log["loss"], "seconds": log["seconds"]})
    return {**metrics, **({"skipped": skipped} if skipped else {}),
            "train_seconds": log["seconds"], "steps": log["steps"]}
