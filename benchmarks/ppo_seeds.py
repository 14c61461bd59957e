"""PPO's held-out change over its SFT model, across seeds, for one setting, on a finished run.

For each seed, trains the PPO variant (the profile's settings plus ``--rl`` / ``--ppo`` overrides)
from the run's SFT model and reward models into a scratch folder (the run itself is only read),
then compares PPO with SFT on the held-out splits as the ppo stage does
(``ppo.stage.evaluate_against_sft``). Prints, per seed and split, reward, raw CI and edit accuracy
(SFT -> PPO and the change), the planted aesthetic score of the five renderers' images, the loop
rate, the largest KL, and the spread of the held-out changes over seeds. Each seed's last line
checks issue 23's bars: held-out reward up by at least 0.3 standard deviations of SFT's per-row
reward, planted aesthetic up, raw CI down by at most 0.01, seen edit accuracy down by at most 0.02.

    HF_HUB_OFFLINE=1 python benchmarks/ppo_seeds.py --runs runs --seeds 0 1 2 --threads 1 \\
        [--ppo '{"iterations": 40}'] [--rl '{"lr": 1e-3}'] [--out runs/ppo_seeds]

Set DIFFCHAT_QUICK=1 for a run made with CI's shortened profile.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def bars(report: dict) -> dict[str, bool]:
    """Issue 23's acceptance bars for one run's held-out comparison with SFT."""
    held = report["held_out"]["results"]
    sft, new = held["sft"], held["ppo"]
    seen = report.get("test_seen", {}).get("results", {})
    edit_drop = seen["sft"]["edit"] - seen["ppo"]["edit"] if "edit" in seen.get("sft", {}) else 0.0
    return {"reward +0.3 std": new["reward"] - sft["reward"] >= 0.3 * sft["reward_std"],
            "planted up": new["planted"] > sft["planted"],
            "CI -0.01 at most": sft["ci_raw"] - new["ci_raw"] <= 0.01,
            "seen edit -0.02 at most": edit_drop <= 0.02}


def main(runs: Path, profile_name: str, seeds: list[int], rl: dict, ppo: dict, variant: str, out: Path) -> None:
    import torch

    from diffchat.data.collect import read_instructpe
    from diffchat.pipeline import ppo_settings
    from diffchat.ppo.stage import HELD_OUT, evaluate_against_sft
    from diffchat.ppo.trainer import train_ppo
    from diffchat.profiles import get_profile
    from diffchat.runner import stage_dir

    profile = get_profile(profile_name).with_overrides(rl=rl, ppo=ppo)
    cfg = ppo_settings(variant, profile)
    folder = {name: stage_dir(name, profile_name, runs) for name in ("sft", "rewards", "instructpe")}
    rows = read_instructpe(folder["instructpe"], "train")
    splits = {name: read_instructpe(folder["instructpe"], name) for name in HELD_OUT}
    print(f"{variant} on {runs}: rl overrides {rl}, ppo overrides {ppo}; "
          f"{cfg.iterations} iterations x {cfg.rollouts} rollouts, lr {profile.rl.lr}, "
          f"{torch.get_num_threads()} threads")
    changes = []
    for seed in seeds:
        start = time.time()
        log = train_ppo(folder["sft"], folder["rewards"] / "rm_aesthetic", folder["rewards"] / "rm_pickscore",
                        rows, out / f"seed{seed}", profile.rl, cfg, seed=seed)
        seconds = time.time() - start
        report = evaluate_against_sft(out / f"seed{seed}", folder["sft"], folder["rewards"], splits, cfg)
        print(f"seed {seed}: trained in {seconds:.0f} s, max KL {max(h['kl'] for h in log['iterations']):.2f}")
        for split, part in report.items():
            sft, new = part["results"]["sft"], part["results"]["ppo"]
            cells = [f"{key} {sft[key]:.4f} -> {new[key]:.4f} ({new[key] - sft[key]:+.4f})"
                     for key in ("reward", "planted", "ci_raw", "edit", "loop") if key in sft]
            print(f"  {split:11s} n={sft['n']} (SFT reward std {sft['reward_std']:.4f}): " + "; ".join(cells))
        held = report["held_out"]["results"]
        changes.append({k: held["ppo"][k] - held["sft"][k] for k in ("reward", "planted", "ci_raw")})
        checks = bars(report)
        print(f"  bars: {'PASS' if all(checks.values()) else 'FAIL'} "
              + ", ".join(f"{name} {'ok' if ok else 'MISSED'}" for name, ok in checks.items()))
    for key in ("reward", "planted", "ci_raw"):
        values = [c[key] for c in changes]
        print(f"held-out {key} change over {len(values)} seeds: mean {sum(values) / len(values):+.4f}, "
              f"min {min(values):+.4f}, max {max(values):+.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rl", type=json.loads, default={}, help="JSON overrides of the profile's rl section")
    parser.add_argument("--ppo", type=json.loads, default={}, help="JSON overrides of the profile's ppo section")
    parser.add_argument("--variant", default="ppo", help="ppo, ppo_no_pi_plus, ppo_no_pi_minus, ppo_no_vci or ppo_no_ci_reward")
    parser.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.out:
        main(args.runs, args.profile, args.seeds, args.rl, args.ppo, args.variant, args.out)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(args.runs, args.profile, args.seeds, args.rl, args.ppo, args.variant, Path(tmp))
