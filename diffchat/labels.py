"""Reward labels (section 3.3): each prompt's image scored once, for the text reward models.

PPO needs a reward for every sampled prompt, and making and scoring images inside the loop
is slow. As BeautifulPrompt does, we label prompts once (prompt -> image with a fixed seed ->
aesthetic score and PickScore); ``diffchat.reward_models`` then learns to predict each score
from the prompt alone. Labelling is the slow part, so the labels file is resumable.

With several TIS models a label is the mean of their images' scores: what a prompt earns on
average over the models it will be evaluated on (the tiny profile's five renderers draw in
milliseconds; the paper profile labels with one model, as BeautifulPrompt does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diffchat.images import TISModel, create_images
from diffchat.jsonl import JsonlLog, read_rows
from diffchat.profiles import ImageConfig
from diffchat.scorers import Scorer

log = logging.getLogger(__name__)

TARGETS = ("aesthetic", "pickscore")
FIELDS = ("prompt", *TARGETS)


def read_labels(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a labels file ([] when there is none); an unfinished last line is skipped.

    A bad row anywhere else is a ValueError naming the file, the line and the problem.
    """
    return read_rows(path, required=FIELDS)


def label_prompts(
    prompts: Sequence[str],
    tis: TISModel | Sequence[TISModel],
    aesthetic_scorer: Scorer,
    pick_scorer: Scorer,
    out_path: str | os.PathLike,
    seed: int = 0,
    batch_size: int = 8,
    images: ImageConfig | None = None,
    progress: bool = True,
) -> Path:
    """Label prompts with the aesthetic score and PickScore of their image (fixed seed); with
    several TIS models in ``tis``, the mean over their images.

    Resumable: rows are appended and fsync'd as each batch finishes, and a rerun skips the
    prompts already in the file, so a crash loses at most the batch in flight.
    ``images`` overrides the model's size, steps and guidance (a profile's ImageConfig).
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch()  # the file exists even when there is nothing to label
    models = [tis] if isinstance(tis, TISModel) else list(tis)
    settings: dict[str, Any] = {}
    if images is not None:
        settings = dict(steps=images.steps, guidance=images.guidance,
                        height=images.height, width=images.width)
    with JsonlLog(out, required=FIELDS) as labels:
        done = {row["prompt"] for row in labels.rows}
        todo = [p for p in dict.fromkeys(prompts) if p not in done]
        log.info("labels: %d prompts done, %d to do -> %s", len(done), len(todo), out)
        starts = range(0, len(todo), batch_size)
        for start in tqdm(starts, desc="reward labels", disable=not progress):
            batch = todo[start:start + batch_size]
            aes, pick = np.zeros(len(batch)), np.zeros(len(batch))
            for model in models:
                imgs = create_images(batch, model, seed, batch_size=batch_size, progress=False,
                                     **settings)
                aes += np.array(aesthetic_scorer.score(imgs, batch)) / len(models)
                pick += np.array(pick_scorer.score(imgs, batch)) / len(models)
            labels.append({"prompt": prompt, "aesthetic": float(a), "pickscore": float(p)}
                          for prompt, a, p in zip(batch, aes, pick, strict=True))
    return out
