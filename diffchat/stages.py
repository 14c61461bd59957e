"""The course's stages, in pipeline order, registered with the stage runner.

Each stage reads its inputs' artifact folders, calls the package, and writes its own
folder; modules are imported inside the stage so that `diffchat --help` stays fast.
``TOOLS`` holds the CLI commands that are not stages (e.g. ``rewrite``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from diffchat.profiles import Profile
from diffchat.runner import STAGES, StageContext, register

TOOLS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable, str]] = {}

SPLITS = ("train", "test_seen", "test_unseen")
TEST_SPLITS = ("test_seen", "test_unseen")


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def train_once(ctx: StageContext, train: Callable[[Path], dict]) -> dict:
    """Run ``train(folder)`` unless this stage, with this exact config, already trained a model.

    The model is kept in the stage's cache under its config hash, so a crash later in the stage
    (evaluation, say) does not throw away hours of training: the rerun goes straight on.
    """
    done = ctx.cache / f"model-{ctx.key_hash}"
    if not (done / "train_log.json").is_file():
        tmp = ctx.cache / f".training-{ctx.key_hash}"
        shutil.rmtree(tmp, ignore_errors=True)
        train(tmp)
        shutil.rmtree(done, ignore_errors=True)
        tmp.rename(done)
    else:
        ctx.log(f"{ctx.stage}: reusing the model trained with this config in {done}")
    shutil.copytree(done, ctx.out, dirs_exist_ok=True, copy_function=_link_or_copy)
    return json.loads((done / "train_log.json").read_text())


# ---- data (section 3.1: raw edit triplets and <simplified, high-quality> pairs) --------


@register("data", outputs=("triplets_train.jsonl", "pb_train.jsonl"),
          config=lambda p: {k: v for k, v in p.section("data").items() if k != "n_reward_labels"},
          description="raw edit triplets and <simplified, high-quality> prompt pairs")
def data_stage(ctx: StageContext) -> dict:
    cfg = ctx.profile.data
    if cfg.source == "miniworld":
        from diffchat.data.miniworld import generate_all

        files = generate_all(ctx.out, cfg.n_triplets, cfg.n_pb_pairs, cfg.n_test, cfg.seed)
        return {name: str(Path(path).name) for name, path in files.items()}
    return _real_sources(ctx)


def _real_sources(ctx: StageContext) -> dict:
    """The paper profile's data: InstructPix2Pix's GPT-generated JSONL and PB pairs, from files."""
    import random

    from diffchat.data.loaders import load_instructpix2pix_jsonl, load_pb_pairs, write_jsonl

    triplets_file = os.environ.get("DIFFCHAT_IP2P_JSONL")
    pairs_file = os.environ.get("DIFFCHAT_PB_PAIRS")
    if not triplets_file or not pairs_file:
        raise RuntimeError(
            "the paper profile reads real data: set DIFFCHAT_IP2P_JSONL to InstructPix2Pix's "
            "GPT-generated prompts (JSONL with input, edit, output) and DIFFCHAT_PB_PAIRS to "
            "<simplified, prompt> pairs (JSONL), or use --profile tiny/small for the mini-world")
    cfg = ctx.profile.data
    rows = load_instructpix2pix_jsonl(triplets_file)
    random.Random(cfg.seed).shuffle(rows)
    test, train = rows[:cfg.n_test], rows[cfg.n_test:cfg.n_test + cfg.n_triplets]
    write_jsonl(train, ctx.out / "triplets_train.jsonl")
    write_jsonl(test, ctx.out / "triplets_test_seen.jsonl")
    pairs = load_pb_pairs(pairs_file)
    write_jsonl(pairs[:cfg.n_pb_pairs], ctx.out / "pb_train.jsonl")
    write_jsonl(pairs[cfg.n_pb_pairs:cfg.n_pb_pairs + 1000], ctx.out / "pb_test.jsonl")
    return {"train": len(train), "test": len(test), "pb_pairs": min(len(pairs), cfg.n_pb_pairs)}


def read_split(data_dir: Path, split: str, prefix: str = "triplets") -> list[dict]:
    from diffchat.data.loaders import read_jsonl

    path = Path(data_dir) / f"{prefix}_{split}.jsonl"
    return read_jsonl(path) if path.exists() else []


# ---- base: the starting checkpoint of every trained model -----------------------------


def wordnet_texts() -> list[str]:
    """Broad English for the tiny tokenizer: WordNet's lemma names and glosses, so words the
    course never shows (held-out subjects) split into pieces the model has seen."""
    from nltk.corpus import wordnet as wn

    from diffchat.assets import ensure_nltk_data

    ensure_nltk_data()
    texts = []
    for synset in wn.all_synsets():
        texts.append(" ".join(n.replace("_", " ") for n in synset.lemma_names()))
        texts.append(synset.definition())
    return texts


@register("base", inputs=("data",), outputs=("base.json",),
          config=lambda p: {"policy": p.models.policy, "tiny_lm": p.section("tiny_lm")},
          description="the base checkpoint: tiny tokenizer + random BLOOM, or a pretrained model")
def base_stage(ctx: StageContext) -> dict:
    from diffchat.models import resolve_model

    if ctx.profile.models.policy == "tiny":
        from diffchat.data.miniworld import vocabulary_texts
        from diffchat.models import tiny_base

        data = ctx.input("data")
        texts = vocabulary_texts() + wordnet_texts()
        for row in read_split(data, "train"):
            texts += [row["input"], row["edit"], row["output"]]
        texts += [r["prompt"] for r in read_split(data, "train", "pb")]
        tiny_base(texts, ctx.out, ctx.profile.tiny_lm, seed=ctx.profile.data.seed)
        path = "."
    else:
        path = resolve_model(ctx.profile.models.policy)
    _write_json(ctx.out / "base.json", {"policy": path})
    return {"policy": path}


def base_path(ctx_or_root: StageContext, role_stage: str = "base") -> str:
    """The base model's location: a folder inside the base stage, or a hub id / local path."""
    folder = ctx_or_root.input(role_stage)
    path = json.loads((folder / "base.json").read_text())["policy"]
    return str(folder) if path == "." else path


