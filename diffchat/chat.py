"""Chat with a TIS model through DiffChat (Fig. 1): a prompt, then instructions turn after turn.

Each turn DiffChat rewrites the current prompt by the instruction (``DiffChat.rewrite``) and
the text-to-image model draws the new prompt (``images.create_images``). The seed stays fixed
across turns, so a change in the image comes from the change in the prompt, and the same
prompt and seed give the same image. The history is one path of turns: ``undo`` drops the
last, ``branch(i)`` continues from turn ``i`` (the later turns are dropped).

Refusals (an NSFW request, an instruction over the token budget) raise ``Refusal``; a
failure inside the model or the pipeline raises ``ChatError``; in both cases the session
stays at its last good turn. The notebook app (``diffchat.chat_app``) and the terminal chat
(``diffchat chat``) both sit on ``ChatSession``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from diffchat.generation import check_text
from diffchat.images import TISModel, create_images, load_tis
from diffchat.instructpe import is_nsfw
from diffchat.pipeline import VARIANTS
from diffchat.profiles import Profile, get_profile
from diffchat.runner import MANIFEST, stage_dir

# Stages that hold a full DiffChat model, best first: PPO (section 3.3), then SFT (3.2).
MODEL_STAGES = ("ppo", "sft")
ABLATION_STAGES = tuple(name for name in VARIANTS if name != "ppo")
SESSION_FILE = "session.json"
MAX_SEED = 2**64 - 1  # the largest seed torch.Generator.manual_seed takes


class Refusal(ValueError):
    """A request the chat declines (NSFW words, over the token budget); nothing changed."""


class ChatError(RuntimeError):
    """The model or the pipeline failed; the session is still at its last good turn."""


@dataclass(frozen=True)
class Turn:
    """One step of the chat: the instruction (None for the first), the prompt and its image."""

    index: int
    instruction: str | None
    prompt: str
    seed: int
    image: Image.Image
    seconds: float


@dataclass(frozen=True)
class ModelChoice:
    """Which DiffChat model a session runs: the stage name (or 'folder') and its path."""

    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.name} ({self.path})"


def finished_models(profile: str | Profile | None = None, root: str | os.PathLike | None = None) -> list[str]:
    """Stages of the runs folder that hold a finished DiffChat model, best first."""
    return [name for name in (*MODEL_STAGES, *ABLATION_STAGES)
            if (stage_dir(name, profile, root) / MANIFEST).is_file()
            and (stage_dir(name, profile, root) / "config.json").is_file()]


def find_model(profile: str | Profile | None = None, root: str | os.PathLike | None = None,
               model: str | os.PathLike | None = None) -> ModelChoice:
    """The model to chat with: ``model`` (a stage name or a model folder), else the full PPO
    model, else the SFT model. A missing one is a one-line error naming the command to run."""
    profile = get_profile(profile)
    build = f"run `diffchat sft --profile {profile.name}` (or `make course`) first"
    if model is None:
        found = finished_models(profile, root)
        best = [m for m in MODEL_STAGES if m in found]
        if not best:
            raise FileNotFoundError(f"no trained DiffChat model for profile {profile.name} in "
                                    f"{stage_dir('sft', profile, root).parent}: {build}")
        return ModelChoice(best[0], stage_dir(best[0], profile, root))
    name = str(model)
    if name in (*MODEL_STAGES, *ABLATION_STAGES):
        if name not in finished_models(profile, root):
            raise FileNotFoundError(f"stage {name} has no finished model for profile {profile.name}: "
                                    f"run `diffchat {name} --profile {profile.name}` first")
        return ModelChoice(name, stage_dir(name, profile, root))
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no model (no config.json): pass a stage name "
                                f"({', '.join(MODEL_STAGES)}) or a model folder")
    return ModelChoice("folder", path.resolve())


def load_model(choice: ModelChoice, profile: Profile):
    """DiffChat at RL's token budget (Table 3), the longest the model meets in training: PPO
    rolls the SFT model out at it, and a chat's prompts grow turn after turn."""
    from transformers.utils import logging as hf_logging

    from diffchat.model import DiffChat

    hf_logging.disable_progress_bar()
    return DiffChat.from_pretrained(choice.path, max_length=profile.rl.max_length)


def example_starts(profile: str | Profile | None = None, n: int = 3) -> list[tuple[str, str]]:
    """(prompt, instruction) pairs to start from. The tiny model knows only the mini-world's
    words, so its examples come from the mini-world's held-out seen-subject split."""
    profile = get_profile(profile)
    if profile.name == "tiny":
        from diffchat.data import miniworld

        return [(t["input"], t["edit"]) for t in miniworld.generate_triplets(n, seed=0, split="test_seen")]
    return [("a horse in a field", "turn the horse into a zebra"),
            ("a lighthouse on a cliff", "make it a stormy night"),
            ("a portrait of an old sailor", "paint it in watercolor")][:n]


