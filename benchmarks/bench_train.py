"""CPU seconds per optimizer step of the package's SFT trainer (``diffchat.sft.completion_trainer``,
TRL's ``SFTTrainer``) on the tiny profile's model, and what activation checkpointing, length-grouped
batches and glibc's malloc settings cost or save. One invocation, one thread:

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_train.py [--steps 20] [--warmup 3]
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_train.py --small --warmup 1 --steps 2

The workload is the tiny profile's SFT: template-T rows T(x, i) -> y from mini-world triplets with
x and y beautified by the rule the PB pairs are written with (``miniworld.beautify``: the shape the
PB model learns, so the rows have the length of real InstructPE rows, 82-136 tokens with EOS), a
random-init BLOOM of ``TinyLMConfig()`` (hidden 128, 4 layers, 4,000-token BPE trained on the same
kinds of text as the base stage's), the tiny profile's ``sft`` settings (lr, warm-up, cosine schedule
over its 1,000 steps, logging every 20 steps); the PB stage's rows (PB template) get the baseline
and the best setting too.

Settings: the baseline is today's (activation checkpointing on, random batches); (a) checkpointing
off; (b) ``train_sampling_strategy="group_by_length"`` (transformers' ``LengthGroupedSampler``,
which TRL's SFTTrainer inherits: random megabatches of ``mega_batch_mult`` batches, each sorted
longest first); (c) both. Each with glibc's default malloc, and again with malloc keeping freed
memory (``hold_freed_memory``). Then batch size {8, 16, 32} x max_length {64, 128} with the best.

Every timed setting runs in a fresh process: with glibc's default malloc a block over its mmap
threshold (which moves with the process's history, up to 32 MiB) is a fresh mapping whose pages
the kernel zeroes at every step, so one setting's speed would depend on the ones run before it.
The "sys" column is that kernel share of the CPU time.

What is timed: ``--warmup`` optimizer steps, then ``--steps`` timed ones, between consecutive
``on_step_end`` callbacks (data loading, forward, backward, AdamW, scheduler, logging): process
CPU time (on one thread, the wall time of a quiet machine, and it hardly moves when other jobs
share the cores) and wall time. Each run gets 80 x batch-size rows, so that the grouped sampler's
megabatches are exactly 20 batches (``mega_batch_mult = rows // (4 x batch)``) and any 20
consecutive steps see each position of a megabatch once: fewer steps would see only its longest
batches. Tokens are counted at the collator: non-pad tokens are the attention mask's ones. The
padding share is also given over a whole epoch of 4,000 rows, where the sampler forms megabatches
of 50 batches as in the tiny profile's run (about 19k rows).

``--small`` measures instead the small profile's SFT (LoRA on the offline SmolLM2-135M-Instruct
copy that ``diffchat setup --small-model`` builds, its tokenizer, the same rows) with and without
checkpointing, with each process's peak resident memory: what checkpointing saves and costs where
the model is not tiny.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

SEED = 0
ROWS_PER_BATCH = 80  # rows per run = 80 x batch size: megabatches of 20 batches (see the docstring)


@dataclass
class Timing:
    cpu: float  # CPU seconds per optimizer step (user + system)
    wall: float  # wall seconds per optimizer step
    sys: float  # the system (kernel) part of cpu
    real: float  # non-pad tokens per step
    padded: float  # tokens per step including padding
    peak_mib: float  # the process's peak resident memory

    @property
    def pad_share(self) -> float:
        return 1 - self.real / self.padded

    @property
    def sys_share(self) -> float:
        return self.sys / self.cpu


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    import torch

    torch.set_num_threads(1)


def hold_freed_memory() -> None:
    """Make glibc's malloc serve every block from its heap and keep what is freed (mallopt:
    M_MMAP_MAX=0, M_TRIM_THRESHOLD=1 GiB), for the rest of this process: a step's big blocks
    (the logits of 16 x 128 tokens x 4,000 words in fp32 are 33 MB) then reuse memory the
    previous step freed instead of fresh mappings whose pages the kernel zeroes."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    if libc.mallopt(-4, 0) != 1 or libc.mallopt(-1, 2**30) != 1:  # M_MMAP_MAX, M_TRIM_THRESHOLD
        raise RuntimeError("glibc's mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD")


