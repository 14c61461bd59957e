"""The course's stages in order, each naming the module that holds its body.

Read this list against the notebooks: 01 builds ``data``; 02 ``base``, ``pb`` and
``instructpe``; 03 ``sft``; 04 ``clip`` and ``rewards``; 05 ``ppo``, its three ablations and ``ppo_no_ci_reward``
(ours: the reward without CI); 06 ``eval``. A stage's body is imported only when it runs.
``run``, ``ensure``, ``is_done``, ``problem``, ``status`` and ``read_manifest`` act on this pipeline.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from diffchat.profiles import Profile
from diffchat.runner import Pipeline, Stage, stage_dir

WORD_LISTS = ("miniworld/*.txt",)
NSFW_LIST = ("nsfw_words.txt",)


def teacher_spec(p: Profile) -> str:
    """$DIFFCHAT_TEACHER ('rule', 'openai', a model id or folder) overrides the profile's."""
    return os.environ.get("DIFFCHAT_TEACHER") or p.models.teacher


def teacher_key(p: Profile) -> str:
    """The teacher as stage keys record it: for an OpenAI-compatible endpoint, its model and URL
    (credentials in the URL as a hash, ``teachers.redact_url``)."""
    from diffchat.data.teachers import teacher_identity

    return teacher_identity(teacher_spec(p))


def data_config(p: Profile) -> dict:
    """The data section; for real sources also which files the data came from."""
    config = {k: v for k, v in p.section("data").items() if k != "n_reward_labels"}
    if p.data.source != "miniworld":
        from diffchat.data.collect import real_source_key

        config["files"] = real_source_key()
    return config


def clip_config(p: Profile) -> dict:
    """The tiny CLIP's settings where the profile's scorers use it, else only which CLIP scores."""
    from diffchat.profiles import WORLD_ID

    return {"scorers": p.models.clip, "clip": p.section("clip") if p.models.clip == WORLD_ID else None}


def rewards_config(p: Profile) -> dict:
    m = p.models
    return {"rm": p.section("rm"), "images": p.section("images"), "n": p.data.n_reward_labels,
            "tis": list(m.tis[:p.images.label_tis]), "aesthetic": m.aesthetic, "pickscore": m.pickscore,
            "pickscore_processor": m.pickscore_processor, "base": m.reward}


def eval_config(p: Profile) -> dict:
    """What the eval stage's key records (the runner adds which PPO runs had finished)."""
    m = p.models
    return {"eval": p.section("eval"), "tis": list(p.eval.tis or m.tis), "seeds": list(p.images.seeds),
            "teacher": teacher_key(p),
            "scorers": {"aesthetic": m.aesthetic, "pickscore": m.pickscore,
                        "pickscore_processor": m.pickscore_processor, "hps": m.hps, "clip": m.clip}}


# Stage name -> PPOConfig switches; one thing off at a time, as in the paper's ablations
# (PAPER_ABLATIONS: Fig. 7, Table 2) and ours: the reward without its CI term.
VARIANTS: dict[str, dict[str, bool]] = {
    "ppo": {},
    "ppo_no_pi_plus": {"pi_plus": False},
    "ppo_no_pi_minus": {"pi_minus": False},
    "ppo_no_vci": {"vci": False},
    "ppo_no_ci_reward": {"ci_reward": False},
}
PAPER_ABLATIONS = ("ppo", "ppo_no_pi_plus", "ppo_no_pi_minus", "ppo_no_vci")


def variant_name(pi_plus: bool = True, pi_minus: bool = True, vci: bool = True, ci_reward: bool = True) -> str:
    """The stage that trains with these switches (the CLI's --no-pi-plus / --no-pi-minus / --no-vci /
    --no-ci-reward)."""
    off = {k: False for k, on in (("pi_plus", pi_plus), ("pi_minus", pi_minus), ("vci", vci),
                                  ("ci_reward", ci_reward)) if not on}
    for name, switches in VARIANTS.items():
        if switches == off:
            return name
    raise ValueError("switch off one of pi+, pi-, VCI and the CI reward at a time (the ablations), not "
                     + " and ".join(off))


