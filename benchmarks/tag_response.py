"""How the PPO reward sees quality tags: the reward models' gains and the planted score when tags are appended.

Counts the distinct tag endings (the text after the first comma) of the prompts the reward
models were labelled on. Then takes 40 held-out InstructPE rows of a finished run, appends each tag (and all of them) to the
reference target y, and prints the mean training reward, the two reward models' gains over the
unchanged target (in their std units), raw CI and the planted aesthetic score of the five
renderers' images. Reward models that learned the world's taste move with the planted score;
ones labelled on prompts whose tags never vary do not.

Last, the reward-hacking direction (issue 23's ablation without the CI reward): y with its content
dropped (the subject and scene kept, or the subject and y's tags only) and tags stacked
(``clip_train.HACK_TAGS``). Each line gives the planted score of the images, and the reward as
trained (CI term in) and with the CI term out, as the ppo_no_ci_reward run is paid: how much a
policy without the CI reward would gain by dropping content on top of adding tags. Run:

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/tag_response.py --runs runs
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

TAGS = ("highly detailed", "sharp focus", "8k", "octane render", "masterpiece", "smooth")


def main(runs: Path, rows_n: int) -> None:
    from diffchat.data.collect import read_instructpe
    from diffchat.pipeline import ppo_settings
    from diffchat.ppo.stage import _sequence_reward, planted_scores
    from diffchat.profiles import get_profile
    from diffchat.runner import stage_dir

    cfg = ppo_settings("ppo", get_profile("tiny"))
    rows = random.Random(2).sample(read_instructpe(stage_dir("instructpe", "tiny", runs), "test_seen"), rows_n)
    rewards = stage_dir("rewards", "tiny", runs)
    labelled = [json.loads(line)["prompt"] for line in (rewards / "labels.jsonl").open(encoding="utf-8")]
    endings = Counter(p.split(", ", 1)[1] if ", " in p else "" for p in labelled)
    top = sum(n for _, n in endings.most_common(3))
    print(f"the reward models' {len(labelled)} labelled prompts end in {len(endings)} distinct tag lists; "
          f"the 3 commonest end {top / len(labelled):.0%} of them")
    reward = _sequence_reward(rewards / "rm_aesthetic", rewards / "rm_pickscore", cfg)
    for extra in ("", *(f", {t}" for t in TAGS), ", " + ", ".join(TAGS)):
        texts = [r["beautified_target_prompt"] + extra for r in rows]
        mean = {k: sum(v) / len(rows) for k, v in reward(rows, texts)[1].items()}
        planted = planted_scores(texts)
        print(f"{extra.lstrip(', ') or '(the target y)':70s} reward {mean['reward']:.3f} aesthetic "
              f"{mean['aesthetic_gain']:+.3f} PickScore {mean['pickscore_gain']:+.3f} raw CI {mean['ci_raw']:.3f} "
              f"planted {sum(planted) / len(planted):.3f}")
    hack(rows, reward)


def hack(rows: list[dict], reward) -> None:
    """The reward with and without its CI term, and the planted score, of reward-hacking rewrites."""
    from diffchat.data.miniworld.grammar import parse_prompt
    from diffchat.images.clip_train import HACK_TAGS, hack_prompt
    from diffchat.ppo.stage import planted_scores

    parsed = [(r, parse_prompt(r["beautified_target_prompt"])) for r in rows]
    rows = [r for r, p in parsed if p is not None]
    prompts = [p for _, p in parsed if p is not None]
    print(f"reward hacking on the {len(rows)} rows whose y the mini-world parses (w_ci = "
          f"{reward.cfg.reward_ci_weight}: reward without CI = reward - w_ci x thresholded CI):")
    variants = {"(the target y)": [r["beautified_target_prompt"] for r in rows],
                "y + 3 tags": [", ".join([r["beautified_target_prompt"], *HACK_TAGS[:3]]) for r in rows],
                "subject and scene + 6 tags": [hack_prompt(p.caption) for p in prompts],
                "subject + y's tags": [", ".join([p.caption.subject, *p.tags]) for p in prompts]}
    for name, texts in variants.items():
        terms = reward(rows, texts)[1]
        mean = {k: sum(v) / len(rows) for k, v in terms.items()}
        no_ci = mean["reward"] - reward.cfg.reward_ci_weight * mean["ci"]
        planted = planted_scores(texts)
        print(f"{name:28s} reward {mean['reward']:.3f}, without CI {no_ci:+.3f}; aesthetic "
              f"{mean['aesthetic_gain']:+.3f} PickScore {mean['pickscore_gain']:+.3f} raw CI {mean['ci_raw']:.3f} "
              f"planted {sum(planted) / len(planted):.3f}  e.g. {texts[0]!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--rows", type=int, default=40)
    args = parser.parse_args()
    main(args.runs, args.rows)
