"""The ppo stages: the full method and the paper's three ablations, each in its own run folder.

``ppo`` trains with pi+, pi- and VCI; ``ppo_no_pi_plus``, ``ppo_no_pi_minus`` and
``ppo_no_vci`` switch one of them off (Fig. 7, Table 2). After training, the stage compares
the PPO model with the SFT model it started from on the held-out seen-subject split:
mean sequence reward and its terms (greedy rewrites scored by the same reward as training),
mean raw CI, and edit accuracy, and records the KL to the reference over training.
"""

from __future__ import annotations

import json
from typing import Any

from diffchat.data.collect import read_instructpe
from diffchat.pipeline import ppo_settings
from diffchat.runner import StageContext, train_once, write_json

EVAL_SPLIT = "test_seen"

def evaluate_against_sft(ppo_dir, sft_dir, rewards_dir, rows: list[dict], cfg) -> dict[str, Any]:
    """SFT and PPO models' greedy rewrites of the same held-out rows, scored by the training
    reward and by the mini-world's edit metrics."""
    from diffchat.edit_metrics import evaluate_rewrites
    from diffchat.model import DiffChat
    from diffchat.ppo.rewards import SequenceReward
    from diffchat.reward_models import TextRewardModel

    reward = SequenceReward(TextRewardModel.from_pretrained(rewards_dir / "rm_aesthetic"),
                            TextRewardModel.from_pretrained(rewards_dir / "rm_pickscore"), cfg)
    results, examples = {}, {}
    for method, folder in (("sft", sft_dir), ("ppo", ppo_dir)):
        model = DiffChat.from_pretrained(folder, max_length=max(cfg.max_new_tokens * 2, 192))
        outputs = model.rewrite_batch([r["beautified_source_prompt"] for r in rows],
                                      [r["instruction"] for r in rows])
        _, terms = reward(rows, outputs)
        mean = {k: round(sum(v) / len(v), 4) for k, v in terms.items()}
        edits = evaluate_rewrites(rows, outputs)["all"] if all("kind" in r for r in rows) else {}
        results[method] = {**mean, **{k: edits[k] for k in ("edit", "strict", "exact") if k in edits},
                           "n": len(rows)}
        examples[method] = outputs[:8]
    shown = [{"x": r["beautified_source_prompt"], "i": r["instruction"], "sft": s, "ppo": p}
             for r, s, p in zip(rows[:8], examples["sft"], examples["ppo"])]
    return {"results": results, "examples": shown}


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
    held_out = read_instructpe(ctx.input("instructpe"), EVAL_SPLIT)
    evaluation = evaluate_against_sft(ctx.out, sft_dir, rewards_dir, held_out, cfg) if held_out else {}
    history = log["iterations"]
    write_json(ctx.out / "ppo_eval.json", {"split": EVAL_SPLIT, **evaluation})
    summary: dict[str, Any] = {
        "iterations": len(history),
        "max_kl": round(max(h["kl"] for h in history), 4),
        "seconds_per_iteration": round(sum(h["seconds"] for h in history) / len(history), 2),
    }
    if evaluation:
        summary[EVAL_SPLIT] = evaluation["results"]
    return summary
