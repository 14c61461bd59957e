"""Rollouts: sample y ~ pi(. | T(x, i)) and keep what PPO and VCI need about every token.

A rollout holds the left-padded queries T(x, i), the right-padded responses (each cut
after its first EOS; the EOS itself is the "stop" action and stays in the response mask;
everything after it is padding that no mask admits), the decoded texts and the text
piece each token adds (for the CI of every prefix, VCI).

ADM pi+ (section 3.3, eq. 3) is locally typical sampling with mass p (Meister et al.,
2023); pi+ off is plain multinomial sampling (eq. 2). Both sample at
PPOConfig.temperature (1 in the paper's setting). The sampler's
processed scores are never used as log-probs: typical sampling and pi- edits are
off-policy, so the behaviour log-probs come from a forward pass over the tokens that are
actually in the rollout (ppo/trainer.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from diffchat.generation import TemplateLM

DECODE = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


class _Template(TemplateLM):
    """TemplateLM's budget-aware `fill` without a model: T(x, i), x cut to fit."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length


def query_texts(tokenizer: Any, rows: Sequence[dict], max_length: int, max_new_tokens: int
                ) -> list[str]:
    """T(x, i) for each InstructPE row (x = beautified_source_prompt, i = instruction)."""
    template = _Template(tokenizer, max_length)
    return [template.fill(max_new_tokens, x=r["beautified_source_prompt"].strip(),
                          i=r["instruction"].strip()) for r in rows]


def incremental_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each token adds: piece_k = decode(ids[:k+1]) - decode(ids[:k]).

    Byte-level BPE tokens decoded one at a time do not give the text back (a character
    can span tokens). A prefix that ends inside a character decodes to a trailing U+FFFD;
    its piece is then "" and the character goes to the token that completes it. The last
    piece takes whatever is left, so "".join(pieces) == decode(ids) exactly.
    """
    pieces, emitted = [], ""
    for k in range(len(ids)):
        text = tokenizer.decode(list(ids[: k + 1]), **DECODE)
        if text.startswith(emitted) and not text.endswith("\ufffd"):
            pieces.append(text[len(emitted):])
            emitted = text
        else:
            pieces.append("")
    full = tokenizer.decode(list(ids), **DECODE)
    if pieces and full != emitted:
        if not full.startswith(emitted):
            raise ValueError(f"decoding is not prefix-stable for these tokens: {emitted!r} / {full!r}")
        pieces[-1] += full[len(emitted):]
    return pieces


def cut_at_eos(tokens: Sequence[int], eos_id: int) -> list[int]:
    """The response up to and including its first EOS (all of it when there is none)."""
    tokens = list(tokens)
    return tokens[: tokens.index(eos_id) + 1] if eos_id in tokens else tokens


def pad_right(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str
              ) -> tuple[Tensor, Tensor]:
    """Right-padded ids and their mask (1 on real tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, r in enumerate(rows):
        ids[n, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[n, : len(r)] = 1
    return ids.to(device), mask.to(device)


@dataclass
class Rollout:
    """One batch of queries and sampled responses."""

    rows: list[dict]  # the InstructPE rows
    query_ids: Tensor  # [B, Q], left-padded
    query_mask: Tensor  # [B, Q]
    response_ids: Tensor  # [B, R], right-padded after EOS
    response_mask: Tensor  # [B, R], 1 on real response tokens (EOS included)
    texts: list[str]  # decoded responses (special tokens dropped)
    pieces: list[list[str]]  # text added by each real response token; joins to texts[b]

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.query_ids, self.response_ids], 1)

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.query_mask, self.response_mask], 1)

    def with_responses(self, responses: Sequence[Sequence[int]], tokenizer: Any) -> Rollout:
        """The same queries with new response token lists (e.g. after pi- edits)."""
        ids, mask = pad_right(responses, tokenizer.pad_token_id, self.query_ids.device)
        return replace(self, response_ids=ids, response_mask=mask,
                       texts=[tokenizer.decode(list(r), **DECODE) for r in responses],
                       pieces=[incremental_pieces(tokenizer, r) for r in responses])

    def response_lists(self) -> list[list[int]]:
        return [ids[: int(m.sum())].tolist() for ids, m in zip(self.response_ids, self.response_mask)]


class TypicalSampling:
    """Locally typical sampling with mass p (Meister et al., 2023): ADM pi+ (eq. 3).

    Keeps the tokens whose surprisal -log p is closest to the entropy H, in that order,
    until they hold mass p, and masks the rest. The same tokens as transformers'
    ``TypicalLogitsWarper``, which sorts the whole vocabulary at every step (on a CPU that
    costs more than the tiny model's forward pass, ``benchmarks/bench_ppo.py --parts``): here the
    `k` most typical tokens are found by ``topk``, and only rows whose k tokens hold
    less than p (a flat distribution, e.g. a random-init model) fall back to a sort.
    """

    def __init__(self, mass: float, k: int = 64) -> None:
        if not 0.0 < mass <= 1.0:
            raise ValueError(f"typical sampling mass must be in (0, 1], got {mass!r}")
        self.mass, self.k = mass, k

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        logp = scores.float().log_softmax(-1)
        p = logp.exp()
        entropy = -(logp * p).nansum(-1, keepdim=True)
        shifted = (-logp - entropy).abs()
        k = min(self.k, shifted.shape[-1])
        cutoff = self._cutoff(*torch.topk(shifted, k, dim=-1, largest=False, sorted=True), p)
        flat = cutoff.isnan()
        if flat.any():
            cutoff[flat] = self._cutoff(*torch.sort(shifted[flat], dim=-1), p[flat])
        return scores.masked_fill(shifted > cutoff.unsqueeze(-1), float("-inf"))

    def _cutoff(self, ordered: Tensor, index: Tensor, p: Tensor) -> Tensor:
        """Per row, the largest kept |surprisal - H| (NaN where `ordered` holds < mass)."""
        cumulative = p.gather(-1, index).cumsum(-1)
        last = (cumulative < self.mass).sum(-1, keepdim=True)
        cutoff = ordered.gather(-1, last.clamp(max=ordered.shape[-1] - 1)).squeeze(-1)
        return cutoff.masked_fill(last.squeeze(-1) >= ordered.shape[-1], float("nan"))


@torch.no_grad()
def sample_rollout(model: Any, tokenizer: Any, rows: Sequence[dict], *, max_length: int,
                   max_new_tokens: int, typical_p: float | None, temperature: float = 1.0) -> Rollout:
    """Sample one response per row from T(x, i): typical sampling (pi+) or plain (pi+ off).

    The logits are divided by `temperature` before typical sampling (transformers applies its
    own warpers, temperature among them, before the processors passed in)."""
    from transformers import GenerationConfig, LogitsProcessorList

    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    enc = tokenizer(query_texts(tokenizer, rows, max_length, max_new_tokens), padding=True,
                    add_special_tokens=False, return_tensors="pt").to(device)
    config = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                              max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    warpers = LogitsProcessorList([TypicalSampling(typical_p)] if typical_p is not None else [])
    out = model.generate(**enc, generation_config=config, logits_processor=warpers)
    responses = [cut_at_eos(r, tokenizer.eos_token_id) for r in out[:, enc["input_ids"].shape[1]:].tolist()]
    empty = torch.empty(0, dtype=torch.long, device=device)
    rollout = Rollout(list(rows), enc["input_ids"], enc["attention_mask"], empty, empty, [], [])
    return rollout.with_responses(responses, tokenizer)
