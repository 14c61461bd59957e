"""The course's stages in order, each naming the module that holds its body.

Read this list against the notebooks: 01 builds ``data``; 02 ``base``, ``pb`` and
``instructpe``; 03 ``sft``; 04 ``rewards``. A stage's body is imported only when it runs.
``run``, ``ensure``, ``is_done``, ``status`` and ``read_manifest`` act on this pipeline.
"""

from __future__ import annotations

import os

from diffchat.profiles import Profile
from diffchat.runner import Pipeline, Stage, stage_dir

WORD_LISTS = ("miniworld/*.txt",)
NSFW_LIST = ("nsfw_words.txt",)


def teacher_spec(p: Profile) -> str:
    """$DIFFCHAT_TEACHER ('rule', 'openai', a model id or folder) overrides the profile's."""
    return os.environ.get("DIFFCHAT_TEACHER") or p.models.teacher


def rewards_config(p: Profile) -> dict:
    m = p.models
    return {"rm": p.section("rm"), "images": p.section("images"), "n": p.data.n_reward_labels,
            "tis": m.tis[0], "aesthetic": m.aesthetic, "pickscore": m.pickscore,
            "pickscore_processor": m.pickscore_processor, "base": m.reward}


COURSE = Pipeline([
    Stage("data", "diffchat.data.collect:data_stage",
          outputs=("triplets_train.jsonl", "pb_train.jsonl"),
          config=lambda p: {k: v for k, v in p.section("data").items() if k != "n_reward_labels"},
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
          config=lambda p: {"teacher": teacher_spec(p), "ci_threshold": p.ppo.ci_threshold},
          data_files=WORD_LISTS + NSFW_LIST,
          description="assemble InstructPE: PB beautification, T_A/T_B teacher, filters (Fig. 2)"),
    Stage("sft", "diffchat.sft:sft_stage", inputs=("instructpe", "base", "pb"),
          outputs=("config.json", "sft_eval.json"),
          config=lambda p: {"sft": p.section("sft"), "base": p.models.policy, "init": p.models.sft_init},
          description="supervised fine-tuning with template T, loss on y only (3.2)"),
    Stage("rewards", "diffchat.reward_models:rewards_stage", inputs=("instructpe", "base"),
          outputs=("labels.jsonl", "rewards_eval.json"), config=rewards_config,
          description="label prompts with image scores; train the aesthetic and PickScore text RMs (3.3)"),
])

run = COURSE.run
ensure = COURSE.ensure
is_done = COURSE.is_done
status = COURSE.status
read_manifest = COURSE.read_manifest

__all__ = ["COURSE", "ensure", "is_done", "read_manifest", "run", "stage_dir", "status", "teacher_spec"]
