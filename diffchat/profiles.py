"""Profiles: one code path at three sizes (tiny, small, paper).

Every paper hyper-parameter lives here, each with a comment naming its source
(Table 3 and appendix A.5 of Wang et al., 2024, or BeautifulPrompt where the
paper leaves a value open). Stages read their section of the active profile;
nothing else in the package branches on the profile's name except model loading.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

PROFILE_NAMES = ("tiny", "small", "paper")
DEFAULT_PROFILE = "tiny"
# ModelIds' name for a model the course builds locally from a config (tiny profile).
TINY_ID = "tiny"
# The mini-world renderer's five variants, standing in for SD 1.5, Deliberate, Dreamlike,
# Realistic Vision and SDXL: the tiny profile's TIS models (diffchat.images.render, DESIGN.md 8).
RENDERER_TIS = ("mini-sd15", "mini-deliberate", "mini-dreamlike", "mini-realistic", "mini-sdxl")
# ModelIds' name for the tiny CLIP that the clip stage trains on mini-world renders, and the
# scorers with planted taste built on it (DESIGN 8).
WORLD_ID = "miniworld-clip"


def data_dir() -> Path:
    """The course's shipped data (word lists, NSFW list): $DIFFCHAT_DATA, else the checkout's data/."""
    return Path(os.environ.get("DIFFCHAT_DATA") or Path(__file__).resolve().parent.parent / "data")

# Template T of section 3.2 (footnote 7), verbatim.
TEMPLATE_T = (
    "Instruction: Give a description of the image and a modification to generate a "
    "drawing prompt.\nInput: {x}\nModification: {i}\nOutput:"
)


@dataclass(frozen=True)
class TinyLMConfig:
    """Size of the BLOOM-architecture model built from a config (tiny profile only)."""

    vocab_size: int = 4000  # BPE; a 500-token vocabulary hurt badly in a scratch run (DESIGN 2)
    hidden_size: int = 128
    n_layer: int = 4
    n_head: int = 4


@dataclass(frozen=True)
class ModelIds:
    """Which model plays each role. A hub id, or 'tiny' for the local factory model."""

    policy: str  # DiffChat backbone (section 4.1: BLOOM 1.1B, 24 layers)
    pb: str  # prompt-beautification model (section 3.1: BLOOM 1.1B)
    reward: str  # text reward-model backbone (Table 3, RMs)
    teacher: str  # ChatGPT in the paper; 'rule' = offline rule-based teacher
    tis: tuple[str, ...]  # text-to-image models for labelling and evaluation (section 4.1)
    aesthetic: str  # LAION aesthetic predictor's CLIP (ViT-L/14)
    pickscore: str  # PickScore_v1
    pickscore_processor: str
    hps: str  # HPS v2
    clip: str  # CLIP-S and D-CLIP-S backbone
    dtype: str = "auto"  # 'auto' picks bf16 on a GPU that has it (section 4.1), fp32 on CPU
    # What SFT starts from: 'base' (the pretrained backbone, as in the paper) or 'pb' (the
    # trained PB model: a random-init tiny model has no pretraining, and the PB model has
    # already learned to copy a prompt, which is most of a rewrite).
    sft_init: str = "base"


@dataclass(frozen=True)
class DataConfig:
    """Sizes of the mini-world data (tiny/small) or the real sources (paper)."""

    source: str  # 'miniworld' or 'instructpix2pix'
    n_triplets: int  # raw edit triplets (x_o, i, y_o)
    n_pb_pairs: int  # <simplified, high-quality> prompt pairs
    n_test: int  # per test split
    n_reward_labels: int = 1000  # prompts labelled with image scores for the text RMs
    seed: int = 0
    # Released InstructPE sizes, for reference (section 3.1).
    paper_train_size: int = 234_786
    paper_test_size: int = 5_582


@dataclass(frozen=True)
class TrainConfig:
    """One training phase. Table 3 columns: SFT, RMs, RL."""

    epochs: float
    batch_size: int
    max_length: int
    lr: float
    unfreeze_layers: int | None  # None = all layers
    weight_decay: float
    grad_accum: int = 1
    max_steps: int | None = None  # caps a phase for CPU profiles; None = run all epochs
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    warmup_ratio: float = 0.0
    # Recompute each block's activations in the backward pass instead of keeping them: the same
    # arithmetic (bit-identical weights, tests/test_sft.py), less memory, more time. Read by the
    # SFT and PB trainer (diffchat.sft, where TRL's default is on); the RM trainer and PPO never
    # checkpoint. A profile turns it on where memory is short.
    activation_checkpointing: bool = False
    # Ours: optimiser steps between resumable checkpoints (diffchat.checkpoints); only the newest
    # is kept, and the last step is always saved. A tiny PB/SFT checkpoint (0.97M weights and
    # AdamW's two moments, 12 MB) took 0.1 s on the loaded 2-core machine, against 0.8 s a step:
    # at 100 steps, 0.1% of the time, and a kill loses at most a minute or two of training.
    save_steps: int = 100

    def tokens_per_step(self) -> int:
        """The most tokens one optimiser step sees: batch size x accumulation x max length."""
        return self.batch_size * self.grad_accum * self.max_length


# TrainConfig fields that change how fast a phase runs or how often it checkpoints, never what it
# computes: left out of the stages' keys (Profile.section), so that turning one reuses the stages
# a run has finished (and the checkpoints of one it has not).
SPEED_ONLY = ("activation_checkpointing", "save_steps")


@dataclass(frozen=True)
class PPOConfig:
    """Reinforcement learning, appendix A.5 unless marked otherwise."""

    init_kl_coef: float = 0.05  # A.5: initial KL coefficient (adaptive)
    adaptive_kl: bool = True  # A.5
    target_kl: float = 6.0  # BeautifulPrompt's adaptive controller target
    kl_horizon: int = 10_000  # BeautifulPrompt's adaptive controller horizon
    gamma: float = 0.99  # A.5
    lam: float = 0.95  # A.5
    typical_p: float = 0.97  # A.5: ADM pi+ locally typical sampling
    vci_alpha: float = 0.05  # A.5: VCI trade-off alpha
    adam_eps: float = 1e-8  # A.5
    adam_betas: tuple[float, float] = (0.9, 0.95)  # A.5
    lr_schedule: str = "cosine"  # A.5: cosine annealing
    cliprange: float = 0.2  # A.5: PPO policy clip
    cliprange_value: float = 0.2  # same range for the value clip (paper silent)
    vf_coef: float = 0.5  # A.5: value loss scale w.r.t. policy loss
    adm_negative_prob: float = 0.04  # 3.3: share of target prompts turned into pi- samples
    adm_remove_prob: float = 0.5  # 3.3: remove (else replace) the chosen keyword
    ci_threshold: float = 0.7  # Listing 1 default
    reward_mix_pickscore: float = 0.7  # BeautifulPrompt: (1-a)*aes + a*pick, a = 0.7
    reward_clip: float = 10.0  # BeautifulPrompt
    max_new_tokens: int = 128
    rollouts: int = 128  # prompts per PPO iteration (Table 3 RL batch size)
    iterations: int = 100
    reward_ci_weight: float = 1.0  # ours: weight of thresholded CI next to the RM gains (ppo/rewards.py)
    mini_batch_size: int = 32  # ours: rollout rows per PPO update (optimizer step)
    whiten_advantages: bool = True  # ours, as trlx/Ziegler et al.: whiten advantages per rollout
    pi_plus: bool = True  # 3.3: ADM pi+ (typical sampling); off = plain sampling (Fig. 7 ablation)
    pi_minus: bool = True  # 3.3: ADM pi- keyword edits (Table 2a ablation)
    vci: bool = True  # 3.3: VCI in GAE (Table 2b ablation)
    vci_threshold: bool = False  # ours: raw CI inside V'; True = Listing 1's thresholded CI (ppo/vci.py)
    # ours: the critic regresses on plain returns A + V ("plain"), on A' + V ("v", where alpha * CI
    # cancels once the critic fits) or on A' + V' ("v_prime"); ppo/vci.py says why "plain"
    vci_critic_target: str = "plain"
    ci_reward: bool = True  # ours: thresholded CI in the reward; off = the ppo_no_ci_reward ablation
    adm_pool_rows: int = 5000  # ours: training rows whose keywords form the pi- replacement pool
    checkpoint_every: int = 10  # ours: iterations between resumable checkpoints
    # Sampling and optimisation details the paper leaves open.
    # Rollouts per prompt: an iteration samples rollouts / samples_per_prompt prompts, each that
    # many times (Table 3's batch counts rollouts); > 1 lets PPO compare samples of one prompt.
    samples_per_prompt: int = 1
    # Sampling temperature, applied before typical sampling and to every log-prob PPO computes
    # (policy, reference: TRL's PPOTrainer does the same); 1 = the paper's eq. 2 / eq. 3.
    temperature: float = 1.0
    max_grad_norm: float | None = 1.0  # BeautifulPrompt (trlx): gradient norm clipped at 1.0
    # ours: before the first update, shift the value head's output bias so that V starts at the
    # first rollout's mean score (a random head starts near 0 and cliprange_value lets it move
    # only 0.2 an iteration)
    value_init: bool = True
    # ours: whitening divides by max(std, floor), so advantages that hardly differ stay small
    whiten_std_floor: float = 0.01
    # TRL's missing_eos_penalty (its PPO examples use 1.0): subtracted from the score of a
    # response that stops at max_new_tokens without EOS, a prompt cut off mid-way
    missing_eos_penalty: float = 1.0


@dataclass(frozen=True)
class ImageConfig:
    """Image creation for labelling and evaluation (section 4.1: fixed seeds)."""

    height: int
    width: int
    steps: int
    guidance: float
    seeds: tuple[int, ...] = (0,)
    # How many of models.tis draw each prompt the rewards stage labels (the label is the mean):
    # one, as BeautifulPrompt labels with one model; the tiny profile's renderers cost little.
    label_tis: int = 1


@dataclass(frozen=True)
class EvalConfig:
    """Section 4.1's evaluation: which test rows, which competitors, and InstructPix2Pix's settings.

    Images are made at each TIS model's own resolution, steps and guidance (``images.TIS_MODELS``)
    with the seeds of ``ImageConfig``; the paper gives no example count beyond "the InstructPE
    testing set", so ``n_examples=None`` takes the whole split.
    """

    split: str = "test_seen"  # InstructPE file the instructpe stage writes (InstructPE_<split>.json)
    n_examples: int | None = None  # first rows of the split; None = all
    methods: tuple[str, ...] = ("teacher", "instructpix2pix", "human", "sft", "ppo",
                                "ppo_no_pi_plus", "ppo_no_pi_minus", "ppo_no_vci")
    tis: tuple[str, ...] | None = None  # None = the profile's models.tis
    instructpix2pix: str = "timbrooks/instruct-pix2pix"  # 4.1 competitor; 'tiny' = random-init
    ip2p_steps: int = 25
    ip2p_guidance: float = 7.5  # diffusers' default text guidance
    ip2p_image_guidance: float = 1.5  # diffusers' default image guidance


@dataclass(frozen=True)
class ClipConfig:
    """The tiny CLIP the clip stage trains on mini-world renders (DESIGN 8), where the profile's
    scorers are WORLD_ID. Its prototype: 3,295 steps in 300 s on one thread, 20k images."""

    n_pairs: int = 10_000  # PB pairs of the training split; plain caption + PB prompt, one render each
    # A fixed count, never a time budget. 2,000 steps met every bar of issue 22 (AUC all 0.823,
    # colour 0.879; 3,000 steps: 0.845, 0.894) in 191 s instead of 260 s on a loaded thread
    # (benchmarks/world_clip.py --steps 2000).
    steps: int = 2_000
    batch_size: int = 128
    lr: float = 2e-3  # AdamW
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05  # then cosine to 0
    grouped_share: float = 0.5  # share of batches of 4 scenes x 32 captions (hard negatives)
    # Colours (issue 22's colour AUC, 0.72 without these): colour-swapped captions each image
    # naming a colour is scored against; the weight of an auxiliary loss naming the subject's
    # colour from the image embedding; rows per batch given to colour twins (the same caption
    # in another colour, same renderer and seed).
    colour_negatives: int = 4
    colour_aux: float = 0.5
    colour_twins: int = 16
    image_size: int = 64
    head_steps: int = 1_000  # the aesthetic head on planted ratings
    n_eval: int = 512  # held-out captions per check and split
    seed: int = 0


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    models: ModelIds
    data: DataConfig
    sft: TrainConfig
    pb: TrainConfig
    rm: TrainConfig
    rl: TrainConfig
    ppo: PPOConfig
    images: ImageConfig
    tiny_lm: TinyLMConfig = field(default_factory=TinyLMConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    template: str = TEMPLATE_T

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data (what a stage's key and manifest record), less the fields
        that change only speed (``SPEED_ONLY``)."""
        return {k: v for k, v in dataclasses.asdict(getattr(self, name)).items() if k not in SPEED_ONLY}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def describe(self) -> str:
        """Human-readable view, each section headed by where its numbers come from."""
        lines = [f"profile {self.name}: {self.description}", f"template T: {self.template!r}"]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not dataclasses.is_dataclass(value):
                continue
            source = SECTION_SOURCES.get(f.name, "")
            lines.append(f"\n[{f.name}]" + (f"  # {source}" if source else ""))
            for k, v in dataclasses.asdict(value).items():
                lines.append(f"  {k:22s} = {v}")
        return "\n".join(lines)

    def with_overrides(self, **sections: dict[str, Any]) -> Profile:
        """A copy with some fields of some sections changed, e.g. sft={'max_steps': 10}."""
        changes = {}
        for name, values in sections.items():
            if not hasattr(self, name):
                raise ValueError(f"profile has no section {name!r}")
            changes[name] = replace(getattr(self, name), **values)
        return replace(self, **changes)


