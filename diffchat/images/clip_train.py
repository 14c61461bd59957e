"""Training the tiny CLIP on mini-world renders, and the checks that say what it learned.

The pool: PB pairs of the training split (``generate_pb_pairs``), the plain caption and the PB
prompt of each drawn once by a random renderer with a random seed. Held-out subjects never occur
in it. Training: symmetric InfoNCE with a learned temperature, identical texts in a batch counted
as positives; AdamW with warm-up and cosine decay for a fixed number of steps (a time budget
would make the model depend on the machine); half the batches hold 4 scenes x 32 captions, so
that the model must tell captions apart by more than their scene.

Colours need three more signals. A random batch almost never holds two captions that differ by
their colour alone, and a plain caption's subject covers about 2% of a 64 px render (a colour
swap changes under 3% of the pixels for three captions in four), so without them the model
learns scenes, times and subjects and leaves colours behind (colour AUC 0.72, text embeddings
of colour-swapped captions at cosine 0.92). Each image whose caption names a colour is scored
against its caption with the colour swapped (``ColourSwaps``; alone: 0.84, and 16 swaps do no
better than 4); batches hold colour twins, the same plain caption in another colour drawn by
the same renderer and seed, so a caption must also pick its image over one that differs by the
colour alone; and a linear head on the image embedding names the subject's colour (trained
with the model, not saved). All three: colour AUC 0.89.

The checks (``evaluate_clip``), on held-out captions, each against its chance level:
retrieval recall@1 among 32 (chance 1/32), for seen and unseen subjects; CLIP-S AUC: how often
the true caption beats the same caption with one content word swapped, per kind of word; and
D-CLIP-S on real edits against the same pairs with their text changes shuffled.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffchat.images.clip import WordVocab, WorldClip, WorldClipConfig, to_pixels
from diffchat.profiles import ClipConfig
from diffchat.scorers import AestheticHead

RETRIEVAL_WAYS = 32
GROUP_SCENES, GROUP_SIZE = 4, 32  # a scene-grouped batch
AUC_KINDS = ("colour", "scene", "time", "weather", "subject_other_group", "subject_same_group", "object")
TRAIN_LOG = "train_log.json"


@dataclass
class Pool:
    """Rendered images with their texts; ``scenes`` is each text's scene (None: no scene)."""

    images: np.ndarray  # (N, H, W, 3) uint8
    texts: list[str]
    scenes: list[str | None]
    twins: np.ndarray | None = None  # (N,) index of the same caption in another colour, -1: none


def render_random(prompts: Sequence[str], rng: np.random.Generator, size: int) -> np.ndarray:
    """Each prompt drawn by a random renderer with a random seed, in one array."""
    variants, seeds = random_settings(len(prompts), rng)
    return render_with(prompts, variants, seeds, size)


