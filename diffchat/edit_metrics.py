"""Held-out evaluation of rewrites (section 4): did the edit happen, and nothing else break?

Mini-world test rows carry their edit's metadata (kind, keywords added, keywords
removed), so an edit can be checked directly (real rows lack it: for them only exact
match, loops and CI are reported, and the results say what was skipped):

- edit accuracy: every added keyword is in the output and no removed one is;
- strict: the edit is correct AND every word of the reference is in the output, so that
  an output that drops the rest of the prompt, or loops ("a purple purple purple"), fails;
- exact match with the reference (case and spacing normalised);
- loop share: outputs with a word repeated back to back or an n-gram repeated 3 times;
- raw CI score x100 (Listing 1 before thresholding, as the paper reports it).
Two baselines give the scale: the input unchanged, and the input with the instruction's
words appended (the "human prompt writer" of Fig. 6).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@lru_cache(maxsize=100_000)
def _forms(word: str) -> frozenset[str]:
    from nltk.stem import WordNetLemmatizer

    from diffchat.assets import require_nltk_data

    require_nltk_data()
    wnl = WordNetLemmatizer()
    return frozenset({word, wnl.lemmatize(word, "n"), wnl.lemmatize(word, "v"), wnl.lemmatize(word, "a")})


def word_forms(text: str) -> set[str]:
    """The words of ``text`` and their WordNet lemmas (so 'crowns' matches 'crown')."""
    out: set[str] = set()
    for w in words(text):
        out |= _forms(w)
    return out


def _has_keyword(forms: set[str], keyword: str) -> bool:
    parts = words(keyword)
    return bool(parts) and all(p in forms or _forms(p) & forms for p in parts)


def edit_correct(output: str, added: Sequence[str], removed: Sequence[str]) -> bool:
    forms = word_forms(output)
    return all(_has_keyword(forms, k) for k in added) and not any(
        _has_keyword(forms, k) for k in removed)


def has_loop(text: str) -> bool:
    """A word twice in a row, or any 2- or 3-gram three times in a row."""
    w = words(text)
    if any(a == b for a, b in zip(w, w[1:])):
        return True
    for n in (2, 3):
        for s in range(len(w) - 3 * n + 1):
            if w[s:s + n] == w[s + n:s + 2 * n] == w[s + 2 * n:s + 3 * n]:
                return True
    return False


def _first_index(output_words: list[str], keyword: str) -> int | None:
    """Word index where ``keyword`` (any of its WordNet forms) first starts in the output."""
    parts = words(keyword)
    for k in range(len(output_words) - len(parts) + 1):
        if all(p == w or _forms(p) & _forms(w) for p, w in zip(parts, output_words[k:k + len(parts)])):
            return k
    return None


def keyword_diagnostics(rows: Sequence[dict], outputs: Sequence[str]) -> dict[str, float]:
    """What the paper's Table 2 shows by example, counted on mini-world rows (their edit metadata):

    - ``omitted``: rows whose edit adds keywords where one is missing from the output (pi-'s
      "omissions", over rows that add something);
    - ``removed_kept``: rows whose edit removes or replaces keywords where one is still there
      (a wrong or missing replacement, over rows that remove something);
    - ``at_end``: rows whose first added keyword sits in the output's last comma-separated
      part, i.e. tacked on after the rest (what the paper says the model without VCI does);
    - ``first_pos``: where the first added keyword appears, 0 = first word, 1 = last word.
    The last two are over rows whose added keywords are all present."""
    counts = {"omitted": [], "removed_kept": [], "at_end": [], "first_pos": []}
    for row, out in zip(rows, outputs, strict=True):
        forms = word_forms(out)
        if row["removed"]:
            counts["removed_kept"].append(any(_has_keyword(forms, k) for k in row["removed"]))
        if not row["added"]:
            continue
        present = [_has_keyword(forms, k) for k in row["added"]]
        counts["omitted"].append(not all(present))
        if not all(present):
            continue
        out_words = words(out)
        starts = [i for k in row["added"] if (i := _first_index(out_words, k)) is not None]
        if not starts:  # present only as forms split over words: no position to report
            continue
        first = min(starts)
        parts = [words(p) for p in out.split(",")]
        last_start = len(out_words) - len(parts[-1])
        counts["at_end"].append(len(parts) > 1 and first >= last_start)
        counts["first_pos"].append(first / max(1, len(out_words) - 1))
    return {k: round(sum(map(float, v)) / len(v), 4) if v else float("nan") for k, v in counts.items()}


def normalise(text: str) -> str:
    return " ".join(words(text))


def baseline_outputs(rows: Sequence[dict], kind: str, source_field: str = "beautified_source_prompt") -> list[str]:
    """'unchanged' returns the input; 'append' adds the instruction's words at the end."""
    if kind == "unchanged":
        return [r[source_field] for r in rows]
    if kind == "append":
        return [f"{r[source_field].rstrip(', ')}, {r['instruction']}" for r in rows]
    raise ValueError(f"unknown baseline {kind!r}: use 'unchanged' or 'append'")


