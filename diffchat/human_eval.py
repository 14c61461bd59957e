"""The human preference study (section 4.1, appendix A.6, Fig. 11) and its Win/Tie/Lose chart (Fig. 5).

A rater sees the raw image and the instruction, then two target images: DiffChat's and an
opponent's, with the sides drawn at random for each (rater, item) so that position gives
nothing away, and picks left, right or tie. Every vote is appended to a JSONL file the moment
it is cast (rater, item, which method was on which side, the choice, and the winner it means),
so a rater who closes the notebook and comes back continues with the items they have not voted
on. ``PreferenceApp`` is the ipywidgets interface; ``PreferenceStudy`` holds the logic.
"""

from __future__ import annotations

import html
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from diffchat.competitors import METHODS
from diffchat.jsonl import JsonlLog, read_rows

CHOICES = ("left", "right", "tie")
VOTE_FIELDS = ("rater", "item", "left", "right", "choice", "winner")


@dataclass(frozen=True)
class StudyItem:
    """One comparison: the raw image and instruction, DiffChat's image and an opponent's."""

    item: str
    raw_image: Path
    instruction: str
    images: tuple[tuple[str, Path], tuple[str, Path]]  # (method, image): ours first


def study_items(records: Sequence[dict], folder: str | Path, ours: str = "ppo",
                opponents: Sequence[str] | None = None, tis: str | None = None,
                n: int | None = None) -> list[StudyItem]:
    """Items from an eval run's records: for each of the first ``n`` examples (first seed, one TIS
    model), DiffChat (``ours``) against each opponent that has an image for it."""
    folder = Path(folder)
    tis = tis or records[0]["tis"]
    mine = [r for r in records if r["tis"] == tis]
    seed = min(r["seed"] for r in mine)
    by = {(r["method"], r["example"]): r for r in mine if r["seed"] == seed}
    if not any(m == ours for m, _ in by):
        raise ValueError(f"no images of method {ours!r} on {tis!r}: evaluate it first (`diffchat eval`)")
    opponents = opponents or [m for m in METHODS if m != ours and any(k == m for k, _ in by)]
    examples = sorted({e for m, e in by if m == ours})[:n]
    items = []
    for e in examples:
        mine_row = by[ours, e]
        for other in opponents:
            if (other, e) in by:
                items.append(StudyItem(f"{tis}/{e}/s{seed}/{other}", folder / mine_row["raw_image"],
                                       mine_row["instruction"],
                                       ((ours, folder / mine_row["image"]), (other, folder / by[other, e]["image"]))))
    return items


class PreferenceStudy:
    """Items, a votes file, and the side each rater sees each item's images on."""

    def __init__(self, items: Sequence[StudyItem], votes_path: str | Path, seed: int = 0):
        if not items:
            raise ValueError("a preference study needs at least one item")
        self.items = list(items)
        self.by_id = {it.item: it for it in self.items}
        self.votes_path = Path(votes_path)
        self.seed = seed

    def sides(self, rater: str, item: StudyItem) -> tuple[tuple[str, Path], tuple[str, Path]]:
        """(left, right) as (method, image): a coin flip per (rater, item), the same every session."""
        ours, other = item.images
        flip = random.Random(f"{self.seed}:{rater}:{item.item}").random() < 0.5
        return (other, ours) if flip else (ours, other)

    def votes(self) -> list[dict]:
        return read_rows(self.votes_path, required=VOTE_FIELDS)

    def pending(self, rater: str) -> list[StudyItem]:
        """The items ``rater`` has not voted on yet, in study order."""
        done = {v["item"] for v in self.votes() if v["rater"] == rater}
        return [it for it in self.items if it.item not in done]

    def vote(self, rater: str, item: str, choice: str) -> dict:
        """Record one vote on disk at once; returns the row written."""
        rater = rater.strip()
        if not rater:
            raise ValueError("enter a rater name before voting")
        if choice not in CHOICES:
            raise ValueError(f"unknown choice {choice!r}: choose one of {', '.join(CHOICES)}")
        if item not in self.by_id:
            raise ValueError(f"unknown study item {item!r}")
        if item not in {it.item for it in self.pending(rater)}:
            raise ValueError(f"rater {rater!r} has already voted on {item!r}")
        (left, _), (right, _) = self.sides(rater, self.by_id[item])
        winner = {"left": left, "right": right, "tie": "tie"}[choice]
        row = {"rater": rater, "item": item, "left": left, "right": right, "choice": choice,
               "winner": winner, "ours": self.by_id[item].images[0][0],
               "opponent": self.by_id[item].images[1][0]}
        with JsonlLog(self.votes_path, required=VOTE_FIELDS) as log:
            log.append([row])
        return row