# ---- pb: the prompt-beautification model (section 3.1) --------------------------------


@register("pb", inputs=("data", "base"), outputs=("config.json", "pb_eval.json"),
          config=lambda p: {"pb": p.section("pb"), "base": p.models.pb},
          description="train the prompt-beautification model on <simplified, high-quality> pairs")
def pb_stage(ctx: StageContext) -> dict:
    from diffchat.data.miniworld import quality_tags
    from diffchat.pb import PBModel, evaluate_pb, train_pb

    data = ctx.input("data")
    train = read_split(data, "train", "pb")
    log = train_once(ctx, lambda out: train_pb(train, base_path(ctx), out, ctx.profile.pb,
                                               seed=ctx.profile.data.seed,
                                               dtype=ctx.profile.models.dtype, log=ctx.log))
    test = read_split(data, "test", "pb")[:300]
    pb = PBModel.from_pretrained(ctx.out)
    inputs = [r["simplified"] for r in test]
    outputs = pb.beautify(inputs)
    metrics = evaluate_pb(inputs, outputs, quality_tags())
    examples = [{"simplified": i, "beautified": o, "reference": r["prompt"]}
                for i, o, r in list(zip(inputs, outputs, test))[:12]]
    _write_json(ctx.out / "pb_eval.json", {"metrics": metrics, "examples": examples,
                                           "loss": log["loss"], "seconds": log["seconds"]})
    return {**metrics, "train_seconds": log["seconds"], "steps": log["steps"]}


# ---- instructpe: Fig. 2 ----------------------------------------------------------------


def teacher_spec(p: Profile) -> str:
    """$DIFFCHAT_TEACHER ('rule', 'openai', a model id or folder) overrides the profile's."""
    return os.environ.get("DIFFCHAT_TEACHER") or p.models.teacher


@register("instructpe", inputs=("data", "pb"), outputs=("InstructPE_train.json", "funnel.json"),
          config=lambda p: {"teacher": teacher_spec(p), "ci_threshold": p.ppo.ci_threshold},
          description="assemble InstructPE: PB beautification, T_A/T_B teacher, filters (Fig. 2)")
