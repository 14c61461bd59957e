"""Images per second of the mini-world renderer (the tiny profile's TIS models) against the tiny
random diffusers pipeline it replaced (32x32, 2 steps, one image per call), in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_render.py [--n 400] [--size 64] [--baseline 16]

Prompts: n/2 plain mini-world captions and their PB prompts, each drawn by every renderer with
its own seed. Prints both rates, their ratio, this process's CPU time and the load average
(other jobs on the machine slow the wall-clock numbers down).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from diffchat.data.miniworld import generate_pb_pairs
from diffchat.images import create_images, load_tis
from diffchat.images.render import RENDERERS, render


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="prompts (half plain, half PB)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--baseline", type=int, default=16, help="images from the tiny diffusers pipeline")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = generate_pb_pairs(args.n // 2, seed=0)
    prompts = [r["simplified"] for r in rows] + [r["prompt"] for r in rows]
    for prompt in prompts[:20]:  # warm the parser's and the grids' caches
        render(prompt, 0, RENDERERS[0], args.size)

    def draw_all() -> None:
        for variant in RENDERERS:
            for seed, prompt in enumerate(prompts):
                render(prompt, seed, variant, args.size)

    n_render = len(prompts) * len(RENDERERS)
    wall, cpu = timed(draw_all)
    rate = n_render / wall
    print(f"renderer: {n_render} images at {args.size}x{args.size} in {wall:.2f} s wall ({cpu:.2f} s CPU): "
          f"{rate:.0f} images/s ({n_render / cpu:.0f} per CPU second)")

    tiny = load_tis("tiny", device="cpu")
    create_images(prompts[:1], tiny, 0, batch_size=1, progress=False)  # warm-up
    base_prompts = prompts[: args.baseline]
    wall_b, cpu_b = timed(lambda: create_images(base_prompts, tiny, list(range(len(base_prompts))),
                                                batch_size=1, progress=False))
    base_rate = len(base_prompts) / wall_b
    print(f"tiny diffusers pipeline: {len(base_prompts)} images at {tiny.spec.resolution}x{tiny.spec.resolution}, "
          f"{tiny.spec.steps} steps, in {wall_b:.2f} s wall ({cpu_b:.2f} s CPU): {base_rate:.1f} images/s")
    print(f"ratio: {rate / base_rate:.0f}x wall, {(n_render / cpu) / (len(base_prompts) / cpu_b):.0f}x CPU; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
