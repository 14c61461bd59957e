"""Pictures of the mini-world for the notebooks: rows of renders with captions, one row of
renders per word category, and the tiny CLIP's checks as a chart.

A notebook cell should show a picture in one line; the loops that lay images out live here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

from diffchat.data.miniworld.grammar import Caption

# For each category the renderer draws, a few of its words (a blank for "none of them"), and how
# a word goes into a caption. Each row of ``category_grid`` changes one slot of one caption.
CATEGORY_WORDS: dict[str, tuple[str | None, ...]] = {
    "colour": (None, "red", "blue", "green", "yellow", "purple"),
    "scene": ("in a park", "on a beach", "in a desert", "in a forest", "in a kitchen", "underwater"),
    "time": (None, "at sunrise", "at noon", "at sunset", "at dusk", "at night"),
    "weather": (None, "sunny", "rainy", "snowy", "foggy", "stormy"),
    "style": (None, "pixel art", "pop art", "film noir", "cubist", "vaporwave"),
    "frame": (None, "portrait", "close-up"),  # "a picture of" draws as the bare caption
}
_SLOT = {"colour": "color", "scene": "scene", "time": "time", "weather": "weather", "style": "style",
         "frame": "frame"}


def _pil(image: Image.Image | np.ndarray) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))


def category_prompts(base: Caption, category: str, tags: str = "") -> list[tuple[str, str]]:
    """(label, prompt) for each word of ``category``: ``base`` with that one slot changed, then
    ``tags`` (quality tags remove the planted defects, so the words' effects show clearly)."""
    if category not in CATEGORY_WORDS:
        raise ValueError(f"unknown category {category!r}: choose one of {', '.join(CATEGORY_WORDS)}")
    slot = _SLOT[category]
    return [(word or "(none)", ", ".join(p for p in (replace(base, **{slot: word}).render(), tags) if p))
            for word in CATEGORY_WORDS[category]]


def image_row(images: Sequence[Image.Image | np.ndarray], captions: Sequence[str] | None = None,
              title: str | None = None, wrap: int = 24, size: float = 1.9) -> Any:
    """One row of images, each with its caption under it (each line wrapped, eight lines at
    most); a matplotlib Figure."""
    import matplotlib.pyplot as plt

    if captions is not None and len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.9), squeeze=False)
    for n, (ax, image) in enumerate(zip(axes[0], images)):
        ax.imshow(_pil(image), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if captions is not None:
            lines = [line for part in captions[n].split("\n") for line in textwrap.wrap(part, wrap) or [""]]
            ax.set_xlabel("\n".join(lines[:8]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def category_grid(base: Caption, tags: str = "", seed: int = 0, variant: str = "mini-sd15", size: int = 64,
                  categories: Sequence[str] = tuple(CATEGORY_WORDS)) -> Any:
    """One row per category, one column per word: what each word the world knows draws, from
    the same caption (plus ``tags``), renderer and seed. A matplotlib Figure."""
    import matplotlib.pyplot as plt

    from diffchat.images.render import render

    rows = [(category, category_prompts(base, category, tags)) for category in categories]
    cols = max(len(prompts) for _, prompts in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.55 * cols, 1.75 * len(rows)), squeeze=False)
    for r, (category, prompts) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(prompts):
                ax.set_axis_off()
                continue
            label, prompt = prompts[c]
            ax.imshow(render(prompt, seed, variant, size), interpolation="nearest")
            ax.set_xlabel(label, fontsize=8)
        axes[r][0].set_ylabel(category, fontsize=9, fontweight="bold")
    shown = ", ".join(p for p in (base.render(), tags) if p)
    fig.suptitle(f"{shown!r}, one slot changed per row ({variant}, seed {seed})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_clip_eval(result: Mapping[str, Any]) -> Any:
    """The clip stage's checks (``clip_eval.json``) against chance: retrieval recall@1 among 32
    both ways, seen and unseen subjects; CLIP-S AUC per kind of swapped word; D-CLIP-S of real
    edits against shuffled ones."""
    import matplotlib.pyplot as plt

    chance = result["chance"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.3), gridspec_kw={"width_ratios": [1.1, 2.4, 0.9]})
    ax = axes[0]
    for n, split in enumerate(("seen", "unseen")):
        r = result[f"retrieval_{split}"]
        ax.bar([n - 0.18, n + 0.18], [r["image_to_text"], r["text_to_image"]], 0.34,
               color=["#4c72b0", "#dd8452"], label=["image → text", "text → image"] if n == 0 else None)
    ax.axhline(chance["recall_at_1"], ls=":", c="grey", label="chance")
    ax.set_xticks([0, 1], ["seen subjects", "unseen subjects"])
    ax.set_ylim(0, 1.05)
    ax.set_title("retrieval recall@1 among 32", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    kinds = [k for k in result["auc_seen"] if k != "all"]
    values = [result["auc_seen"][k]["auc"] for k in kinds] + [result["auc_seen"]["all"]["auc"]]
    ax.bar(range(len(values)), values, color=["#55a868"] * len(kinds) + ["#333333"])
    ax.axhline(chance["auc"], ls=":", c="grey")
    ax.set_xticks(range(len(values)), [k.replace("subject_", "subject,\n").replace("_", " ") for k in kinds] + ["all"],
                  fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_title("CLIP-S AUC: true caption vs one word swapped (chance 0.5)", fontsize=9)
    ax = axes[2]
    d = result["dclip"]
    ax.bar([0, 1], [d["real"]["mean"], d["shuffled"]["mean"]], color=["#8172b2", "#bbbbbb"])
    ax.axhline(chance["dclip"], ls=":", c="grey")
    ax.set_xticks([0, 1], ["real edits", "shuffled"])
    ax.set_title("D-CLIP-S, mean", fontsize=9)
    fig.tight_layout()
    return fig