def scripted_votes(study: PreferenceStudy, rater: str, records: Sequence[dict], folder: str | Path,
                   metric: str = "pickscore") -> int:
    """Votes cast by a script, not a person: the image with the higher ``metric`` wins (equal = tie).

    For showing the study's pipeline end to end (CI, the notebook); name the rater so that these
    votes can never pass for people's. Returns the number of votes cast.
    """
    score = {str(Path(folder) / r["image"]): r["scores"][metric] for r in records}
    cast = 0
    for item in study.pending(rater):
        (_, left), (_, right) = study.sides(rater, item)
        a, b = score[str(left)], score[str(right)]
        study.vote(rater, item.item, "tie" if a == b else ("left" if a > b else "right"))
        cast += 1
    return cast


def win_rates(votes: Sequence[dict]) -> pd.DataFrame:
    """Fig. 5: per opponent, the share of votes DiffChat won, tied and lost (and the vote count)."""
    if not votes:
        raise ValueError("no votes yet")
    frame = pd.DataFrame(votes)
    frame["outcome"] = ["Tie" if v["winner"] == "tie" else ("Win" if v["winner"] == v["ours"] else "Lose")
                        for v in votes]
    table = pd.crosstab(frame["opponent"], frame["outcome"], normalize="index")
    table = table.reindex(columns=["Win", "Tie", "Lose"], fill_value=0.0)
    table["votes"] = frame.groupby("opponent").size()
    table.index = [METHODS[o].label if o in METHODS else o for o in table.index]
    return table


def plot_win_rates(table: pd.DataFrame, title: str = "DiffChat against each opponent"):
    """Fig. 5's stacked horizontal bars: Win / Tie / Lose shares per opponent."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(table) + 1.2))
    left = pd.Series(0.0, index=table.index)
    for outcome, colour in (("Win", "#4c72b0"), ("Tie", "#cccccc"), ("Lose", "#dd8452")):
        ax.barh(table.index, table[outcome], left=left, color=colour, label=outcome)
        for y, (start, share) in enumerate(zip(left, table[outcome])):
            if share >= 0.08:
                ax.text(start + share / 2, y, f"{share:.0%}", ha="center", va="center", fontsize=8)
        left = left + table[outcome]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of votes")
    ax.set_title(title)
    ax.legend(ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.08), frameon=False)
    fig.tight_layout()
    return fig


def _png(path: Path, size: int) -> bytes:
    """The image enlarged for a screen (tiny images are 32 pixels wide)."""
    image = Image.open(path).convert("RGB").resize((size, size), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class PreferenceApp:
    """Fig. 11 as ipywidgets: rater name, raw image + instruction, two targets, left / tie / right.

    ``widget`` is what a notebook displays; ``rater``, ``start`` and ``buttons`` are the controls
    (a test drives them with ``.value`` and ``.click()``); ``current`` is the item on screen.
    """

    def __init__(self, study: PreferenceStudy, image_size: int = 256):
        import ipywidgets as w

        self.study = study
        self.size = image_size
        self.current: StudyItem | None = None
        self.shown_to = ""  # the rater the current item's sides were drawn for
        self.rater = w.Text(description="Rater", placeholder="your name")
        self.start = w.Button(description="Start / continue")
        self.progress = w.HTML()
        self.raw = w.Image(format="png", width=image_size // 2)
        self.instruction = w.HTML()
        self.left = w.Image(format="png", width=image_size)
        self.right = w.Image(format="png", width=image_size)
        self.buttons = {c: w.Button(description=c) for c in CHOICES}
        self.start.on_click(lambda _: self._next())
        for choice, button in self.buttons.items():
            button.on_click(lambda _, c=choice: self._vote(c))
        self.widget = w.VBox([
            w.HBox([self.rater, self.start]), self.progress,
            w.HBox([w.VBox([w.HTML("<b>Raw image</b>"), self.raw]), self.instruction]),
            w.HTML("Given the raw image and the instruction, which result do you prefer?"),
            w.HBox([self.left, self.right]),
            w.HBox([self.buttons["left"], self.buttons["tie"], self.buttons["right"]]),
        ])
        self._enable(False)

    def _enable(self, on: bool) -> None:
        for button in self.buttons.values():
            button.disabled = not on

    def _next(self) -> None:
        rater = self.rater.value.strip()
        if not rater:
            self.progress.value = "<b>Enter your name first.</b>"
            return
        pending = self.study.pending(rater)
        done = len(self.study.items) - len(pending)
        self.progress.value = f"{html.escape(rater)}: {done} of {len(self.study.items)} voted"
        if not pending:
            self.current = None
            self.progress.value += " - all done, thank you!"
            self._enable(False)
            return
        self.current, self.shown_to = pending[0], rater
        (_, left), (_, right) = self.study.sides(rater, self.current)
        self.raw.value = _png(self.current.raw_image, self.size // 2)
        self.instruction.value = f"<b>Instruction:</b> {html.escape(self.current.instruction)}"
        self.left.value = _png(left, self.size)
        self.right.value = _png(right, self.size)
        self._enable(True)

    def _vote(self, choice: str) -> None:
        if self.current is None:
            return
        self.study.vote(self.shown_to, self.current.item, choice)
        self._next()
