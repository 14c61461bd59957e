"""CI's shortened tiny run ($DIFFCHAT_QUICK=1) across seeds and thread counts.

A training run that sits at the edge of learning lands on either side depending on the
processor's last bits, so the shortened settings are chosen by this sweep: every
(seed, threads) run must clear the bars with margin. Each run is its own process (so the
thread count is set before torch starts) with its own runs folder, and builds
data -> base -> pb -> instructpe -> sft. Prints one row per run and the worst case:

    HF_HUB_OFFLINE=1 python benchmarks/sweep_quick.py --seeds 0 1 2 --threads 1 2 [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_RUN = """
import json, sys, time
import torch
from dataclasses import replace
from diffchat.profiles import get_profile
from diffchat import pipeline
torch.set_num_threads({threads})
p = get_profile("tiny")
p = p.with_overrides(data={{"seed": {seed}}})
root = {root!r}
t0 = time.time()
pipeline.ensure("pb", p, root)
t_pb = time.time() - t0
try:
    pipeline.ensure("sft", p, root)
    sft = pipeline.read_manifest("sft", p, root)["summary"]
except Exception as err:  # the code before the fix crashed on an empty split
    sft = {{"error": f"{{type(err).__name__}}: {{str(err)[-200:]}}"}}
pb = pipeline.read_manifest("pb", p, root)["summary"]
ipe = pipeline.read_manifest("instructpe", p, root)["summary"]
print("RESULT " + json.dumps({{"pb": pb, "sft": sft, "instructpe": ipe, "pb_seconds": t_pb,
                              "seconds": time.time() - t0}}))
"""


def run_one(seed: int, threads: int, root: Path) -> dict:
    env = {**os.environ, "DIFFCHAT_QUICK": "1", "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    code = ONE_RUN.format(threads=threads, seed=seed, root=str(root))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"seed {seed} threads {threads} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for threads in args.threads:
                start = time.time()
                r = run_one(seed, threads, Path(tmp) / f"s{seed}-t{threads}")
                seen, unseen = r["sft"].get("test_seen") or {}, r["sft"].get("test_unseen") or {}
                row = {"seed": seed, "threads": threads, "pb_keep_ci": r["pb"]["keep_ci"],
                       "pb_tagged": r["pb"]["tagged"], "sft_seen_edit": seen.get("edit"),
                       "sft_seen_exact": seen.get("exact"), "sft_seen_append_edit": seen.get("append_edit"),
                       "sft_unseen_edit": unseen.get("edit"), "sft_error": r["sft"].get("error"),
                       "rows": r["instructpe"]["rows"],
                       "pb_seconds": round(r["pb_seconds"]), "seconds": round(time.time() - start)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    worst = {k: min(r[k] for r in rows if r[k] is not None)
             for k in ("pb_keep_ci", "pb_tagged", "sft_seen_edit", "sft_unseen_edit")
             if any(r[k] is not None for r in rows)}
    print("worst over runs:", json.dumps(worst))
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "worst": worst}, indent=2))


if __name__ == "__main__":
    main()
