"""Dataset collection (section 3.1): the data stage writes raw edit triplets (x_o, i, y_o) and
<simplified, high-quality> prompt pairs, from the mini-world (tiny, small) or real files (paper)."""

from __future__ import annotations

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


# The paper profile's input files, named by environment variables (README, "The paper profile").
REAL_SOURCE_ENV = {"triplets": "DIFFCHAT_IP2P_JSONL", "pb_pairs": "DIFFCHAT_PB_PAIRS"}
PB_TEST_ROWS = 1000  # held-out PB pairs the pb stage evaluates on (it reads at most 300)


def real_source_files() -> dict[str, str | None]:
    """The paper profile's input files, from $DIFFCHAT_IP2P_JSONL and $DIFFCHAT_PB_PAIRS."""
    return {name: os.environ.get(var) or None for name, var in REAL_SOURCE_ENV.items()}


def real_source_key() -> dict[str, list | None]:
    """Path, size and modification time of each input file: part of the data stage's key,
    so pointing a variable at another file, or editing the file, rebuilds the data stage."""
    key = {}
    for name, file in real_source_files().items():
        path = Path(file).expanduser() if file else None
        key[name] = [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] \
            if path is not None and path.is_file() else file
    return key


def hold_out(rows: list, n_train: int, n_test: int, what: str) -> tuple[list, list]:
    """(train, test): the first ``n_test`` rows are the test split and up to ``n_train`` of the
    rest train. A file with no more than ``n_test`` rows keeps a tenth (at least one) for test,
    so that neither split comes out empty."""
    if len(rows) < 2:
        raise ValueError(f"{what}: {len(rows)} row(s); a train and a test split need at least 2")
    if len(rows) <= n_test:
        n_test = max(1, len(rows) // 10)
    return rows[n_test:n_test + n_train], rows[:n_test]


def _real_sources(ctx: StageContext) -> dict:
    """The paper profile's data: InstructPix2Pix's GPT-generated JSONL and PB pairs, from files."""
    import random

    from diffchat.data.loaders import load_instructpix2pix_jsonl, load_pb_pairs, write_jsonl

    files = real_source_files()
    if not all(files.values()):
        raise RuntimeError(
            "the paper profile reads real data: set DIFFCHAT_IP2P_JSONL to InstructPix2Pix's "
            "GPT-generated prompts (JSONL with input, edit, output) and DIFFCHAT_PB_PAIRS to "
            "<simplified, prompt> pairs (JSONL), or use --profile tiny/small for the mini-world")
    for name, file in files.items():
        if not Path(file).expanduser().is_file():
            raise FileNotFoundError(f"${REAL_SOURCE_ENV[name]} names {file}, which is not a file")
    cfg = ctx.profile.data
    rows = load_instructpix2pix_jsonl(Path(files["triplets"]).expanduser())
    random.Random(cfg.seed).shuffle(rows)
    train, test = hold_out(rows, cfg.n_triplets, cfg.n_test, files["triplets"])
    write_jsonl(train, ctx.out / "triplets_train.jsonl")
    write_jsonl(test, ctx.out / "triplets_test_seen.jsonl")
    pairs = load_pb_pairs(Path(files["pb_pairs"]).expanduser())
    pb_train, pb_test = hold_out(pairs, cfg.n_pb_pairs, PB_TEST_ROWS, files["pb_pairs"])
    write_jsonl(pb_train, ctx.out / "pb_train.jsonl")
    write_jsonl(pb_test, ctx.out / "pb_test.jsonl")
    return {"train": len(train), "test_seen": len(test), "pb_train": len(pb_train),
            "pb_test": len(pb_test)}


def read_split(data_dir: Path, split: str, prefix: str = "triplets") -> list[dict]:
    """One file of the data stage (``triplets_train``, ``pb_test``, ...); [] when absent."""
    path = Path(data_dir) / f"{prefix}_{split}.jsonl"
    return read_jsonl(path) if path.exists() else []


def read_instructpe(folder: Path, split: str) -> list[dict]:
    """One split of the instructpe stage; [] (with a one-line warning) when it came out empty,
    so that later stages report the gap and go on with the splits they have."""
    path = Path(folder) / f"InstructPE_{split}.json"
    rows = load_instructpe_json(path, allow_empty=True) if path.exists() else []
    if not rows:
        logging.getLogger(__name__).warning(
            "InstructPE split %r is empty in %s (see funnel_%s.md there): skipped", split, folder, split)
    return rows
