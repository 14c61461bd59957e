"""Does the mini-world's planted taste behave like the paper's aesthetic score? (DESIGN.md 8)

Draws mini-world captions with all five renderers and scores them with the planted taste
(``diffchat.images.taste``); every gain is in standard deviations of the plain captions' scores
of the same renderer, then averaged over the five. Targets (issue 22):

- PB prompts (``beautify``) >= +0.8 std over their plain captions;
- the best quality-tag suffix of a greedy search >= +2.0 std (searched on one half of the
  captions, measured on the other);
- hacking: the caption stripped of time, weather, mood, style and medium words plus that suffix
  >= +1 std over the PB prompt, while the CI score of the stripped prompt falls;
- no single style, medium, lighting or quality word > +4 std on its own.

    OMP_NUM_THREADS=1 python benchmarks/world_taste.py [--n 120] [--calibrate]

--calibrate prints the feature means and stds to freeze in ``taste.py`` (400 plain + 400 PB
prompts over all renderers) and exits.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace

import numpy as np

from diffchat.data.miniworld import (
    generate_pb_pairs,
    generate_triplets,
    parse_caption,
    word_lists,
)
from diffchat.images.render import RENDERERS, render_batch
from diffchat.images.taste import calibrate, planted_aesthetic

MAX_SUFFIX = 6


def scores(prompts: list[str], variant: str) -> np.ndarray:
    """Planted taste of each prompt's image; prompt n is drawn with seed n in every condition."""
    return planted_aesthetic(render_batch(prompts, list(range(len(prompts))), variant))


class Ruler:
    """Gains in std of the plain captions' scores, per renderer and averaged over them."""

    def __init__(self, captions: list[str]):
        self.captions = captions
        plain = {v: scores(captions, v) for v in RENDERERS}
        self.mean = {v: plain[v].mean() for v in RENDERERS}
        self.std = {v: plain[v].std() for v in RENDERERS}

    def gains(self, prompts: list[str]) -> dict[str, float]:
        return {v: float((scores(prompts, v).mean() - self.mean[v]) / self.std[v]) for v in RENDERERS}

    @staticmethod
    def mean_of(gains: dict[str, float]) -> float:
        return float(np.mean(list(gains.values())))


def with_tags(captions: list[str], tags: list[str]) -> list[str]:
    return [", ".join([c, *tags]) for c in captions]


def strip(caption: str) -> str:
    """The caption without its time, weather, mood, style, medium and frame words."""
    parsed = parse_caption(caption)
    if parsed is None:
        return caption
    return replace(parsed, time=None, weather=None, mood=None, style=None, medium=None, frame=None).render()


def greedy_suffix(ruler: Ruler, candidates: tuple[str, ...]) -> tuple[list[str], float]:
    suffix, best = [], 0.0
    for _ in range(MAX_SUFFIX):
        trial = {tag: ruler.mean_of(ruler.gains(with_tags(ruler.captions, [*suffix, tag])))
                 for tag in candidates if tag not in suffix}
        tag = max(trial, key=trial.get)
        if trial[tag] <= best:
            break
        suffix.append(tag)
        best = trial[tag]
    return suffix, best


def fmt(gains: dict[str, float]) -> str:
    return " ".join(f"{v.removeprefix('mini-')} {g:+.2f}" for v, g in gains.items()) + \
        f" | mean {Ruler.mean_of(gains):+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=120, help="captions (half search the suffix, half measure)")
    parser.add_argument("--calibrate", action="store_true", help="print taste.py's MEAN and STD and exit")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.calibrate:
        mean, std = calibrate()
        print(f"MEAN = np.array({np.round(mean, 4).tolist()})\nSTD = np.array({np.round(std, 4).tolist()})")
        return
    rows = generate_pb_pairs(args.n, seed=7, split="test_seen")
    half = args.n // 2
    search, measure = [r["simplified"] for r in rows[:half]], [r["simplified"] for r in rows[half:]]
    pb = [r["prompt"] for r in rows[half:]]
    ruler = Ruler(measure)
    print(f"plain captions ({len(measure)}): planted taste " + " ".join(
        f"{v.removeprefix('mini-')} {ruler.mean[v]:.2f}+-{ruler.std[v]:.2f}" for v in RENDERERS))

    pb_gain = ruler.gains(pb)
    print(f"PB prompts:            {fmt(pb_gain)}   (target >= +0.8)")
    rng = random.Random(0)
    tags = word_lists().quality_tags
    print(f"3 random quality tags: {fmt(ruler.gains([', '.join([c, *rng.sample(tags, 3)]) for c in measure]))}")

    suffix, _ = greedy_suffix(Ruler(search), tags)
    best = ruler.gains(with_tags(measure, suffix))
    print(f"best greedy suffix:    {fmt(best)}   (target >= +2.0)\n  suffix: {', '.join(suffix)}")

    hacked = with_tags([strip(c) for c in measure], suffix)
    hack = ruler.gains(hacked)
    over_pb = {v: hack[v] - pb_gain[v] for v in RENDERERS}
    print(f"hack (stripped + suffix) over plain: {fmt(hack)}")
    print(f"hack over PB prompts:  {fmt(over_pb)}   (target >= +1.0)")
    print(f"hack over caption + suffix: {fmt({v: hack[v] - best[v] for v in RENDERERS})}")
    a_picture = ruler.gains(with_tags(["a picture"] * len(measure), suffix))
    print(f"'a picture' + suffix:  {fmt(a_picture)}")

    from diffchat.integrity import ci_score

    triplets = generate_triplets(60, seed=7, split="test_seen")
    keep_ci = np.mean([ci_score(t["input"], t["edit"], t["output"], ", ".join([t["output"], *suffix]), None)
                       for t in triplets])
    hack_ci = np.mean([ci_score(t["input"], t["edit"], t["output"], ", ".join([strip(t["output"]), *suffix]), None)
                       for t in triplets])
    print(f"CI (raw, {len(triplets)} triplets): target + suffix {keep_ci:.2f}; stripped target + suffix {hack_ci:.2f}")

    words = word_lists()
    single = {}
    for word in (*words.styles, *words.mediums, *words.lighting, *tags):
        single[word] = ruler.mean_of(ruler.gains(with_tags(measure, [word])))
    ranked = sorted(single, key=single.get, reverse=True)
    print("single words, top 6:   " + ", ".join(f"{w} {single[w]:+.2f}" for w in ranked[:6]) + "   (target < +4)")
    print("single words, bottom 4: " + ", ".join(f"{w} {single[w]:+.2f}" for w in ranked[-4:]))
    print(f"'ink drawing' alone {single['ink drawing']:+.2f}; with the suffix "
          f"{ruler.mean_of(ruler.gains(with_tags(measure, ['ink drawing', *suffix]))):+.2f}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
