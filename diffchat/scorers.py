"""Image scorers (sections 3.3 and 4.1): aesthetic score, PickScore, HPS, CLIP-S, D-CLIP-S.

Every scorer has one interface, ``Scorer.score(images, texts) -> list[float]``, so reward
labelling and evaluation loop over them alike. Each kind loads its real weights for a hub
id (the paper profile) and a tiny random CLIP stand-in for the id ``'tiny'``: the formulas
are the same, the numbers are meaningless (random weights), which the notebooks say.

For the id ``WORLD_ID`` (the tiny profile) they use the tiny CLIP the clip stage trains on
mini-world renders (``diffchat.images.clip``) and the world's planted taste
(``diffchat.images.taste``): numbers that mean something, but a planted taste, not beauty.
``WORLD_SCORERS`` says what each kind computes there.

Definitions (DESIGN section 5):

- aesthetic (LAION improved aesthetic predictor): MLP 768-1024-128-64-16-1 over the
  L2-normalised CLIP ViT-L/14 image embedding.
- PickScore: ``logit_scale.exp() * cos(text, image)`` (about 18-23 on real images).
- HPS v2: ``image . text`` of the normalised open_clip ViT-H-14 features (HPS v2 weights).
- CLIP-S: ``100 * max(cos(image, text), 0)`` with CLIP ViT-L/14, as torchmetrics does.
- D-CLIP-S (InstructPix2Pix's directional similarity): ``cos(I1 - I0, T1 - T0)`` of
  L2-normalised CLIP features; its ``score`` takes (image0, image1) and (text0, text1) pairs.

Scales: HPS and D-CLIP-S come out as raw cosines (about 0.27 and 0.17). The paper's
Table 1 shows them about 100 times larger (HPS 20.8, D-CLIP-S 16.8); its HPS reference is
HPS v1 (Wu et al., 2023, arXiv:2303.14420), scored as 100 * cos. Tables that set our
numbers beside the paper's should multiply these two by 100 and say so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from diffchat.device import pick_device, pick_dtype
from diffchat.profiles import TINY_ID, WORLD_ID, Profile, get_profile

log = logging.getLogger(__name__)

SCORER_KINDS = ("aesthetic", "pickscore", "hps", "clip", "dclip")

# One fixed seed per tiny stand-in: CLIP-S and D-CLIP-S share the same CLIP, as they do
# in the paper profile (ViT-L/14).
TINY_SEEDS = {"aesthetic": 101, "pickscore": 102, "hps": 103, "clip": 104, "dclip": 104}

# LAION improved aesthetic predictor (a linear-MSE head trained on SAC + LOGOS + AVA).
AESTHETIC_HEAD_REPO = "camenduru/improved-aesthetic-predictor"
AESTHETIC_HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
HPS_FILE = "HPS_v2_compressed.pt"
HPS_ARCH = "ViT-H-14"


def _pooled(out: Any) -> torch.Tensor:
    """Projected features from ``get_image_features`` / ``get_text_features``.

    transformers 5 returns a ``BaseModelOutputWithPooling`` whose ``pooler_output`` holds
    the projected embedding; transformers 4 returned the tensor itself.
    """
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipEncoder:
    """Image and text features (unnormalised) of a transformers ``CLIPModel``."""

    def __init__(self, model: nn.Module, processor: Any, device: torch.device, dtype: torch.dtype):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.processor = processor
        self.device = device
        self.dtype = dtype
        self.max_length = model.config.text_config.max_position_embeddings

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.processor.image_processor(
            images=[im.convert("RGB") for im in images], return_tensors="pt"
        )["pixel_values"]
        out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
        return _pooled(out).float()

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.processor.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        out = self.model.get_text_features(
            input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
        )
        return _pooled(out).float()


class OpenClipEncoder:
    """The same two methods over an open_clip model (HPS v2 ships open_clip weights)."""

    def __init__(self, model: nn.Module, preprocess: Callable, tokenizer: Callable,
                 device: torch.device, dtype: torch.dtype):
        self.model = model.to(device=device, dtype=dtype).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in images])
        return self.model.encode_image(pixels.to(self.device, self.dtype)).float()

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()


class WorldClipEncoder:
    """The same two methods over the tiny CLIP trained on mini-world renders."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self.dtype = torch.float32

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.model.get_image_features(images).float()

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.get_text_features(texts).float()


Encoder = ClipEncoder | OpenClipEncoder | WorldClipEncoder


