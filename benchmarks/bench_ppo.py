"""Seconds per PPO iteration: our PPO (diffchat.ppo) against TRL 1.12's PPOTrainer, and ADM+VCI on/off.

One PPO iteration is a rollout (sampling, scoring, the no-grad passes for behaviour and
reference log-probs and values, advantages) plus the PPO update epochs. Both sides get:

* the same policy: a random-init tiny-profile BLOOM (TinyLMConfig: hidden 128, 4 layers,
  4 heads, 4,000-token BPE trained on mini-world and WordNet text, as the tiny profile's
  base stage does), loaded from one saved folder;
* the same 32 template-T queries T(x, i) from mini-world triplets, every iteration
  (32 rows, rollout batch 32), sampled at temperature 1 (top-k 0, top-p 1),
  48 new tokens at most, stopping at EOS;
* one mini-batch of 32 per epoch, 2 PPO epochs, lr 3e-4, KL coefficient 0.05 (ours: one sample
  per prompt at temperature 1, whatever the tiny profile samples);
* reward models: random-init tiny-profile BLOOM sequence-classification models on the
  policy's tokenizer (the same two folders on both sides).

The sides differ where the methods differ, and that is what the ratio measures:

* ours (train_ppo, tiny profile rl/ppo settings): a hydra model (rl.unfreeze_layers=2 of
  4 blocks trained, a frozen copy of the top 2 as reference, a linear value head); two
  text RMs (aesthetic + PickScore) plus the CI score in the reward; ADM and VCI off for
  the TRL comparison (pi_plus=pi_minus=vci=False);
* TRL (trl.experimental.ppo.PPOTrainer 1.12.0): the full policy trained, a full reference
  copy, a separate value model (a full tiny BLOOM classifier, also trained), one reward
  model; kl_estimator k1, missing_eos_penalty=None, num_sample_generations=0, use_cpu.

What is timed: 1 warm-up iteration, then 3 timed ones; setup (model building and loading,
tokenizer training, the TRL install) is never timed. Ours: the ``seconds`` and
``cpu_seconds`` that train_ppo logs for each iteration (wall and process CPU time of
``_Run.step``: rollout, scoring, passes, GAE, update epochs, KL controller). TRL: the
same two clocks between consecutive ``on_step_end`` callbacks (the first from
``on_train_begin``), i.e. one pass of the loop body of ``PPOTrainer.train`` (generation,
forwards, GAE, update epochs, metrics, its gc.collect()). The ratios use the median of
the 3 timed iterations of each run, in CPU seconds: on one thread CPU time is the wall
time of a quiet machine, and it hardly moves when other jobs share the cores (wall
times are printed too). Runs are sequential (TRL, then ours off, then ours on).

``--runs DIR`` (recommended) takes the policy, the two reward models and the queries
from a finished tiny-profile run (``DIR/tiny/sft``, ``DIR/tiny/rewards``, InstructPE
train rows): a trained policy is peaked and writes real prompts, which is what ADM and
VCI cost in a real run. Without it, both sides use a random-init policy, whose flat
distributions and gibberish responses are the worst case for typical sampling (every
row falls back to a full sort) and for the prefix CI cache.

Caveat for ADM: the policy is random-init, so its responses hardly ever contain the
reference target's keywords and pi- (which removes or replaces such a keyword in ~4% of
the responses) usually finds nothing to edit; the table's "pi- edits" column shows how
many it made. pi+ (typical sampling) and VCI (CI of every response prefix) cost what they
would cost in a real run of this size. ``--parts`` also times each switch on its own.

TRL 1.12 is not the project's TRL (1.16, which has no PPO): the script installs the
1.12.0 wheel with ``pip install --no-deps --target benchmarks/.trl112`` (git-ignored) on
first use and runs TRL's side in a subprocess that puts that folder first on sys.path;
this process keeps the project's TRL. If TRL 1.12 cannot be installed or run, the script
says so and prints our own timings alone.

Run (one CPU thread, about 1.5 minutes after the one-off install):

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_ppo.py [--runs runs] [--parts]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRL_DIR = Path(__file__).resolve().parent / ".trl112"
TRL_VERSION = "1.12.0"

BATCH = 32  # rollouts per iteration = queries in TRL's dataset = one mini-batch
EPOCHS = 2
RESPONSE_LENGTH = 48
LR = 3e-4
KL_COEF = 0.05
WARMUP = 1
TIMED = 3
SEED = 0


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    torch.set_num_threads(1)


# ---- shared setup ---------------------------------------------------------------------------


def build_models(root: Path) -> dict:
    """Policy folder, two RM folders and the 32 tokenized queries (the spec both sides read)."""
    from diffchat.data import miniworld
    from diffchat.loading import load_tokenizer, tiny_base, wordnet_texts
    from diffchat.ppo.rollout import query_texts
    from diffchat.profiles import TinyLMConfig, get_profile
    from diffchat.reward_models import save_untrained_reward_model

    # The tiny profile's base stage trains its tokenizer on the same kinds of text.
    size = TinyLMConfig()
    triplets = miniworld.generate_triplets(2000, seed=1)
    texts = miniworld.vocabulary_texts() + wordnet_texts()
    texts += [t[k] for t in triplets for k in ("input", "edit", "output")]
    sft = tiny_base(texts, root / "sft", size, seed=SEED)
    tokenizer = load_tokenizer(sft)
    rms = [save_untrained_reward_model(root / target, tokenizer, size, target, seed=seed, max_length=128)
           for seed, target in enumerate(("aesthetic", "pickscore"), start=1)]
    rows = [{"beautified_source_prompt": t["input"], "instruction": t["edit"],
             "beautified_target_prompt": t["output"]} for t in triplets[:BATCH]]
    max_length = get_profile("tiny").rl.max_length
    queries = [tokenizer(q, add_special_tokens=False)["input_ids"]
               for q in query_texts(tokenizer, rows, max_length, RESPONSE_LENGTH)]
    return {"sft": str(sft), "reward": str(rms[0]), "value": str(rms[1]), "aesthetic": str(rms[0]),
            "pickscore": str(rms[1]), "rows": rows, "queries": queries,
            "vocab": len(tokenizer), "query_tokens": [min(map(len, queries)), max(map(len, queries))]}


def spec_from_runs(runs: Path) -> dict:
    """The same spec as build_models, from a finished tiny run's SFT model, RMs and rows."""
    from diffchat.data.collect import read_instructpe
    from diffchat.loading import load_tokenizer
    from diffchat.ppo.rollout import query_texts
    from diffchat.profiles import get_profile

    folder = runs / "tiny"
    needed = [folder / "sft" / "config.json", folder / "rewards" / "rm_aesthetic",
              folder / "rewards" / "rm_pickscore", folder / "instructpe" / "InstructPE_train.json"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"--runs {runs}: not a finished tiny run (missing {', '.join(missing)}); "
                         f"build one with `diffchat run rewards` and `diffchat run sft`")
    tokenizer = load_tokenizer(folder / "sft")
    rows = read_instructpe(folder / "instructpe", "train")[:BATCH]
    max_length = get_profile("tiny").rl.max_length
    queries = [tokenizer(q, add_special_tokens=False)["input_ids"]
               for q in query_texts(tokenizer, rows, max_length, RESPONSE_LENGTH)]
    aesthetic, pickscore = (str(folder / "rewards" / f"rm_{t}") for t in ("aesthetic", "pickscore"))
    return {"sft": str(folder / "sft"), "reward": aesthetic, "value": pickscore, "aesthetic": aesthetic,
            "pickscore": pickscore, "rows": rows, "queries": queries, "vocab": len(tokenizer),
            "query_tokens": [min(map(len, queries)), max(map(len, queries))]}


