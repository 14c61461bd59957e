"""Text reward models on planted-taste labels: how well the prompt alone predicts the image scores.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/world_rewards.py --clip runs/tiny/clip
        [--root runs] [--n 1000] [--rm-steps N]

The rewards stage's own functions (``label_prompts`` with the five renderers, the tiny
profile's planted-taste scorers, ``train_reward_model`` with the profile's rm section) on the
data stage's PB prompts instead of InstructPE's beautified target prompts (which the PB model
writes in the same shape), so that no PB or InstructPE run is needed. Prints the held-out
Spearman of each text RM with the image scores (targets: aesthetic >= 0.6, PickScore stand-in
>= 0.4) and the seconds each part took (on a loaded machine they are inflated).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from diffchat import pipeline
from diffchat.data.collect import read_split
from diffchat.images import load_tis
from diffchat.labels import TARGETS, label_prompts, read_labels
from diffchat.loading import base_location
from diffchat.profiles import get_profile
from diffchat.reward_models import train_reward_model
from diffchat.scorers import profile_scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, required=True, help="the clip stage's folder")
    parser.add_argument("--root", type=Path, default=None, help="runs folder for the data and base stages")
    parser.add_argument("--n", type=int, default=None, help="prompts to label (default: n_reward_labels)")
    parser.add_argument("--rm-steps", type=int, default=None, help="cap the RM training steps")
    args = parser.parse_args()
    p = get_profile("tiny")
    if args.rm_steps:
        p = replace(p, rm=replace(p.rm, max_steps=args.rm_steps))
    n = args.n or p.data.n_reward_labels
    start = time.time()
    base = base_location(pipeline.ensure("base", p, args.root))
    # The last PB prompts: the clip stage's pool draws the first n_pairs of the same stream.
    prompts = [r["prompt"] for r in read_split(pipeline.stage_dir("data", p, args.root), "train", "pb")][-n:]
    print(f"data + base stages: {time.time() - start:.0f} s")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        tis = [load_tis(name) for name in p.models.tis[:p.images.label_tis]]
        path = label_prompts(prompts, tis, profile_scorer("aesthetic", p, clip_dir=args.clip),
                             profile_scorer("pickscore", p, clip_dir=args.clip), Path(tmp) / "labels.jsonl",
                             seed=p.images.seeds[0], batch_size=64, images=p.images, progress=False)
        labels = read_labels(path)
        print(f"labelling {len(labels)} prompts x {len(tis)} renderers: {time.time() - start:.0f} s")
        n_eval = max(1, len(labels) // 5)
        train, held_out = labels[n_eval:], labels[:n_eval]
        for target in TARGETS:
            start = time.time()
            res = train_reward_model(train, target, base, Path(tmp) / f"rm_{target}", p.rm, seed=p.data.seed,
                                     eval_rows=held_out)
            print(f"{target:10s} RM: held-out Spearman {res['spearman']:.3f} (n={res['n_eval']}), "
                  f"MSE {res['mse']:.4g} vs baseline {res['baseline_mse']:.4g}, "
                  f"{len(res['losses'])} logged losses, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
