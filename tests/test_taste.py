"""The planted taste (DESIGN.md 8, aesthetic formula v2) on the renderer's images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffchat.data.miniworld import generate_pb_pairs
from diffchat.images import taste
from diffchat.images.render import RENDERERS, render_batch
from diffchat.images.taste import aesthetic_features, planted_aesthetic


def _captions(n: int = 40) -> list[str]:
    return [r["simplified"] for r in generate_pb_pairs(n, seed=3, split="test_seen")]


def test_batch_single_and_pil_inputs_agree():
    images = render_batch(["a red cat in a park", "a castle at night, 8k", "an ink drawing of a dog"], [0, 1, 2])
    batch = planted_aesthetic(images)
    assert batch.shape == (3,)
    assert np.allclose(batch, [planted_aesthetic(im)[0] for im in images])
    assert np.allclose(batch, planted_aesthetic([Image.fromarray(im) for im in images]))
    assert aesthetic_features(images).shape == (3, len(taste.FEATURES))


def test_each_feature_reads_what_it_names():
    rng = np.random.default_rng(0)
    flat = np.full((1, 64, 64, 3), 128, np.uint8)
    noisy = (flat + rng.normal(0, 20, flat.shape)).clip(0, 255).astype(np.uint8)
    red = np.zeros_like(flat)
    red[..., 0] = 200
    off = flat.copy()
    off[:, 0:28, 0:28] = (255, 0, 0)
    centred = flat.copy()
    centred[:, 18:46, 18:46] = (255, 0, 0)
    f = {name: aesthetic_features(im)[0] for name, im in
         (("flat", flat), ("noisy", noisy), ("red", red), ("off", off), ("centred", centred))}
    sat, contrast, sharp, noise, centring, exposure = range(6)
    assert f["red"][sat] > 0.9 > 0.01 > f["flat"][sat]
    assert f["noisy"][noise] > 0.05 > 1e-6 > f["flat"][noise]
    assert f["centred"][centring] > f["off"][centring] + 0.2
    assert f["centred"][sharp] > f["flat"][sharp]
    assert f["flat"][exposure] > f["red"][exposure]
    assert f["centred"][contrast] > f["flat"][contrast]
    # The formula of DESIGN.md 8, soft-clipped: each feature moves A by at most |w_i|, however
    # extreme the image (this one's noise is 9 std out).
    static = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    z = (aesthetic_features(static)[0] - taste.MEAN) / taste.STD
    assert z[noise] > 5
    assert planted_aesthetic(static)[0] == pytest.approx(5 + sum(0.5 * w * 2 * np.tanh(v / 2)
                                                                 for w, v in zip(taste.WEIGHTS, z, strict=True)))


def test_quality_tags_raise_the_taste_and_noise_lowers_it():
    captions = _captions()
    seeds = list(range(len(captions)))
    tags = ", vivid colors, smooth, centered, octane render"
    for variant in RENDERERS:
        plain = planted_aesthetic(render_batch(captions, seeds, variant))
        tagged = planted_aesthetic(render_batch([c + tags for c in captions], seeds, variant))
        assert tagged.mean() > plain.mean() + 0.5 * plain.std()
    images = render_batch(captions, seeds, "mini-sdxl")
    # Gray noise of 12 levels: the noise feature rises. (Strong colour noise also raises saturation and
    # sharpness, so it costs less than it should: a known trait of the formula.)
    grain = np.random.default_rng(0).normal(0, 12, images.shape[:3] + (1,))
    noisy = (images + grain).clip(0, 255).astype(np.uint8)
    assert planted_aesthetic(noisy).mean() < planted_aesthetic(images).mean() - 0.3


def test_the_frozen_constants_match_a_fresh_calibration():
    """After a change to the renderer, rerun benchmarks/world_taste.py --calibrate."""
    mean, std = taste.calibrate(n_prompts=60, seed=0)
    assert np.all(np.abs(mean - taste.MEAN) < 0.25 * taste.STD)
    assert np.all(np.abs(std / taste.STD - 1) < 0.25)


def test_prompt_taste_is_the_mean_over_renderers_and_seeds():
    prompts = ["a cat in a park", "a cat in a park, vivid colors, centered"]
    got = taste.prompt_taste(prompts, seeds=3)
    want = [np.mean([planted_aesthetic(render_batch([p] * 3, [0, 1, 2], v)).mean() for v in RENDERERS])
            for p in prompts]
    assert got.shape == (2,) and np.allclose(got, want)
    assert got[1] > got[0] + 0.3  # colour and composition tags: the world's taste rises