def instructpe_stage(ctx: StageContext) -> dict:
    from diffchat.data.loaders import save_instructpe
    from diffchat.data.teachers import make_teacher
    from diffchat.instructpe import assemble, ci_quality_filter
    from diffchat.pb import PBModel

    pb = PBModel.from_pretrained(ctx.input("pb"))
    teacher = make_teacher(teacher_spec(ctx.profile), cache_dir=ctx.cache)
    funnels, summary, warnings = {}, {}, {}
    for split in SPLITS:
        triplets = read_split(ctx.input("data"), split)
        if not triplets:
            continue
        # PB outputs depend on the PB model: cache them under this stage's config hash, which
        # covers the pb stage's. Teacher answers are keyed by their request and shared.
        rows, funnel = assemble(triplets, pb.beautify, teacher, ctx.cache / f"pb-{ctx.key_hash}" / split,
                                quality_filter=ci_quality_filter(ctx.profile.ppo.ci_threshold))
        save_instructpe(rows, ctx.out / f"InstructPE_{split}.json")
        funnels[split] = funnel.steps
        summary[split] = len(rows)
        (ctx.out / f"funnel_{split}.md").write_text(funnel.table() + "\n")
        if funnel.shortfall():
            warnings[split] = funnel.shortfall()
            ctx.log(f"instructpe: warning: {split}: {warnings[split]}")
    _write_json(ctx.out / "funnel.json", funnels)
    return {"rows": summary, "teacher_calls": teacher.calls, **({"warnings": warnings} if warnings else {})}


def read_instructpe(folder: Path, split: str) -> list[dict]:
    """One split of the instructpe stage; [] (with a one-line warning) when it came out empty,
    so that later stages report the gap and go on with the splits they have."""
    from diffchat.data.loaders import load_instructpe_json

    path = Path(folder) / f"InstructPE_{split}.json"
    if not path.exists() or not json.loads(path.read_text(encoding="utf-8") or "[]"):
        logging.getLogger(__name__).warning(
            "InstructPE split %r is empty in %s (see funnel_%s.md there): skipped", split, folder, split)
        return []
    return load_instructpe_json(path)


# ---- sft: section 3.2, with the held-out evaluation ------------------------------------


def evaluate_model(model, rows: list[dict]) -> dict:
    """DiffChat against the two baselines on one test split (see ``diffchat.evaluation``).
    An empty split gives ``{"skipped": reason}`` instead of numbers."""
    from diffchat.evaluation import baseline_outputs, evaluate_rewrites

    if not rows:
        return {"skipped": "the split has no rows (see the instructpe stage's funnel)",
                "results": {}, "examples": []}
    outputs = model.rewrite_batch([r["beautified_source_prompt"] for r in rows],
                                  [r["instruction"] for r in rows])
    return {
        "results": {
            "diffchat_sft": evaluate_rewrites(rows, outputs),
            "unchanged": evaluate_rewrites(rows, baseline_outputs(rows, "unchanged")),
            "append": evaluate_rewrites(rows, baseline_outputs(rows, "append")),
        },
        "examples": [{"x": r["beautified_source_prompt"], "i": r["instruction"], "output": o,
                      "reference": r["beautified_target_prompt"]} for r, o in zip(rows[:12], outputs)],
    }


def sft_init(ctx: StageContext) -> str:
    """Where SFT starts: the base model, or (tiny) the trained PB model."""
    if ctx.profile.models.sft_init == "pb":
        return str(ctx.input("pb"))
    return base_path(ctx)


@register("sft", inputs=("instructpe", "base", "pb"), outputs=("config.json", "sft_eval.json"),
          config=lambda p: {"sft": p.section("sft"), "base": p.models.policy, "init": p.models.sft_init},
          description="supervised fine-tuning with template T, loss on y only (section 3.2)")
def sft_stage(ctx: StageContext) -> dict:
    from diffchat.model import DiffChat
    from diffchat.sft import sft_rows, train_completion_model

    ipe = ctx.input("instructpe")
    rows = sft_rows(read_instructpe(ipe, "train"))
    log = train_once(ctx, lambda out: train_completion_model(
        rows, sft_init(ctx), out, ctx.profile.sft, seed=ctx.profile.data.seed,
        dtype=ctx.profile.models.dtype, log=ctx.log))
    # Tiny trains on sequences of at most 128 tokens (all of its rows fit); at inference the
    # budget also has to hold 96 new tokens, so it is at least 192.
    model = DiffChat.from_pretrained(ctx.out, max_length=max(ctx.profile.sft.max_length, 192))
    evaluation = {split: evaluate_model(model, read_instructpe(ipe, split)) for split in TEST_SPLITS}
    _write_json(ctx.out / "sft_eval.json", {"splits": evaluation, "loss": log["loss"],
                                            "seconds": log["seconds"], "steps": log["steps"]})
    summary = {"train_seconds": log["seconds"], "steps": log["steps"]}
    for split, ev in evaluation.items():
        if "skipped" in ev:
            summary[split] = {"skipped": ev["skipped"]}
            ctx.log(f"sft: {split}: evaluation skipped: {ev['skipped']}")
            continue
        res = ev["results"]["diffchat_sft"]["all"]
        summary[split] = {k: res.get(k) for k in ("n", "edit", "strict", "exact", "loop", "ci")}
        summary[split]["append_edit"] = ev["results"]["append"]["all"].get("edit")
    return summary


