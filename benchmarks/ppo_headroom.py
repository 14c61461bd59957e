"""How much CI a policy could still win on the held-out splits: the SFT model's rows under a CI bar.

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


def main(runs: Path, bar: float, profile: str) -> None:
    from diffchat.data.collect import read_instructpe
    from diffchat.integrity import ci_score
    from diffchat.model import DiffChat
    from diffchat.runner import stage_dir

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
    args = parser.parse_args()
    main(args.runs, args.bar, args.profile)