class AestheticHead(nn.Module):
    """LAION's MLP: Linear layers with Dropout between and no activations.

    The attribute name ``layers`` and the module order reproduce the state-dict keys of
    ``sac+logos+ava1-l14-linearMSE.pth`` (layers.0, .2, .4, .6, .7).
    """

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(embeds)


class Scorer:
    """A batch of images (and their texts) in, one float per image out."""

    kind: str = ""
    needs_text: bool = True

    def __init__(self, encoder: Encoder, batch_size: int = 16):
        self.encoder = encoder
        self.batch_size = batch_size

    def score(self, images: Sequence[Any], texts: Sequence[Any] | None = None) -> list[float]:
        if self.needs_text and texts is None:
            raise ValueError(f"the {self.kind} scorer needs one text per image")
        if texts is not None and len(texts) != len(images):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        scores: list[float] = []
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            batch_texts = None if texts is None else list(texts[start:stop])
            scores.extend(self._score(list(images[start:stop]), batch_texts).tolist())
        return scores

    def _score(self, images: list[Any], texts: list[Any] | None) -> torch.Tensor:
        raise NotImplementedError

    def _cosine(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        image = F.normalize(self.encoder.images(images), dim=-1)
        text = F.normalize(self.encoder.texts(texts), dim=-1)
        return (image * text).sum(-1)


class AestheticScorer(Scorer):
    """LAION aesthetic score: the MLP over the L2-normalised image embedding (text unused)."""

    kind = "aesthetic"
    needs_text = False

    def __init__(self, encoder: Encoder, head: AestheticHead, batch_size: int = 16):
        super().__init__(encoder, batch_size)
        self.head = head.to(encoder.device).eval()

    @torch.no_grad()
    def _score(self, images: list[Image.Image], texts: list[str] | None) -> torch.Tensor:
        embeds = F.normalize(self.encoder.images(images), dim=-1)
        return self.head(embeds).squeeze(-1).cpu()


class PickScorer(Scorer):
    """PickScore: the CLIP logit, exp(logit_scale) * cos(text, image)."""

    kind = "pickscore"

    def _score(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        scale = self.encoder.model.logit_scale.detach().float().exp().cpu()
        return scale * self._cosine(images, texts).cpu()


class HPSScorer(Scorer):
    """HPS v2: image . text of the normalised features (no logit scale)."""

    kind = "hps"

    def _score(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        return self._cosine(images, texts).cpu()


class PlantedPreferenceScorer(Scorer):
    """A preference stand-in on the mini-world: ``(cos_weight * cos(text, image) + taste_weight *
    (A - 5)) * scale``, with the tiny CLIP's cosine and A the planted taste formula of the image.

    PickScore and HPS get different mixes (``PLANTED_MIXES``), so the two preference scores
    disagree as the real ones do. A is the formula itself, not the aesthetic head.
    """

    def __init__(self, encoder: Encoder, kind: str, cos_weight: float, taste_weight: float,
                 scale: float = 1.0, batch_size: int = 16):
        super().__init__(encoder, batch_size)
        self.kind = kind
        self.cos_weight, self.taste_weight, self.scale = cos_weight, taste_weight, scale

    def _score(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        from diffchat.images.taste import planted_aesthetic

        pixels = np.stack([np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im)
                           for im in images])
        taste = torch.as_tensor(planted_aesthetic(pixels), dtype=torch.float32) - 5.0
        cos = self._cosine(images, texts).cpu()
        return self.scale * (self.cos_weight * cos + self.taste_weight * taste)


class ClipScorer(Scorer):
    """CLIP-S as torchmetrics computes it: 100 * max(cos(image, text), 0)."""

    kind = "clip"

    def _score(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        return 100 * self._cosine(images, texts).clamp(min=0).cpu()


# A direction between two unit vectors shorter than this is no direction: the same text (or
# image) encoded twice differs in its last bits with the batch and the processor, and
# normalising that noise into a unit vector would give an arbitrary cosine. Measured with the
# tiny CLIP: prompts that differ by one word are 0.27-0.55 apart (normalised features), the
# same text encoded in another batch 4e-8.
DIRECTION_TOL = 1e-4


def directional_similarity(i0: torch.Tensor, i1: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor,
                           tol: float = DIRECTION_TOL) -> torch.Tensor:
    """cos(I1 - I0, T1 - T0) of L2-normalised features, row by row; 0 where either direction's
    norm is below ``tol`` (an unchanged image or text has no direction to agree with)."""
    di = F.normalize(i1.float(), dim=-1) - F.normalize(i0.float(), dim=-1)
    dt = F.normalize(t1.float(), dim=-1) - F.normalize(t0.float(), dim=-1)
    ni, nt = di.norm(dim=-1), dt.norm(dim=-1)
    cos = (di * dt).sum(-1) / (ni * nt).clamp(min=tol * tol)
    return torch.where((ni < tol) | (nt < tol), torch.zeros_like(cos), cos)


class DirectionalClipScorer(Scorer):
    """D-CLIP-S: cos(I1 - I0, T1 - T0) of L2-normalised CLIP features.

    ``images`` are (image0, image1) pairs (raw and edited image) and ``texts`` the matching
    (text0, text1) pairs (raw and target prompt). See ``directional_similarity`` for the
    case of no change.
    """

    kind = "dclip"

    def _score(self, images: list[tuple], texts: list[tuple]) -> torch.Tensor:
        enc = self.encoder
        i0 = enc.images([pair[0] for pair in images])
        i1 = enc.images([pair[1] for pair in images])
        t0 = enc.texts([pair[0] for pair in texts])
        t1 = enc.texts([pair[1] for pair in texts])
        return directional_similarity(i0, i1, t0, t1).cpu()

    def score_pairs(self, images0: Sequence[Image.Image], images1: Sequence[Image.Image],
                    texts0: Sequence[str], texts1: Sequence[str]) -> list[float]:
        """The same score from four parallel lists."""
        return self.score(list(zip(images0, images1, strict=True)),
                          list(zip(texts0, texts1, strict=True)))


_SCORERS: dict[str, type[Scorer]] = {
    cls.kind: cls
    for cls in (AestheticScorer, PickScorer, HPSScorer, ClipScorer, DirectionalClipScorer)
}


# The mini-world's preference stand-ins (DESIGN 8): (cos weight, planted-taste weight, scale).
# PickScore: 10 cos + (A - 5), in PickScore-like units. HPS: the cosine weighs twice as much
# against taste, and the scale 1/100 keeps it a cosine-sized number as HPS v2's (Table 1
# prints it x100).
PLANTED_MIXES = {"pickscore": (10.0, 1.0, 1.0), "hps": (20.0, 1.0, 0.01)}
WORLD_SCORERS = {
    "aesthetic": "planted taste: a LAION-style MLP head over the tiny CLIP's normalised image "
                 "embedding, trained on the planted formula's ratings",
    "pickscore": "10 * cos(text, image) + (A - 5), A the planted taste formula",
    "hps": "(20 * cos(text, image) + (A - 5)) / 100",
    "clip": "100 * max(cos, 0) with the tiny CLIP",
    "dclip": "cos(I1 - I0, T1 - T0) with the tiny CLIP",
}
AESTHETIC_HEAD_WEIGHTS = "aesthetic_head.safetensors"


def load_world_head(folder: str | os.PathLike) -> AestheticHead:
    """The aesthetic head the clip stage trained on planted ratings (safetensors)."""
    from safetensors.torch import load_file

    path = Path(folder) / AESTHETIC_HEAD_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `diffchat clip` to train the tiny CLIP")
    state = load_file(str(path))
    head = AestheticHead(state["layers.0.weight"].shape[1])
    head.load_state_dict(state)
    return head.eval()


def world_scorer(kind: str, folder: str | os.PathLike, device: torch.device,
                 batch_size: int = 16) -> Scorer:
    """A scorer of ``kind`` on the tiny CLIP saved in ``folder`` (the clip stage's artifacts)."""
    from diffchat.images.clip import WorldClip

    encoder = WorldClipEncoder(WorldClip.from_pretrained(folder), device)
    if kind == "aesthetic":
        return AestheticScorer(encoder, load_world_head(folder), batch_size)
    if kind in PLANTED_MIXES:
        return PlantedPreferenceScorer(encoder, kind, *PLANTED_MIXES[kind], batch_size=batch_size)
    return _SCORERS[kind](encoder, batch_size)


def _tiny_encoder(kind: str, device: torch.device, dtype: torch.dtype) -> ClipEncoder:
    from diffchat.tiny import build_clip

    model, processor = build_clip(seed=TINY_SEEDS[kind])
    return ClipEncoder(model, processor, device, dtype)


def _hf_encoder(model_id: str, processor_id: str, device: torch.device,
                dtype: torch.dtype) -> ClipEncoder:
    from transformers import CLIPModel, CLIPProcessor

    from diffchat.loading import resolve_model

    model = CLIPModel.from_pretrained(resolve_model(model_id))
    processor = CLIPProcessor.from_pretrained(resolve_model(processor_id))
    return ClipEncoder(model, processor, device, dtype)


def _hub_file(repo: str, filename: str) -> str:
    """One file of a hub repo, with the project's clear offline error."""
    from diffchat.loading import resolve_model

    return str(resolve_model(repo, filename=filename))


def _open_clip_encoder(model_id: str, device: torch.device, dtype: torch.dtype) -> OpenClipEncoder:
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(
            "the HPS v2 scorer needs open_clip: pip install 'diffchat[paper]' "
            "(or open_clip_torch)"
        ) from err
    model, _, preprocess = open_clip.create_model_and_transforms(HPS_ARCH, pretrained=None)
    state = torch.load(_hub_file(model_id, HPS_FILE), map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("state_dict", state))
    return OpenClipEncoder(model, preprocess, open_clip.get_tokenizer(HPS_ARCH), device, dtype)


def _aesthetic_head(encoder: ClipEncoder, model_id: str) -> AestheticHead:
    dim = encoder.model.config.projection_dim
    if model_id == TINY_ID:  # random head at the tiny CLIP's width; the caller's RNG untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEEDS["aesthetic"])
            return AestheticHead(dim)
    head = AestheticHead(dim)
    path = _hub_file(AESTHETIC_HEAD_REPO, AESTHETIC_HEAD_FILE)
    head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return head


def make_scorer(
    kind: str,
    model_id: str,
    device: str | torch.device | None = None,
    *,
    processor_id: str | None = None,
    dtype: str = "float32",
    batch_size: int = 16,
    clip_dir: str | os.PathLike | None = None,
) -> Scorer:
    """A scorer of ``kind`` (one of SCORER_KINDS) on ``model_id``, or its tiny stand-in.

    ``model_id`` is the CLIP backbone for aesthetic / clip / dclip, PickScore_v1 for
    pickscore (``processor_id`` defaults to the LAION ViT-H-14 processor) and the HPS v2
    repo for hps. Scorers run in fp32 by default so that scores do not depend on the card.
    ``WORLD_ID`` takes the tiny CLIP in ``clip_dir`` (the clip stage's folder).
    """
    if kind not in _SCORERS:
        raise ValueError(f"unknown scorer {kind!r}: choose one of {', '.join(SCORER_KINDS)}")
    dev = pick_device(str(device) if device is not None else None)
    if model_id == WORLD_ID:
        if clip_dir is None:
            raise ValueError(f"the {model_id} scorers need clip_dir, the clip stage's folder")
        log.info("%s scorer: the tiny CLIP in %s with planted taste", kind, clip_dir)
        return world_scorer(kind, clip_dir, dev, batch_size)
    torch_dtype = pick_dtype(dev, dtype)
    if model_id == TINY_ID:
        log.info("%s scorer: tiny random CLIP (seed %d), scores are meaningless",
                 kind, TINY_SEEDS[kind])
        encoder: Encoder = _tiny_encoder(kind, dev, torch_dtype)
    elif kind == "hps":
        encoder = _open_clip_encoder(model_id, dev, torch_dtype)
    else:
        default_processor = PICKSCORE_PROCESSOR if kind == "pickscore" else model_id
        encoder = _hf_encoder(model_id, processor_id or default_processor, dev, torch_dtype)
    if kind == "aesthetic":
        return AestheticScorer(encoder, _aesthetic_head(encoder, model_id), batch_size)
    return _SCORERS[kind](encoder, batch_size)


def profile_scorer(kind: str, profile: str | Profile | None = None,
                   device: str | torch.device | None = None,
                   clip_dir: str | os.PathLike | None = None,
                   root: str | os.PathLike | None = None, **kwargs: Any) -> Scorer:
    """The scorer of ``kind`` with the model ids of a profile (ModelIds).

    A profile whose scorers are ``WORLD_ID`` reads the tiny CLIP from ``clip_dir``, by default
    the clip stage's folder under ``root`` (the runs folder).
    """
    profile = get_profile(profile)
    ids = profile.models
    model_id = {"aesthetic": ids.aesthetic, "pickscore": ids.pickscore, "hps": ids.hps,
                "clip": ids.clip, "dclip": ids.clip}.get(kind)
    if model_id is None:
        raise ValueError(f"unknown scorer {kind!r}: choose one of {', '.join(SCORER_KINDS)}")
    if model_id == WORLD_ID:
        from diffchat.runner import stage_dir

        kwargs["clip_dir"] = clip_dir if clip_dir is not None else stage_dir("clip", profile, root)
    if kind == "pickscore" and ids.pickscore_processor != TINY_ID:
        kwargs.setdefault("processor_id", ids.pickscore_processor)
    return make_scorer(kind, model_id, device, **kwargs)
