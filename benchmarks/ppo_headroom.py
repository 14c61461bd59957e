"""How much reward PPO could still win: on its own training prompts, and in CI on the held-out splits.

Training prompts (what PPO samples from): ``ppo.stage.training_headroom`` scores the SFT model's
greedy rewrites of ``--train-rows`` random training rows with the training reward: mean reward, raw
CI, the reward models' gains, and the share of rows whose thresholded CI is 0 (keywords lost: a whole
unit of reward the CI term could win back). PPO learns from reward differences between samples, so
where that share and the gains are near 0 there is little to learn.

For each held-out split of a finished run, the SFT model rewrites every row greedily; a row whose
raw CI (Listing 1 against the raw target y_o) is under ``--bar`` is counted, and split by cause:
rows whose PB-beautified input x' no longer names the raw subject (the PB model swapped or
misspelled it, so no rewrite of x' can bring it back) and the others (edits not made or made
wrongly: what PPO's CI reward can fix). Run:

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/ppo_headroom.py --runs runs [--bar 0.9]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(runs: Path, bar: float, profile: str, train_rows: int) -> None:
    from diffchat.data.collect import read_instructpe
    from diffchat.integrity import ci_score
    from diffchat.model import DiffChat
    from diffchat.pipeline import ppo_settings
    from diffchat.ppo.stage import training_headroom
    from diffchat.profiles import get_profile
    from diffchat.runner import stage_dir

    rewards = stage_dir("rewards", profile, runs)
    train = read_instructpe(stage_dir("instructpe", profile, runs), "train")
    report = training_headroom(stage_dir("sft", profile, runs), rewards / "rm_aesthetic", rewards / "rm_pickscore",
                               train, ppo_settings("ppo", get_profile(profile)), n=train_rows)
    print(f"train: SFT greedy on {report['rows']} training rows: reward {report['reward']:.4f}, raw CI "
          f"{report['ci_raw']:.4f}, aesthetic gain {report['aesthetic_gain']:+.4f}, PickScore gain "
          f"{report['pickscore_gain']:+.4f} (RM std units); keywords lost (CI term 0) in "
          f"{100 * report['ci_lost_share']:.1f}% of rows")
    model = DiffChat.from_pretrained(stage_dir("sft", profile, runs))
    for split in ("test_seen", "test_unseen"):
        rows = read_instructpe(stage_dir("instructpe", profile, runs), split)
        outputs = model.rewrite_batch([r["beautified_source_prompt"] for r in rows], [r["instruction"] for r in rows])
        low = [(r, y) for r, y in zip(rows, outputs)
               if ci_score(r["source_prompt"], r["instruction"], r["target_prompt"], y, threshold=None) < bar]
        swapped = [r for r, _ in low if r.get("subject") and r["subject"] not in r["beautified_source_prompt"]]
        print(f"{split}: {len(low)} of {len(rows)} SFT rewrites score raw CI < {bar}; in {len(swapped)} of them "
              f"x' no longer names the raw subject (PB swapped it), {len(low) - len(swapped)} are edits to fix")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--bar", type=float, default=0.9)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--train-rows", type=int, default=300)
    args = parser.parse_args()
    main(args.runs, args.bar, args.profile, args.train_rows)
