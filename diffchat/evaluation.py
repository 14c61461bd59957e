"""Section 4's automatic evaluation: images with fixed seeds, five image scores and CI, Tables 1, 2, 4.

Protocol (section 4.1): for each test row, the raw image is drawn from the raw prompt x and each
method's target image from its target prompt y (InstructPix2Pix instead edits the raw image),
on each TIS model, with the profile's fixed seeds. Each target image gets PickScore, the
aesthetic score, HPS, CLIP-S (against y), D-CLIP-S (image change against the x -> y text change)
and y's CI score before thresholding. InstructPix2Pix has no y: it is scored against the
reference target prompt and has no CI.

Resuming: images are saved as PNGs as they are made and each scored image is appended to
``records.jsonl`` (fsync'd) at once, so an evaluation killed midway restarts where it stopped,
drawing no image twice. Records and images of a method are tied to its ``source`` (the run's key,
or the teacher / InstructPix2Pix id): a retrained model's images are never mixed with the old.

Scales (Table 1): PickScore and the aesthetic score as they come; HPS and D-CLIP-S are cosines,
printed x100 as the paper does; CLIP-S is already 100 * max(cos, 0); CI x100.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from PIL import Image

from diffchat.competitors import ABLATIONS, METHODS, Method
from diffchat.jsonl import JsonlLog, read_rows
from diffchat.profiles import Profile

if TYPE_CHECKING:
    from diffchat.runner import StageContext

log = logging.getLogger(__name__)

__all__ = ["METRICS", "PAPER_TABLE1", "Evaluation", "ImageSettings", "all_tables", "average_ranks",
           "check_request", "eval_stage", "export_tables", "load_scorers", "plot_grid", "plot_table", "read_records",
           "results_table", "to_markdown"]

# score key -> (the paper's column name, factor to the paper's scale)
METRICS: dict[str, tuple[str, float]] = {
    "pickscore": ("PickScore", 1.0),
    "aesthetic": ("Aes. Score", 1.0),
    "hps": ("HPS", 100.0),  # cosine -> percent, as Table 1 prints it
    "clip": ("CLIP-S", 1.0),  # already 100 * max(cos, 0)
    "dclip": ("D-CLIP-S", 100.0),  # cosine -> percent
    "ci": ("CI Score", 100.0),  # raw (pre-threshold) CI x100
}
# Table 1 of the paper (average over the five SD models), rows named as ours; NaN = "-".
PAPER_TABLE1 = pd.DataFrame(
    [[19.569, 6.394, 20.822, 29.354, 15.802, 87.496, 2.500],
     [19.346, 5.726, 19.036, 22.670, 17.327, float("nan"), 3.400],
     [19.571, 6.392, 20.836, 29.350, 16.596, 85.089, 2.667],
     [19.584, 6.416, 20.851, 29.397, 16.787, 87.314, 1.333]],
    index=[METHODS[m].label for m in ("teacher", "instructpix2pix", "sft", "ppo")],
    columns=[name for name, _ in METRICS.values()] + ["Avg. Rank"])
RECORDS = "records.jsonl"
PROMPTS = "prompts.jsonl"
RECORD_FIELDS = ("method", "tis", "example", "seed", "source", "image")


def average_ranks(table: pd.DataFrame) -> pd.Series:
    """Average rank of each method over the metrics it has (the paper's "Avg. Rank.").

    Rule: ``table`` has one row per method and one column per metric, higher is better.
    Within each metric the methods are ranked 1 (best) downwards; tied values share the
    best rank of the tie (``rank(ascending=False, method="min")``), so two methods tied
    for first both get 1 and the next one gets 3. A NaN cell means the metric does not
    apply to that method (InstructPix2Pix has no CI score): it gets no rank there and
    is not counted, and the other methods are ranked among themselves. A method's value
    is the mean of its ranks over the metrics it has; lower is better.

    Returns a float Series indexed like ``table``'s rows, named ``"Avg. Rank"``.
    """
    ranks = table.rank(axis=0, ascending=False, method="min", na_option="keep")
    return ranks.mean(axis=1, skipna=True).rename("Avg. Rank")


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class ImageSettings:
    """How the competitors draw: seeds for every model, InstructPix2Pix's own settings."""

    seeds: tuple[int, ...]
    ip2p_steps: int
    ip2p_guidance: float
    ip2p_image_guidance: float


class Evaluation:
    """The resumable protocol over one work folder (records, prompts and images under it)."""

    def __init__(self, work: str | Path, rows: Sequence[dict], settings: ImageSettings):
        self.work = Path(work)
        self.rows = list(rows)
        self.settings = settings
        self.work.mkdir(parents=True, exist_ok=True)

    # ---- target prompts: written once per method and source, kept across runs ----
    def prompts(self, method: Method, source: str, write: Any) -> list[str]:
        """The method's target prompts, from ``prompts.jsonl`` or ``write()`` (then saved)."""
        with JsonlLog(self.work / PROMPTS, required=("method", "source", "prompts")) as log_:
            for row in log_.rows:
                if row["method"] == method.name and row["source"] == source and len(row["prompts"]) == len(self.rows):
                    return row["prompts"]
            prompts = list(write())
            log_.append([{"method": method.name, "source": source, "prompts": prompts}])
        return prompts

    # ---- images ----
    def _path(self, tis: str, folder: str, example: int, seed: int) -> Path:
        return self.work / "images" / tis / folder / f"{example:05d}-s{seed}.png"

    def _images(self, paths: list[Path], make: Any) -> list[Image.Image]:
        """Images at ``paths``: read the saved ones, make the rest with ``make(indices)``."""
        missing = [n for n, p in enumerate(paths) if not p.is_file()]
        if missing:
            for n, image in zip(missing, make(missing), strict=True):
                paths[n].parent.mkdir(parents=True, exist_ok=True)
                tmp = paths[n].with_suffix(".tmp.png")
                image.save(tmp)
                tmp.replace(paths[n])
        return [Image.open(p).convert("RGB") for p in paths]

    def run(self, tis_models: dict[str, Any], methods: dict[Method, tuple[str, list[str]]],
            scorers: dict[str, Any], ip2p: Any = None, batch_size: int = 8,
            progress: bool = True) -> list[dict]:
        """Make and score every missing (TIS, method, example, seed) image; returns all records.

        ``methods`` maps each method to (source, target prompts); ``ip2p`` is the loaded
        InstructPix2Pix pipeline when that method is in ``methods``.
        """
        from tqdm.auto import tqdm

        jobs = [(e, s) for e in range(len(self.rows)) for s in self.settings.seeds]
        with JsonlLog(self.work / RECORDS, required=RECORD_FIELDS) as records:
            done = {(r["tis"], r["method"], r["source"], r["example"], r["seed"]) for r in records.rows}
            for tis_name, tis in tis_models.items():
                for method, (source, prompts) in methods.items():
                    todo = [(e, s) for e, s in jobs if (tis_name, method.name, source, e, s) not in done]
                    starts = range(0, len(todo), batch_size)
                    for start in tqdm(starts, desc=f"{tis_name} {method.name}", disable=not progress):
                        new = self._batch(tis_name, tis, method, source, prompts,
                                          todo[start:start + batch_size], scorers, ip2p)
                        records.append(new)
                        records.rows.extend(new)
            return [r for r in records.rows
                    if r["tis"] in tis_models and any(r["method"] == m.name and r["source"] == src
                                                      for m, (src, _) in methods.items())]

    def _batch(self, tis_name: str, tis: Any, method: Method, source: str, prompts: list[str],
               batch: list[tuple[int, int]], scorers: dict[str, Any], ip2p: Any) -> list[dict]:
        """One batch of (example, seed): raw images, the method's images, their scores."""
        from diffchat.competitors import edit_images
        from diffchat.images import create_images
        from diffchat.integrity import ci_score

        rows = [self.rows[e] for e, _ in batch]
        seeds = [s for _, s in batch]
        xs = [r["beautified_source_prompt"] for r in rows]
        ys = [prompts[e] for e, _ in batch]
        raw_folder = f"raw-{_fingerprint([tis.spec.repo, tis.spec.resolution, tis.spec.steps])}"
        raw_paths = [self._path(tis_name, raw_folder, e, s) for e, s in batch]
        raw = self._images(raw_paths, lambda idx: create_images(
            [xs[n] for n in idx], tis, [seeds[n] for n in idx], batch_size=len(idx), progress=False))
        paths = [self._path(tis_name, f"{method.name}-{source}", e, s) for e, s in batch]
        st = self.settings
        if method.kind == "edit":
            images = self._images(paths, lambda idx: edit_images(
                ip2p, [raw[n] for n in idx], [rows[n]["instruction"] for n in idx],
                [seeds[n] for n in idx], steps=st.ip2p_steps, guidance=st.ip2p_guidance,
                image_guidance=st.ip2p_image_guidance))
        else:
            images = self._images(paths, lambda idx: create_images(
                [ys[n] for n in idx], tis, [seeds[n] for n in idx], batch_size=len(idx), progress=False))
        scores = {kind: scorer.score(images, None if kind == "aesthetic" else ys)
                  for kind, scorer in scorers.items() if kind != "dclip"}
        scores["dclip"] = scorers["dclip"].score_pairs(raw, images, xs, ys)
        new = []
        for n, ((e, s), row) in enumerate(zip(batch, rows)):
            ci = (None if method.kind == "edit" else
                  ci_score(row["source_prompt"], row["instruction"], row["target_prompt"], ys[n], threshold=None))
            new.append({
                "method": method.name, "tis": tis_name, "example": e, "seed": s, "source": source,
                "source_prompt": xs[n], "instruction": row["instruction"], "target_prompt": ys[n],
                "reference": row["beautified_target_prompt"],
                "raw_image": str(raw_paths[n].relative_to(self.work)),
                "image": str(paths[n].relative_to(self.work)),
                "scores": {**{k: v[n] for k, v in scores.items()}, "ci": ci},
            })
        return new


# ---- tables ----

def results_table(records: Sequence[dict], tis: str | None = None,
                  methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean scores on the paper's scales, one row per method (the paper's row names), one column
    per metric, plus Avg. Rank; ``tis`` keeps one TIS model (Table 4), None averages over the TIS
    models with equal weight (Table 1)."""
    if not records:
        raise ValueError("no evaluation records: run the eval stage (`diffchat eval`) first")
    frame = pd.DataFrame([{"method": r["method"], "tis": r["tis"],
                           **{METRICS[k][0]: (v * METRICS[k][1] if v is not None else float("nan"))
                              for k, v in r["scores"].items()}} for r in records])
    if tis is not None:
        if tis not in set(frame["tis"]):
            raise ValueError(f"no records for TIS model {tis!r}: have {sorted(set(frame['tis']))}")
        frame = frame[frame["tis"] == tis]
    order = [m for m in (methods or METHODS) if m in set(frame["method"])]
    table = frame.groupby(["tis", "method"]).mean(numeric_only=True).groupby("method").mean()
    table = table.loc[order, [name for name, _ in METRICS.values()]]
    table.index = [METHODS[m].label for m in order]
    table["Avg. Rank"] = average_ranks(table)
    return table


def all_tables(records: Sequence[dict]) -> dict[str, pd.DataFrame]:
    """Table 1 (average over TIS), Table 4 (one per TIS model) and Table 2 (the ablations)."""
    tables = {"table1": results_table(records)}
    for tis in dict.fromkeys(r["tis"] for r in records):
        tables[f"table4_{tis}"] = results_table(records, tis)
    present = {r["method"] for r in records}
    if "ppo" in present and len(present & set(ABLATIONS)) > 1:
        tables["table2"] = results_table(records, methods=ABLATIONS)
    return tables


def to_markdown(table: pd.DataFrame) -> str:
    """A markdown table with 3 decimals, '-' where a metric does not apply (as the paper prints)."""
    lines = ["| method | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    for name, row in table.iterrows():
        cells = ["-" if pd.isna(v) else f"{v:.3f}" for v in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def export_tables(tables: dict[str, pd.DataFrame], out: str | Path) -> list[Path]:
    """Each table as ``<name>.md`` and ``<name>.csv`` (3 decimals, as the paper prints)."""
    out = Path(out)
    written = []
    for name, table in tables.items():
        table.round(3).to_csv(out / f"{name}.csv", index_label="method")
        (out / f"{name}.md").write_text(to_markdown(table) + "\n")
        written += [out / f"{name}.csv", out / f"{name}.md"]
    return written


# ---- pictures ----

def plot_grid(records: Sequence[dict], folder: str | Path, tis: str, examples: Sequence[int],
              methods: Sequence[str] | None = None, seed: int | None = None, wrap: int = 28):
    """Fig. 4/12-style grid: one row per example; the raw image with x and the instruction, then
    each method's image with its target prompt as caption. Returns a matplotlib Figure."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    mine = [r for r in records if r["tis"] == tis and r["example"] in set(examples)
            and (seed is None or r["seed"] == seed)]
    if not mine:
        raise ValueError(f"no records for TIS model {tis!r} and examples {list(examples)}")
    seed = mine[0]["seed"] if seed is None else seed
    methods = [m for m in (methods or METHODS) if any(r["method"] == m for r in mine)]
    by = {(r["method"], r["example"]): r for r in mine if r["seed"] == seed}
    fig, axes = plt.subplots(len(examples), len(methods) + 1, squeeze=False,
                             figsize=(2.4 * (len(methods) + 1), 3.2 * len(examples)))
    for row, example in enumerate(examples):
        first = next(r for (m, e), r in by.items() if e == example)
        cells = [("Raw image", first["raw_image"], f"{first['source_prompt']}\n[i] {first['instruction']}")]
        cells += [(METHODS[m].label, by[m, example]["image"],
                   f"(edits the raw image) {first['instruction']}" if METHODS[m].kind == "edit"
                   else by[m, example]["target_prompt"]) for m in methods if (m, example) in by]
        for col, (title, image, caption) in enumerate(cells):
            ax = axes[row][col]
            ax.imshow(Image.open(folder / image))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
            ax.set_xlabel("\n".join(textwrap.wrap(caption, wrap)[:8]), fontsize=6)
    fig.suptitle(f"{tis}: raw image, instruction, and each method's target image (seed {seed})")
    fig.tight_layout()
    return fig


