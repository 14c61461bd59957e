"""Diagrams of the course's pipelines, drawn by code (matplotlib) so they follow the code's names.

``instructpe_pipeline`` is the paper's Fig. 2 in the course's terms; ``ppo_data_flow`` shows how
the policy, the value head and the reference share one model during PPO (``diffchat.ppo.hydra``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Node = tuple[str, float, float, str]  # text, x, y (axes fraction), colour
Edge = tuple[str, str, str]  # from, to, label

COLOURS = {"data": "#dbe9f6", "model": "#fde2c8", "teacher": "#e3f1d9", "check": "#eeeeee", "frozen": "#d9d9d9"}


def _draw(nodes: dict[str, Node], edges: Sequence[Edge], size: tuple[float, float], title: str) -> Any:
    """Boxes at fixed places, arrows between them from box edge to box edge, labels on the arrows."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    boxes = {}
    for key, (text, x, y, colour) in nodes.items():
        boxes[key] = ax.text(x, y, text, ha="center", va="center", fontsize=9, zorder=2,
                             bbox={"boxstyle": "round,pad=0.45", "fc": COLOURS[colour], "ec": "#555555"})
    for start, end, label in edges:
        (_, x0, y0, _), (_, x1, y1, _) = nodes[start], nodes[end]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": "#333333", "shrinkA": 2, "shrinkB": 2,
                                "patchA": boxes[start].get_bbox_patch(), "patchB": boxes[end].get_bbox_patch()})
        if label:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.07, label, ha="center", va="bottom", fontsize=8,
                    style="italic", color="#333333")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


INSTRUCTPE_NODES: dict[str, Node] = {
    "raw": ("raw triplet\n$(x_o, i, y_o)$", 0.06, 0.5, "data"),
    "pb": ("PB model\nbeautifies\n$x_o$ and $y_o$", 0.22, 0.5, "model"),
    "count": ("keyword count\nretention of $x'$\nvs of $y'$", 0.40, 0.5, "check"),
    "ta": ("$T_A$: teacher writes $y$\nfrom $(x', i)$; $x = x'$", 0.60, 0.82, "teacher"),
    "tb": ("$T_B$: teacher writes $x$\nfrom $(y', i)$; $y = y'$", 0.60, 0.18, "teacher"),
    "filters": ("filters\nlanguage, NSFW,\nquality (CI $\\geq$ 0.7)", 0.79, 0.5, "check"),
    "row": ("InstructPE row\n$(x, i, y)$", 0.94, 0.5, "data"),
}
INSTRUCTPE_EDGES: list[Edge] = [
    ("raw", "pb", ""), ("pb", "count", "$x', y'$"), ("count", "ta", "$x'$ kept more"),
    ("count", "tb", "$y'$ kept more"), ("ta", "filters", ""), ("tb", "filters", ""), ("filters", "row", ""),
]


def instructpe_pipeline() -> Any:
    """The paper's Fig. 2 in the course's terms (``diffchat.instructpe``): a raw triplet, the PB
    model's beautified sides, the keyword count that picks T_A or T_B, the teacher, the filters."""
    return _draw(INSTRUCTPE_NODES, INSTRUCTPE_EDGES, (12, 3.4), "Assembling InstructPE (Fig. 2)")


def ppo_data_flow(trainable_blocks: int = 8) -> Any:
    """Policy, value head and reference sharing one trunk (``diffchat.ppo.hydra``): the bottom
    blocks are frozen and run once per rollout; only the last ``trainable_blocks`` blocks (and the
    value head) train; the reference is a frozen copy of those top blocks on the same trunk."""
    n = trainable_blocks
    nodes: dict[str, Node] = {
        "query": ("$T(x, i)$ + response\ntokens so far", 0.07, 0.5, "data"),
        "trunk": ("shared trunk\nbottom blocks, frozen\n(run once per rollout)", 0.28, 0.5, "frozen"),
        "top": (f"last {n} blocks\n+ LM head\n(trainable)", 0.52, 0.82, "model"),
        "ref": (f"copy of the last {n} blocks\n+ LM head (frozen)", 0.52, 0.18, "frozen"),
        "value": ("value head $V(s_t)$\n(trainable)", 0.76, 0.82, "model"),
        "policy": ("policy $\\pi_\\theta(a_t \\mid s_t)$", 0.76, 0.5, "model"),
        "reference": ("reference $\\pi_{ref}(a_t \\mid s_t)$", 0.76, 0.18, "frozen"),
        "kl": ("KL penalty\nper token", 0.94, 0.34, "check"),
    }
    edges: list[Edge] = [("query", "trunk", ""), ("trunk", "top", "hidden states"), ("trunk", "ref", ""),
                         ("top", "value", ""), ("top", "policy", ""), ("ref", "reference", ""),
                         ("policy", "kl", ""), ("reference", "kl", "")]
    return _draw(nodes, edges, (12, 3.6), "PPO: policy, value and reference in one model")


def label_mask(tokens: Sequence[str], labels: Sequence[int], losses: Sequence[float] | None = None,
               per_row: int = 10) -> Any:
    """One training row as the trainer sees it: each token a box, grey where its label is -100
    (no loss), orange where the model is trained to predict it, with -log P under it when
    ``losses`` (one per orange token, ``sft.token_losses``) is given."""
    import matplotlib.pyplot as plt

    if len(tokens) != len(labels):
        raise ValueError(f"{len(tokens)} tokens but {len(labels)} labels")
    learned = [n for n, label in enumerate(labels) if label != -100]
    # token_losses drops the first token (nothing predicts it), so the losses start at the first
    # learned token that has a token before it
    scored = [n for n in learned if n > 0]
    if losses is not None and len(losses) != len(scored):
        raise ValueError(f"{len(losses)} losses for {len(scored)} learned tokens")
    loss_at = dict(zip(scored, losses)) if losses is not None else {}
    rows = (len(tokens) + per_row - 1) // per_row
    fig, ax = plt.subplots(figsize=(per_row * 1.15, rows * 0.75 + 0.6))
    ax.set_axis_off()
    ax.set_xlim(-0.5, per_row - 0.5)
    ax.set_ylim(rows - 0.5, -0.9)
    for n, token in enumerate(tokens):
        row, col = divmod(n, per_row)
        colour = COLOURS["model"] if labels[n] != -100 else COLOURS["frozen"]
        ax.text(col, row, repr(token)[1:-1] or " ", ha="center", va="center", fontsize=8, family="monospace",
                bbox={"boxstyle": "round,pad=0.3", "fc": colour, "ec": "#777777"})
        if n in loss_at:
            ax.text(col, row + 0.33, f"{loss_at[n]:.2f}", ha="center", va="center", fontsize=7, color="#a04000")
    ax.set_title(f"{len(tokens)} tokens: grey = label -100 (no loss), orange = learned ({len(learned)})"
                 + (", with -log P under each" if losses is not None else ""), fontsize=9)
    fig.tight_layout()
    return fig
