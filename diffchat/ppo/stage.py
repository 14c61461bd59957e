"""The ppo stages: the full method and the paper's three ablations, each in its own run folder.

``ppo`` trains with pi+, pi- and VCI; ``ppo_no_pi_plus``, ``ppo_no_pi_minus`` and
``ppo_no_vci`` switch one of them off (Fig. 7, Table 2). After training, the stage compares
the PPO model with the SFT model it started from on the held-out splits (seen and unseen
subjects, and both together): mean sequence reward and its terms (greedy rewrites scored by
the same reward as training), mean raw CI, and edit accuracy, and records the KL to the
reference over training.
"""

from __future__ import annotations

import json
import random
from typing import Any

from diffchat.data.collect import read_instructpe
from diffchat.pipeline import ppo_settings
from diffchat.runner import StageContext, train_once, write_json

HELD_OUT = ("test_seen", "test_unseen")


def _sequence_reward(aesthetic_rm, pickscore_rm, cfg):
    """The training reward (ppo/rewards.py) from the two text reward model folders."""
    from diffchat.ppo.rewards import SequenceReward
    from diffchat.reward_models import TextRewardModel

    return SequenceReward(TextRewardModel.from_pretrained(aesthetic_rm),
                          TextRewardModel.from_pretrained(pickscore_rm), cfg)


def _greedy_rewrites(folder, rows: list[dict], cfg) -> list[str]:
    """A DiffChat model folder's greedy rewrites of InstructPE rows (x, i), at a budget that
    leaves room for the PPO run's longest response."""
    from diffchat.model import DiffChat

    model = DiffChat.from_pretrained(folder, max_length=max(cfg.max_new_tokens * 2, 192))
    return model.rewrite_batch([r["beautified_source_prompt"] for r in rows], [r["instruction"] for r in rows])


def planted_scores(prompts: list[str], seed: int = 0) -> list[float]:
    """Each prompt's planted aesthetic score (``images.taste``), averaged over the five mini-world
    renderers' images at one seed: how good its pictures are by the taste the world was given."""
    import numpy as np

    from diffchat.images.render import RENDERERS, render_batch
    from diffchat.images.taste import planted_aesthetic

    scores = np.mean([planted_aesthetic(render_batch(prompts, seed, variant)) for variant in RENDERERS], axis=0)
    return [float(v) for v in scores]


def evaluate_against_sft(ppo_dir, sft_dir, rewards_dir, splits: dict[str, list[dict]], cfg) -> dict[str, Any]:
    """SFT and PPO models' greedy rewrites of the same held-out rows, scored by the training
    reward, by the planted aesthetic score of their mini-world images (``planted``, a check the
    training never sees), by how often they loop (``loop``), by the mini-world's edit metrics and
    by Table 2's keyword diagnostics (``edit_metrics.keyword_diagnostics``): per split, and over
    all of them ("held_out"). ``reward_std`` is the spread of the per-row reward, the unit a
    change is judged in."""
    from statistics import pstdev

    from diffchat.edit_metrics import (
        evaluate_rewrites,
        has_edit_metadata,
        has_loop,
        keyword_diagnostics,
    )

    reward = _sequence_reward(rewards_dir / "rm_aesthetic", rewards_dir / "rm_pickscore", cfg)
    rows = [r for split_rows in splits.values() for r in split_rows]
    outputs, terms = {}, {}
    for method, folder in (("sft", sft_dir), ("ppo", ppo_dir)):
        outputs[method] = _greedy_rewrites(folder, rows, cfg)
        terms[method] = reward(rows, outputs[method])[1]
        terms[method]["planted"] = planted_scores(outputs[method])
        terms[method]["loop"] = [float(has_loop(text)) for text in outputs[method]]
    spans, start = {}, 0
    for name, split_rows in splits.items():
        spans[name], start = (start, start + len(split_rows)), start + len(split_rows)
    spans["held_out"] = (0, len(rows))
    report = {}
    for name, (a, b) in spans.items():
        part = rows[a:b]
        results = {}
        for method in outputs:
            mean = {k: round(sum(v[a:b]) / (b - a), 4) for k, v in terms[method].items()}
            mean["reward_std"] = round(pstdev(terms[method]["reward"][a:b]), 4)
            edits, keywords = {}, {}
            if has_edit_metadata(part):
                edits = evaluate_rewrites(part, outputs[method][a:b])["all"]
                keywords = keyword_diagnostics(part, outputs[method][a:b])
            results[method] = {**mean, **{k: edits[k] for k in ("edit", "strict", "exact") if k in edits},
                               **keywords, "n": b - a}
        shown = [{"x": r["beautified_source_prompt"], "i": r["instruction"], "sft": s, "ppo": p}
                 for r, s, p in zip(part[:8], outputs["sft"][a:b], outputs["ppo"][a:b])]
        report[name] = {"results": results, "examples": shown}
    return report