# Table 3 of the paper: SFT, RMs and RL columns.
PAPER_SFT = TrainConfig(
    epochs=3,  # Table 3 SFT: Epoch
    batch_size=64,  # Table 3 SFT: Batch Size
    max_length=384,  # Table 3 SFT: Maximum Length
    lr=2e-5,  # Table 3 SFT: Learning Rate
    unfreeze_layers=None,  # Table 3 SFT: Unfreezing Layers = All
    weight_decay=0.0,  # Table 3 SFT: Weight Decay
    # Ours: on, for memory. Of the ~33 GB estimated below for 8 rows x 384 tokens, the blocks'
    # activations are ~6 GB (~0.8 GB a row); checkpointing keeps only each block's input
    # (~30 MB a row), headroom on a 40 GB A100 for an estimate not yet measured, at the cost of
    # one more forward pass of the blocks a step.
    activation_checkpointing=True,
    # Ours: a full bloom-1b1 checkpoint is ~13 GB (fp32 weights and AdamW's moments; estimated,
    # not measured) and two exist while the newer is written; every 500 steps of ~11,000.
    save_steps=500,
)
# Table 3's SFT batch of 64 as 8 rows x 8 accumulation steps, to fit a 40 GB A100 (Colab).
# Estimated, not measured, for bloom-1b1 (1.07B parameters, vocabulary 250,880) at 384 tokens:
# fp32 master weights, gradients and AdamW states 16 bytes a parameter = 17 GB, autocast's bf16
# weight copies 2 GB; per micro-batch row, the logits (384 x 250,880 in bf16, again in fp32 for
# the loss, and the fp32 gradient) ~1 GB and the blocks' activations ~0.8 GB. 8 rows: ~33 GB;
# 16 rows: ~47 GB. A GPU run should replace this estimate with a measurement.
PAPER_SFT_ACCUMULATED = replace(PAPER_SFT, batch_size=8, grad_accum=8)
PAPER_RM = TrainConfig(
    epochs=1,  # Table 3 RMs: Epoch
    batch_size=64,  # Table 3 RMs: Batch Size
    max_length=384,  # Table 3 RMs: Maximum Length
    lr=5e-6,  # Table 3 RMs: Learning Rate
    unfreeze_layers=None,  # Table 3 RMs: Unfreezing Layers = All
    weight_decay=1e-3,  # Table 3 RMs: Weight Decay
)
# Table 3's RL column read explicitly (DESIGN.md 9). "Batch Size 128" = rollouts per PPO iteration
# (PPOConfig.rollouts, one sample per prompt); "Epoch 5" = PPO epochs over each rollout batch; the
# optimiser steps on mini-batches of 32 (PPOConfig.mini_batch_size: the paper is silent). So one
# iteration = 128 prompts sampled once, 5 x 128 / 32 = 20 optimiser steps; 100 iterations = 12,800
# prompts seen (5.5% of InstructPE's 234,786 training rows, drawn anew each iteration) and 2,000
# optimiser steps, BeautifulPrompt's total_steps (its trlx config: ppo_epochs 4, num_rollouts 64,
# gradient clipping 1.0). Read as trlx reads its own config (train.batch_size = the mini-batch of
# one step, train.epochs = passes over the prompts), the same numbers would mean 5 x 234,786 =
# 1.17M prompts seen, ~90x more, and ~9,200 optimiser steps a pass at 128 rollouts a step.
PAPER_RL = TrainConfig(
    epochs=5,  # Table 3 RL: Epoch (PPO epochs per rollout batch; see above)
    batch_size=128,  # Table 3 RL: Batch Size (not read by PPO: PPOConfig.rollouts is the same 128)
    max_length=384,  # Table 3 RL: Maximum Length
    lr=5e-6,  # Table 3 RL: Learning Rate
    unfreeze_layers=8,  # Table 3 RL: Unfreezing Layers = Last 8 layers
    weight_decay=1e-6,  # Table 3 RL: Weight Decay
)

