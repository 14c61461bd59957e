"""The tiny CLIP on the mini-world: train it (or load a trained one) and print its checks.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/world_clip.py [--folder FOLDER]
        [--steps 3000 --n-pairs 10000 --batch-size 128 --colour-negatives 4] [--out clip_eval.json]

Prints what the clip stage writes to clip_eval.json, each number beside its target
(DESIGN 8 and issue 22): retrieval recall@1 among 32 (chance 0.031), CLIP-S AUC per kind of
swapped word (chance 0.5), D-CLIP-S of real edits against a shuffled control, the aesthetic
head's Spearman with the planted formula, the PB prompts' and a reward-hacking prompt's shifts
in standard deviations of plain captions. Training is a fixed number of steps; its seconds are
printed and depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from diffchat.images.clip import WorldClip
from diffchat.images.clip_train import evaluate_clip, taste_report, train_world_clip
from diffchat.profiles import get_profile

TARGETS = [
    ("retrieval seen, image->text", lambda r: r["retrieval_seen"]["image_to_text"], ">=", 0.85),
    ("retrieval seen, text->image", lambda r: r["retrieval_seen"]["text_to_image"], ">=", 0.85),
    ("retrieval unseen, image->text", lambda r: r["retrieval_unseen"]["image_to_text"], ">=", 0.80),
    ("retrieval unseen, text->image", lambda r: r["retrieval_unseen"]["text_to_image"], ">=", 0.80),
    ("AUC all", lambda r: r["auc_seen"]["all"]["auc"], ">=", 0.80),
    ("AUC colour", lambda r: r["auc_seen"]["colour"]["auc"], ">=", 0.85),
    ("AUC scene", lambda r: r["auc_seen"]["scene"]["auc"], ">=", 0.85),
    ("AUC time", lambda r: r["auc_seen"]["time"]["auc"], ">=", 0.85),
    ("AUC weather", lambda r: r["auc_seen"]["weather"]["auc"], ">=", None),
    ("AUC subject, other group", lambda r: r["auc_seen"]["subject_other_group"]["auc"], ">=", 0.75),
    ("AUC subject, same group", lambda r: r["auc_seen"]["subject_same_group"]["auc"], ">=", None),
    ("AUC object", lambda r: r["auc_seen"]["object"]["auc"], ">=", None),
    ("AUC unseen subjects, all", lambda r: r["auc_unseen"]["auc"], ">=", None),
    ("D-CLIP-S real edits, mean", lambda r: r["dclip"]["real"]["mean"], ">=", 0.35),
    ("D-CLIP-S real edits, share > 0", lambda r: r["dclip"]["real"]["share_positive"], ">=", 0.85),
    ("D-CLIP-S shuffled, |mean|", lambda r: abs(r["dclip"]["shuffled"]["mean"]), "<=", 0.08),
    ("planted taste: head Spearman", lambda r: r["planted_taste"]["aesthetic_head_spearman"], ">=", None),
    ("PB shift, PickScore stand-in (std)", lambda r: r["planted_taste"]["pb_shift_std"]["pickscore"], ">=", 0.5),
    ("PB shift, planted taste head (std)", lambda r: r["planted_taste"]["pb_shift_std"]["aesthetic"], ">=", None),
    ("PB shift, HPS stand-in (std)", lambda r: r["planted_taste"]["pb_shift_std"]["hps"], ">=", None),
    ("hack shift, planted formula (std)", lambda r: r["planted_taste"]["hack_shift_std"]["formula"], ">=", 1.0),
    ("hack shift, planted taste head (std)", lambda r: r["planted_taste"]["hack_shift_std"]["aesthetic"], ">=", 1.0),
    ("hack: content CLIP-S falls (plain - hack)",
     lambda r: r["planted_taste"]["hack_content_clip"]["plain"] - r["planted_taste"]["hack_content_clip"]["hack"],
     ">=", 0.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a trained tiny CLIP (the clip stage's folder); "
                        "without config.json in it, train one there (default: a temporary folder)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--n-pairs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--colour-negatives", type=int, help="colour-swapped captions per image (0: none)")
    parser.add_argument("--colour-aux", type=float)
    parser.add_argument("--colour-twins", type=int)
    parser.add_argument("--n-eval", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    cfg = get_profile("tiny").clip
    changes = {k: v for k, v in (("steps", args.steps), ("n_pairs", args.n_pairs), ("batch_size", args.batch_size),
                                 ("colour_negatives", args.colour_negatives), ("colour_aux", args.colour_aux), ("colour_twins", args.colour_twins), ("n_eval", args.n_eval),
                                 ("seed", args.seed)) if v is not None}
    cfg = replace(cfg, **changes)
    result: dict = {"config": asdict(cfg)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        if not (folder / "config.json").is_file():
            result["training"] = train_world_clip(folder, cfg)
            result["training"].pop("losses")
            print(json.dumps(result["training"]))
        result.update(evaluate_clip(WorldClip.from_pretrained(folder), cfg.n_eval, cfg.seed, cfg.image_size))
        result["planted_taste"] = taste_report(folder, cfg.n_eval, cfg.seed, cfg.image_size)
    for name, get, op, bar in TARGETS:
        value = get(result)
        verdict = "" if bar is None else ("ok" if (value >= bar if op == ">=" else value <= bar) else "MISSED")
        print(f"{name:42s} {value:7.3f}  {'' if bar is None else f'{op} {bar}':8s} {verdict}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