class ChatSession:
    """A chat: the current path of turns, the DiffChat model and the TIS model that draws."""

    def __init__(self, model: Any, tis: TISModel, *, seed: int = 0, model_choice: ModelChoice | None = None,
                 profile: str | Profile | None = None, root: str | os.PathLike | None = None):
        self.model = model
        self.tis = tis
        self.seed = _check_seed(seed)
        self.model_choice = model_choice
        self.profile = get_profile(profile)
        self.root = root
        self.on_progress: Callable[[str], None] | None = None  # told "rewriting" / "drawing"
        self._turns: list[Turn] = []

    @classmethod
    def from_runs(cls, profile: str | Profile | None = "tiny", root: str | os.PathLike | None = None,
                  model: str | os.PathLike | None = None, tis: str | None = None,
                  seed: int = 0) -> ChatSession:
        """The best DiffChat model of the runs folder (full PPO, else SFT, or ``model``) and the
        profile's first TIS model (or ``tis``)."""
        profile = get_profile(profile)
        choice = find_model(profile, root, model)
        return cls(load_model(choice, profile), load_tis(tis or profile.models.tis[0]), seed=seed,
                   model_choice=choice, profile=profile, root=root)

    # ---- state ------------------------------------------------------------------------

    @property
    def turns(self) -> list[Turn]:
        return list(self._turns)

    @property
    def current(self) -> Turn | None:
        return self._turns[-1] if self._turns else None

    def describe(self) -> str:
        """One line: which model, TIS model, profile and seed this chat runs."""
        model = self.model_choice.label if self.model_choice else type(self.model).__name__
        return (f"DiffChat model: {model} · TIS model: {self.tis.name} · profile: {self.profile.name}"
                f" · seed: {self.seed}")

    # ---- turns ------------------------------------------------------------------------

    def start(self, prompt: str) -> Turn:
        """A new chat from ``prompt`` (the earlier turns are dropped)."""
        prompt = check_text(prompt, "prompt")
        _refuse_nsfw(prompt, "prompt")
        start = time.time()
        image = self._draw(prompt, self.seed)
        self._turns = [Turn(0, None, prompt, self.seed, image, round(time.time() - start, 3))]
        return self._turns[0]

    def send(self, instruction: str) -> Turn:
        """DiffChat rewrites the current prompt by ``instruction``; the TIS model draws it."""
        last = self._require_turn()
        instruction = check_text(instruction, "instruction")
        _refuse_nsfw(instruction, "instruction")
        try:
            with warnings.catch_warnings():  # a long prompt is cut (and warned about) by rewrite
                warnings.simplefilter("ignore", UserWarning)
                self.model.fill(self.model.max_new_tokens, x=last.prompt, i=instruction)
        except ValueError as err:
            raise Refusal(f"instruction refused: {err}; shorten it") from err
        start = time.time()
        self._tell("rewriting")
        try:
            prompt = self.model.rewrite(last.prompt, instruction)
        except Exception as err:
            raise ChatError(f"the DiffChat model failed ({type(err).__name__}: {err}); "
                            f"the chat stays at turn {last.index}") from err
        if not prompt.strip():
            raise ChatError(f"the DiffChat model wrote an empty prompt; the chat stays at turn {last.index}")
        _refuse_nsfw(prompt, "new prompt")
        image = self._draw(prompt, self.seed)
        turn = Turn(last.index + 1, instruction, prompt, self.seed, image, round(time.time() - start, 3))
        self._turns.append(turn)
        return turn

    def edit_prompt(self, text: str) -> Turn:
        """Replace the current turn's prompt by hand and redraw it."""
        return self._redraw(text, self.seed)

    def set_seed(self, seed: int) -> Turn | None:
        """Use ``seed`` from now on and redraw the current turn with it. A seed that is out of
        range, or that the redraw fails with, is not kept."""
        seed = _check_seed(seed)
        turn = self._redraw(self.current.prompt, seed) if self._turns else None
        self.seed = seed
        return turn

    def use_tis(self, name: str) -> Turn | None:
        """Draw with another TIS model from now on; the current turn is redrawn."""
        self.tis = load_tis(name)
        return self.edit_prompt(self.current.prompt) if self._turns else None

    def use_model(self, model: str | os.PathLike) -> ModelChoice:
        """Rewrite with another DiffChat model (a stage name or folder) from the next turn."""
        choice = find_model(self.profile, self.root, model)
        self.model, self.model_choice = load_model(choice, self.profile), choice
        return choice

    def undo(self) -> Turn:
        """Drop the last turn; returns the turn the chat is now at."""
        if len(self._turns) < 2:
            raise ValueError("nothing to undo: the chat is at its first turn")
        self._turns.pop()
        return self._turns[-1]

    def branch(self, index: int) -> Turn:
        """Continue from turn ``index``: the turns after it are dropped."""
        self._require_turn()
        if not isinstance(index, int) or not 0 <= index < len(self._turns):
            raise ValueError(f"no turn {index!r}: the chat has turns 0 to {len(self._turns) - 1}")
        del self._turns[index + 1:]
        return self._turns[-1]

    # ---- export / load ----------------------------------------------------------------

    def export(self, folder: str | os.PathLike) -> Path:
        """Write one PNG per turn and ``session.json`` (prompts, instructions, seeds, models)."""
        self._require_turn()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("turn_*.png"):
            old.unlink()
        rows = []
        for turn in self._turns:
            png = f"turn_{turn.index:02d}.png"
            turn.image.save(folder / png)
            rows.append({"index": turn.index, "instruction": turn.instruction, "prompt": turn.prompt,
                         "seed": turn.seed, "seconds": turn.seconds, "image": png})
        meta = {"profile": self.profile.name, "tis": self.tis.name, "seed": self.seed,
                "model": ({"name": self.model_choice.name, "path": str(self.model_choice.path)}
                          if self.model_choice else None),
                "turns": rows}
        path = folder / SESSION_FILE
        path.write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, *, model: Any = None, tis: TISModel | None = None) -> ChatSession:
        """Reopen an exported chat at its last turn (images from the PNGs, not redrawn).
        The models recorded in ``session.json`` are loaded unless passed. A file that is not
        an export (bad JSON, a missing key, an image outside the folder) is a one-line error
        naming the file and the key."""
        folder = Path(folder)
        path = folder / SESSION_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: pass a folder written by ChatSession.export")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: not a chat export ({err})") from None
        profile = get_profile(_field(meta, "profile", str, path))
        choice = None
        if meta.get("model"):
            recorded = _field(meta, "model", dict, path)
            choice = ModelChoice(_field(recorded, "name", str, path, "model."),
                                 Path(_field(recorded, "path", str, path, "model.")))
        recorded_tis, seed = _field(meta, "tis", str, path), _field(meta, "seed", int, path)
        rows = _field(meta, "turns", list, path)
        if model is None:
            if choice is None:
                raise ValueError(f"{path} records no model folder: pass model=")
            model = load_model(choice, profile)
        session = cls(model, tis or load_tis(recorded_tis), seed=seed, model_choice=choice, profile=profile)
        inside = folder.resolve()
        for n, row in enumerate(rows):
            where = f"turns[{n}]."
            image_path = (folder / _field(row, "image", str, path, where)).resolve()
            if not image_path.is_relative_to(inside):
                raise ValueError(f"{path}: key '{where}image' ({row['image']!r}) points outside the "
                                 f"export folder {inside}")
            instruction = row.get("instruction")
            if instruction is not None and not isinstance(instruction, str):
                raise ValueError(f"{path}: key '{where}instruction' must be a string or null")
            with Image.open(image_path) as image:
                session._turns.append(Turn(_field(row, "index", int, path, where), instruction,
                                           _field(row, "prompt", str, path, where), _field(row, "seed", int, path, where),
                                           image.copy(), _field(row, "seconds", (int, float), path, where)))
        return session

    # ---- internals --------------------------------------------------------------------

    def _redraw(self, text: str, seed: int) -> Turn:
        """The current turn with prompt ``text`` drawn at ``seed``."""
        last = self._require_turn()
        text = check_text(text, "prompt")
        _refuse_nsfw(text, "prompt")
        start = time.time()
        image = self._draw(text, seed)
        self._turns[-1] = replace(last, prompt=text, seed=seed, image=image,
                                  seconds=round(time.time() - start, 3))
        return self._turns[-1]

    def _require_turn(self) -> Turn:
        if not self._turns:
            raise ValueError("the chat has not started: call start(prompt) first")
        return self._turns[-1]

    def _tell(self, stage: str) -> None:
        if self.on_progress is not None:
            self.on_progress(stage)

    def _draw(self, prompt: str, seed: int) -> Image.Image:
        self._tell("drawing")
        try:
            return create_images([prompt], self.tis, seed, batch_size=1, progress=False)[0]
        except Exception as err:
            at = f"turn {self._turns[-1].index}" if self._turns else "no turn yet"
            raise ChatError(f"the {self.tis.name} pipeline failed ({type(err).__name__}: {err}); "
                            f"the chat stays at {at}") from err


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer from 0 to 2**64 - 1, got {seed!r}")
    return seed


def _field(row: Any, key: str, kind: type | tuple[type, ...], path: Path, where: str = "") -> Any:
    """``row[key]`` of a session file, checked; a one-line error naming the file and key."""
    if not isinstance(row, dict):
        raise ValueError(f"{path}: {where.rstrip('.') or 'the file'} must be a JSON object")
    if key not in row:
        raise ValueError(f"{path}: missing key '{where}{key}'")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{path}: key '{where}{key}' has the wrong type ({type(value).__name__})")
    return value


def _refuse_nsfw(text: str, what: str) -> None:
    if is_nsfw(text):
        raise Refusal(f"{what} refused: it contains a word of the NSFW list (data/nsfw_words.txt), "
                      "the filter InstructPE applies")