PAPER_TIS = (
    "stable-diffusion-v1-5/stable-diffusion-v1-5",  # 4.1 fn 8 (moved from runwayml/)
    "XpucT/Deliberate",  # 4.1 fn 9
    "dreamlike-art/dreamlike-photoreal-2.0",  # 4.1 fn 10
    "SG161222/Realistic_Vision_V1.4",  # 4.1 fn 11
    "stabilityai/stable-diffusion-xl-base-1.0",  # 4.1 fn 12
)

_REAL_SCORERS = dict(
    aesthetic="openai/clip-vit-large-patch14",
    pickscore="yuvalkirstain/PickScore_v1",
    pickscore_processor="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    hps="xswu/HPSv2",
    clip="openai/clip-vit-large-patch14",
)
_TINY_SCORERS = dict(
    aesthetic="tiny", pickscore="tiny", pickscore_processor="tiny", hps="tiny", clip="tiny"
)
_WORLD_SCORERS = dict(
    aesthetic=WORLD_ID, pickscore=WORLD_ID, pickscore_processor=WORLD_ID, hps=WORLD_ID, clip=WORLD_ID
)

PAPER = Profile(
    name="paper",
    description="The paper's setting: BLOOM-1.1B in bf16 on a GPU (Colab A100), Table 3 and A.5.",
    models=ModelIds(
        policy="bigscience/bloom-1b1",  # 4.1: BLOOM 1.1B, 24 layers
        pb="bigscience/bloom-1b1",  # 3.1: PB model is BLOOM-1.1B
        reward="bigscience/bloom-1b1",  # RMs on the same backbone (BeautifulPrompt)
        teacher="openai",  # ChatGPT in 3.1; any OpenAI-compatible endpoint
        tis=PAPER_TIS,
        dtype="bfloat16",  # 4.1: BFLOAT16
        **_REAL_SCORERS,
    ),
    data=DataConfig(source="instructpix2pix", n_triplets=454_445, n_pb_pairs=100_000, n_test=5_582,
                    n_reward_labels=20_000),
    sft=PAPER_SFT_ACCUMULATED,
    pb=PAPER_SFT_ACCUMULATED,  # paper silent on PB training; reuse the SFT column
    rm=PAPER_RM,
    rl=PAPER_RL,
    # 100 iterations x 128 rollouts x 5 epochs / mini-batch 32 = 2,000 optimiser steps, 12,800
    # prompts (Table 3 read above PAPER_RL). Sampled as the paper says: one sample per prompt,
    # temperature 1, typical p 0.97.
    ppo=PPOConfig(),
    images=ImageConfig(height=512, width=512, steps=25, guidance=7.5, seeds=(0, 1, 2, 3)),
)

