"""Prefix CI scoring for VCI: PrefixCIScorer against ci_score called on every prefix.

Generates 1,000 prompt-like responses cut into 20-40 pieces (as decoded LM tokens would
be: pieces of 1-8 characters that cut words and carry spaces and punctuation), scores
every prefix of every response both ways - all of them, no sampling - checks that the
scores are identical and prints the speed-up. A third timing, ci_score with the reference
side (x_o, i, y_o) built once per triple, shows how much of the gain is the incremental
work on y alone. Run:

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_prefix_ci.py [--responses N]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import TypeVar

from diffchat.integrity import (
    _lemmas,
    _Reference,
    batch_prefix_ci_scores,
    ci_score,
    extract_keywords,
)

T = TypeVar("T")

SUBJECTS = [
    "a horse",
    "an old man",
    "a young woman",
    "a red fox",
    "two cats",
    "a castle",
    "a lighthouse",
    "a robot",
    "a sailing ship",
    "a little girl",
    "a dragon",
    "a wooden cabin",
    "a samurai",
    "an astronaut",
    "a bowl of fruit",
]
PLACES = [
    "in a field of sunflowers",
    "on a misty mountain",
    "by the sea at sunset",
    "in a dark forest",
    "on a busy street",
    "under a starry sky",
    "in the snow",
    "inside a cozy library",
    "on the surface of the moon",
    "near a frozen lake",
]
EDITS = [
    ("turn {s} into a zebra", "a zebra"),
    ("make it winter", "snowy winter"),
    ("add a rainbow in the sky", "a rainbow in the sky"),
    ("give her a crown", "a golden crown"),
    ("make it a watercolor painting", "watercolor painting"),
    ("put on a pair of sunglasses", "wearing sunglasses"),
    ("make it night", "at night"),
    ("add fireworks", "colorful fireworks"),
]
STYLES = ["highly detailed", "digital painting", "artstation", "concept art", "sharp focus",
          "8k", "intricate", "cinematic lighting", "by Greg Rutkowski", "trending on artstation",
          "oil on canvas", "octane render", "smooth", "elegant", "illustration", "soft light",
          "volumetric fog", "by Alphonse Mucha", "unreal engine", "4k wallpaper"]  # fmt: skip


def make_cases(n: int, seed: int = 0) -> list[tuple[str, str, str, list[str]]]:
    """`n` rollouts (x_o, i, y_o, pieces): y is y_o rewritten, with omissions and reordering."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        subject, place = rng.choice(SUBJECTS), rng.choice(PLACES)
        edit, added = rng.choice(EDITS)
        x_o = f"{subject} {place}"
        instruction = edit.format(s=subject.split()[-1])
        y_o = f"{subject} {place}, {added}"
        for _ in range(4):  # several rollouts per reference, as in a PPO batch
            parts = [subject, place, added] + rng.sample(STYLES, rng.randint(4, 9))
            parts = [p for p in parts if rng.random() > 0.15]  # some content gets lost
            rng.shuffle(parts)
            y = ", ".join(parts)
            pieces, k = [], 0
            while k < len(y):
                step = rng.randint(1, 8)
                pieces.append(y[k : k + step])
                k += step
            if 20 <= len(pieces) <= 40:
                cases.append((x_o, instruction, y_o, pieces))
    return cases[:n]


def naive(
    cases: list[tuple[str, str, str, list[str]]], threshold: float | None
) -> list[list[float]]:
    """What Listing 1 gives for every prefix: one full ci_score call each."""
    return [
        [ci_score(x_o, i, y_o, "".join(pieces[: k + 1]), threshold) for k in range(len(pieces))]
        for x_o, i, y_o, pieces in cases
    ]


def reference_once(
    cases: list[tuple[str, str, str, list[str]]], threshold: float | None
) -> list[list[float]]:
    """ci_score with the (x_o, i, y_o) side built once: y re-read at every prefix."""
    references: dict[tuple[str, str, str], _Reference] = {}
    out = []
    for x_o, i, y_o, pieces in cases:
        key = (x_o, i, y_o)
        if key not in references:
            references[key] = _Reference(x_o, i, y_o)
        ref = references[key]
        out.append(
            [ref.score(_lemmas("".join(pieces[: k + 1])), threshold) for k in range(len(pieces))]
        )
    return out


def timed(fn: Callable[..., T], *args: object) -> tuple[T, float, float]:
    """fn(*args), its process CPU time and its wall time."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = fn(*args)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=None, help="default: raw scores")
    args = parser.parse_args()

    cases = make_cases(args.responses)
    n_prefixes = sum(len(pieces) for *_, pieces in cases)
    extract_keywords("warm up NLTK data, tagger and WordNet")  # not timed: one-off loading
    print(f"{len(cases)} responses, {n_prefixes} prefixes (all scored both ways)")

    # The prefix scorer runs first, so ci_score then finds the lemma and synonym caches
    # warm: that can only flatter the naive side. CPU time is the figure to read on a
    # shared machine; wall time is printed too.
    (fast, fast_cpu, fast_wall) = timed(batch_prefix_ci_scores, cases, args.threshold)
    (slow, slow_cpu, slow_wall) = timed(naive, cases, args.threshold)
    (once, once_cpu, once_wall) = timed(reference_once, cases, args.threshold)

    mismatches = sum(
        a != b or a != c for f, s, o in zip(fast, slow, once) for a, b, c in zip(f, s, o)
    )
    for name, cpu, wall in (
        ("ci_score per prefix", slow_cpu, slow_wall),
        ("  same, x_o/i/y_o once", once_cpu, once_wall),
        ("PrefixCIScorer", fast_cpu, fast_wall),
    ):
        print(
            f"{name:22s}: {cpu:7.2f} s CPU ({1e6 * cpu / n_prefixes:7.1f} us/prefix), "
            f"{wall:7.2f} s wall"
        )
    print(
        f"speed-up over ci_score per prefix: {slow_cpu / fast_cpu:.1f}x CPU, "
        f"{slow_wall / fast_wall:.1f}x wall (over the x_o/i/y_o-once variant: "
        f"{once_cpu / fast_cpu:.1f}x CPU); mismatching prefixes: {mismatches}"
    )
    if mismatches:
        raise SystemExit("prefix scores differ from ci_score")


if __name__ == "__main__":
    main()
