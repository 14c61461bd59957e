"""Where the tiny CLIP's training time goes, and what channels-last convolutions would save.

The clip stage is most of the mini-world's cost in the course (issue 22's time bar). This prints:

1. the seconds per step of ``clip_train.train_clip`` (the stage's own loop, on a small pool) and
   the share of it spent in convolutions and their backward pass (torch.profiler);
2. one training step (forward, backward, SGD step) of the image encoder alone at the stage's
   batch size, with its weights and inputs in the default (NCHW) memory format and in
   channels-last, alternating, and the ratio channels-last / default (same process).

The stage does not use channels-last yet: switching it changes the trained CLIP in its last bits
and so every number downstream (README tables), which need re-measuring with it. Run:

    OMP_NUM_THREADS=1 python benchmarks/bench_clip.py [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time


def loop_profile(steps: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from diffchat.images.clip_train import build_pool, train_clip
    from diffchat.profiles import get_profile

    cfg = dataclasses.replace(get_profile("tiny").clip, n_pairs=1000, steps=steps)
    pool = build_pool(cfg.n_pairs, cfg.seed, cfg.image_size, twins=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        train_clip(pool, cfg, log=lambda _: None)
        seconds = time.perf_counter() - start
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    print(f"train_clip: {seconds / steps * 1e3:.1f} ms a step over {steps} steps "
          f"(batch {cfg.batch_size}, {torch.get_num_threads()} thread(s)); convolutions and their backward: "
          f"{conv / total:.0%} of the CPU time")


def encoder_step_ms(channels_last: bool, batch: int, steps: int) -> float:
    import torch

    from diffchat.images.clip import ImageEncoder, WorldClipConfig

    torch.manual_seed(0)
    encoder = ImageEncoder(WorldClipConfig(vocab_size=100, image_size=64))
    pixels = torch.randn(batch, 3, 64, 64)
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(encoder.parameters(), lr=1e-3)
    for n in range(3 + steps):
        if n == 3:
            start = time.perf_counter()
        opt.zero_grad()
        encoder(pixels).sum().backward()
        opt.step()
    return (time.perf_counter() - start) / steps * 1e3


def main(steps: int, repeats: int) -> None:
    from diffchat.profiles import get_profile

    loop_profile(steps)
    batch = get_profile("tiny").clip.batch_size
    default, last = [], []
    for _ in range(repeats):
        default.append(encoder_step_ms(False, batch, 20))
        last.append(encoder_step_ms(True, batch, 20))
    print(f"image encoder step, batch {batch}: default {' '.join(f'{v:.1f}' for v in default)} ms, "
          f"channels-last {' '.join(f'{v:.1f}' for v in last)} ms; "
          f"ratio of medians {statistics.median(last) / statistics.median(default):.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.steps, args.repeats)
