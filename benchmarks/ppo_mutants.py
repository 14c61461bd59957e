"""Do the PPO tests notice a broken PPO? Twelve one-line mutants, each run against its tests.

Each mutant is one exact line of diffchat/ppo/ changed into a plausible mistake (the twelve an
audit found the old tests let through). For each, the package is copied into a temporary
folder (diffchat/, tests/, data/, pyproject.toml: the checkout is never touched), the line is
substituted in the copy (the script stops if the line is not found exactly once), and pytest
runs the tests of tests/test_ppo.py that concern it against the copy (``-k``). A mutant is
caught when at least one of them fails. First the unmutated copy must pass all of them.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/ppo_mutants.py [--only 5 7]

Prints a table (mutant, tests run, tests that failed) and "N of 12 caught"; exits 1 unless all
are caught. It took 17 minutes on one thread of a 2-core machine shared with about six other jobs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("diffchat", "tests", "data", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the checkout
    line: str  # the exact original text (a whole line, stripped)
    mutated: str
    tests: str  # pytest -k expression over tests/test_ppo.py


MUTANTS = (
    Mutant("policy loss takes min, not max", "diffchat/ppo/core.py",
           "loss = masked_mean(torch.max(unclipped, clipped), mask)",
           "loss = masked_mean(torch.min(unclipped, clipped), mask)", "policy_loss_clips"),
    Mutant("value loss takes min, not max", "diffchat/ppo/core.py",
           "loss = 0.5 * masked_mean(torch.max(loss_unclipped, loss_clipped), mask)",
           "loss = 0.5 * masked_mean(torch.min(loss_unclipped, loss_clipped), mask)", "value_loss_clips"),
    Mutant("ratio clipping removed", "diffchat/ppo/core.py",
           "clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)",
           "clipped = -advantages * ratio", "policy_loss_clips"),
    Mutant("VCI term's sign flipped", "diffchat/ppo/vci.py",
           "values_prime = values + alpha * ci.to(values)",
           "values_prime = values - alpha * ci.to(values)", "vci"),
    Mutant("sequence score's sign flipped (trainer)", "diffchat/ppo/trainer.py",
           'rewards, kl = kl_penalised_rewards(old["logprobs"], old["ref_logprobs"], mask, scores, self.kl_ctl.value)',
           'rewards, kl = kl_penalised_rewards(old["logprobs"], old["ref_logprobs"], mask, -scores, self.kl_ctl.value)',
           "learns"),
    Mutant("KL sign flipped (trainer)", "diffchat/ppo/trainer.py",
           'rewards, kl = kl_penalised_rewards(old["logprobs"], old["ref_logprobs"], mask, scores, self.kl_ctl.value)',
           'rewards, kl = kl_penalised_rewards(old["ref_logprobs"], old["logprobs"], mask, scores, self.kl_ctl.value)',
           "kl_penalty_holds or learns"),
    Mutant("old log-probs taken from the reference", "diffchat/ppo/trainer.py",
           'pg, clip_frac, approx_kl = policy_loss(logprobs, old["logprobs"][mb], adv[mb], m,',
           'pg, clip_frac, approx_kl = policy_loss(logprobs, old["ref_logprobs"][mb], adv[mb], m,', "learns"),
    Mutant("whitening without the mask", "diffchat/ppo/core.py",
           "mean = masked_mean(x, mask)", "mean = x.mean()", "whiten"),
    Mutant("pi- never applied", "diffchat/ppo/trainer.py",
           "ppo.adm_negative_prob, ppo.adm_remove_prob)", "0.0, ppo.adm_remove_prob)", "pi_minus_edits"),
    Mutant("typical sampling never applied", "diffchat/ppo/trainer.py",
           "typical_p=ppo.typical_p if ppo.pi_plus else None,", "typical_p=None,", "typical_sampling_reaches"),
    Mutant("value loss left out of the backward pass", "diffchat/ppo/trainer.py",
           "self.accelerator.backward(pg + vf)", "self.accelerator.backward(pg)", "value_loss_trains"),
    Mutant("KL controller fed -KL", "diffchat/ppo/trainer.py",
           "self.kl_ctl.update(seq_kl, n_steps=len(mask))", "self.kl_ctl.update(-seq_kl, n_steps=len(mask))",
           "learns"),
)


def copy_checkout(dest: Path) -> None:
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)


def mutate(copy: Path, mutant: Mutant) -> None:
    """Replace the mutant's line in the copy; exactly one line must match."""
    path = copy / mutant.path
    lines = path.read_text().split("\n")
    hits = [n for n, line in enumerate(lines) if line.strip() == mutant.line]
    if len(hits) != 1:
        raise SystemExit(f"{mutant.name}: {len(hits)} lines of {mutant.path} read {mutant.line!r} (need exactly 1)")
    n = hits[0]
    indent = lines[n][: len(lines[n]) - len(lines[n].lstrip())]
    lines[n] = indent + mutant.mutated
    path.write_text("\n".join(lines))


def run_tests(copy: Path, expression: str) -> tuple[list[str], list[str], str]:
    """(tests run, tests failed, output tail) for ``pytest -k expression`` in the copy."""
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "tests/test_ppo.py",
           "-k", expression]
    done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=1200)
    out = done.stdout + done.stderr
    ran = re.findall(r"^(?:PASSED|FAILED|ERROR) tests/test_ppo\.py::(\S+)", out, re.M)
    failed = re.findall(r"^(?:FAILED|ERROR) tests/test_ppo\.py::(\S+)", out, re.M)
    return ran, failed, out[-3000:]


def main(only: list[int] | None) -> int:
    chosen = [(n, m) for n, m in enumerate(MUTANTS, 1) if not only or n in only]
    union = " or ".join(sorted({f"({m.tests})" for _, m in chosen}))
    rows, caught = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean"
        copy_checkout(clean)
        start = time.time()
        ran, failed, tail = run_tests(clean, union)
        if failed or not ran:
            print(tail)
            raise SystemExit(f"the unmutated copy fails {failed or 'to run'} its tests: fix that first")
        print(f"unmutated copy: {len(ran)} tests pass ({time.time() - start:.0f} s)")
        for n, mutant in chosen:
            copy = Path(tmp) / f"mutant{n}"
            copy_checkout(copy)
            mutate(copy, mutant)
            start = time.time()
            ran, failed, _ = run_tests(copy, mutant.tests)
            caught += bool(failed)
            rows.append((n, mutant, ran, failed, time.time() - start))
            print(f"  {n:2d} {mutant.name}: {'caught' if failed else 'NOT caught'} ({time.time() - start:.0f} s)")
            shutil.rmtree(copy)
    print(f"\n{'#':>2}  {'mutant':42s} {'file':26s} {'caught by (failed tests)':s}")
    for n, mutant, ran, failed, _ in rows:
        print(f"{n:2d}  {mutant.name:42s} {mutant.path.removeprefix('diffchat/'):26s} "
              f"{', '.join(failed) if failed else 'NOT CAUGHT (ran ' + ', '.join(ran) + ')'}")
    print(f"\n{caught} of {len(rows)} caught")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", type=int, nargs="+", default=None, help="mutant numbers (1-12) to run")
    args = parser.parse_args()
    sys.exit(main(args.only))
