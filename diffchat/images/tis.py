"""Text-to-image (TIS) models of section 4.1 and image creation with fixed seeds.

The paper scores prompts by the images five Stable Diffusion models make from them with
fixed seeds. ``TIS_MODELS`` holds what diffusers needs to load and run each one; the
'tiny' entry is the random 32x32 pipeline from ``diffchat.tiny`` that runs offline, and the
five 'mini-*' entries are the mini-world renderer's variants (``diffchat.images.render``), the
tiny profile's stand-ins for the paper's five models (kind 'render', no diffusers).

Seeds: every image gets its own ``torch.Generator`` (on the CPU, so the starting noise is
the same on every device), so an image depends only on its (prompt, seed) and never on
which other prompts shared its batch. The schedulers are deterministic (no ancestral
noise), so the seed only sets the starting latents.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from diffchat.device import pick_device, pick_dtype
from diffchat.images.render import RENDERERS, render_batch
from diffchat.profiles import TINY_ID

log = logging.getLogger(__name__)


# The paper leaves the sampler open: DPM-Solver++ (2M) is deterministic and good at 25 steps.
DEFAULT_SCHEDULER = "DPMSolverMultistepScheduler"


@dataclass(frozen=True)
class TISSpec:
    """How to load and run one text-to-image model: through diffusers, or the mini-world renderer."""

    name: str  # short name used in tables
    repo: str  # hub id; 'tiny' = the local factory pipeline; a renderer's own name
    pipeline: str  # diffusers pipeline class ('render' for a renderer)
    resolution: int  # native training resolution (square)
    steps: int = 25
    guidance: float = 7.5
    scheduler: str | None = DEFAULT_SCHEDULER  # None keeps the one the weights ship with
    single_file: str | None = None  # checkpoint file in `repo`, loaded with from_single_file
    config_repo: str | None = None  # diffusers layout for a single-file checkpoint
    min_gpu_gib: float = 8.0  # on a smaller GPU, offload idle parts to the CPU
    kind: str = "diffusers"  # or 'render': a variant of diffchat.images.render


TIS_MODELS: dict[str, TISSpec] = {
    spec.name: spec
    for spec in (
        # 4.1 fn 8: SD 1.5 (moved from runwayml/ to stable-diffusion-v1-5/).
        TISSpec("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5",
                "StableDiffusionPipeline", 512),
        # 4.1 fn 9: an SD 1.5 fine-tune shipped only as single files; the repo holds
        # several versions and the paper does not say which: v2 was current in 2023.
        TISSpec("deliberate", "XpucT/Deliberate", "StableDiffusionPipeline", 512,
                single_file="Deliberate_v2.safetensors",
                config_repo="stable-diffusion-v1-5/stable-diffusion-v1-5"),
        # 4.1 fn 10: trained at 768x768 (model card).
        TISSpec("dreamlike", "dreamlike-art/dreamlike-photoreal-2.0",
                "StableDiffusionPipeline", 768),
        # 4.1 fn 11: SD 1.5 fine-tune in diffusers layout.
        TISSpec("realistic", "SG161222/Realistic_Vision_V1.4", "StableDiffusionPipeline", 512),
        # 4.1 fn 12: SDXL base at 1024; 5.0 is diffusers' default guidance for SDXL.
        TISSpec("sdxl", "stabilityai/stable-diffusion-xl-base-1.0",
                "StableDiffusionXLPipeline", 1024, guidance=5.0, min_gpu_gib=16.0),
        # Offline stand-in: random weights, 32x32 (tiny profile's ImageConfig).
        TISSpec(TINY_ID, TINY_ID, "StableDiffusionPipeline", 32, steps=2, guidance=5.0,
                scheduler=None, min_gpu_gib=0.0),
        # The mini-world renderer's five variants (the tiny profile's TIS models): 64x64, one
        # pass, no guidance; steps and guidance are ignored.
        *(TISSpec(name, name, "render", 64, steps=1, guidance=0.0, scheduler=None,
                  min_gpu_gib=0.0, kind="render") for name in RENDERERS),
    )
}


def get_tis_spec(name: str) -> TISSpec:
    """A registry entry by short name ('sd15') or hub id (what profiles list)."""
    if name in TIS_MODELS:
        return TIS_MODELS[name]
    for spec in TIS_MODELS.values():
        if spec.repo == name:
            return spec
    known = ", ".join(f"{s.name} ({s.repo})" for s in TIS_MODELS.values())
    raise ValueError(f"unknown text-to-image model {name!r}: choose one of {known}")


@dataclass(frozen=True)
class RendererPipe:
    """What a renderer TIS model runs: a variant of the mini-world renderer, drawing each
    prompt with its seed at a square size."""

    variant: str

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], size: int) -> list[Image.Image]:
        return [Image.fromarray(a) for a in render_batch(prompts, seeds, self.variant, size)]


@dataclass
class TISModel:
    """A loaded pipeline together with the settings it runs at by default."""

    spec: TISSpec
    pipe: Any  # a diffusers DiffusionPipeline, or a RendererPipe

    @property
    def name(self) -> str:
        return self.spec.name


def _load_pipeline(spec: TISSpec, torch_dtype: torch.dtype) -> Any:
    import diffusers

    from diffchat.loading import resolve_model

    if spec.repo == TINY_ID:
        from diffchat.tiny import build_sd_pipeline

        pipe = build_sd_pipeline(seed=0)  # built in fp32
        return pipe if torch_dtype == torch.float32 else pipe.to(dtype=torch_dtype)
    cls = getattr(diffusers, spec.pipeline)
    if spec.single_file:
        path = resolve_model(spec.repo, filename=spec.single_file)
        config = resolve_model(spec.config_repo) if spec.config_repo else None
        return cls.from_single_file(path, config=config, torch_dtype=torch_dtype)
    return cls.from_pretrained(resolve_model(spec.repo), torch_dtype=torch_dtype, use_safetensors=True)


def _place(pipe: Any, spec: TISSpec, device: torch.device) -> None:
    """Move the pipeline to the device, offloading to the CPU when GPU memory is small.

    Attention slicing is kept for MPS only: diffusers warns it slows PyTorch's SDPA down.
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        gib = torch.cuda.get_device_properties(index).total_memory / 2**30
        if gib < spec.min_gpu_gib:
            log.info("%s: %.1f GiB GPU < %.0f GiB, model CPU offload and VAE slicing",
                     spec.name, gib, spec.min_gpu_gib)
            pipe.enable_model_cpu_offload(device=device)
            pipe.vae.enable_slicing()
            return
    pipe.to(device)
    if device.type == "mps":
        pipe.enable_attention_slicing()


