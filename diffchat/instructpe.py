"""InstructPE assembly (section 3.1, Fig. 2): raw edit triplets -> (x, i, y).

1. The PB model beautifies the raw prompt x_o and the raw target y_o into x' and y'.
2. Whichever side kept more of its raw keywords (``extract_keywords``, Listing 1 line 10)
   is trusted: if y' kept more, the teacher writes x from (y', i) with T_B; otherwise it
   writes y from (x', i) with T_A. We compare the *share* of keywords kept, since x_o and
   y_o can differ in length by the edit itself.
3. Post-processing drops rows whose teacher request failed, non-English rows (py3langid,
   offline), NSFW rows (a word list, ``data/nsfw_words.txt``) and low-quality rows (a
   pluggable filter; by default the CI score of y against (x_o, i, y_o) must reach 0.7).

Held-out splits of generated data (the mini-world) must keep their rows, or the held-out
numbers come from a sample biased towards easy edits (the rules cannot undo a removal, or read
a prompt whose unseen subject the PB model misspelt). There the rule teacher gets the raw edit
the mini-world made and repeats it where its rules fail (``RuleTeacher``), and the quality
filter marks rows (``low_quality``) instead of dropping them: the edit is right by
construction, and a low score only says that the PB model lost a word, most often an unseen
subject. The training split is assembled exactly as the paper does.

Rows are written in the released InstructPE format plus the raw target y_o (which the CI
score needs), the template used and any edit metadata the triplet carried.
PB outputs and teacher answers are cached on disk, so an interrupted assembly resumes.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffchat.data.miniworld import SPLITS
from diffchat.jsonl import JsonlLog
from diffchat.profiles import data_dir
from diffchat.runner import StageContext, write_json

if TYPE_CHECKING:
    from diffchat.data.teachers import Request

META_FIELDS = ("kind", "added", "removed", "subject")


@dataclass
class Funnel:
    """How many rows each step kept, and why rows were dropped."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: str, kept: int, dropped: Counter | None = None) -> None:
        self.steps.append({"step": step, "kept": kept, "dropped": dict(dropped or {})})

    def table(self) -> str:
        lines = ["| step | kept | dropped (why) |", "|---|---|---|"]
        for s in self.steps:
            why = ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()) or "-"
            lines.append(f"| {s['step']} | {s['kept']} | {why} |")
        warning = self.shortfall()
        if warning:
            lines += ["", f"**Warning:** {warning}"]
        return "\n".join(lines)

    def shortfall(self, min_share: float = 0.5) -> str | None:
        """A one-line warning when fewer than ``min_share`` of the raw rows survived, naming
        the step that dropped most and why; None when the split came through."""
        if not self.steps or not self.steps[0]["kept"]:
            return None
        raw, kept = self.steps[0]["kept"], self.steps[-1]["kept"]
        if kept >= min_share * raw:
            return None
        losses = [(before["kept"] - after["kept"], after) for before, after in zip(self.steps, self.steps[1:])]
        lost, worst = max(losses, key=lambda item: item[0])
        why = ", ".join(f"{k}: {v}" for k, v in worst["dropped"].items()) or "no reason recorded"
        return (f"only {kept} of {raw} rows kept; the step '{worst['step']}' dropped {lost} ({why})"
                + (": the split is empty" if kept == 0 else ""))