# ---- ours -----------------------------------------------------------------------------------


def time_ours(spec: dict, out_dir: Path, pi_plus: bool, pi_minus: bool, vci: bool) -> list[dict]:
    """train_ppo's log entries (warm-up first); each has its iteration's ``seconds``."""
    from diffchat.ppo import train_ppo
    from diffchat.profiles import PPOConfig, get_profile

    rl = dataclasses.replace(get_profile("tiny").rl, lr=LR)
    assert rl.epochs == EPOCHS
    # One sample per prompt at temperature 1, as TRL's side samples; gradient clipping, the value
    # head's start at the mean score and the missing-EOS penalty stay on (they cost next to nothing).
    ppo = PPOConfig(rollouts=BATCH, mini_batch_size=BATCH, max_new_tokens=RESPONSE_LENGTH,
                    iterations=WARMUP + TIMED, init_kl_coef=KL_COEF, checkpoint_every=1000,
                    pi_plus=pi_plus, pi_minus=pi_minus, vci=vci, samples_per_prompt=1, temperature=1.0)
    entries: list[dict] = []
    train_ppo(spec["sft"], spec["aesthetic"], spec["pickscore"], spec["rows"], out_dir, rl, ppo,
              seed=SEED, log=entries.append)
    return entries


# ---- TRL 1.12 (subprocess) ------------------------------------------------------------------