def load_tis(name: str, device: str | torch.device | None = None, dtype: str = "auto") -> TISModel:
    """Load a registry model (short name or hub id) on the best device.

    A hub id without the hub fails fast with ``models.HubUnavailableError``.
    """
    spec = get_tis_spec(name)
    if spec.kind == "render":
        return TISModel(spec, RendererPipe(spec.name))
    dev = pick_device(str(device) if device is not None else None)
    torch_dtype = pick_dtype(dev, dtype, diffusion=True)
    pipe = _load_pipeline(spec, torch_dtype)
    if spec.scheduler:
        import diffusers

        pipe.scheduler = getattr(diffusers, spec.scheduler).from_config(pipe.scheduler.config)
    _place(pipe, spec, dev)
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded %s (%s) on %s in %s", spec.name, spec.repo, dev, torch_dtype)
    return TISModel(spec, pipe)


def create_images(
    prompts: list[str],
    model: TISModel,
    seeds: list[int] | int,
    batch_size: int = 4,
    steps: int | None = None,
    guidance: float | None = None,
    height: int | None = None,
    width: int | None = None,
    progress: bool = True,
) -> list[Image.Image]:
    """One image per prompt with the given seed(s) (an int = the same seed for every prompt).

    Unset settings come from the model's registry entry (native resolution, steps, guidance).
    A renderer draws square images in one pass: it ignores steps and guidance.
    """
    prompts = list(prompts)
    seed_list = [seeds] * len(prompts) if isinstance(seeds, int) else list(seeds)
    if len(seed_list) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seed_list)} seeds")
    spec = model.spec
    if spec.kind == "render":
        size = height or width or spec.resolution
        if (width or size) != size:
            raise ValueError(f"{spec.name} draws square images: got height {height}, width {width}")
        return model.pipe(prompts, seed_list, size)
    settings = dict(
        num_inference_steps=steps or spec.steps,
        guidance_scale=spec.guidance if guidance is None else guidance,
        height=height or spec.resolution,
        width=width or spec.resolution,
    )
    images: list[Image.Image] = []
    n_batches = math.ceil(len(prompts) / batch_size)
    for b in tqdm(range(n_batches), desc=f"images ({spec.name})", disable=not progress):
        batch = prompts[b * batch_size:(b + 1) * batch_size]
        gens = [torch.Generator("cpu").manual_seed(s)
                for s in seed_list[b * batch_size:(b + 1) * batch_size]]
        with torch.inference_mode():
            out = model.pipe(prompt=batch, generator=gens, output_type="pil", **settings)
        images.extend(out.images)
    return images


def image_grid(images: Sequence[Image.Image], rows: int, cols: int) -> Image.Image:
    """Paste images row by row into one picture (notebooks show a grid per method)."""
    if len(images) > rows * cols:
        raise ValueError(f"{len(images)} images do not fit a {rows}x{cols} grid")
    if not images:
        raise ValueError("no images to put in a grid")
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB").resize((w, h)), ((i % cols) * w, (i // cols) * h))
    return grid
