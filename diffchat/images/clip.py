"""A tiny CLIP trained on the mini-world's renders (DESIGN section 8): the tiny profile's image scorer.

A random-weight CLIP scores noise. This dual encoder is small enough to train on one CPU thread
in minutes and learns what every mini-world word does to a render, so the tiny profile's CLIP-S,
D-CLIP-S and the preference stand-ins measure something that can be checked.

- Text: a bag of words. Words come from a vocabulary of the mini-world's lexicon and the
  training captions (saved as JSON); after each subject word a token for its group
  ("penguin <animals>") lets a subject never seen in training still say what kind of thing it is.
  128-d word embeddings, averaged, LayerNorm, Linear to the joint space. (A 2-layer transformer
  text encoder reached a quarter of the steps in the same time and a lower content AUC: DESIGN 8.)
- Image: four stride-2 3x3 convolutions (16-32-64-128) with BatchNorm, one more 3x3, mean and max
  pooling, Linear to the joint space.

``WorldClip`` exposes ``get_text_features(texts)`` and ``get_image_features(images)`` and a
``logit_scale`` as ``transformers.CLIPModel`` does, so the scorers use it like the real CLIPs.
Saved as ``config.json`` + ``vocab.json`` + ``model.safetensors``: nothing loaded runs code.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

CONFIG = "config.json"
VOCAB = "vocab.json"
WEIGHTS = "model.safetensors"
PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def subject_token(group: str) -> str:
    return f"<{group}>"


def words(text: str) -> list[str]:
    """The text's words, lower case, punctuation dropped ("close-up" and "8k" stay whole)."""
    return _WORD.findall(text.lower())


def subject_groups() -> dict[str, str]:
    """Subject word -> its group, for every subject of the lexicon (held-out ones included)."""
    from diffchat.data.miniworld import word_lists

    return dict(word_lists().group_of)


class WordVocab:
    """Word -> id; unknown words map to ``<unk>``, and each subject word is followed by its group."""

    def __init__(self, tokens: Sequence[str], groups: dict[str, str]):
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD} and {UNK}, not {list(tokens[:2])}")
        self.tokens = list(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.groups = dict(groups)

    @classmethod
    def build(cls, texts: Iterable[str], exclude: Iterable[str] = ()) -> WordVocab:
        """The words of ``texts`` (the lexicon and training captions) and the group tokens, less
        ``exclude`` (held-out subjects: they must stay unknown, as they are to every other model)."""
        groups = subject_groups()
        skip = set(exclude)
        found = sorted({w for t in texts for w in words(t)} - skip)
        group_tokens = sorted({subject_token(g) for g in groups.values()})
        return cls([PAD, UNK, *group_tokens, *found], groups)

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in words(text):
            ids.append(self.ids.get(word, 1))
            group = self.groups.get(word)
            if group is not None:
                ids.append(self.ids[subject_token(group)])
        return ids or [1]

    def batch(self, texts: Sequence[str]) -> torch.Tensor:
        """Padded ids (0 = padding), one row per text."""
        rows = [self.encode(t) for t in texts]
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, :len(row)] = torch.tensor(row)
        return out

    def __len__(self) -> int:
        return len(self.tokens)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"tokens": self.tokens, "groups": self.groups}, indent=0))

    @classmethod
    def load(cls, path: Path) -> WordVocab:
        data = _read_json(path)
        if not isinstance(data.get("tokens"), list) or not isinstance(data.get("groups"), dict):
            raise ValueError(f"{path}: a vocabulary needs 'tokens' (a list) and 'groups' (a mapping)")
        return cls(data["tokens"], data["groups"])


@dataclass(frozen=True)
class WorldClipConfig:
    """Sizes of the tiny CLIP (DESIGN 8's prototype: about 370k parameters)."""

    vocab_size: int
    embed_dim: int = 128  # joint space
    word_dim: int = 128
    widths: tuple[int, ...] = (16, 32, 64, 128)
    image_size: int = 64  # renders are resized to this before the image encoder
    init_temperature: float = 0.07  # CLIP's