def install_trl() -> str | None:
    """Install the TRL 1.12 wheel into TRL_DIR if needed; None when fine, else why not."""
    if (TRL_DIR / f"trl-{TRL_VERSION}.dist-info").is_dir():
        return None
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(TRL_DIR),
           f"trl=={TRL_VERSION}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"pip install failed: {err}"
    if done.returncode != 0:
        return f"pip install failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
    return None


def time_trl(spec_file: Path, result_file: Path) -> tuple[dict[str, list[float]] | None, str]:
    """Run the TRL worker in a subprocess; ({"seconds", "cpu_seconds"} per iteration or None, message)."""
    why = install_trl()
    if why:
        return None, why
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--trl-worker", str(spec_file), str(result_file)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    except subprocess.TimeoutExpired:
        return None, "the TRL 1.12 run took over 15 minutes and was stopped"
    if done.returncode != 0 or not result_file.is_file():
        tail = (done.stdout + done.stderr).strip()[-3000:]
        return None, f"the TRL 1.12 run failed (exit {done.returncode}):\n{tail}"
    result = json.loads(result_file.read_text())
    return ({k: result[k] for k in ("seconds", "cpu_seconds")},
            f"trl {result['trl']} from {result['trl_path']}")


def trl_worker(spec_file: Path, result_file: Path) -> None:
    """TRL 1.12's PPOTrainer on the spec's models and queries; writes per-iteration seconds."""
    sys.path.insert(0, str(TRL_DIR))
    _one_thread()
    import torch
    import trl
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if trl.__version__ != TRL_VERSION:
        raise SystemExit(f"expected trl {TRL_VERSION} from {TRL_DIR}, got {trl.__version__} ({trl.__file__})")
    spec = json.loads(spec_file.read_text())

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []
            self.cpu_marks: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks, self.cpu_marks = [time.perf_counter()], [time.process_time()]

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())
            self.cpu_marks.append(time.process_time())

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(spec["sft"], padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(spec["sft"], dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(spec["sft"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1, dtype=torch.float32)
    value = AutoModelForSequenceClassification.from_pretrained(spec["value"], num_labels=1, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out:
        config = PPOConfig(
            output_dir=out, per_device_train_batch_size=BATCH, num_ppo_epochs=EPOCHS, num_mini_batches=1,
            gradient_accumulation_steps=1, local_rollout_forward_batch_size=BATCH,
            response_length=RESPONSE_LENGTH, total_episodes=BATCH * (WARMUP + TIMED),
            temperature=1.0, learning_rate=LR, kl_coef=KL_COEF, stop_token_id=tokenizer.eos_token_id,
            missing_eos_penalty=None, num_sample_generations=0, use_cpu=True, seed=SEED,
            report_to="none", save_strategy="no", disable_tqdm=True,
        )
        clock = Clock()
        trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref,
                             reward_model=reward, value_model=value,
                             train_dataset=Dataset.from_dict({"input_ids": spec["queries"]}),
                             callbacks=[clock])
        trainer.train()
    seconds = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    cpu_seconds = [b - a for a, b in zip(clock.cpu_marks, clock.cpu_marks[1:])]
    result_file.write_text(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "trl": trl.__version__,
                                       "trl_path": str(Path(trl.__file__).parent)}))


# ---- report -------------------------------------------------------------------------------


def _row(name: str, seconds: list[float], edits: str = "") -> str:
    timed = seconds[WARMUP:]
    cells = " ".join(f"{s:6.2f}" for s in timed)
    return (f"{name:<26} {seconds[0]:8.2f}   {cells}   {statistics.median(timed):6.2f}"
            f" {statistics.mean(timed):6.2f} {edits:>9}")


def main(parts: bool, runs: Path | None) -> None:
    _one_thread()
    import torch
    import transformers
    import trl

    transformers.utils.logging.disable_progress_bar()

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, project trl {trl.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"batch {BATCH}, response <= {RESPONSE_LENGTH} tokens, {EPOCHS} PPO epochs, 1 mini-batch, "
          f"{WARMUP} warm-up + {TIMED} timed iterations")
    runs_table = {"ours, ADM+VCI off": (False, False, False), "ours, ADM+VCI on": (True, True, True)}
    if parts:
        runs_table |= {"ours, pi+ only": (True, False, False), "ours, pi- only": (False, True, False),
                       "ours, VCI only": (False, False, True)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = spec_from_runs(runs) if runs else build_models(root)
        spec_file = root / "spec.json"
        spec_file.write_text(json.dumps(spec))
        policy = f"trained tiny SFT model from {runs}" if runs else "random-init tiny BLOOM"
        print(f"policy: {policy}, vocab {spec['vocab']}, queries {spec['query_tokens'][0]}-"
              f"{spec['query_tokens'][1]} tokens")

        trl_times, trl_note = time_trl(spec_file, root / "trl_result.json")
        ours = {name: time_ours(spec, root / f"ours{n}", *switches)
                for n, (name, switches) in enumerate(runs_table.items())}

    timed_head = " ".join(f"{'it' + str(WARMUP + k + 1):>6}" for k in range(TIMED))
    medians: dict[str, dict[str, float]] = {}
    for clock in ("cpu_seconds", "seconds"):
        print(f"\n{clock.replace('_', ' ') + ' per iteration':<26} {'warm-up':>8}   {timed_head}   "
              f"{'median':>6} {'mean':>6} {'pi- edits':>9}")
        for name, entries in ours.items():
            print(_row(name, [e[clock] for e in entries], str(sum(e["pi_minus_edits"] for e in entries))))
        if trl_times is not None:
            print(_row("TRL 1.12 PPOTrainer", trl_times[clock]))
        medians[clock] = {name: statistics.median(e[clock] for e in entries[WARMUP:])
                          for name, entries in ours.items()}
        if trl_times is not None:
            medians[clock]["trl"] = statistics.median(trl_times[clock][WARMUP:])
    mean_length = statistics.mean(e["response_length"] for e in ours["ours, ADM+VCI off"])
    print(f"(our mean response length: {mean_length:.1f} tokens; pi- edits: all iterations)")
    print()
    if trl_times is None:
        print(f"TRL 1.12 could not be run, so there is no ours/trl ratio: {trl_note}")
    else:
        print(f"TRL side: {trl_note}")
    for clock, label in (("cpu_seconds", "CPU"), ("seconds", "wall")):
        median = medians[clock]
        off = median["ours, ADM+VCI off"]
        line = [f"adm+vci on/off = {median['ours, ADM+VCI on'] / off:.2f}x"]
        if "trl" in median:
            line.insert(0, f"ours/trl = {off / median['trl']:.2f}x")
        line += [f"{name.removeprefix('ours, ')} / off = {median[name] / off:.2f}x" for name in list(runs_table)[2:]]
        print(f"{label:>4}: " + ", ".join(line))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", action="store_true",
                        help="also time pi+, pi- and VCI one at a time (three more runs of ours)")
    parser.add_argument("--runs", type=Path, default=None,
                        help="a runs folder holding a finished tiny run: take its SFT policy, RMs and rows")
    parser.add_argument("--trl-worker", nargs=2, type=Path, metavar=("SPEC", "RESULT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_worker:
        trl_worker(*args.trl_worker)
    else:
        main(args.parts, args.runs)
