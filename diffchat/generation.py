"""Template-conditioned generation: fill a template within a token budget, then continue it.

``TemplateLM`` is the base of DiffChat (template T) and the PB model (its own template):
both fill a template with the input text, then decode the continuation. Decoding defaults
are greedy: a rewrite must copy most of the input prompt's words, so the most likely
continuation is what a user wants, and greedy output is reproducible. ``repetition_penalty``
stays at 1.0 by default because a penalty >1 also punishes copying the input's words back.

Inputs longer than the token budget (Table 3: 384 tokens for template + input + output)
are handled by a fixed rule, not a crash: the instruction is never cut; the input prompt
is shortened from its end (trailing tags matter least) until the filled template plus
``max_new_tokens`` fits, and a warning says so.

Generation is the engine under PB beautification, InstructPE assembly, evaluation and chat,
so it is made fast here, once. Greedy decoding runs ``greedy_batch``, a decoding loop of our
own with the same outputs as ``model.generate`` (on a BLOOM model, as the PB model is, its steps
run on the model's weights in ``fast_decode``); sampling and other decoding options go to
``model.generate``.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from diffchat import fast_decode
from diffchat.profiles import TEMPLATE_T

DEFAULT_DECODING: dict[str, Any] = {"do_sample": False, "repetition_penalty": 1.0}


def check_text(value: Any, field: str, index: int | None = None) -> str:
    where = f"{field}" + (f" (item {index})" if index is not None else "")
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{where} is empty")
    return value.strip()


class NoRepeatOutputNGram:
    """Logits processor: no n-gram twice among the tokens generated after ``start``."""

    def __init__(self, n: int, start: int):
        self.n, self.start = n, start

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.start:]
        if generated.shape[1] < self.n - 1:
            return scores
        for row, seq in enumerate(generated.tolist()):
            head = seq[len(seq) - self.n + 1:] if self.n > 1 else []
            banned = [seq[i + self.n - 1] for i in range(len(seq) - self.n + 1)
                      if seq[i:i + self.n - 1] == head]
            if banned:
                scores[row, banned] = float("-inf")
        return scores


def _shared_prefix(rows: list[list[int]]) -> int:
    """Length of the token prefix all rows share (the template's opening), leaving each row at
    least one token of its own."""
    n = min(len(r) for r in rows) - 1
    for row in rows[1:]:
        n = next((k for k in range(n) if row[k] != rows[0][k]), n)
    return n


class _LibraryDecoder:
    """Prefill and greedy steps through the model's own forward and a ``DynamicCache``: the path
    of every model that ``fast_decode.fits`` does not take. The interface of ``BloomDecoder``."""

    def __init__(self, model, rows: list[list[int]], *, shared: int, pad_token_id: int):
        self.model, dev = model, model.device
        self.takes_positions = "position_ids" in inspect.signature(model.forward).parameters
        self.cache = DynamicCache(config=model.config)
        if shared:
            model(input_ids=torch.tensor([rows[0][:shared]], device=dev), cache=self.cache, use_cache=True,
                  logits_to_keep=1)
            self.cache.batch_repeat_interleave(len(rows))
        width = max(len(r) for r in rows) - shared
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for row, tokens in enumerate(rows):
            own = tokens[shared:]
            ids[row, width - len(own):] = torch.tensor(own)
            mask[row, shared + width - len(own):] = 1
        self.ids, self.mask = ids.to(dev), mask.to(dev)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]

    def prefill(self) -> torch.Tensor:
        return self._forward(self.ids)

    def step(self, ids: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        if keep is not None:
            self.cache.batch_select_indices(keep)
            self.mask, self.positions = self.mask[keep], self.positions[keep]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(ids), 1))], dim=1)
        self.positions = self.positions[:, -1:] + 1
        return self._forward(ids[:, None])

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        extra = {"position_ids": self.positions} if self.takes_positions else {}
        return self.model(input_ids=ids, attention_mask=self.mask, cache=self.cache, use_cache=True,
                          logits_to_keep=1, **extra).logits[:, -1]


@torch.inference_mode()
def greedy_batch(model, rows: list[list[int]], *, max_new_tokens: int, eos_token_id: int,
                 pad_token_id: int, no_repeat_output_ngram: int = 0,
                 workspace: dict | None = None) -> list[list[int]]:
    """Greedy continuations of token-id rows (the new ids, up to and including EOS): the same
    tokens as ``model.generate(do_sample=False)`` with left padding and ``NoRepeatOutputNGram``
    (up to float rounding, which any change of batch shape brings), with less arithmetic.

    The prefix every row shares (a template's instruction) runs once, for one row; the rest is
    padded between it and each row's own tokens (positions follow the attention mask, as in
    ``generate``). A row that ends leaves the batch (its cache rows dropped), where ``generate``
    keeps computing it until the last row ends; the n-gram rule keeps, per row, the tokens that
    followed each (n-1)-gram of the output, instead of rescanning the output every step.
    A BLOOM model runs on ``fast_decode.BloomDecoder`` (its weights, no library forward), any
    other through its forward. A ``workspace`` (a dict, empty at first) passed to the calls of
    one generation lets them reuse the memory of their key/value buffers.
    """
    dev, n = model.device, no_repeat_output_ngram
    shared = _shared_prefix(rows) if len(rows) > 1 else 0
    if fast_decode.fits(model):
        decoder = fast_decode.BloomDecoder(model, rows, shared=shared, pad_token_id=pad_token_id,
                                           max_new_tokens=max_new_tokens, workspace=workspace)
    else:
        decoder = _LibraryDecoder(model, rows, shared=shared, pad_token_id=pad_token_id)
    logits = decoder.prefill()
    out: list[list[int]] = [[] for _ in rows]
    bans: list[dict[tuple, set]] = [{} for _ in rows]  # (n-1)-gram of the output -> tokens that followed it
    alive = list(range(len(rows)))
    while True:
        if n:
            banned = [(j, t) for j, row in enumerate(alive) if len(out[row]) >= n - 1
                      for t in bans[row].get(tuple(out[row][len(out[row]) - n + 1:]), ())]
            if banned:
                logits[tuple(torch.tensor(banned, device=dev).T)] = float("-inf")
        next_ids = logits.argmax(-1)
        keep = []
        for j, (row, token) in enumerate(zip(alive, next_ids.tolist())):
            seq = out[row]
            seq.append(token)
            if n and len(seq) >= n:
                bans[row].setdefault(tuple(seq[len(seq) - n:-1]), set()).add(token)
            if token != eos_token_id and len(seq) < max_new_tokens:
                keep.append(j)
        if not keep:
            return out
        index = None
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=dev)
            next_ids = next_ids[index]
            alive = [alive[j] for j in keep]
        logits = decoder.step(next_ids, index)


class TemplateLM:
    """A causal LM that continues a filled-in template; the base of DiffChat and the PB model."""

    template: str = TEMPLATE_T
    field: str = "x"  # the template field shortened when the budget is exceeded

    def __init__(self, model, tokenizer, *, template: str | None = None, max_length: int = 384,
                 device: torch.device | str | None = None):
        from diffchat.device import pick_device

        self.device = torch.device(device) if device else pick_device()
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.template = template or self.template
        self.max_length = max_length
        # Half the budget for the output, at most 96 tokens (a long prompt is ~75 tokens).
        self.max_new_tokens = min(96, max_length // 2)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, device: str | None = None,
                        dtype: str = "auto", max_length: int = 384):
        """Load from a run folder (e.g. ``runs/tiny/sft``) or a hub id."""
        from diffchat.device import pick_device, pick_dtype
        from diffchat.loading import load_causal_lm, load_tokenizer

        path = Path(name_or_path)
        if path.exists() and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} holds no model (no config.json): run its stage first")
        dev = pick_device(device)
        torch_dtype = pick_dtype(dev, dtype)
        model = load_causal_lm(str(name_or_path), dtype=str(torch_dtype).replace("torch.", ""), device=dev)
        return cls(model, load_tokenizer(str(name_or_path)), device=dev, max_length=max_length)

    def _n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def fill(self, max_new_tokens: int, **fields: str) -> str:
        """The template filled in, with ``self.field`` shortened from its end to fit the budget."""
        text = self.template.format(**fields)
        budget = self.max_length - max_new_tokens
        n = self._n_tokens(text)
        if n <= budget:
            return text
        long = fields[self.field]
        overhead = n - self._n_tokens(long)
        if overhead >= budget:
            raise ValueError(f"the template and instruction alone need {overhead} tokens, more than "
                             f"the budget of {budget} ({self.max_length} minus {max_new_tokens} new tokens)")
        ids = self.tokenizer(long, add_special_tokens=False)["input_ids"][: budget - overhead]
        short = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
        warnings.warn(f"input prompt cut from {n - overhead} to {len(ids)} tokens to fit the "
                      f"{self.max_length}-token budget", stacklevel=3)
        return self.template.format(**{**fields, self.field: short})

    def auto_batch_size(self) -> int:
        """Rows per batch: hundreds where the device has room. A decoding step has a fixed cost
        that a larger batch shares, and a finished row leaves the batch (``greedy_batch``), so a
        large batch wastes nothing on short answers. On a CPU, 256 rows for a BLOOM model
        (``fast_decode``): with the trained tiny PB model, 600 prompts take 1.28-1.30 CPU
        seconds at 256 rows, 1.34-1.44 s at 128, 1.53-1.61 s at 64, 1.27-1.39 s at 384 and
        1.51-1.56 s at 600 (two runs each of ``OMP_NUM_THREADS=1 python
        benchmarks/bench_generate.py --model runs/tiny/pb --batch N``). Other models, through
        the library's forward, whose cache a step copies: 128 (it beat 64 and 200 there). A GPU
        with free memory takes 512."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return 512 if free > 8 * 2**30 else 128
        return 256 if fast_decode.fits(self.model) else 128

    @torch.no_grad()
    def generate(self, texts: list[str], *, batch_size: int | None = None, progress: bool = False,
                 no_repeat_output_ngram: int = 0, **decoding: Any) -> list[str]:
        """Continue each filled-in template; returns only the new text, stripped, in the order given.

        Requests are sorted by length so that a batch carries little padding, and (when
        decoding is greedy) each distinct text is generated once. ``batch_size`` defaults
        to ``auto_batch_size()``. ``no_repeat_output_ngram=n`` forbids repeating an n-gram
        of the *output*. (The library's ``no_repeat_ngram_size`` also counts the prompt, so
        it forbids copying the input prompt, which is most of a rewrite.)
        """
        opts = {"max_new_tokens": self.max_new_tokens, **DEFAULT_DECODING, **decoding}
        batch_size = batch_size or self.auto_batch_size()
        greedy = not opts.get("do_sample")
        # Our loop does plain greedy decoding; any other option (a repetition penalty, beams, ...)
        # is the library's to apply.
        own_loop = greedy and opts.get("repetition_penalty") == 1.0 and set(opts) <= set(
            DEFAULT_DECODING) | {"max_new_tokens"}
        todo = list(dict.fromkeys(texts)) if greedy else list(texts)
        ids = self.tokenizer(todo, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(todo)), key=lambda n: len(ids[n]))
        answers: list[str] = [""] * len(todo)
        starts = range(0, len(order), batch_size)
        workspace: dict = {}  # the batches' key/value buffers, reused (greedy_batch)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="generate", unit="batch")
        for start in starts:
            rows = order[start:start + batch_size]
            if own_loop:
                new = greedy_batch(self.model, [ids[n] for n in rows], max_new_tokens=opts["max_new_tokens"],
                                   eos_token_id=self.tokenizer.eos_token_id,
                                   pad_token_id=self.tokenizer.pad_token_id,
                                   no_repeat_output_ngram=no_repeat_output_ngram, workspace=workspace)
            else:
                new = self._library_generate([ids[n] for n in rows], no_repeat_output_ngram, opts)
            for n, text in zip(rows, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                answers[n] = text.strip()
        if not greedy:
            return answers
        by_text = dict(zip(todo, answers))
        return [by_text[t] for t in texts]

    def _library_generate(self, rows: list[list[int]], no_repeat_output_ngram: int,
                          opts: dict[str, Any]) -> torch.Tensor:
        """``model.generate`` on left-padded rows; the new tokens of each."""
        enc = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        extra = {}
        if no_repeat_output_ngram:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList(
                [NoRepeatOutputNGram(no_repeat_output_ngram, enc["input_ids"].shape[1])])
        out = self.model.generate(**enc, pad_token_id=self.tokenizer.pad_token_id,
                                  eos_token_id=self.tokenizer.eos_token_id, **extra, **opts)
        return out[:, enc["input_ids"].shape[1]:]
