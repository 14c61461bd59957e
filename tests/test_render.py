"""The mini-world renderer (DESIGN.md 8): parsing, every category visibly at work, determinism."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffchat.images.render import (
    RENDERERS,
    Scene,
    factor_levels,
    parse,
    render,
    render_batch,
    subject_group,
)

REPO = Path(__file__).resolve().parent.parent
SEEDS = range(4)
CLEAN = "sharp focus, smooth, matte finish, octane render, 8k, high resolution, crisp"  # little noise or blur
HASH_SCRIPT = """
import hashlib, sys
from diffchat.images.render import RENDERERS, render_batch
prompts = ["a red cat in a park at night in rainy weather", "a watercolor painting of a castle, 8k",
           "a knight with a golden sword on a beach at sunset, pixel art, backlit, vivid colors",
           "a striped car in a city street in snowy weather", "an ink drawing of a dog in a cave"]
h = hashlib.sha256()
for v in RENDERERS:
    h.update(render_batch(prompts * 4, list(range(20)), v).tobytes())
print(h.hexdigest())
"""


def _lum(img: np.ndarray) -> np.ndarray:
    return img.astype(float) @ np.array([0.299, 0.587, 0.114])


def _subject_mask(prompt: str, without: str, seed: int, variant: str) -> np.ndarray:
    """Pixels the subject changes: the prompt against the same prompt without the subject."""
    diff = np.abs(render(prompt, seed, variant).astype(int) - render(without, seed, variant).astype(int))
    return diff.sum(axis=2) > 60


def test_parse_finds_each_category_by_longest_match():
    scene = parse("A gloomy watercolor painting of a red cat with a blue umbrella and a hat in a bamboo "
                  "forest at night in rainy weather in pixel art style, soft light, 8k, sharp focus")
    assert scene == Scene(subject="cat", group="animals", color="red",
                          objects=(("blue", "umbrella"), (None, "hat")), scene="in a bamboo forest",
                          time="at night", weather=("rainy",), mood="gloomy", styles=("pixel art",),
                          mediums=("watercolor painting",), frame=None, lighting=("soft light",),
                          quality=("8k", "sharp focus"))
    # Aliases, a bare scene noun, a frame, and a colour that colours nothing.
    assert parse("a fox jumping in a park").action == "jumping"
    alias = parse("a close-up of a castle, forest, night, snow, red")
    assert (alias.frame, alias.scene, alias.time, alias.weather, alias.color) == (
        "close-up", "in a forest", "at night", ("snowy",), None)
    assert "cinematic lighting" in parse("a cat, cinematic lighting").lighting
    assert parse("a cat, cinematic").quality == ("cinematic",)
    assert subject_group("Knight") == "people" and subject_group("sofa") == "things"
    assert subject_group("xyzzy") is None


def test_quality_tags_raise_the_planted_factors_and_the_sdxl_stand_in_starts_higher():
    plain, tagged = parse("a cat"), parse("a cat, sharp focus, vivid colors, centered, smooth")
    for variant in RENDERERS:
        low, high = factor_levels(plain, variant), factor_levels(tagged, variant)
        assert all(high[f] > low[f] + 0.2 for f in low)
    assert factor_levels(plain, "mini-sdxl")["sharp"] > factor_levels(plain, "mini-sd15")["sharp"] + 0.2


@pytest.mark.parametrize("variant", RENDERERS)
def test_a_colour_word_moves_the_subject_toward_that_colour(variant):
    for seed in SEEDS:
        mask = _subject_mask("a cat in a park", "in a park", seed, variant)
        assert mask.sum() > 20
        red = render("a red cat in a park", seed, variant)[mask].astype(float).mean(axis=0)
        blue = render("a blue cat in a park", seed, variant)[mask].astype(float).mean(axis=0)
        assert red[0] - red[2] > blue[0] - blue[2] + 40


@pytest.mark.parametrize("variant", RENDERERS)
def test_night_darkens_the_sky(variant):
    for seed in SEEDS:
        day = _lum(render("a cat in a park", seed, variant)[:12]).mean()
        night = _lum(render("a cat in a park at night", seed, variant)[:12]).mean()
        assert night < day - 60


def test_rain_and_snow_add_their_overlay():
    for seed in SEEDS:
        base, rain, snow = (_lum(render(f"a cat in a park{w}, {CLEAN}", seed, "mini-sdxl"))
                            for w in ("", " in rainy weather", " in snowy weather"))
        # Rain darkens the picture and draws streaks; snow draws white flakes and a white ground.
        assert rain.mean() < base.mean() - 5
        assert (np.abs(rain - base) > 30).mean() > 0.05
        assert (snow - base > 40).mean() > 0.1
        assert (snow[-6:] - base[-6:] > 40).mean() > 0.8


def _edge_hist(img: np.ndarray) -> np.ndarray:
    lum = _lum(img)
    edges = np.concatenate([np.abs(np.diff(lum, axis=0)).ravel(), np.abs(np.diff(lum, axis=1)).ravel()])
    return np.histogram(edges, bins=[0, 1, 4, 16, 48, 256])[0] / edges.size


@pytest.mark.parametrize("style", ["pixel art", "ink drawing", "pencil sketch", "mosaic", "oil painting"])
def test_a_style_changes_the_edge_histogram(style):
    prompt = f"a castle on a hill, {CLEAN}"
    for seed in SEEDS:
        plain = _edge_hist(render(prompt, seed, "mini-sdxl"))
        other_seed = _edge_hist(render(prompt, seed + 10, "mini-sdxl"))
        styled = _edge_hist(render(f"{prompt}, {style}", seed, "mini-sdxl"))
        # Another seed moves things (0.01 to 0.035 here); a style changes the kind of edges.
        assert np.abs(plain - styled).sum() > max(0.05, 1.5 * np.abs(plain - other_seed).sum())


def test_an_action_lifts_or_squashes_a_living_subject():
    def extent(action: str, subject: str, seed: int) -> tuple[int, int]:
        rows = np.nonzero(_subject_mask(f"a {subject}{action} in a park, {CLEAN}", f"in a park, {CLEAN}",
                                        seed, "mini-sdxl").any(axis=1))[0]
        return rows.max(), rows.max() - rows.min()  # bottom row, height

    for subject in ("knight", "fox"):
        for seed in SEEDS:
            bottom, height = extent("", subject, seed)
            assert extent(" jumping", subject, seed)[0] < bottom - 3
            assert extent(" sleeping", subject, seed)[1] < 0.75 * height
    assert np.array_equal(render("a castle jumping", 0), render("a castle", 0))  # only the living move


def test_a_word_the_world_does_not_know_changes_nothing():
    for variant in RENDERERS:
        for seed in SEEDS:
            known = render("a cat in a park at night", seed, variant)
            assert np.array_equal(known, render("a fluffy cat in a lovely park at night, xyzzy", seed, variant))


def test_the_seed_moves_the_subject():
    centres = []
    for seed in range(6):
        ys, xs = np.nonzero(_subject_mask("a cat in a park, smooth", "in a park, smooth", seed, "mini-sd15"))
        centres.append((ys.mean(), xs.mean()))
    centres = np.array(centres)
    assert np.ptp(centres[:, 1]) > 4  # pixels
    # The seed varies placement only: the subject's colour is the same at every seed.
    colours = [render("a red cat in a park, vivid colors", seed, "mini-sdxl")[
        _subject_mask("a red cat in a park, vivid colors", "in a park, vivid colors", seed, "mini-sdxl")
    ].mean(axis=0) for seed in range(3)]
    assert np.abs(np.diff(colours, axis=0)).max() < 25


def test_variants_differ_and_batches_match_single_images():
    prompts = ["a red cat in a park", "a lighthouse at sunset"]
    images = {v: render_batch(prompts, [3, 5], v) for v in RENDERERS}
    assert images["mini-sd15"].shape == (2, 64, 64, 3) and images["mini-sd15"].dtype == np.uint8
    for a in RENDERERS:
        assert np.array_equal(images[a][1], render(prompts[1], 5, a))
        for b in RENDERERS:
            assert a == b or not np.array_equal(images[a], images[b])
    assert render("a cat", 0, "mini-sd15", size=96).shape == (96, 96, 3)
    with pytest.raises(ValueError, match="unknown renderer 'sd15'"):
        render("a cat", 0, "sd15")


@pytest.mark.parametrize("threads", ["1", "4"])
def test_images_are_the_same_in_every_process_and_at_any_thread_count(threads):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    out = subprocess.run([sys.executable, "-c", HASH_SCRIPT], env=env, capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.strip()
    namespace: dict = {}
    from contextlib import redirect_stdout
    from io import StringIO

    buffer = StringIO()
    with redirect_stdout(buffer):
        exec(HASH_SCRIPT, namespace)
    assert out == buffer.getvalue().strip()
    assert len(out) == len(hashlib.sha256().hexdigest())


def test_cli_writes_the_png_and_names_the_choices(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = tmp_path / "cat.png"
    cli = [sys.executable, "-m", "diffchat.cli", "render"]
    subprocess.run([*cli, "a red cat in a park", "--seed", "2", "-o", str(out)], env=env, check=True,
                   capture_output=True, cwd=tmp_path)
    assert np.array_equal(np.asarray(Image.open(out)), render("a red cat in a park", 2, RENDERERS[0]))
    bad = subprocess.run([*cli, "a cat", "--tis", "sd15", "-o", str(tmp_path / "x.png")], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0
    assert "unknown renderer 'sd15'" in bad.stderr and "mini-sdxl" in bad.stderr