def build(root: Path, n: int, tokenizer: bool = True) -> tuple[Path | None, list[dict], list[dict]]:
    """n template-T rows and n PB rows, as the tiny profile's stages write them, and (``tokenizer``)
    a tiny base model whose BPE is trained on the same kinds of text as the base stage's."""
    from diffchat.data import miniworld
    from diffchat.loading import tiny_base, wordnet_texts
    from diffchat.pb import pb_rows
    from diffchat.profiles import TinyLMConfig
    from diffchat.sft import sft_rows

    rng = random.Random(SEED)
    triplets = []
    for t in miniworld.generate_triplets(n + n // 10, seed=1):
        x, y = miniworld.beautify(t["input"], rng), miniworld.beautify(t["output"], rng)
        if x and y:
            triplets.append({"beautified_source_prompt": x, "instruction": t["edit"],
                             "beautified_target_prompt": y})
    if len(triplets) < n:
        raise RuntimeError(f"only {len(triplets)} of {n} triplets could be beautified")
    pairs = miniworld.generate_pb_pairs(n, seed=1)
    if not tokenizer:
        return None, sft_rows(triplets[:n]), pb_rows(pairs)
    texts = miniworld.vocabulary_texts() + wordnet_texts() + [p["prompt"] for p in pairs]
    texts += [t[k] for t in triplets for k in ("beautified_source_prompt", "instruction",
                                               "beautified_target_prompt")]
    base = tiny_base(texts, root / "base", TinyLMConfig(), seed=SEED)
    return base, sft_rows(triplets[:n]), pb_rows(pairs)


def make_trainer(rows, base, out: Path, cfg, grouped: bool, callbacks=()):
    """The package's trainer; length grouping is set on it here (the profiles keep random batches)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from diffchat.sft import completion_trainer

    trainer = completion_trainer(rows, base, out, cfg, seed=SEED, callbacks=list(callbacks), log=lambda s: None)
    for printer in (PrinterCallback, ProgressCallback):  # keep the table readable
        trainer.remove_callback(printer)
    if grouped:
        trainer.args.train_sampling_strategy = "group_by_length"
    return trainer


def time_run(rows, base, out: Path, cfg, grouped: bool, warmup: int, steps: int) -> Timing:
    """Per-step CPU and wall seconds and tokens over ``steps`` steps after ``warmup`` steps."""
    import resource

    from transformers import TrainerCallback

    clock: list[tuple[float, float, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.append((time.process_time(), os.times().system, time.perf_counter()))
            if state.global_step >= warmup + steps:
                control.should_training_stop = True

    trainer = make_trainer(rows, base, out, cfg, grouped, [Clock()])
    counts: list[tuple[int, int]] = []
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch["attention_mask"]
        counts.append((int(mask.sum()), mask.numel()))
        return batch

    trainer.data_collator = counting
    trainer.train()
    if trainer.model.is_activation_checkpointing != cfg.activation_checkpointing:
        raise RuntimeError("the trainer did not take the activation_checkpointing setting")
    if len(clock) < warmup + steps:
        raise RuntimeError(f"training stopped after {len(clock)} steps, {warmup + steps} wanted")
    timed = counts[warmup:warmup + steps]  # one batch a step (no accumulation)
    (c0, s0, w0), (c1, s1, w1) = clock[warmup - 1], clock[warmup + steps - 1]
    return Timing((c1 - c0) / steps, (w1 - w0) / steps, (s1 - s0) / steps,
                  sum(r for r, _ in timed) / steps, sum(p for _, p in timed) / steps,
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def worker(spec: dict) -> Timing:
    """One timed setting (the body of a fresh process): ``spec`` names the rows file, the model
    folder, the profile whose ``sft`` section to train with and what to change in it."""
    from diffchat.profiles import get_profile

    if spec["hold"]:
        hold_freed_memory()
    rows = json.loads(Path(spec["rows"]).read_text())[:spec["n"]]
    cfg = replace(get_profile(spec["profile"]).sft, **spec["cfg"])
    with tempfile.TemporaryDirectory() as tmp:
        return time_run(rows, spec["base"], Path(tmp), cfg, spec["grouped"], spec["warmup"], spec["steps"])


def measure(spec: dict) -> Timing:
    """``worker(spec)`` in a fresh Python process."""
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the timed run {spec} failed:\n{done.stderr[-3000:]}")
    return Timing(**json.loads(done.stdout.strip().splitlines()[-1]))


def epoch_padding(rows, base, out: Path, cfg, grouped: bool) -> float:
    """Share of padding tokens over one epoch of the trainer's own batches."""
    trainer = make_trainer(rows, base, out, cfg, grouped)
    real = total = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return 1 - real / total


def kept_share(rows, base, max_length: int) -> float:
    """Share of rows whose prompt leaves a completion token under max_length (TRL drops the rest)."""
    from diffchat.loading import load_tokenizer

    lengths = [len(ids) for ids in load_tokenizer(base)([r["prompt"] for r in rows])["input_ids"]]
    return sum(n < max_length for n in lengths) / len(lengths)


HEAD = (f"{'setting':46s} {'CPU s':>6s} {'wall s':>6s} {'sys':>4s} {'pad':>5s} {'tok/s':>5s} "
        f"{'step':>6s} {'tok/s':>6s}\n{'':46s} {'/step':>6s} {'/step':>6s} {'CPU':>4s} {'share':>5s} "
        f"{'':>5s} {'ratio':>6s} {'ratio':>6s}")


def _row(name: str, t: Timing, ref: Timing) -> str:
    rate = t.real / t.cpu / (ref.real / ref.cpu)
    return (f"{name:46s} {t.cpu:6.3f} {t.wall:6.3f} {t.sys_share:4.0%} {t.pad_share:5.1%} "
            f"{t.real / t.cpu:5.0f} {ref.cpu / t.cpu:5.2f}x {rate:5.2f}x")


def tiny_tables(warmup: int, steps: int) -> None:
    from diffchat.profiles import get_profile

    tiny = get_profile("tiny").sft
    sizes = (8, 16, 32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, sft, pb = build(root, max(4000, ROWS_PER_BATCH * max(sizes)))
        for name, rows in (("sft", sft), ("pb", pb)):
            (root / f"{name}.json").write_text(json.dumps(rows))

        def run(rows: str, batch: int, max_length: int, ckpt: bool, grouped: bool, hold: bool) -> Timing:
            return measure({"rows": str(root / f"{rows}.json"), "n": ROWS_PER_BATCH * batch, "base": str(base),
                            "profile": "tiny", "grouped": grouped, "hold": hold, "warmup": warmup,
                            "steps": steps, "cfg": {"batch_size": batch, "max_length": max_length,
                                                    "activation_checkpointing": ckpt}})

        print(f"tiny SFT, template-T rows, batch {tiny.batch_size} x max_length {tiny.max_length}, "
              f"{warmup} warm-up + {steps} timed steps per setting, one thread, a fresh process each")
        print("tok/s: non-pad tokens per CPU second; ratios of CPU time against today's settings (step: "
              "today's s/step / s/step, tok/s: tok/s / today's tok/s); sys CPU: the kernel's share\n")
        print(HEAD)
        settings = {}
        for hold in (False, True):
            malloc = ", malloc holds" if hold else ""
            for label, ckpt, grouped in (("today: checkpointing on, random", True, False),
                                         ("(a) checkpointing off, random", False, False),
                                         ("(b) checkpointing on, grouped", True, True),
                                         ("(c) checkpointing off, grouped", False, True)):
                settings[label + malloc] = (ckpt, grouped, hold)
        results: dict[str, Timing] = {}
        for name, setting in settings.items():
            results[name] = run("sft", tiny.batch_size, tiny.max_length, *setting)
            ref = results["today: checkpointing on, random"]  # the baseline
            print(_row(name, results[name], ref))
        best = min(results, key=lambda name: results[name].cpu / results[name].real)
        print(f"best (CPU per non-pad token): {best}")

        print(f"\nbatch x max_length, {best}")
        print(HEAD)
        for batch in sizes:
            for max_length in (64, 128):
                name = f"batch {batch:2d} x max_length {max_length:3d}"
                kept = kept_share(sft[:ROWS_PER_BATCH * batch], base, max_length)
                if kept < 0.5:
                    print(f"{name:46s} not timed: {1 - kept:.1%} of the prompts T(x, i) take "
                          "max_length tokens or more, and TRL drops such rows")
                    continue
                same = batch == tiny.batch_size and max_length == tiny.max_length
                print(_row(name, results[best] if same else run("sft", batch, max_length, *settings[best]), ref))

        print(f"\nPB rows (PB template), batch {tiny.batch_size} x max_length {tiny.max_length}")
        print(HEAD)
        pb_ref = run("pb", tiny.batch_size, tiny.max_length, True, False, False)
        print(_row("today: checkpointing on, random", pb_ref, pb_ref))
        print(_row(best, run("pb", tiny.batch_size, tiny.max_length, *settings[best]), pb_ref))

        n = 4000
        cfg = replace(tiny, activation_checkpointing=False)
        print(f"\npadding share over one epoch of {n} rows, batch {tiny.batch_size} x max_length "
              f"{tiny.max_length} (megabatches of 50 batches, as in the tiny profile's runs)")
        for label, rows in (("SFT (template T)", sft[:n]), ("PB", pb[:n])):
            shares = [epoch_padding(rows, base, root / "pad", cfg, g) for g in (False, True)]
            print(f"{label:18s} random {shares[0]:6.1%}   grouped {shares[1]:6.1%}")


def small_table(warmup: int, steps: int) -> None:
    """The small profile's SFT with and without checkpointing: time and peak memory."""
    from diffchat.loading import smollm2_offline_copy
    from diffchat.profiles import get_profile

    cfg = get_profile("small").sft
    print(f"small profile SFT (LoRA r={cfg.lora_r} on SmolLM2-135M-Instruct, batch {cfg.batch_size} x "
          f"max_length {cfg.max_length}), {warmup} warm-up + {steps} timed steps, a fresh process each")
    path = smollm2_offline_copy()
    if path is None:
        print("skipped: no offline SmolLM2 copy here (`diffchat setup --small-model` builds it)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        _, sft, _ = build(Path(tmp), 200, tokenizer=False)
        (Path(tmp) / "sft.json").write_text(json.dumps(sft))
        print(f"{'checkpointing':13s} {'CPU s/step':>10s} {'wall s/step':>11s} {'tokens/step':>11s} "
              f"{'peak MiB':>9s}")
        for on in (True, False):
            t = measure({"rows": str(Path(tmp) / "sft.json"), "n": len(sft), "base": str(path),
                         "profile": "small", "grouped": False, "hold": False, "warmup": warmup,
                         "steps": steps, "cfg": {"activation_checkpointing": on}})
            print(f"{'on' if on else 'off':13s} {t.cpu:10.2f} {t.wall:11.2f} {t.padded:11.0f} {t.peak_mib:9.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per setting")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--small", action="store_true",
                    help="only the small profile's SFT with and without checkpointing (time, memory)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # one timed setting, as JSON (see measure)
    args = ap.parse_args()
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be at least 1")
    _one_thread()
    if args.worker:
        print(json.dumps(asdict(worker(json.loads(args.worker)))))
    elif args.small:
        small_table(args.warmup, args.steps)
    else:
        sys.stdout.reconfigure(line_buffering=True)  # each table row as it is measured
        tiny_tables(args.warmup, args.steps)


if __name__ == "__main__":
    main()