SMALL = Profile(
    name="small",
    description="A real pretrained instruct model (SmolLM2-135M) with LoRA: a laptop CPU or any GPU.",
    models=ModelIds(
        policy="HuggingFaceTB/SmolLM2-135M-Instruct",
        pb="HuggingFaceTB/SmolLM2-135M-Instruct",
        reward="HuggingFaceTB/SmolLM2-135M-Instruct",
        # The rule teacher: SmolLM2-135M as a teacher mostly copies its input, and answers
        # about 6 requests in 38 s on a CPU core (20k triplets would take ~35 h). Set it, or
        # "openai" for an OpenAI-compatible endpoint, with Profile.with_overrides.
        teacher="rule",
        tis=("tiny",),
        **_TINY_SCORERS,
    ),
    data=DataConfig(source="miniworld", n_triplets=20_000, n_pb_pairs=5_000, n_test=300,
                    n_reward_labels=2_000),
    # SFT and PB keep PAPER_SFT's activation checkpointing, for a laptop's memory: off, one CPU
    # step took 20.2 s instead of 22.7 s but the process peaked at 7.4 GB instead of 4.7 GB
    # (`benchmarks/bench_train.py --small --warmup 1 --steps 2`, mini-world rows).
    # Checkpoints: a LoRA step takes ~18 s on a CPU thread and its checkpoint (the adapter and its
    # AdamW state) is small, so every 20 steps; the RM trains all 135M weights (~1.6 GB a
    # checkpoint), every 50 of its 200 steps.
    sft=replace(PAPER_SFT, epochs=1, batch_size=16, max_length=192, lr=2e-4, lora=True, max_steps=300,
                save_steps=20),
    pb=replace(PAPER_SFT, epochs=1, batch_size=16, max_length=192, lr=2e-4, lora=True, max_steps=200,
               save_steps=20),
    rm=replace(PAPER_RM, batch_size=32, max_length=128, lr=1e-4, max_steps=200, save_steps=50),
    rl=replace(PAPER_RL, batch_size=32, max_length=192, lr=2e-5, unfreeze_layers=4),
    ppo=PPOConfig(rollouts=32, iterations=20, max_new_tokens=64),
    images=ImageConfig(height=64, width=64, steps=4, guidance=5.0, seeds=(0,)),
    eval=EvalConfig(n_examples=100, instructpix2pix="tiny", ip2p_steps=4),
)

