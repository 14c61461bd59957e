"""Image scorers: each formula checked against a hand computation on the tiny CLIPs.

The references call the CLIP's own get_image_features / get_text_features and then do
the scorer's arithmetic with explicit torch ops, so a wrong normalisation, logit scale,
head or direction in diffchat.scorers shows up as a mismatch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffchat.loading import HubUnavailableError
from diffchat.scorers import (
    DIRECTION_TOL,
    SCORER_KINDS,
    TINY_SEEDS,
    AestheticHead,
    DirectionalClipScorer,
    _pooled,
    directional_similarity,
    make_scorer,
    profile_scorer,
)
from diffchat.tiny import build_clip

TEXTS = ["a red cat on a sofa", "a castle at night, oil painting", "a bowl of fruit",
         "portrait of an old sailor, highly detailed", "a lighthouse in a storm"]


@pytest.fixture(scope="module")
def images():
    """Plain colours and noise, of several sizes (the processor resizes them)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.new("RGB", (32, 32), (255, 255, 255)),
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
        Image.new("RGB", (48, 40), (30, 200, 40)),
        Image.new("RGB", (32, 32), (0, 128, 255)),
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
    ]


def features(kind, images, texts):
    """Raw CLIP features of the tiny model a scorer of `kind` must use (rebuilt here)."""
    model, processor = build_clip(seed=TINY_SEEDS[kind])
    model.eval()
    with torch.no_grad():
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        img = model.get_image_features(pixel_values=pixels)
        tok = processor.tokenizer(texts, padding=True, return_tensors="pt")
        txt = model.get_text_features(input_ids=tok["input_ids"],
                                      attention_mask=tok["attention_mask"])
    return model, _pooled(img), _pooled(txt)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def test_get_features_returns_an_output_object_in_transformers_5(images):
    model, processor = build_clip(seed=0)
    pixels = processor.image_processor(images=images[:1], return_tensors="pt")["pixel_values"]
    out = model.get_image_features(pixel_values=pixels)
    # transformers 5: a model output whose pooler_output is the projected embedding.
    assert not isinstance(out, torch.Tensor)
    assert _pooled(out).shape == (1, model.config.projection_dim)
    assert _pooled(out.pooler_output) is out.pooler_output


def test_aesthetic_is_the_mlp_over_the_normalised_image_embedding(images):
    scorer = make_scorer("aesthetic", "tiny")
    _, img, _ = features("aesthetic", images, TEXTS)
    x = unit(img)
    lin = [m for m in scorer.head.layers if isinstance(m, torch.nn.Linear)]
    assert [m.in_features for m in lin] == [img.shape[-1], 1024, 128, 64, 16]
    with torch.no_grad():
        for m in lin:  # no activations between the layers; dropout is off in eval
            x = x @ m.weight.T + m.bias
    got = scorer.score(images)  # texts are not needed
    np.testing.assert_allclose(got, x.squeeze(-1).numpy(), rtol=1e-5, atol=1e-6)
    # The head is a fixed function of the image: scale does not matter, normalisation does.
    assert scorer.score(images, TEXTS) == pytest.approx(got)


def test_aesthetic_head_matches_laion_state_dict_layout():
    keys = {k: tuple(v.shape) for k, v in AestheticHead(768).state_dict().items()}
    assert keys == {
        "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
        "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
        "layers.4.weight": (64, 128), "layers.4.bias": (64,),
        "layers.6.weight": (16, 64), "layers.6.bias": (16,),
        "layers.7.weight": (1, 16), "layers.7.bias": (1,),
    }


def test_pickscore_is_scaled_cosine(images):
    model, img, txt = features("pickscore", images, TEXTS)
    scale = model.logit_scale.detach().exp()
    assert scale.item() > 1  # the scale is applied, not the raw log value
    want = scale * (unit(img) * unit(txt)).sum(-1)
    got = make_scorer("pickscore", "tiny").score(images, TEXTS)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_hps_is_the_dot_product_of_normalised_features(images):
    _, img, txt = features("hps", images, TEXTS)
    want = (unit(img) * unit(txt)).sum(-1)
    got = make_scorer("hps", "tiny").score(images, TEXTS)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    assert all(-1 <= s <= 1 for s in got)


def test_clip_score_is_100_times_clamped_cosine(images):
    _, img, txt = features("clip", images, TEXTS)
    cos = (unit(img) * unit(txt)).sum(-1)
    want = 100 * torch.clamp(cos, min=0)
    got = make_scorer("clip", "tiny").score(images, TEXTS)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)
    # Every pairing of these images and texts: negative cosines must come out as 0.
    pairs = [(i, t) for i in range(len(images)) for t in range(len(TEXTS))]
    all_got = make_scorer("clip", "tiny").score([images[i] for i, _ in pairs],
                                                [TEXTS[t] for _, t in pairs])
    all_cos = unit(img)[[i for i, _ in pairs]] @ unit(txt).T
    all_cos = all_cos[range(len(pairs)), [t for _, t in pairs]]
    assert (all_cos < 0).any() and (all_cos > 0).any()
    np.testing.assert_allclose(all_got, (100 * all_cos.clamp(min=0)).numpy(), atol=1e-4)


