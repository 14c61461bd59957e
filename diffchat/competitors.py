"""The methods section 4 compares: who writes the target prompt, or edits the raw image.

- ``teacher``: the teacher LLM as a prompt modifier, given x and i (the paper's ChatGPT row;
  the rule teacher in the tiny profile, which wrote the references, so it is near perfect there);
- ``instructpix2pix``: end-to-end image editing of the raw image by the instruction, through
  diffusers' ``StableDiffusionInstructPix2PixPipeline`` (no target prompt, so no CI score);
- ``human``: the "human prompt writer" of Fig. 6, the instruction's words appended to x;
- ``sft``, ``ppo`` and the three ablations: DiffChat checkpoints of the course's runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from diffchat.pipeline import PAPER_ABLATIONS
from diffchat.profiles import TINY_ID, Profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """One row of Tables 1, 2 and 4."""

    name: str
    label: str  # the row name in the tables
    kind: str  # 'prompt': writes y, which the TIS model draws; 'edit': edits the raw image
    stage: str | None = None  # the run whose model writes the prompts
    command: str = ""  # what builds that run

    def build_hint(self, profile: str) -> str:
        return f"`{self.command} --profile {profile}`"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("teacher", "Teacher LLM (ChatGPT row)", "prompt"),
    Method("instructpix2pix", "InstructPix2Pix", "edit"),
    Method("human", "Human prompt writer (append)", "prompt"),
    Method("sft", "DiffChat (SFT only)", "prompt", "sft", "diffchat sft"),
    Method("ppo", "DiffChat (full imp.)", "prompt", "ppo", "diffchat ppo"),
    Method("ppo_no_pi_plus", "DiffChat w/o pi+", "prompt", "ppo_no_pi_plus", "diffchat ppo --no-pi-plus"),
    Method("ppo_no_pi_minus", "DiffChat w/o pi-", "prompt", "ppo_no_pi_minus", "diffchat ppo --no-pi-minus"),
    Method("ppo_no_vci", "DiffChat w/o VCI", "prompt", "ppo_no_vci", "diffchat ppo --no-vci"),
)}
ABLATIONS = PAPER_ABLATIONS


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def available_methods(names: Sequence[str], profile: Profile, root: str | Path | None = None,
                      *, strict: bool) -> tuple[list[Method], list[str]]:
    """The methods whose runs have finished, and a note for each one left out.

    ``strict`` (methods a user named): a missing run is an error naming the command that builds it.
    """
    from diffchat.pipeline import is_done

    methods, notes = [], []
    for name in names:
        method = get_method(name)
        if method.stage and not is_done(method.stage, profile, root):
            message = (f"method {name!r} needs the {method.stage!r} run, which has not finished for "
                       f"profile {profile.name!r}: run {method.build_hint(profile.name)}")
            if strict:
                raise RuntimeError(message)
            notes.append(f"{method.label}: left out, no finished run ({method.build_hint(profile.name)} makes it)")
            continue
        methods.append(method)
    return methods, notes


def write_prompts(method: Method, rows: Sequence[dict], profile: Profile, root: str | Path | None,
                  cache: Path) -> list[str]:
    """Method's target prompt y for each InstructPE row (x = beautified source prompt).

    InstructPix2Pix writes no prompt: its images are scored against the reference target prompt.
    A teacher request that fails keeps x unchanged (logged): the row still counts against it.
    """
    xs = [r["beautified_source_prompt"] for r in rows]
    ins = [r["instruction"] for r in rows]
    if method.name == "instructpix2pix":
        return [r["beautified_target_prompt"] for r in rows]
    if method.name == "human":
        from diffchat.edit_metrics import baseline_outputs

        return baseline_outputs(rows, "append")
    if method.name == "teacher":
        from diffchat.data.teachers import Request, ask_many, make_teacher
        from diffchat.pipeline import teacher_spec

        teacher = make_teacher(teacher_spec(profile), cache_dir=cache)
        answers = ask_many(teacher, [Request("write_target", x, i) for x, i in zip(xs, ins)],
                           progress=False, desc="teacher")
        failed = sum(a is None for a in answers)
        if failed:
            log.warning("teacher: %d of %d requests failed; those rows keep x unchanged", failed, len(xs))
        return [a if a is not None else x for a, x in zip(answers, xs)]
    from diffchat.model import DiffChat
    from diffchat.pipeline import stage_dir

    model = DiffChat.from_pretrained(stage_dir(method.stage, profile, root))
    return model.rewrite_batch(xs, ins)


def load_instructpix2pix(model_id: str, device: str | torch.device | None = None,
                         dtype: str = "auto") -> Any:
    """diffusers' StableDiffusionInstructPix2PixPipeline; 'tiny' builds a random-init one offline."""
    from diffchat.device import pick_device, pick_dtype
    from diffchat.images.tis import TISSpec, _place

    dev = pick_device(str(device) if device is not None else None)
    torch_dtype = pick_dtype(dev, dtype, diffusion=True)
    if model_id == TINY_ID:
        from diffchat.tiny import build_ip2p_pipeline

        pipe = build_ip2p_pipeline(seed=0).to(dtype=torch_dtype)
    else:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        from diffchat.loading import resolve_model

        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            resolve_model(model_id), torch_dtype=torch_dtype, use_safetensors=True)
    _place(pipe, TISSpec("instructpix2pix", model_id, type(pipe).__name__, 512), dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def edit_images(pipe: Any, images: Sequence[Image.Image], instructions: Sequence[str],
                seeds: Sequence[int], *, steps: int, guidance: float,
                image_guidance: float) -> list[Image.Image]:
    """InstructPix2Pix's edit of each raw image by its instruction, one CPU generator per seed."""
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with torch.inference_mode():
        out = pipe(prompt=list(instructions), image=[im.convert("RGB") for im in images],
                   generator=gens, num_inference_steps=steps, guidance_scale=guidance,
                   image_guidance_scale=image_guidance, output_type="pil")
    return out.images