TINY = Profile(
    name="tiny",
    description="Random-init BLOOM-architecture models built from configs: any CPU, minutes (what the tests run).",
    models=ModelIds(
        policy="tiny", pb="tiny", reward="tiny", teacher="rule", tis=RENDERER_TIS, sft_init="pb",
        **_WORLD_SCORERS,
    ),
    data=DataConfig(source="miniworld", n_triplets=20_000, n_pb_pairs=20_000, n_test=300,
                    n_reward_labels=1_000),
    # A scratch run on 2 CPU cores: hidden 128, 4 layers, batch 16, lr 3e-3 (DESIGN 2).
    # SFT from the PB model: 1000 steps reached 0.94 edit accuracy on seen subjects, where
    # 1500 steps from the random base reached 0.79 (same InstructPE, measured).
    # Activation checkpointing off: the same arithmetic, and on one thread at 16 x 128 turning it
    # off saved 13% to 16% CPU a step over two runs, random or length-grouped batches (e.g.
    # 0.447 -> 0.387 s; glibc malloc holding freed memory: benchmarks/bench_train.py; with its
    # default malloc, page zeroing by the kernel swings from run to run and hides it). What it
    # would save is a few MB a row.
    sft=TrainConfig(epochs=1, batch_size=16, max_length=128, lr=3e-3, unfreeze_layers=None,
                    weight_decay=0.0, max_steps=1000, warmup_ratio=0.03, activation_checkpointing=False),
    pb=TrainConfig(epochs=1, batch_size=16, max_length=128, lr=3e-3, unfreeze_layers=None,
                   weight_decay=0.0, max_steps=1500, warmup_ratio=0.03, activation_checkpointing=False),
    rm=TrainConfig(epochs=3, batch_size=32, max_length=64, lr=1e-3, unfreeze_layers=None,
                   weight_decay=1e-3),
    # max_length: T(x, i) of a tiny prompt takes up to ~100 tokens, plus 48 new ones (128 cut inputs).
    # lr 1e-3: held-out reward over SFT +0.253 / +0.229 / +0.216 for seeds 0 / 1 / 2 on one thread
    # (0.75 to 0.87 std of SFT's per-row reward); 6e-4 gave +0.235 / -0.007 / +0.228, 3e-4 +0.056
    # for seed 0 (benchmarks/ppo_seeds.py, 2026-12-05; issue 23).
    rl=TrainConfig(epochs=2, batch_size=32, max_length=192, lr=1e-3, unfreeze_layers=2,
                   weight_decay=1e-6),
    ppo=PPOConfig(rollouts=32, iterations=20, max_new_tokens=48),
    # The renderers draw 64x64 in one pass, without guidance (steps and guidance are ignored).
    # Labels average the five renderers: less noise for the text RMs, a few seconds per 1000 prompts.
    images=ImageConfig(height=64, width=64, steps=1, guidance=0.0, seeds=(0,), label_tis=5),
    eval=EvalConfig(n_examples=32, instructpix2pix="tiny", ip2p_steps=2),
)

