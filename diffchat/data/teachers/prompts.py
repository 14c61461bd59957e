"""What the teachers are asked: Fig. 9 and Fig. 10 (reconstructed), and reading their answers.

The figures' images are not in the paper's text, so the prompts below are reconstructions that
say the same thing, each with one short few-shot example (Fig. 8's pair; InstructPix2Pix's
horse-to-dragon edit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Messages = list[dict[str, str]]

# Fig. 8: a user-friendly prompt and the model-friendly prompt it stands for.
_FIG8_SIMPLE = "a cute boy"
_FIG8_PROMPT = (
    "A portrait of an adorable cute boy, fantasy, intricate, elegant, highly detailed, "
    "digital painting, artstation, concept art, smooth, sharp focus, illustration"
)
# InstructPix2Pix's running example (input, edit, output), written in prompt-engineering style.
_EDIT_X = (
    "a photograph of a girl riding a horse across a meadow, golden hour, cinematic lighting, "
    "highly detailed, sharp focus, 8k"
)
_EDIT_I = "have her ride a dragon"
_EDIT_Y = (
    "a photograph of a girl riding a dragon across a meadow, golden hour, cinematic lighting, "
    "highly detailed, sharp focus, 8k"
)

_SUMMARY_SYSTEM = (
    "You help people who write prompts for text-to-image models. You turn a detailed, "
    "high-quality drawing prompt into the short plain description a casual user would type."
)
_SUMMARY_USER = (
    "Summarize the following high-quality drawing prompt into a simplified, user-friendly "
    "prompt: a short caption of what the image shows, in plain words, without style, artist, "
    "medium, lighting or quality tags. Answer with the simplified prompt only, on one line.\n"
    "Prompt: {prompt}"
)

_PE_SYSTEM = (
    "You are a prompt engineer for text-to-image models such as Stable Diffusion. You write "
    "drawing prompts in prompt-engineering style: a description of the subject and scene "
    "followed by comma-separated tags for style, medium, artists, lighting and quality."
)
# T_A: given x and i, write y.
_TARGET_USER = (
    "Here is the drawing prompt of an image and an instruction that modifies the image. "
    "Write the drawing prompt of the modified image: carry out the instruction, keep "
    "everything the instruction does not change, and keep the prompt-engineering style. "
    "Answer with the new prompt only, on one line.\n"
    "Prompt: {x}\nInstruction: {i}"
)
# T_B: given y and i, write x.
_SOURCE_USER = (
    "Here is the drawing prompt of an image that was made by modifying another image with "
    "an instruction. Write the drawing prompt of the original image, before the "
    "instruction was carried out: undo what the instruction changed, keep everything else, "
    "and keep the prompt-engineering style. Answer with the original prompt only, on one "
    "line.\nModified prompt: {y}\nInstruction: {i}"
)


def pb_summary_messages(prompt: str) -> Messages:
    """Fig. 9: ask for the simplified user-friendly version of a high-quality prompt."""
    return [
        {"role": "system", "content": _SUMMARY_SYSTEM},
        {"role": "user", "content": _SUMMARY_USER.format(prompt=_FIG8_PROMPT)},
        {"role": "assistant", "content": _FIG8_SIMPLE},
        {"role": "user", "content": _SUMMARY_USER.format(prompt=prompt)},
    ]


def write_target_messages(x: str, instruction: str) -> Messages:
    """Fig. 10 (b), template T_A: given the beautified x and the instruction i, write y."""
    return [
        {"role": "system", "content": _PE_SYSTEM},
        {"role": "user", "content": _TARGET_USER.format(x=_EDIT_X, i=_EDIT_I)},
        {"role": "assistant", "content": _EDIT_Y},
        {"role": "user", "content": _TARGET_USER.format(x=x, i=instruction)},
    ]


def write_source_messages(y: str, instruction: str) -> Messages:
    """Fig. 10 (a), template T_B: given the beautified y and the instruction i, write x."""
    return [
        {"role": "system", "content": _PE_SYSTEM},
        {"role": "user", "content": _SOURCE_USER.format(y=_EDIT_Y, i=_EDIT_I)},
        {"role": "assistant", "content": _EDIT_X},
        {"role": "user", "content": _SOURCE_USER.format(y=y, i=instruction)},
    ]


# Lead-in labels chat models put before the answer ("Output: ...", "Simplified prompt: ...").
_LABEL = re.compile(
    r"^(?:output|answer|prompt|new prompt|simplified prompt|user-friendly prompt|"
    r"modified prompt|original prompt|target prompt|source prompt|drawing prompt)\s*:\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
# Injected preambles: sentences at the start of an answer that tell a model to drop its
# instructions ("Ignore previous instructions.", "Disregard all prior prompts!"). They come
# from a prompt-injection in the data the teacher read, and describe no image.
_INJECTED = re.compile(
    r"^(?:(?:please\s+)?(?:ignore|disregard|forget|override)\b[^.!?\n]*?"
    r"\b(?:instructions?|prompts?|rules?|directions?|messages?|context)\b[^.!?\n]*[.!?]+\s*)+",
    re.IGNORECASE,
)


def clean_answer(text: str) -> str:
    """The prompt inside a chat answer: first real line, without labels, quotes or lead-ins.

    Chat models wrap a one-line answer in "Output: ...", quotes, code fences or a
    "Here is the prompt:" line; a drawing prompt never ends with a colon, so such a
    line is a lead-in and is skipped. Sentences at the start of a line (before or after
    the label) that tell a model to ignore, disregard, forget or override its
    instructions, prompts or rules are injected preambles and are dropped too
    ("Ignore previous instructions. a cat" -> "a cat"). Returns "" when nothing is left.
    """
    for line in text.strip().splitlines():
        line = _INJECTED.sub("", line.strip().strip("*").strip())
        if not line or line.startswith("```"):
            continue
        line = _INJECTED.sub("", _LABEL.sub("", line).strip().strip(_QUOTES).strip())
        line = line.strip().strip(_QUOTES).strip()
        if line and not line.endswith(":"):
            return line
    return ""


@dataclass(frozen=True)
class Request:
    """One question to a teacher: a task and its inputs (the messages follow from them)."""

    task: str  # 'summarise' (Fig. 9), 'write_target' (T_A) or 'write_source' (T_B)
    text: str  # the prompt to summarise, x (T_A) or y (T_B)
    instruction: str = ""
    # The raw edit (x_o, y_o) where the data generator made it (the mini-world): the rule
    # teacher may repeat it when its rules cannot read the prompt. Not part of the messages.
    raw_edit: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown teacher task {self.task!r}; expected one of {TASKS}")

    @property
    def messages(self) -> Messages:
        if self.task == "summarise":
            return pb_summary_messages(self.text)
        if self.task == "write_target":
            return write_target_messages(self.text, self.instruction)
        return write_source_messages(self.text, self.instruction)


TASKS = ("summarise", "write_target", "write_source")
