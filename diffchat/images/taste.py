"""The mini-world's planted aesthetic taste: a fixed formula over pixels (DESIGN.md 8, v2).

The tiny profile has no LAION aesthetic predictor, so its "aesthetic" score is this formula:
six image features, z-scored with constants frozen below, each soft-clipped with
``2 tanh(z / 2)`` so that no single feature can be pushed without bound (an ink drawing's
extreme sharpness and zero noise won by +10 std before the clip), then

    A = 5 + 0.5 * sum_i w_i * clip(z_i)

The frozen constants come from ``calibrate()`` over 400 plain and 400 PB prompts drawn by all
five renderers; rerun it (``benchmarks/world_taste.py --calibrate``) after changing the renderer
and paste its output into ``MEAN`` and ``STD``. Call it "planted taste", never "aesthetics":
it is what this world is built to reward, not anybody's judgement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# Frozen from `calibrate()` (benchmarks/world_taste.py --calibrate) on this renderer.
FEATURES = ("saturation", "contrast", "sharpness", "noise", "centring", "exposure")
WEIGHTS = np.array([1.0, 0.7, 1.0, -1.0, 0.7, 0.5])
MEAN = np.array([0.2408, -0.1153, 0.1611, 0.0383, -0.0741, -0.1187])
STD = np.array([0.1445, 0.0358, 0.0836, 0.0189, 0.0426, 0.0945])


def _as_array(images: np.ndarray | Sequence[Image.Image]) -> np.ndarray:
    """(N, H, W, 3) floats in [0, 1] from a uint8 batch, one image or PIL images."""
    if isinstance(images, np.ndarray):
        arr = images if images.ndim == 4 else images[None]
    else:
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected RGB images (N, H, W, 3), got shape {arr.shape}")
    return arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)


def aesthetic_features(images: np.ndarray | Sequence[Image.Image]) -> np.ndarray:
    """(N, 6) raw features, columns in ``FEATURES`` order.

    saturation: mean HSV saturation; contrast: -|luminance std - 0.22|; sharpness: the 95th
    percentile of the gradient magnitude of the 2x-pooled luminance; noise: a robust pixel noise
    estimate, 1.4826 * median |Laplacian| / sqrt(20); centring: minus the distance of the
    centroid of centre-surround saliency (4x4 cells against their 16x16 block) from the image
    centre, in image widths; exposure:
    -|mean luminance - 0.5|.
    """
    x = _as_array(images)
    n, h, w, _ = x.shape
    hi, lo = x.max(axis=3), x.min(axis=3)
    saturation = np.where(hi > 1e-6, (hi - lo) / np.maximum(hi, 1e-6), 0.0).mean(axis=(1, 2))
    lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
    contrast = -np.abs(lum.std(axis=(1, 2)) - 0.22)
    exposure = -np.abs(lum.mean(axis=(1, 2)) - 0.5)
    pooled = lum[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    gy, gx = pooled[:, 1:, :-1] - pooled[:, :-1, :-1], pooled[:, :-1, 1:] - pooled[:, :-1, :-1]
    sharpness = np.percentile(np.sqrt(gx ** 2 + gy ** 2).reshape(n, -1), 95, axis=1)
    lap = (4 * lum[:, 1:-1, 1:-1] - lum[:, :-2, 1:-1] - lum[:, 2:, 1:-1]
           - lum[:, 1:-1, :-2] - lum[:, 1:-1, 2:])
    noise = 1.4826 * np.median(np.abs(lap).reshape(n, -1), axis=1) / np.sqrt(20.0)
    # Centre-surround saliency: each 4x4 cell's colour against its 16x16 surround's.
    h4, w4 = h // 16 * 4, w // 16 * 4
    centre = x[:, : h4 * 4, : w4 * 4].reshape(n, h4, 4, w4, 4, 3).mean(axis=(2, 4))
    surround = centre.reshape(n, h4 // 4, 4, w4 // 4, 4, 3).mean(axis=(2, 4))
    surround = surround.repeat(4, axis=1).repeat(4, axis=2)
    sal = np.sqrt(((centre - surround) ** 2).sum(axis=3))
    total = np.maximum(sal.sum(axis=(1, 2)), 1e-6)
    ys = (np.arange(h4) + 0.5) / h4
    xs = (np.arange(w4) + 0.5) / w4
    cy = (sal.sum(axis=2) * ys).sum(axis=1) / total
    cx = (sal.sum(axis=1) * xs).sum(axis=1) / total
    centring = -np.sqrt((cx - 0.5) ** 2 + (cy - 0.5) ** 2)
    return np.stack([saturation, contrast, sharpness, noise, centring, exposure], axis=1).astype(np.float64)


def planted_aesthetic(images: np.ndarray | Sequence[Image.Image]) -> np.ndarray:
    """The planted taste A of each image (about 5 for a plain caption's image); shape (N,)."""
    z = (aesthetic_features(images) - MEAN) / STD
    return 5.0 + 0.5 * (2.0 * np.tanh(z / 2.0)) @ WEIGHTS


def prompt_taste(prompts: Sequence[str], seeds: int = 8, size: int = 64) -> np.ndarray:
    """Each prompt's planted taste A averaged over the five renderers and seeds 0..seeds-1: what
    a prompt is worth to the world's taste, whatever the seed; shape (N,)."""
    from diffchat.images.render import RENDERERS, render_batch

    scores = [planted_aesthetic(render_batch([prompt] * seeds, list(range(seeds)), v, size)).mean()
              for prompt in prompts for v in RENDERERS]
    return np.asarray(scores).reshape(len(prompts), len(RENDERERS)).mean(axis=1)


def calibrate(n_prompts: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Feature means and stds over n plain and n PB prompts, each drawn by every renderer.

    The numbers ``MEAN`` and ``STD`` freeze; rerun after changing the renderer.
    """
    from diffchat.data.miniworld import generate_pb_pairs
    from diffchat.images.render import RENDERERS, render_batch

    rows = generate_pb_pairs(n_prompts, seed=seed)
    prompts = [r["simplified"] for r in rows] + [r["prompt"] for r in rows]
    seeds = list(range(len(prompts)))
    feats = np.concatenate([aesthetic_features(render_batch(prompts, seeds, v)) for v in RENDERERS])
    return feats.mean(axis=0), feats.std(axis=0)
