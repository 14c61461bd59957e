"""Text-to-image registry and image creation on the tiny pipeline and the renderers (section 4.1)."""

from __future__ import annotations

import time

import diffusers
import numpy as np
import pytest
from PIL import Image

from diffchat.images import TIS_MODELS, create_images, get_tis_spec, image_grid, load_tis
from diffchat.images.render import RENDERERS, render
from diffchat.loading import HubUnavailableError
from diffchat.profiles import PAPER, TINY


@pytest.fixture(scope="module")
def tiny_tis():
    return load_tis("tiny")


def test_registry_covers_the_paper_models():
    for repo in PAPER.models.tis:
        spec = get_tis_spec(repo)
        assert spec.repo == repo
        assert hasattr(diffusers, spec.pipeline)
        if spec.scheduler:
            assert hasattr(diffusers, spec.scheduler)
    assert get_tis_spec("XpucT/Deliberate").single_file.endswith(".safetensors")
    assert get_tis_spec("sdxl").resolution == 1024
    assert get_tis_spec("sdxl").pipeline == "StableDiffusionXLPipeline"
    assert {s.name for s in TIS_MODELS.values()} >= {"sd15", "deliberate", "dreamlike",
                                                    "realistic", "sdxl", "tiny"}
    with pytest.raises(ValueError, match="unknown text-to-image model"):
        get_tis_spec("midjourney")


def test_the_tiny_profile_draws_with_the_five_renderers():
    assert TINY.models.tis == RENDERERS
    for name in TINY.models.tis:
        spec = get_tis_spec(name)
        assert spec.kind == "render"
        assert (spec.resolution, spec.resolution) == (TINY.images.height, TINY.images.width)
    tis = load_tis(TINY.models.tis[0])
    images = create_images(["a red cat in a park", "a castle at night"], tis, [0, 1], progress=False,
                           steps=TINY.images.steps, guidance=TINY.images.guidance)
    assert [im.size for im in images] == [(64, 64)] * 2
    assert np.array_equal(np.asarray(images[1]), render("a castle at night", 1, TINY.models.tis[0]))
    with pytest.raises(ValueError, match="square"):
        create_images(["a cat"], tis, 0, height=64, width=32, progress=False)


def test_images_depend_only_on_prompt_and_seed(tiny_tis):
    prompts = ["a red cat on a sofa", "a castle at night", "a bowl of fruit", "a lighthouse"]
    seeds = [3, 1, 4, 1]
    together = create_images(prompts, tiny_tis, seeds, batch_size=4, progress=False)
    assert len(together) == 4
    assert all(im.size == (32, 32) and im.mode == "RGB" for im in together)
    # Other batch sizes and other neighbours: each image stays the same.
    apart = create_images(prompts, tiny_tis, seeds, batch_size=3, progress=False)
    alone = create_images(prompts[2:3], tiny_tis, seeds[2], batch_size=1, progress=False)
    mixed = create_images(["a lighthouse", "a bowl of fruit"], tiny_tis, [1, 4],
                          batch_size=2, progress=False)
    arr = [np.asarray(im, dtype=int) for im in together]
    for a, b in zip(arr, apart, strict=True):
        assert np.abs(a - np.asarray(b, dtype=int)).max() <= 1
    assert np.abs(arr[2] - np.asarray(alone[0], dtype=int)).max() <= 1
    assert np.abs(arr[3] - np.asarray(mixed[0], dtype=int)).max() <= 1
    assert np.abs(arr[2] - np.asarray(mixed[1], dtype=int)).max() <= 1
    # The seed and the prompt both matter.
    other_seed = create_images(prompts[:1], tiny_tis, 99, progress=False)
    assert np.abs(arr[0] - np.asarray(other_seed[0], dtype=int)).max() > 10
    assert np.abs(arr[1] - arr[3]).max() > 0  # same seed (1), different prompts


def test_settings_override_the_registry(tiny_tis):
    (image,) = create_images(["a tree"], tiny_tis, 0, steps=1, guidance=1.0, height=16,
                             width=24, progress=False)
    assert image.size == (24, 16)
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        create_images(["a", "b"], tiny_tis, [0], progress=False)


def test_hub_model_offline_fails_fast_and_clearly(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match="stable-diffusion-v1-5"):
        load_tis("sd15")
    with pytest.raises(HubUnavailableError, match="Deliberate"):
        load_tis("XpucT/Deliberate")
    assert time.monotonic() - start < 10


def test_image_grid_places_row_by_row():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (4, 3), c) for c in colours]
    grid = image_grid(images, rows=2, cols=2)
    assert grid.size == (8, 6)
    assert grid.getpixel((0, 0)) == colours[0]
    assert grid.getpixel((4, 0)) == colours[1]
    assert grid.getpixel((0, 3)) == colours[2]
    assert grid.getpixel((4, 3)) == (255, 255, 255)  # empty cell
    with pytest.raises(ValueError, match="do not fit"):
        image_grid(images, rows=1, cols=2)


def test_pipelines_load_only_safetensors_weights(tiny_tis, tmp_path):
    """A diffusers folder whose weights are pickles (.bin) is refused, not unpickled."""
    import torch

    from diffchat.images.tis import TISSpec, _load_pipeline

    for name, safe in (("safe", True), ("pickled", False)):
        tiny_tis.pipe.save_pretrained(tmp_path / name, safe_serialization=safe)
    spec = TISSpec("local", str(tmp_path / "safe"), "StableDiffusionPipeline", 32, scheduler=None)
    assert _load_pipeline(spec, torch.float32).unet.config.sample_size == tiny_tis.pipe.unet.config.sample_size
    # (transformers 5 writes the text encoder as safetensors whatever it is asked)
    assert sorted(f.name for f in (tmp_path / "pickled" / "unet").iterdir()) == [
        "config.json", "diffusion_pytorch_model.bin"]
    pickled = TISSpec("local", str(tmp_path / "pickled"), "StableDiffusionPipeline", 32, scheduler=None)
    with pytest.raises((OSError, ValueError), match="safetensors"):
        _load_pipeline(pickled, torch.float32)
