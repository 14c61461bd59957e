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

    def tokens_per_step(self) -> int:
        """The most tokens one optimiser step sees: batch size x accumulation x max length."""
        return self.batch_size * self.grad_accum * self.max_length


# TrainConfig fields that change how fast a phase runs, never what it computes: left out of the
# stages' keys (Profile.section), so that turning one reuses the stages a run has finished.
SPEED_ONLY = ("activation_checkpointing",)


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
    vci_threshold: bool = False  # ours: raw CI inside V' (ppo/vci.py says why)
    vci_critic_target: str = "v"  # ours: critic regresses on A' + V ("v") or A' + V' ("v_prime")
    adm_pool_rows: int = 5000  # ours: training rows whose keywords form the pi- replacement pool
    checkpoint_every: int = 10  # ours: iterations between resumable checkpoints


@dataclass(frozen=True)
class ImageConfig:
    """Image creation for labelling and evaluation (section 4.1: fixed seeds)."""

    height: int
    width: int
    steps: int
    guidance: float
    seeds: tuple[int, ...] = (0,)


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
PAPER_RL = TrainConfig(
    epochs=5,  # Table 3 RL: Epoch
    batch_size=128,  # Table 3 RL: Batch Size
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
    sft=replace(PAPER_SFT, epochs=1, batch_size=16, max_length=192, lr=2e-4, lora=True, max_steps=300),
    pb=replace(PAPER_SFT, epochs=1, batch_size=16, max_length=192, lr=2e-4, lora=True, max_steps=200),
    rm=replace(PAPER_RM, batch_size=32, max_length=128, lr=1e-4, max_steps=200),
    rl=replace(PAPER_RL, batch_size=32, max_length=192, lr=2e-5, unfreeze_layers=4),
    ppo=PPOConfig(rollouts=32, iterations=20, max_new_tokens=64),
    images=ImageConfig(height=64, width=64, steps=4, guidance=5.0, seeds=(0,)),
    eval=EvalConfig(n_examples=100, instructpix2pix="tiny", ip2p_steps=4),
)

TINY = Profile(
    name="tiny",
    description="Random-init BLOOM-architecture models built from configs: any CPU, minutes (what the tests run).",
    models=ModelIds(
        policy="tiny", pb="tiny", reward="tiny", teacher="rule", tis=("tiny",), sft_init="pb",
        **_TINY_SCORERS,
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
    rl=TrainConfig(epochs=2, batch_size=32, max_length=192, lr=3e-4, unfreeze_layers=2,
                   weight_decay=1e-6),
    ppo=PPOConfig(rollouts=32, iterations=20, max_new_tokens=48),
    images=ImageConfig(height=32, width=32, steps=2, guidance=5.0, seeds=(0,)),
    # 32x32 images from random weights: a handful of rows shows the protocol in about a minute.
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
# behind these numbers: benchmarks/sweep_quick.py (README). PPO runs as in the tiny profile.
QUICK_OVERRIDES = {
    "data": {"n_triplets": 4_000, "n_pb_pairs": 4_000, "n_test": 100, "n_reward_labels": 200},
    "pb": {"max_steps": 800},
    "sft": {"max_steps": 600},
    "eval": {"n_examples": 8},
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