def training_headroom(sft_dir, aesthetic_rm, pickscore_rm, rows: list[dict], cfg, n: int = 200,
                      seed: int = 0) -> dict[str, Any]:
    """What the reward leaves PPO to win on its own training prompts: the SFT model's greedy
    rewrites of `n` random training rows, scored by the training reward.

    PPO learns only from differences in reward between its samples. Where the SFT model already
    keeps every keyword of nearly every training row (thresholded CI 1) and the reward models'
    gains are close to 0, samples differ little and the held-out change is small; this measures
    how small. Returns the rows scored, the mean reward, mean raw CI, the reward models' mean
    gains and the share of rows whose thresholded CI is 0 (keywords lost: what CI can fix).
    """
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    reward = _sequence_reward(aesthetic_rm, pickscore_rm, cfg)
    terms = reward(picked, _greedy_rewrites(sft_dir, picked, cfg))[1]
    mean = {k: round(sum(terms[k]) / len(picked), 4)
            for k in ("reward", "ci_raw", "aesthetic_gain", "pickscore_gain")}
    return {"rows": len(picked), **mean,
            "ci_lost_share": round(sum(c == 0.0 for c in terms["ci"]) / len(picked), 4)}


def ppo_stage(ctx: StageContext) -> dict[str, Any]:
    from diffchat.ppo.trainer import train_ppo

    p = ctx.profile
    cfg = ppo_settings(ctx.stage, p)
    rows = read_instructpe(ctx.input("instructpe"), "train")
    sft_dir, rewards_dir = ctx.input("sft"), ctx.input("rewards")

    def show(entry: dict[str, Any]) -> None:
        if entry["iteration"] % max(1, cfg.iterations // 10) == 0:
            ctx.log(f"{ctx.stage}: iteration {entry['iteration']}/{cfg.iterations} reward "
                    f"{entry['reward']:.3f} ci_raw {entry['ci_raw']:.3f} kl {entry['kl']:.3f}")

    def train(folder) -> dict[str, Any]:
        log = train_ppo(sft_dir, rewards_dir / "rm_aesthetic", rewards_dir / "rm_pickscore", rows, folder,
                        p.rl, cfg, seed=p.data.seed, log=show)
        write_json(folder / "train_log.json", {"iterations": len(log["iterations"])})
        return log

    train_once(ctx, train, resumable=True)
    log = json.loads((ctx.out / "ppo_log.json").read_text())
    splits = {name: read_instructpe(ctx.input("instructpe"), name) for name in HELD_OUT}
    splits = {name: rows for name, rows in splits.items() if rows}
    evaluation = evaluate_against_sft(ctx.out, sft_dir, rewards_dir, splits, cfg) if splits else {}
    history = log["iterations"]
    write_json(ctx.out / "ppo_eval.json", evaluation)
    summary: dict[str, Any] = {
        "iterations": len(history),
        "max_kl": round(max(h["kl"] for h in history), 4),
        "seconds_per_iteration": round(sum(h["seconds"] for h in history) / len(history), 2),
    }
    summary.update({name: part["results"] for name, part in evaluation.items()})
    return summary