def plot_table(table: pd.DataFrame, title: str = "") -> Any:
    """A results table as one small bar chart per column (each metric has its own scale), one
    bar per method; a method without the metric ("-") gets no bar. A matplotlib Figure."""
    import matplotlib.pyplot as plt

    cols = list(table.columns)
    fig, axes = plt.subplots(1, len(cols), figsize=(2.1 * len(cols), 3.0), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, col in zip(axes[0], cols):
        values = table[col]
        for n, (method, value) in enumerate(values.items()):
            if not pd.isna(value):
                ax.bar(n, value, color=colours[n % len(colours)], label=method)
        finite = values.dropna()
        if len(finite):
            low, high = finite.min(), finite.max()
            pad = (high - low) * 0.3 or abs(high) * 0.05 or 1.0
            ax.set_ylim(low - pad, high + pad)  # bars from 0 would hide differences of a few percent
        ax.set_xticks([])
        ax.set_title(col, fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:  # the first column may lack a method ("-"): collect every method once
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


# ---- the stage ----

def check_request(methods: Sequence[str] | None, tis: Sequence[str] | None, profile: Profile,
                  root: str | Path | None = None) -> None:
    """Named methods and TIS models exist and their runs have finished (else one-line errors)."""
    from diffchat.competitors import available_methods
    from diffchat.images import get_tis_spec

    if methods:
        available_methods(methods, profile, root, strict=True)
    for name in tis or ():
        get_tis_spec(name)


def load_scorers(profile: Profile, clip_dir: str | Path | None = None) -> dict[str, Any]:
    """Every scorer of the profile; ``clip_dir``: the clip stage's folder (the tiny CLIP)."""
    from diffchat.scorers import SCORER_KINDS, profile_scorer

    return {kind: profile_scorer(kind, profile, clip_dir=clip_dir) for kind in SCORER_KINDS}


def method_source(method: Method, profile: Profile, root: Path, config: dict) -> str:
    """What a method's outputs depend on: a run's key, the teacher or InstructPix2Pix id."""
    from diffchat.pipeline import read_manifest

    if method.stage:
        return read_manifest(method.stage, profile, root)["key_hash"][:10]
    if method.name == "teacher":
        return _fingerprint(config["teacher"])
    if method.name == "instructpix2pix":
        ev = config["eval"]
        return _fingerprint([ev[k] for k in ("instructpix2pix", "ip2p_steps", "ip2p_guidance", "ip2p_image_guidance")])
    return "append"


def eval_stage(ctx: StageContext) -> dict:
    """Run the protocol over the profile's TIS models and methods; write records, tables, grids."""
    import matplotlib.pyplot as plt

    from diffchat.competitors import available_methods, load_instructpix2pix, write_prompts
    from diffchat.data.loaders import load_instructpe_json
    from diffchat.images import load_tis
    from diffchat.runner import write_json

    cfg, profile = ctx.config, ctx.profile
    ev = cfg["eval"]
    path = ctx.input("instructpe") / f"InstructPE_{ev['split']}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the instructpe stage wrote no {ev['split']!r} split")
    rows = load_instructpe_json(path)[: ev["n_examples"]]
    if not rows:
        raise ValueError(f"{path} has no rows to evaluate")
    methods, notes = available_methods(ev["methods"], profile, ctx.root, strict=False)
    for note in notes:
        ctx.log(f"eval: {note}")
    keys = [_manifest_hash(ctx, "instructpe"), _manifest_hash(ctx, "clip")]
    work = ctx.cache / f"work-{_fingerprint([cfg['scorers'], ev['split'], *keys])}"
    settings = ImageSettings(tuple(cfg["seeds"]), ev["ip2p_steps"], ev["ip2p_guidance"], ev["ip2p_image_guidance"])
    evaluation = Evaluation(work, rows, settings)
    sources = {m: method_source(m, profile, ctx.root, cfg) for m in methods}
    plan = {m: (sources[m], evaluation.prompts(m, sources[m], lambda m=m: write_prompts(
        m, rows, profile, ctx.root, ctx.cache))) for m in methods}
    ip2p = (load_instructpix2pix(ev["instructpix2pix"]) if any(m.kind == "edit" for m in methods) else None)
    scorers = load_scorers(profile, ctx.input("clip"))
    records = []
    for tis_name in cfg["tis"]:  # one TIS model in memory at a time
        tis = load_tis(tis_name)
        records += evaluation.run({tis.name: tis}, plan, scorers, ip2p)
        del tis
    shutil.copytree(work / "images", ctx.out / "images", dirs_exist_ok=True)
    with open(ctx.out / RECORDS, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    tables = all_tables(records)
    export_tables(tables, ctx.out)
    for tis_name in dict.fromkeys(r["tis"] for r in records):
        fig = plot_grid(records, ctx.out, tis_name, list(range(min(4, len(rows)))), seed=settings.seeds[0])
        fig.savefig(ctx.out / f"grid_{tis_name}.png", dpi=120)
        plt.close(fig)
    summary = {"examples": len(rows), "seeds": list(settings.seeds), "tis": list(dict.fromkeys(r["tis"] for r in records)),
               "methods": [m.name for m in methods], "left_out": notes, "images": len(records),
               "table1": tables["table1"].round(3).to_dict(orient="index")}
    write_json(ctx.out / "eval_summary.json", summary)
    return {k: v for k, v in summary.items() if k != "table1"}


def _manifest_hash(ctx: StageContext, stage: str) -> str | None:
    """An input run's key: the test rows (and so the example numbers) depend on instructpe's,
    the scores on the clip stage's tiny CLIP."""
    manifest = ctx.input(stage) / "manifest.json"
    return json.loads(manifest.read_text())["key_hash"] if manifest.is_file() else None


def read_records(folder: str | Path) -> list[dict]:
    """The records an eval run wrote (``runs/<profile>/eval/records.jsonl``)."""
    return read_rows(Path(folder) / RECORDS, required=RECORD_FIELDS)