def funnel_side_by_side(funnels: dict[str, list[dict[str, Any]]]) -> str:
    """One markdown table of the rows each step kept, a column per split (the instructpe
    stage's ``funnel.json``), so the test splits' losses read beside training's."""
    splits = list(funnels)
    if not splits:
        raise ValueError("no funnels to show: funnel.json holds no split")
    n_steps = {len(steps) for steps in funnels.values()}
    if len(n_steps) != 1:
        raise ValueError(f"the splits' funnels have different steps: {({s: len(f) for s, f in funnels.items()})}")
    lines = ["| step | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for k, step in enumerate(funnels[splits[0]]):
        name = re.sub(r" \(.*\)$", "", step["step"])
        cells = []
        for split in splits:
            kept, first = funnels[split][k]["kept"], funnels[split][0]["kept"]
            cells.append(f"{kept} ({100 * kept / first:.0f}%)" if first else str(kept))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def beautify_cached(texts: Sequence[str], beautify: Callable[[list[str]], list[str]],
                    cache_path: Path, chunk: int = 512, progress: bool = True) -> dict[str, str]:
    """PB outputs for the unique texts, computed chunk by chunk and cached as they finish."""
    from tqdm.auto import tqdm

    with JsonlLog(cache_path, required=("in", "out")) as memo:
        done = {row["in"]: row["out"] for row in memo.rows}
        todo = [t for t in dict.fromkeys(texts) if t not in done]
        for start in tqdm(range(0, len(todo), chunk), desc="PB beautify", disable=not progress):
            part = todo[start:start + chunk]
            outputs = beautify(part)
            memo.append({"in": t, "out": out} for t, out in zip(part, outputs))
            done.update(zip(part, outputs))
    return done


def keyword_retention(raw: str, beautified: str) -> float:
    """Share of the raw prompt's keywords that are still keywords of the beautified one."""
    from diffchat.integrity import extract_keywords

    raw_kw = set(extract_keywords(raw))
    if not raw_kw:
        return 1.0
    return len(raw_kw & set(extract_keywords(beautified))) / len(raw_kw)


@dataclass(frozen=True)
class TemplateChoice:
    """Fig. 2's decision for one triplet: how much of its keywords each beautified side kept,
    and which side the teacher is asked to write."""

    keep_x: float  # keyword_retention(x_o, x')
    keep_y: float  # keyword_retention(y_o, y')
    template: str  # "T_A": trust x', write y; "T_B": trust y', write x
    known: str  # the trusted beautified side
    instruction: str = ""

    @property
    def request(self) -> Request:
        """The teacher request this choice makes (Fig. 10 (b) for T_A, (a) for T_B)."""
        from diffchat.data.teachers import Request

        return Request("write_target" if self.template == "T_A" else "write_source", self.known,
                       self.instruction)


def choose_template(x_o: str, y_o: str, x_b: str, y_b: str, instruction: str = "") -> TemplateChoice:
    """Trust the beautified side that kept the larger share of its raw keywords: T_B (write x
    from y') when y' kept more, else T_A (write y from x'); a tie goes to T_A."""
    keep_x, keep_y = keyword_retention(x_o, x_b), keyword_retention(y_o, y_b)
    if keep_y > keep_x:
        return TemplateChoice(keep_x, keep_y, "T_B", y_b, instruction)
    return TemplateChoice(keep_x, keep_y, "T_A", x_b, instruction)


@lru_cache(maxsize=1)
def _nsfw_words() -> frozenset[str]:
    lines = (data_dir() / "nsfw_words.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip().lower() for w in lines if w.strip() and not w.startswith("#"))


def is_nsfw(text: str) -> bool:
    return any(w in _nsfw_words() for w in re.findall(r"[a-z]+", text.lower()))


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def is_english(text: str, min_prob: float = 0.5) -> bool:
    """py3langid's guess. Prompt tags ('8k', 'artstation') confuse it, so only a confident
    non-English guess drops a row."""
    lang, prob = _identifier().classify(text)
    return lang == "en" or prob < min_prob


def ci_quality_filter(threshold: float = 0.7) -> Callable[[dict], bool]:
    """Default quality filter: the CI score of y against (x_o, i, y_o) reaches ``threshold``.
    A reward-model filter plugs in the same way (a function of the row)."""
    from diffchat.integrity import ci_score

    def keep(row: dict) -> bool:
        return ci_score(row["source_prompt"], row["instruction"], row["target_prompt"],
                        row["beautified_target_prompt"], threshold=threshold) > 0

    return keep


def assemble(
    triplets: Sequence[dict],
    beautify: Callable[[list[str]], list[str]],
    teacher,
    cache_dir: Path,
    *,
    quality_filter: Callable[[dict], bool] | None = None,
    keep_rows: bool = False,
    progress: bool = True,
) -> tuple[list[dict], Funnel]:
    """Fig. 2 end to end: triplets {input, edit, output} -> InstructPE rows and a funnel.

    ``keep_rows`` (a held-out split of generated data, see ``keeps_every_row``): the teacher
    gets each triplet's raw edit, and rows the quality filter fails are kept and marked
    ``low_quality: True`` instead of dropped.
    """
    from diffchat.data.teachers import ask_many

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    funnel = Funnel()
    funnel.add("raw triplets", len(triplets))
    raw = [t["input"] for t in triplets] + [t["output"] for t in triplets]
    pretty = beautify_cached(raw, beautify, cache_dir / "pb_cache.jsonl", progress=progress)

    choices = [choose_template(t["input"], t["output"], pretty[t["input"]], pretty[t["output"]], t["edit"])
               for t in triplets]
    plans = [(c.template, c.known) for c in choices]
    requests = [dataclasses.replace(c.request, raw_edit=(t["input"], t["output"]))
                if keep_rows and t.get("kind") is not None else c.request for c, t in zip(choices, triplets)]
    answers = ask_many(teacher, requests, progress=progress, desc="teacher (T_A/T_B)")

    rows, dropped = [], Counter()
    for t, (template, known), answer in zip(triplets, plans, answers):
        if not answer or not answer.strip():
            dropped["teacher failed or empty"] += 1
            continue
        x, y = (answer, known) if template == "T_B" else (known, answer)
        row = {"source_prompt": t["input"], "instruction": t["edit"], "beautified_source_prompt": x.strip(),
               "beautified_target_prompt": y.strip(), "target_prompt": t["output"], "template": template}
        row.update({k: t[k] for k in META_FIELDS if t.get(k) is not None})
        rows.append(row)
    n_a = sum(p[0] == "T_A" for p in plans)
    funnel.add(f"teacher answered (T_A {n_a} / T_B {len(plans) - n_a})", len(rows), dropped)

    for step, keep in (
        ("English", lambda r: is_english(r["beautified_source_prompt"]) and is_english(r["beautified_target_prompt"])),
        ("not NSFW", lambda r: not (is_nsfw(r["beautified_source_prompt"]) or is_nsfw(r["beautified_target_prompt"]))),
    ):
        kept = [r for r in rows if keep(r)]
        funnel.add(step, len(kept), Counter({f"failed {step} filter": len(rows) - len(kept)}))
        rows = kept
    keep = quality_filter or ci_quality_filter()
    passed = [keep(r) for r in rows]
    if keep_rows:
        for r, ok in zip(rows, passed):
            r["low_quality"] = not ok
        funnel.add("quality (held-out: marked, kept)", len(rows),
                   Counter({"marked low quality": passed.count(False)}))
    else:
        rows = [r for r, ok in zip(rows, passed) if ok]
        funnel.add("quality", len(rows), Counter({"failed quality filter": passed.count(False)}))
    return rows, funnel


def keeps_every_row(split: str, triplets: Sequence[dict]) -> bool:
    """Whether a split is held out and generated (every triplet has edit metadata), so that
    its rows must all come through (``assemble``'s ``keep_rows``; the module docstring)."""
    return split != "train" and bool(triplets) and all(t.get("kind") is not None for t in triplets)


# ---- the instructpe stage ----------------------------------------------------------------


def instructpe_stage(ctx: StageContext) -> dict:
    from diffchat.data.collect import read_split
    from diffchat.data.loaders import save_instructpe
    from diffchat.data.teachers import make_teacher
    from diffchat.pb import PBModel
    from diffchat.pipeline import teacher_spec

    pb = PBModel.from_pretrained(ctx.input("pb"))
    # The key records the teacher with its endpoint and model (pipeline.teacher_key); built from the spec.
    teacher = make_teacher(teacher_spec(ctx.profile), cache_dir=ctx.cache)
    funnels, summary, warnings = {}, {}, {}
    for split in SPLITS:
        triplets = read_split(ctx.input("data"), split)
        if not triplets:
            continue
        # PB outputs depend on the PB model: cache them under this stage's config hash, which
        # covers the pb stage's. Teacher answers are keyed by their request and shared.
        rows, funnel = assemble(triplets, pb.beautify, teacher, ctx.cache / f"pb-{ctx.key_hash}" / split,
                                quality_filter=ci_quality_filter(ctx.profile.ppo.ci_threshold),
                                keep_rows=keeps_every_row(split, triplets))
        save_instructpe(rows, ctx.out / f"InstructPE_{split}.json")
        funnels[split] = funnel.steps
        summary[split] = len(rows)
        (ctx.out / f"funnel_{split}.md").write_text(funnel.table() + "\n")
        if funnel.shortfall():
            warnings[split] = funnel.shortfall()
            ctx.log(f"instructpe: warning: {split}: {warnings[split]}")
    write_json(ctx.out / "funnel.json", funnels)
    return {"rows": summary, "teacher_calls": teacher.calls, **({"warnings": warnings} if warnings else {})}