class TextEncoder(nn.Module):
    def __init__(self, cfg: WorldClipConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.word_dim, padding_idx=0)
        self.norm = nn.LayerNorm(cfg.word_dim)
        self.proj = nn.Linear(cfg.word_dim, cfg.embed_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids > 0).unsqueeze(-1).float()
        mean = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.proj(self.norm(mean))


def _conv(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class ImageEncoder(nn.Module):
    def __init__(self, cfg: WorldClipConfig):
        super().__init__()
        chans = (3, *cfg.widths)
        layers = [_conv(a, b, 2) for a, b in zip(chans, chans[1:])]
        layers.append(_conv(chans[-1], chans[-1], 1))
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * chans[-1], cfg.embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.convs(pixels)
        return self.proj(torch.cat([x.mean((2, 3)), x.amax((2, 3))], dim=1))


def to_pixels(images: Any, size: int) -> torch.Tensor:
    """PIL images, uint8 (H, W, 3) arrays or a uint8 (N, H, W, 3) array -> floats
    (N, 3, size, size), centred at 0."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        arr = torch.as_tensor(np.asarray(images))
    else:
        arr = torch.from_numpy(np.stack([np.asarray(_rgb(im, size)) for im in images]))
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got shape {tuple(arr.shape)}")
    x = arr.permute(0, 3, 1, 2).float().div(255.0).sub(0.5).div(0.25)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


def _rgb(image: Image.Image | np.ndarray, size: int) -> Image.Image:
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image.convert("RGB")
    return image if image.size == (size, size) else image.resize((size, size), Image.BOX)


class WorldClip(nn.Module):
    """The dual encoder with CLIP's feature methods and learned ``logit_scale`` (a log)."""

    def __init__(self, cfg: WorldClipConfig, vocab: WordVocab):
        super().__init__()
        if len(vocab) != cfg.vocab_size:
            raise ValueError(f"vocabulary has {len(vocab)} tokens, config says {cfg.vocab_size}")
        self.config = cfg
        self.vocab = vocab
        self.text = TextEncoder(cfg)
        self.image = ImageEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.init_temperature)))

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text(ids.to(self.device))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image(pixels.to(self.device))

    @torch.no_grad()
    def get_text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Unnormalised text embeddings (N, embed_dim), in eval mode."""
        self.eval()
        return self.encode_ids(self.vocab.batch(list(texts)))

    @torch.no_grad()
    def get_image_features(self, images: Any, batch_size: int = 256) -> torch.Tensor:
        """Unnormalised image embeddings of PIL images or a uint8 (N, H, W, 3) array."""
        self.eval()
        pixels = to_pixels(images, self.config.image_size)
        return torch.cat([self.encode_pixels(pixels[i:i + batch_size])
                          for i in range(0, len(pixels), batch_size)])

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(asdict(self.config), indent=2))
        self.vocab.save(folder / VOCAB)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(folder / WEIGHTS))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> WorldClip:
        """Load a folder written by ``save_pretrained`` (JSON and safetensors only)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (CONFIG, VOCAB, WEIGHTS):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is missing: not a tiny-CLIP folder "
                                        "(run `diffchat clip` to train one)")
        raw = _read_json(folder / CONFIG)
        try:
            cfg = WorldClipConfig(**{**raw, "widths": tuple(raw.get("widths", WorldClipConfig.widths))})
        except TypeError as err:
            raise ValueError(f"{folder / CONFIG}: {err}") from None
        model = cls(cfg, WordVocab.load(folder / VOCAB))
        try:
            model.load_state_dict(load_file(str(folder / WEIGHTS)))
        except RuntimeError as err:
            first = str(err).splitlines()[1:2] or [str(err)]
            raise ValueError(f"{folder / WEIGHTS} does not fit {folder / CONFIG}: {first[0].strip()}") from None
        return model.to(device).eval()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