def random_settings(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random renderer (its index in RENDERERS) and seed for each of n images."""
    from diffchat.images.render import RENDERERS

    return rng.integers(len(RENDERERS), size=n), rng.integers(2**31 - 1, size=n)


def render_with(prompts: Sequence[str], variants: np.ndarray, seeds: np.ndarray, size: int) -> np.ndarray:
    """Prompt i drawn by renderer ``RENDERERS[variants[i]]`` with seed ``seeds[i]``."""
    from diffchat.images.render import RENDERERS, render_batch

    out = np.zeros((len(prompts), size, size, 3), dtype=np.uint8)
    for v, name in enumerate(RENDERERS):
        idx = np.flatnonzero(variants == v)
        if len(idx):
            out[idx] = render_batch([prompts[i] for i in idx], [int(seeds[i]) for i in idx], name, size)
    return out


def build_pool(n_pairs: int, seed: int, size: int, split: str = "train", twins: bool = False) -> Pool:
    """The plain caption and the PB prompt of ``n_pairs`` PB pairs of ``split``, rendered; with
    ``twins``, each plain caption naming a colour also in another colour, drawn by the same
    renderer and seed, so that the two images differ by the colour alone."""
    from diffchat.data.miniworld import generate_pb_pairs, parse_caption, word_lists

    pairs = generate_pb_pairs(n_pairs, seed, split)
    texts = [t for row in pairs for t in (row["simplified"], row["prompt"])]
    captions = [parse_caption(row["simplified"]) for row in pairs]
    scenes = [c.scene for c in captions for _ in range(2)]
    variants, seeds = random_settings(len(texts), np.random.default_rng([seed, 7, len(texts)]))
    images = render_with(texts, variants, seeds, size)
    if not twins:
        return Pool(images, texts, scenes)
    rng = random.Random(f"clip-twins:{seed}")
    colours = word_lists().colors
    first = [2 * n for n, c in enumerate(captions) if c.color]
    twin_texts = [replace(captions[i // 2], color=_other(rng, colours, captions[i // 2].color)).render()
                  for i in first]
    index = np.array(first, dtype=np.int64)
    twin_images = render_with(twin_texts, variants[index], seeds[index], size)
    links = np.full(len(texts) + len(first), -1, dtype=np.int64)
    links[index] = np.arange(len(texts), len(links))
    links[len(texts):] = index
    return Pool(np.concatenate([images, twin_images]), texts + twin_texts,
                scenes + [scenes[i] for i in first], links)


def build_vocab(pool_texts: Sequence[str]) -> WordVocab:
    """The lexicon's words (held-out subjects left out) and the training texts' words."""
    from diffchat.data.miniworld import held_out_subjects, vocabulary_texts

    return WordVocab.build([*vocabulary_texts(), *pool_texts], exclude=held_out_subjects())


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                     text_ids: torch.Tensor, hard: torch.Tensor | None = None,
                     hard_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE where rows with the same text id are all positives: each row pays
    -log of the softmax mass on its positives, so a caption drawn twice in a batch is never
    pushed away from its own other image.

    ``hard`` (B, K, D): K more negative texts for each image, its own only (its caption with a
    word swapped), where ``hard_valid`` (B, K) is True; they join the image -> text softmax.
    """
    scale = logit_scale.exp()
    image = F.normalize(image, dim=-1)
    logits = scale * image @ F.normalize(text, dim=-1).T
    positive = text_ids[:, None] == text_ids[None, :]

    def one_way(z: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return (z.logsumexp(1) - z.masked_fill(~pos, float("-inf")).logsumexp(1)).mean()

    image_to_text, image_positive = logits, positive
    if hard is not None:
        extra = scale * torch.einsum("bd,bkd->bk", image, F.normalize(hard, dim=-1))
        image_to_text = torch.cat([logits, extra.masked_fill(~hard_valid, float("-inf"))], dim=1)
        image_positive = torch.cat([positive, torch.zeros_like(hard_valid)], dim=1)
    return (one_way(image_to_text, image_positive) + one_way(logits.T, positive.T)) / 2


def subject_colours(texts: Sequence[str]) -> list[int]:
    """The subject's colour of each text as an index into the lexicon's colours (their count: none)."""
    from diffchat.data.miniworld import word_lists
    from diffchat.images.render import parse

    colours = list(word_lists().colors)
    return [colours.index(c) if (c := parse(t).color) in colours else len(colours) for t in texts]


class ColourSwaps:
    """Hard negatives for colours: a caption's word ids with one colour word replaced by another
    colour of the lexicon (its article fixed, "an orange cat" -> "a red cat"), as the CLIP-S
    check swaps them. Colour words are single words that no other phrase of the lexicon holds."""

    def __init__(self, vocab: WordVocab):
        from diffchat.data.miniworld import word_lists
        from diffchat.data.miniworld.grammar import article

        colours = [c for c in word_lists().colors if c in vocab.ids]
        self.colour_ids = torch.tensor([vocab.ids[c] for c in colours])
        self.index = torch.full((len(vocab),), -1, dtype=torch.long)  # token id -> colour index
        self.index[self.colour_ids] = torch.arange(len(colours))
        self.articles = torch.tensor([vocab.ids.get(w, -1) for w in ("a", "an")])
        self.article_of = torch.tensor([vocab.ids.get(article(c), -1) for c in colours])

    def __call__(self, ids: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, L) swapped ids and (B, K) validity: row b's K captions, each with one of its
        colour words (picked at random) replaced by a random other colour; invalid where the
        caption names no colour."""
        n_rows, length = ids.shape
        colour = self.index[ids]  # (B, L), -1 where no colour
        has = colour >= 0
        pick = torch.rand(n_rows, k, length, generator=gen).masked_fill(~has[:, None], -1).argmax(-1)  # (B, K)
        old = colour.gather(1, pick)
        new = (old + torch.randint(1, len(self.colour_ids), (n_rows, k), generator=gen)) % len(self.colour_ids)
        out = ids[:, None].repeat(1, k, 1)
        out.scatter_(2, pick[..., None], self.colour_ids[new][..., None])
        before = (pick - 1).clamp(min=0)[..., None]
        is_article = torch.isin(out.gather(2, before), self.articles) & (pick[..., None] > 0)
        fixed = torch.where(is_article, self.article_of[new][..., None], out.gather(2, before))
        out.scatter_(2, before, fixed)
        return out, has.any(1)[:, None].expand(n_rows, k)


class BatchSampler:
    """Random batches, and every other batch 4 scenes x 32 items of those scenes."""

    def __init__(self, scenes: Sequence[str | None], batch_size: int, grouped_share: float, seed: int,
                 twins: np.ndarray | None = None, n_twins: int = 0):
        self.rng = np.random.default_rng([seed, 11])
        self.twins, self.n_twins = twins, n_twins
        self.n = len(scenes)
        self.batch_size = min(batch_size, self.n)
        self.grouped_share = grouped_share
        by_scene: dict[str, list[int]] = {}
        for i, scene in enumerate(scenes):
            if scene is not None:
                by_scene.setdefault(scene, []).append(i)
        self.groups = [np.array(v) for v in by_scene.values() if len(v) >= GROUP_SIZE]

    def __call__(self, step: int) -> np.ndarray:
        grouped = len(self.groups) >= GROUP_SCENES and self.rng.random() < self.grouped_share
        if not grouped:
            return self.with_twins(self.rng.choice(self.n, self.batch_size, replace=False))
        picked = self.rng.choice(len(self.groups), GROUP_SCENES, replace=False)
        return self.with_twins(np.concatenate([self.rng.choice(self.groups[g], GROUP_SIZE, replace=False)
                                               for g in picked]))

    def with_twins(self, idx: np.ndarray) -> np.ndarray:
        """Up to ``n_twins`` rows with a colour twin get it into the batch, in place of rows
        without one: the same caption and image but for the colour, a hard negative both ways."""
        if self.twins is None or not self.n_twins:
            return idx
        twin = self.twins[idx]
        has = np.flatnonzero((twin >= 0) & ~np.isin(twin, idx))
        free = np.flatnonzero(twin < 0)
        n = min(self.n_twins, len(has), len(free))
        if n:
            idx = idx.copy()
            idx[self.rng.choice(free, n, replace=False)] = twin[self.rng.choice(has, n, replace=False)]
        return idx


def flip_half(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2: no mini-world word says left or
    right, so a mirrored render shows the same caption, and the pool's images count twice."""
    flip = torch.rand(len(pixels), generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)


def train_clip(pool: Pool, cfg: ClipConfig, log: Callable[[str], None] = print) -> tuple[WorldClip, dict]:
    """Train a WorldClip on the pool for ``cfg.steps`` steps; returns it and the training log."""
    from diffchat.data.miniworld import word_lists

    torch.manual_seed(cfg.seed)
    vocab = build_vocab(pool.texts)
    model = WorldClip(WorldClipConfig(vocab_size=len(vocab), image_size=cfg.image_size), vocab)
    unique = {t: i for i, t in enumerate(dict.fromkeys(pool.texts))}
    text_ids = torch.tensor([unique[t] for t in pool.texts])
    ids = vocab.batch(pool.texts)
    pixels = torch.from_numpy(pool.images)  # converted a batch at a time
    colour_label = torch.tensor(subject_colours(pool.texts))
    colour_head = nn.Linear(model.config.embed_dim, len(word_lists().colors) + 1)  # training only
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest + list(colour_head.parameters()), "weight_decay": 0.0}], lr=cfg.lr)
    warmup = max(1, round(cfg.warmup_ratio * cfg.steps))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    sampler = BatchSampler(pool.scenes, cfg.batch_size, cfg.grouped_share, cfg.seed, pool.twins, cfg.colour_twins)
    swaps = ColourSwaps(vocab)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    losses, start = [], time.time()
    for step in range(cfg.steps):
        idx = torch.from_numpy(sampler(step))
        batch_ids = ids[idx]
        batch_ids = batch_ids[:, :int((batch_ids > 0).sum(1).max())]
        image = model.encode_pixels(flip_half(to_pixels(pixels[idx], cfg.image_size), gen))
        hard = valid = None
        if cfg.colour_negatives:
            swapped, valid = swaps(batch_ids, cfg.colour_negatives, gen)
            hard = model.encode_ids(swapped.flatten(0, 1)).unflatten(0, swapped.shape[:2])
        loss = contrastive_loss(image, model.encode_ids(batch_ids), model.logit_scale, text_ids[idx],
                                hard, valid)
        if cfg.colour_aux:
            loss = loss + cfg.colour_aux * F.cross_entropy(colour_head(image), colour_label[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if (step + 1) % max(1, cfg.steps // 10) == 0:
            log(f"clip: step {step + 1}/{cfg.steps} loss {np.mean(losses[-50:]):.3f} "
                f"scale {model.logit_scale.exp().item():.1f} ({time.time() - start:.0f} s)")
    model.eval()
    every = max(1, cfg.steps // 200)
    return model, {"steps": cfg.steps, "seconds": round(time.time() - start, 1),
                   "n_params": model.n_params(), "n_images": len(pool.texts), "vocab_size": len(vocab),
                   "logit_scale": model.logit_scale.exp().item(),
                   "losses": [float(np.mean(losses[i:i + every])) for i in range(0, len(losses), every)],
                   "loss_every": every}


# ---------------------------------------------------------------- evaluation


def _cos(model: WorldClip, images: Any, texts: Sequence[str]) -> torch.Tensor:
    """Row-wise cosine of each image with its text."""
    image = F.normalize(model.get_image_features(images), dim=-1)
    text = F.normalize(model.get_text_features(texts), dim=-1)
    return (image * text).sum(-1)


def retrieval_recall(model: WorldClip, images: np.ndarray, texts: Sequence[str],
                     ways: int = RETRIEVAL_WAYS) -> dict[str, float]:
    """Recall@1 among ``ways`` candidates, image -> text and text -> image (chance 1/ways)."""
    image = F.normalize(model.get_image_features(images), dim=-1)
    text = F.normalize(model.get_text_features(texts), dim=-1)
    hits_i = hits_t = total = 0
    for s in range(0, len(texts) - ways + 1, ways):
        sim = image[s:s + ways] @ text[s:s + ways].T
        truth = torch.arange(ways)
        hits_i += int((sim.argmax(1) == truth).sum())
        hits_t += int((sim.argmax(0) == truth).sum())
        total += ways
    if not total:
        raise ValueError(f"retrieval needs at least {ways} captions, got {len(texts)}")
    return {"image_to_text": hits_i / total, "text_to_image": hits_t / total, "n": total}


def _other(rng: random.Random, options: Sequence[str], current: str | None) -> str:
    return rng.choice([o for o in options if o != current])


def swap_pairs(captions: Sequence[Any], kind: str, rng: random.Random, seen_only: bool = True
               ) -> list[tuple[Any, Any]]:
    """(true caption, the same caption with one content word of ``kind`` swapped) pairs.

    The true caption gets the slot filled first where it is empty (a time, weather, object or
    colour), so every kind is measured on as many captions.
    """
    from diffchat.data.miniworld import held_out_subjects, word_lists

    words = word_lists()
    held = held_out_subjects() if seen_only else frozenset()
    out = []
    for c in captions:
        group = words.group_of[c.subject]
        if kind == "colour":
            if group == "people":
                continue
            c = replace(c, color=c.color or rng.choice(words.colors))
            neg = replace(c, color=_other(rng, words.colors, c.color))
        elif kind == "scene":
            c = replace(c, scene=c.scene or rng.choice(words.scenes))
            neg = replace(c, scene=_other(rng, words.scenes, c.scene))
        elif kind == "time":
            c = replace(c, time=c.time or rng.choice(words.times))
            neg = replace(c, time=_other(rng, words.times, c.time))
        elif kind == "weather":
            c = replace(c, weather=c.weather or rng.choice(words.weather))
            neg = replace(c, weather=_other(rng, words.weather, c.weather))
        elif kind == "object":
            c = replace(c, objects=c.objects[:1] or ((None, rng.choice(words.objects)),))
            colour, noun = c.objects[0]
            neg = replace(c, objects=((colour, _other(rng, words.objects, noun)),))
        elif kind in ("subject_other_group", "subject_same_group"):
            same = kind == "subject_same_group"
            pool = [w for g, ws in words.subjects.items() if (g == group) == same for w in ws
                    if w not in held]
            c = replace(c, color=None, action=None)  # colours and actions fit some groups only
            neg = replace(c, subject=_other(rng, pool, c.subject))
        else:
            raise ValueError(f"unknown swap kind {kind!r}: choose one of {', '.join(AUC_KINDS)}")
        out.append((c, neg))
    return out


def clip_s_auc(model: WorldClip, captions: Sequence[Any], seed: int, size: int) -> dict[str, Any]:
    """Per kind, the share of images whose true caption scores above the swapped one (ties 1/2):
    the AUC of CLIP-S for telling the two apart, 0.5 at chance."""
    rng = random.Random(f"clip-auc:{seed}")
    result: dict[str, Any] = {}
    wins_all: list[float] = []
    for n, kind in enumerate(AUC_KINDS):
        pairs = swap_pairs(captions, kind, rng)
        true = [c.render() for c, _ in pairs]
        images = render_random(true, np.random.default_rng([seed, 13, n]), size)
        pos, neg = _cos(model, images, true), _cos(model, images, [b.render() for _, b in pairs])
        wins = ((pos > neg).float() + 0.5 * (pos == neg).float()).tolist()
        result[kind] = {"auc": float(np.mean(wins)), "n": len(wins)}
        wins_all += wins
    result["all"] = {"auc": float(np.mean(wins_all)), "n": len(wins_all)}
    return result


def dclip_edits(model: WorldClip, triplets: Sequence[dict], seed: int, size: int) -> dict[str, Any]:
    """D-CLIP-S of real edits (input and output caption drawn by the same renderer and seed)
    against the same image changes paired with a shuffled list of text changes."""
    from diffchat.scorers import directional_similarity

    x, y = [t["input"] for t in triplets], [t["output"] for t in triplets]
    rng = np.random.default_rng([seed, 17])
    variants, seeds = random_settings(len(x), rng)
    i0, i1 = render_with(x, variants, seeds, size), render_with(y, variants, seeds, size)
    f0, f1 = model.get_image_features(i0), model.get_image_features(i1)
    t0, t1 = model.get_text_features(x), model.get_text_features(y)
    real = directional_similarity(f0, f1, t0, t1)
    perm = torch.from_numpy(np.roll(rng.permutation(len(x)), 1))
    shuffled = directional_similarity(f0, f1, t0[perm], t1[perm])
    return {"real": {"mean": float(real.mean()), "share_positive": float((real > 0).float().mean())},
            "shuffled": {"mean": float(shuffled.mean()),
                         "share_positive": float((shuffled > 0).float().mean())},
            "n": len(x)}


def evaluate_clip(model: WorldClip, n_eval: int, seed: int, size: int) -> dict[str, Any]:
    """Retrieval (seen and unseen subjects), CLIP-S AUC per kind and D-CLIP-S of real edits."""
    from diffchat.data.miniworld import generate_pb_pairs, generate_triplets, parse_caption

    out: dict[str, Any] = {"chance": {"recall_at_1": 1 / RETRIEVAL_WAYS, "auc": 0.5, "dclip": 0.0}}
    captions = {}
    for n, split in enumerate(("test_seen", "test_unseen")):
        texts = [row["simplified"] for row in generate_pb_pairs(n_eval, seed, split)]
        captions[split] = [parse_caption(t) for t in texts]
        images = render_random(texts, np.random.default_rng([seed, 19, n]), size)
        out[f"retrieval_{split.removeprefix('test_')}"] = retrieval_recall(model, images, texts)
    out["auc_seen"] = clip_s_auc(model, captions["test_seen"], seed, size)
    out["auc_unseen"] = clip_s_auc(model, captions["test_unseen"], seed + 1, size)["all"]
    out["dclip"] = dclip_edits(model, generate_triplets(n_eval, seed, "test_seen"), seed, size)
    return out


def save_train_log(folder: Path, log: dict) -> None:
    (folder / TRAIN_LOG).write_text(json.dumps(log, indent=2))


# ---------------------------------------------------------------- planted taste


def fit_aesthetic_head(model: WorldClip, images: np.ndarray, ratings: np.ndarray, steps: int,
                       seed: int) -> AestheticHead:
    """LAION's MLP over the normalised image embedding, fitted (MSE) to planted ratings."""
    torch.manual_seed(seed)
    emb = F.normalize(model.get_image_features(images), dim=-1)
    y = torch.as_tensor(ratings, dtype=torch.float32)
    head = AestheticHead(emb.shape[1])
    with torch.no_grad():
        head.layers[-1].bias.fill_(float(y.mean()))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(steps):
        idx = torch.randint(len(y), (256,), generator=gen)
        loss = F.mse_loss(head(emb[idx]).squeeze(-1), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def save_head(head: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import save_file

    from diffchat.scorers import AESTHETIC_HEAD_WEIGHTS

    save_file({k: v.detach().contiguous() for k, v in head.state_dict().items()},
              str(folder / AESTHETIC_HEAD_WEIGHTS))


# The best greedy tag suffix the prototype found (DESIGN 8), stacked on a caption stripped of
# its content words: the reward-hacking prompt that only the CI reward stops.
HACK_TAGS = ("vivid colors", "cinematic lighting", "best quality", "backlit", "masterpiece",
             "award winning")


def _shift(a: np.ndarray, base: np.ndarray) -> float:
    """Mean of ``a`` minus mean of ``base``, in standard deviations of ``base``."""
    return float((np.mean(a) - np.mean(base)) / (np.std(base) + 1e-12))


def hack_prompt(caption: Any) -> str:
    """The caption with only its subject and scene kept, then HACK_TAGS."""
    from diffchat.data.miniworld import Caption

    return ", ".join([Caption(subject=caption.subject, scene=caption.scene).render(), *HACK_TAGS])


def taste_report(folder: Path, n: int, seed: int, size: int) -> dict[str, Any]:
    """What the planted-taste scorers in ``folder`` say about plain captions, their PB prompts
    and a reward-hacking prompt (content dropped, tags stacked), each drawn by the same renderer
    and seed; shifts are in standard deviations of the plain captions' scores."""
    from scipy.stats import spearmanr

    from diffchat.data.miniworld import generate_pb_pairs, parse_caption
    from diffchat.images.taste import planted_aesthetic
    from diffchat.scorers import world_scorer

    pairs = generate_pb_pairs(n, seed, "test_seen")
    plain = [r["simplified"] for r in pairs]
    prompts = {"plain": plain, "pb": [r["prompt"] for r in pairs],
               "hack": [hack_prompt(parse_caption(t)) for t in plain]}
    variants, seeds = random_settings(n, np.random.default_rng([seed, 23]))
    images = {k: render_with(v, variants, seeds, size) for k, v in prompts.items()}
    device = torch.device("cpu")
    scorers = {kind: world_scorer(kind, folder, device, batch_size=256)
               for kind in ("aesthetic", "pickscore", "hps", "clip")}
    scores = {k: {"formula": planted_aesthetic(images[k]),
                  **{kind: np.array(s.score(list(images[k]), prompts[k])) for kind, s in scorers.items()}}
              for k in prompts}
    # Content: CLIP-S against what the prompt should show, the caption with the prompt's own tags.
    scores["hack"]["content_clip"] = np.array(scorers["clip"].score(
        list(images["hack"]), [", ".join([t, *HACK_TAGS]) for t in plain]))
    both = {k: np.concatenate([scores["plain"][k], scores["pb"][k]]) for k in ("formula", "aesthetic")}
    return {
        "n": n,
        "aesthetic_head_spearman": float(spearmanr(both["formula"], both["aesthetic"]).statistic),
        "plain_mean": {k: float(np.mean(v)) for k, v in scores["plain"].items()},
        "plain_std": {k: float(np.std(v)) for k, v in scores["plain"].items()},
        "pb_shift_std": {k: _shift(scores["pb"][k], scores["plain"][k]) for k in scores["plain"]},
        "hack_shift_std": {k: _shift(scores["hack"][k], scores["plain"][k]) for k in scores["plain"]},
        "hack_content_clip": {"plain": float(np.mean(scores["plain"]["clip"])),
                              "hack": float(np.mean(scores["hack"]["content_clip"]))},
        "hack_prompt_example": prompts["hack"][0],
    }


# ---------------------------------------------------------------- the clip stage


def train_world_clip(folder: Path, cfg: ClipConfig, log: Callable[[str], None] = print) -> dict:
    """Build the pool, train the CLIP and its aesthetic head, save both in ``folder``."""
    from diffchat.images.taste import planted_aesthetic

    start = time.time()
    pool = build_pool(cfg.n_pairs, cfg.seed, cfg.image_size, twins=cfg.colour_twins > 0)
    pool_seconds = round(time.time() - start, 1)
    log(f"clip: {len(pool.texts)} renders in {pool_seconds} s")
    model, train_log = train_clip(pool, cfg, log)
    start = time.time()
    head = fit_aesthetic_head(model, pool.images, planted_aesthetic(pool.images), cfg.head_steps, cfg.seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    save_head(head, folder)
    train_log.update(pool_seconds=pool_seconds, head_seconds=round(time.time() - start, 1))
    save_train_log(folder, train_log)
    return train_log


def clip_stage(ctx: Any) -> dict:
    """Train the tiny CLIP (where the profile's scorers are WORLD_ID) and write clip_eval.json."""
    from diffchat.profiles import WORLD_ID
    from diffchat.runner import train_once, write_json

    p = ctx.profile
    if p.models.clip != WORLD_ID:
        note = f"the {p.name} profile scores with {p.models.clip}: no tiny CLIP to train"
        write_json(ctx.out / "clip_eval.json", {"trained": False, "note": note})
        return {"trained": False}
    cfg = p.clip
    train_log = train_once(ctx, lambda folder: train_world_clip(folder, cfg, ctx.log))
    model = WorldClip.from_pretrained(ctx.out)
    result = evaluate_clip(model, cfg.n_eval, cfg.seed, cfg.image_size)
    result["planted_taste"] = taste_report(ctx.out, cfg.n_eval, cfg.seed, cfg.image_size)
    result["training"] = {k: train_log[k] for k in
                          ("steps", "seconds", "pool_seconds", "head_seconds", "n_params", "n_images")}
    write_json(ctx.out / "clip_eval.json", {"trained": True, **result})
    return summarize(result)


def summarize(result: dict) -> dict:
    """The headline numbers of clip_eval.json (the stage's manifest summary)."""
    taste = result["planted_taste"]
    return {
        "recall_seen": [round(result["retrieval_seen"][k], 3) for k in ("image_to_text", "text_to_image")],
        "recall_unseen": [round(result["retrieval_unseen"][k], 3) for k in ("image_to_text", "text_to_image")],
        "auc": {k: round(v["auc"], 3) for k, v in result["auc_seen"].items()},
        "dclip": round(result["dclip"]["real"]["mean"], 3),
        "dclip_shuffled": round(result["dclip"]["shuffled"]["mean"], 3),
        "aesthetic_head_spearman": round(taste["aesthetic_head_spearman"], 3),
        "pb_shift_std": {k: round(v, 2) for k, v in taste["pb_shift_std"].items()},
    }