EDIT_METADATA = ("kind", "added", "removed")
# What rows without edit metadata (InstructPix2Pix's real data) cannot be scored on.
NO_METADATA = ("edit and strict need the edit's metadata (kind, added, removed), which real "
               "rows lack: reported are exact match, loops and CI")


def has_edit_metadata(rows: Sequence[dict]) -> bool:
    """True when every row carries ``kind``, ``added`` and ``removed`` (mini-world rows), False
    when none does (real rows); a split that mixes the two, or a row with only some of the
    three fields, is a ValueError naming the row."""
    present = [[k in row and row[k] is not None for k in EDIT_METADATA] for row in rows]
    for n, flags in enumerate(present):
        if any(flags) and not all(flags):
            missing = next(k for k, f in zip(EDIT_METADATA, flags) if not f)
            raise ValueError(f"evaluation row {n}: field {missing!r} is missing")
    with_meta = [all(flags) for flags in present]
    if any(with_meta) and not all(with_meta):
        first = with_meta.index(not with_meta[0])
        raise ValueError(f"evaluation rows mix mini-world rows (with kind, added, removed) and "
                         f"rows without them (row {first} differs from row 0)")
    return bool(with_meta) and with_meta[0]


def evaluate_rewrites(rows: Sequence[dict], outputs: Sequence[str], *,
                      reference_field: str = "beautified_target_prompt") -> dict:
    """Metrics over all rows and per edit kind. Rows need instruction, the reference and the raw
    source/target prompts (for CI). With the edit metadata ``kind``, ``added``, ``removed``
    (mini-world rows) edit accuracy and strict are scored too; without it (real rows) they are
    left out, ``skipped`` says so, and there is no per-kind breakdown."""
    from diffchat.integrity import ci_score

    if len(rows) != len(outputs):
        raise ValueError(f"{len(rows)} rows but {len(outputs)} outputs")
    scored = has_edit_metadata(rows)
    per: dict[str, list[dict]] = defaultdict(list)
    for n, (row, out) in enumerate(zip(rows, outputs)):
        for key in ("instruction", reference_field):
            if key not in row:
                raise ValueError(f"evaluation row {n}: field {key!r} is missing")
        ref = row[reference_field]
        ci = ci_score(row.get("source_prompt", ""), row["instruction"],
                      row.get("target_prompt") or ref, out, threshold=None)
        item = {"exact": normalise(out) == normalise(ref), "loop": has_loop(out), "ci": 100 * ci}
        if scored:
            edit = edit_correct(out, row["added"], row["removed"])
            out_forms = word_forms(out)
            item["edit"] = edit
            item["strict"] = edit and all(w in out_forms or _forms(w) & out_forms for w in words(ref))
        per[row["kind"] if scored else "all"].append(item)
    if not scored:
        return {"all": {**_mean(per["all"]), "skipped": NO_METADATA}}
    return {"all": _mean(sum(per.values(), [])), **{k: _mean(v) for k, v in sorted(per.items())}}


def _mean(items: list[dict]) -> dict:
    if not items:
        return {"n": 0}
    keys = [k for k in ("edit", "strict", "exact", "loop", "ci") if k in items[0]]
    return {"n": len(items), **{k: round(sum(float(i[k]) for i in items) / len(items), 4) for k in keys}}


def metrics_table(results: dict[str, dict], metric: str = "edit") -> str:
    """Markdown table: one row per edit kind, one column per method."""
    methods = list(results)
    kinds = list(next(iter(results.values())))
    lines = ["| kind | n | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for kind in kinds:
        n = results[methods[0]][kind].get("n", 0)
        cells = [f"{results[m][kind].get(metric, float('nan')):.3f}" for m in methods]
        lines.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_model(model, rows: list[dict]) -> dict:
    """DiffChat against the two baselines on one test split (see ``diffchat.edit_metrics``).
    An empty split gives ``{"skipped": reason}`` instead of numbers."""
    from diffchat.edit_metrics import baseline_outputs, evaluate_rewrites

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