# ---- rewards: section 3.3 -------------------------------------------------------------


def _rewards_config(p: Profile) -> dict:
    m = p.models
    return {"rm": p.section("rm"), "images": p.section("images"), "n": p.data.n_reward_labels,
            "tis": m.tis[0], "aesthetic": m.aesthetic, "pickscore": m.pickscore,
            "pickscore_processor": m.pickscore_processor, "base": m.reward}


@register("rewards", inputs=("instructpe", "base"), outputs=("labels.jsonl", "rewards_eval.json"),
          config=_rewards_config,
          description="label prompts with image scores; train the aesthetic and PickScore text RMs")
def rewards_stage(ctx: StageContext) -> dict:
    from diffchat.images import load_tis
    from diffchat.reward_models import TARGETS, label_prompts, read_labels, train_reward_model
    from diffchat.scorers import profile_scorer

    p = ctx.profile
    rows = read_instructpe(ctx.input("instructpe"), "train")[:p.data.n_reward_labels]
    raw_of = {r["beautified_target_prompt"]: r["beautified_source_prompt"] for r in rows}
    # Labels depend on the TIS model, the scorers and the image settings: cache them per setup.
    setup = {k: v for k, v in _rewards_config(p).items() if k not in ("rm", "n", "base")}
    tag = hashlib.sha256(json.dumps(setup, sort_keys=True, default=str).encode()).hexdigest()[:12]
    labels_path = ctx.cache / f"labels-{tag}.jsonl"
    label_prompts(list(raw_of), load_tis(p.models.tis[0]), profile_scorer("aesthetic", p),
                  profile_scorer("pickscore", p), labels_path, seed=p.images.seeds[0], images=p.images)
    by_prompt = {r["prompt"]: r for r in read_labels(labels_path)}
    labels = [{**by_prompt[q], "raw": raw} for q, raw in raw_of.items()]
    with (ctx.out / "labels.jsonl").open("w", encoding="utf-8") as f:
        for r in labels:
            f.write(json.dumps({k: r[k] for k in ("prompt", *TARGETS)}) + "\n")
    reward_base = base_path(ctx) if p.models.reward in ("tiny", p.models.policy) else p.models.reward
    n_eval = max(1, len(labels) // 5)
    train, held_out = labels[n_eval:], labels[:n_eval]
    results = {}
    for target in TARGETS:
        res = train_reward_model(train, target, reward_base, ctx.out / f"rm_{target}", p.rm,
                                 seed=p.data.seed, eval_rows=held_out)
        results[target] = res
    _write_json(ctx.out / "rewards_eval.json", results)
    return {t: {k: float(f"{r[k]:.4g}") for k in ("mse", "spearman", "baseline_mse", "baseline_spearman")}
            for t, r in results.items()}


# ---- CLI tools that are not stages -----------------------------------------------------


def _rewrite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", help="the current prompt x")
    p.add_argument("--instruction", "-i", required=True, help="what to change, e.g. 'make it night'")
    p.add_argument("--model", default=None,
                   help="a model folder or hub id (default: the profile's trained sft stage)")
    p.add_argument("--profile", default=None, choices=("tiny", "small", "paper"))
    p.add_argument("--root", default=None, help="runs folder (default $DIFFCHAT_RUNS or ./runs)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")


def _rewrite(args: argparse.Namespace) -> None:
    from transformers.utils import logging as hf_logging

    from diffchat.model import DiffChat, check_text
    from diffchat.runner import is_done, stage_dir

    check_text(args.prompt, "prompt")
    check_text(args.instruction, "instruction")
    hf_logging.disable_progress_bar()
    model = args.model
    if model is None:
        if not is_done("sft", args.profile, args.root):
            raise RuntimeError(f"no trained model for profile {args.profile or 'tiny'}: run "
                               "`diffchat sft` (or the course) first, or pass --model")
        model = stage_dir("sft", args.profile, args.root)
    decoding = {"do_sample": True, "top_p": 0.9, "temperature": 0.8} if args.sample else {}
    print(DiffChat.from_pretrained(model).rewrite(args.prompt, args.instruction, **decoding))


TOOLS["rewrite"] = (_rewrite_args, _rewrite, "rewrite a prompt by an instruction with a trained model")

__all__ = ["STAGES", "TOOLS", "Profile", "register"]
