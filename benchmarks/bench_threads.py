"""Wall seconds per training step of the tiny profile's model under each thread setting, on
whatever load the machine has: what ``diffchat.course.thread_env`` picks for the course's kernels.

    HF_HUB_OFFLINE=1 python benchmarks/bench_threads.py [--steps 10] [--rounds 2]

The workload: a random-init BLOOM of ``TinyLMConfig()`` (hidden 128, 4 layers, 4,000 tokens),
batches of 16 x 128 random tokens, forward, backward and an AdamW step (the tiny PB and SFT
step's arithmetic without TRL's data handling). Each setting runs in a fresh process (OpenMP
reads its variables when torch starts its threads), one warm-up step then ``--steps`` timed
ones; the settings take turns for ``--rounds`` rounds so that a change in the machine's load
falls on all of them. The 1-minute load average before each run is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = {
    "torch default (OMP_NUM_THREADS unset)": {},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "all cores, OMP_WAIT_POLICY=PASSIVE": {"OMP_NUM_THREADS": str(os.cpu_count()), "OMP_WAIT_POLICY": "PASSIVE"},
}

CHILD = """
import json, sys, time
import torch
from diffchat.profiles import TinyLMConfig
from transformers import BloomConfig, BloomForCausalLM

c = TinyLMConfig()
torch.manual_seed(0)
model = BloomForCausalLM(BloomConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, n_layer=c.n_layer,
                                     n_head=c.n_head))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(0, c.vocab_size, (16, 128))
times = []
for step in range(int(sys.argv[1]) + 1):
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - start)
print(json.dumps({"threads": torch.get_num_threads(), "step_s": sum(times[1:]) / (len(times) - 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    print(f"{os.cpu_count()} cores")
    for round_ in range(args.rounds):
        for name, extra in SETTINGS.items():
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.steps)], env={**base_env, **extra},
                                 capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"round {round_ + 1}  load {load:5.2f}  {name:40s} threads {result['threads']}  "
                  f"{result['step_s']:.3f} s/step", flush=True)


if __name__ == "__main__":
    main()