def test_directional_clip_similarity(images):
    _, img, txt = features("dclip", images, TEXTS)
    pairs_i = [(0, 1), (2, 3), (4, 0)]
    pairs_t = [(1, 2), (3, 4), (0, 0)]
    di = torch.stack([unit(img[b]) - unit(img[a]) for a, b in pairs_i])
    dt = torch.stack([unit(txt[b]) - unit(txt[a]) for a, b in pairs_t])
    want = (di * dt).sum(-1) / (di.norm(dim=-1) * dt.norm(dim=-1)).clamp(min=1e-8)
    scorer = make_scorer("dclip", "tiny")
    assert isinstance(scorer, DirectionalClipScorer)
    got = scorer.score([(images[a], images[b]) for a, b in pairs_i],
                       [(TEXTS[a], TEXTS[b]) for a, b in pairs_t])
    np.testing.assert_allclose(got[:2], want[:2].numpy(), rtol=1e-4, atol=1e-5)
    assert got[2] == 0.0  # same texts: no text direction
    got4 = scorer.score_pairs([images[a] for a, _ in pairs_i], [images[b] for _, b in pairs_i],
                              [TEXTS[a] for a, _ in pairs_t], [TEXTS[b] for _, b in pairs_t])
    assert got4 == pytest.approx(got)


def test_directional_clip_same_text_at_other_batch_positions_is_no_direction(images):
    """The same text encoded in two batches, at other positions and with other padding, differs
    in its last bits on some processors; that noise must score 0, not an arbitrary cosine."""
    scorer = make_scorer("dclip", "tiny")
    enc = scorer.encoder
    first = enc.texts([TEXTS[0], TEXTS[3], TEXTS[1]])
    second = enc.texts([TEXTS[3], TEXTS[2], TEXTS[4], TEXTS[0]])
    t0, t1 = first[0:1], second[3:4]
    i0, i1 = enc.images(images[:1]), enc.images(images[1:2])
    assert directional_similarity(i0, i1, t0, t1).item() == 0.0
    noisy = t0 * (1 + 1e-6 * torch.randn_like(t0))  # last-bit noise
    assert (unit(noisy) - unit(t0)).norm() < DIRECTION_TOL
    assert directional_similarity(i0, i1, t0, noisy).item() == 0.0
    assert directional_similarity(i0, i0, t0, second[0:1]).item() == 0.0  # no image change
    # A real text change is far above the tolerance and keeps its cosine.
    assert abs(directional_similarity(i0, i1, t0, second[1:2]).item()) > 1e-3
    # Through the scorer: pairs whose same-text side sits at other positions in each batch.
    got = scorer.score([(images[0], images[1]), (images[2], images[3]), (images[4], images[0])],
                       [(TEXTS[3], TEXTS[1]), (TEXTS[0], TEXTS[2]), (TEXTS[2], TEXTS[2])])
    assert got[2] == 0.0


def test_scores_do_not_depend_on_batching_and_the_stand_ins_are_fixed(images):
    one = make_scorer("pickscore", "tiny", batch_size=2).score(images, TEXTS)
    two = make_scorer("pickscore", "tiny", batch_size=16).score(images, TEXTS)
    assert one == pytest.approx(two, abs=1e-5)
    a = make_scorer("aesthetic", "tiny").score(images)
    b = make_scorer("aesthetic", "tiny").score(images)
    assert a == b


def test_interface_errors(images):
    scorer = make_scorer("hps", "tiny")
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        scorer.score(images[:2], TEXTS[:1])
    with pytest.raises(ValueError, match="needs one text per image"):
        scorer.score(images[:2])
    with pytest.raises(ValueError, match="unknown scorer"):
        make_scorer("imagereward", "tiny")
    assert set(SCORER_KINDS) == {"aesthetic", "pickscore", "hps", "clip", "dclip"}


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))


def test_profiles_choose_the_models(empty_hub_cache, tmp_path):
    assert profile_scorer("clip", "small").kind == "clip"
    # The tiny profile's scorers are the CLIP its clip stage trains: none trained yet here.
    with pytest.raises(FileNotFoundError, match=r"tiny/clip/config.json is missing.*diffchat clip"):
        profile_scorer("clip", "tiny", root=tmp_path)
    # The paper profile's real weights are not on this machine and the hub is off.
    with pytest.raises(HubUnavailableError, match="PickScore_v1"):
        profile_scorer("pickscore", "paper")
    with pytest.raises(HubUnavailableError, match="clip-vit-large-patch14"):
        make_scorer("aesthetic", "openai/clip-vit-large-patch14")


def test_hps_without_open_clip_says_how_to_install(empty_hub_cache):
    try:
        import open_clip  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"diffchat\[paper\]"):
            make_scorer("hps", "xswu/HPSv2")
    else:
        with pytest.raises(HubUnavailableError, match="HPS_v2_compressed.pt"):
            make_scorer("hps", "xswu/HPSv2")
