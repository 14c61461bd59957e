"""Dataset collection (section 3.1): the data stage writes raw edit triplets (x_o, i, y_o) and
<simplified, high-quality> prompt pairs, from the mini-world (tiny, small) or real files (paper)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from diffchat.data.loaders import load_instructpe_json, read_jsonl
from diffchat.runner import StageContext


def data_stage(ctx: StageContext) -> dict:
    """Mini-world triplets and PB pairs (tiny, small), or the paper profile's real files."""
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
    """One file of the data stage (``triplets_train``, ``pb_test``, ...); [] when absent."""
    path = Path(data_dir) / f"{prefix}_{split}.jsonl"
    return read_jsonl(path) if path.exists() else []


def read_instructpe(folder: Path, split: str) -> list[dict]:
    """One split of the instructpe stage; [] (with a one-line warning) when it came out empty,
    so that later stages report the gap and go on with the splits they have."""
    path = Path(folder) / f"InstructPE_{split}.json"
    if not path.exists() or not json.loads(path.read_text(encoding="utf-8") or "[]"):
        logging.getLogger(__name__).warning(
            "InstructPE split %r is empty in %s (see funnel_%s.md there): skipped", split, folder, split)
        return []
    return load_instructpe_json(path)