SECTION_SOURCES = {
    "models": "section 4.1 and footnotes 8-12 (paper profile); the course's stand-ins (tiny, small; README, Profiles)",
    "sft": "Table 3, SFT column (paper profile)",
    "pb": "paper silent; the SFT column of Table 3 (paper profile)",
    "rm": "Table 3, RMs column (paper profile)",
    "rl": "Table 3, RL column (paper profile)",
    "ppo": "appendix A.5; target_kl, kl_horizon, reward_mix_pickscore, reward_clip from BeautifulPrompt; "
    "adm_* from section 3.3",
    "images": "section 4.1 (fixed seeds); SD 1.5 defaults for the paper profile",
    "eval": "section 4.1 (competitors, test set); diffusers' InstructPix2Pix defaults",
}

PROFILES: dict[str, Profile] = {p.name: p for p in (TINY, SMALL, PAPER)}


# CI's shortened tiny run ($DIFFCHAT_QUICK=1): the same code on less data and fewer steps,
# so that executing every notebook stays well inside CI's time. Its numbers are not the
# course's: `make course` runs the full tiny profile.
# PB steps: the tiny PB model learns to copy its input late (seed 0 on one thread kept 0.08 of
# the input's keywords after 300 steps, 0.28 after 450, 0.69 after 600, 0.84 after 800), and a
# PB model that cannot copy empties InstructPE. SFT from it needs 600 steps to beat the append
# baseline clearly (300 steps: 0.69 against 0.65 on seen subjects). The seeds-by-threads sweep
# behind these numbers: benchmarks/sweep_quick.py (README). PPO runs as in the tiny profile, on reward
# models labelled on 1,000 prompts as there: on 200, the PickScore model's held-out Spearman was -0.06
# and PPO gained nothing (-0.007 / -0.004 held-out reward, seeds 0 / 1); on 1,000, 0.29 and
# +0.206 / +0.236 (benchmarks/ppo_seeds.py), for 35 s more labelling and training. PPO at half the tiny
# profile's lr: from this run's weaker SFT model (600 steps) lr 1e-3 undid edits (CI's run of 2026-12-05:
# seen edit 0.85 -> 0.79, more removed words kept); at 5e-4, on that run and on another, held-out reward
# +0.181 / +0.127 and +0.191 / +0.122 (seeds 0 / 1; 0.34 to 0.53 std), seen edit +0.02 / +0.03, +0.01 / -0.02.
QUICK_OVERRIDES = {
    "data": {"n_triplets": 4_000, "n_pb_pairs": 4_000, "n_test": 100, "n_reward_labels": 1_000},
    "pb": {"max_steps": 800},
    "sft": {"max_steps": 600},
    "rl": {"lr": 5e-4},
    "eval": {"n_examples": 8},
    # The tiny CLIP on half the steps and a fifth of the renders (about 2 minutes on one thread).
    "clip": {"n_pairs": 2_000, "steps": 1_000, "n_eval": 256},
}


def get_profile(name: str | Profile | None = None) -> Profile:
    """The named profile; None means the default (tiny). $DIFFCHAT_QUICK=1 shortens tiny."""
    if isinstance(name, Profile):
        return name
    name = name or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILE_NAMES)}")
    profile = PROFILES[name]
    if name == "tiny" and os.environ.get("DIFFCHAT_QUICK") == "1":
        profile = replace(profile.with_overrides(**QUICK_OVERRIDES),
                          description=profile.description + " QUICK: the tests' shortened run (DIFFCHAT_QUICK=1).")
    return profile