def ppo_settings(name: str, profile: Profile):
    """The PPOConfig a variant trains with."""
    return dataclasses.replace(profile.ppo, **VARIANTS[name])


def ppo_config(name: str):
    """The stage config of a variant (what its manifest records)."""
    def config(p: Profile) -> dict[str, Any]:
        return {"rl": p.section("rl"), "ppo": dataclasses.asdict(ppo_settings(name, p)), "seed": p.data.seed}
    return config


COURSE = Pipeline([
    Stage("data", "diffchat.data.collect:data_stage",
          outputs=("triplets_train.jsonl", "pb_train.jsonl"), config=data_config,
          data_files=WORD_LISTS,
          description="raw edit triplets and <simplified, high-quality> prompt pairs (3.1)"),
    Stage("base", "diffchat.loading:base_stage", inputs=("data",), outputs=("base.json",),
          config=lambda p: {"policy": p.models.policy, "tiny_lm": p.section("tiny_lm")},
          data_files=WORD_LISTS,
          description="the base checkpoint: tiny tokenizer + random BLOOM, or a pretrained model"),
    Stage("pb", "diffchat.pb:pb_stage", inputs=("data", "base"), outputs=("config.json", "pb_eval.json"),
          config=lambda p: {"pb": p.section("pb"), "base": p.models.pb},
          data_files=WORD_LISTS,
          description="train the prompt-beautification model on <simplified, high-quality> pairs (3.1)"),
    Stage("instructpe", "diffchat.instructpe:instructpe_stage", inputs=("data", "pb"),
          outputs=("InstructPE_train.json", "funnel.json"),
          config=lambda p: {"teacher": teacher_key(p), "ci_threshold": p.ppo.ci_threshold},
          data_files=WORD_LISTS + NSFW_LIST,
          description="assemble InstructPE: PB beautification, T_A/T_B teacher, filters (Fig. 2)"),
    Stage("sft", "diffchat.sft:sft_stage", inputs=("instructpe", "base", "pb"),
          outputs=("config.json", "sft_eval.json"),
          config=lambda p: {"sft": p.section("sft"), "base": p.models.policy, "init": p.models.sft_init},
          description="supervised fine-tuning with template T, loss on y only (3.2)"),
    Stage("clip", "diffchat.images.clip_train:clip_stage", outputs=("clip_eval.json",),
          config=clip_config, data_files=WORD_LISTS,
          description="the tiny CLIP trained on mini-world renders, and its planted-taste scorers (DESIGN 8)"),
    Stage("rewards", "diffchat.reward_models:rewards_stage", inputs=("instructpe", "base", "clip"),
          outputs=("labels.jsonl", "rewards_eval.json"), config=rewards_config,
          description="label prompts with image scores; train the aesthetic and PickScore text RMs (3.3)"),
    *(Stage(name, "diffchat.ppo.stage:ppo_stage", inputs=("sft", "rewards", "instructpe"),
            outputs=("config.json", "ppo_log.json", "ppo_eval.json"), config=ppo_config(name),
            description=("PPO with ADM (pi+, pi-) and VCI (3.3)" if name == "ppo" else
                         f"PPO ablation: {name.removeprefix('ppo_').replace('_', ' ')} "
                         + ("(Fig. 7, Table 2)" if name in PAPER_ABLATIONS else "(ours)")))
      for name in VARIANTS),
    # The paper's PPO runs are optional: evaluation takes whichever have finished (the rest are
    # left out with a note) and reruns when another one finishes.
    Stage("eval", "diffchat.evaluation:eval_stage", inputs=("instructpe", "sft", "clip"),
          optional=PAPER_ABLATIONS,
          outputs=("records.jsonl", "table1.md", "table1.csv", "eval_summary.json"),
          config=eval_config,
          description="Tables 1, 2 and 4: competitors and ablations on every TIS model (4.1, A.7)"),
])

run = COURSE.run
ensure = COURSE.ensure
is_done = COURSE.is_done
problem = COURSE.problem
status = COURSE.status
read_manifest = COURSE.read_manifest

__all__ = ["COURSE", "ensure", "is_done", "problem", "read_manifest", "run", "stage_dir", "status",
           "teacher_spec"]
