"""Policy, value and reference in one model: trlx's "hydra" (what BeautifulPrompt used).

Table 3 trains only the last 8 layers in RL. So the bottom of the network is the same for
the policy and the reference, and only the top N blocks (+ final norm, + an untied output
head) differ: the reference is the frozen trunk plus a frozen deep copy of the top, and no
second full model is held. The value head is a small MLP on the policy's last hidden
state (shared trunk). Because the bottom blocks are frozen and the tokens of a rollout do
not change, their hidden states are computed once per rollout (``trunk``) and reused by
the reference branch, the behaviour log-probs and every PPO update.

Everything family-specific lives in ppo/adapters.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from diffchat.loading import freeze_all_but_last
from diffchat.ppo.adapters import adapter_for
from diffchat.ppo.core import entropy_from_logits

VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class Trunk:
    """Hidden states after the frozen bottom blocks, with the attention mask they used."""

    hidden: Tensor  # [batch, query + response, hidden]
    attention_mask: Tensor  # [batch, query + response]

    def __getitem__(self, rows: Tensor | slice) -> Trunk:
        return Trunk(self.hidden[rows], self.attention_mask[rows])


def _token_logprobs(logits: Tensor, ids: Tensor) -> Tensor:
    """log softmax(logits)[id] = logit[id] - logsumexp(logits), without a [B, T, V] copy."""
    return logits.gather(-1, ids[..., None]).squeeze(-1) - torch.logsumexp(logits, -1)


def _n_params(params: Any) -> int:
    return sum(p.numel() for p in params)


class Hydra(nn.Module):
    """A causal LM with a value head and a reference top; only the top blocks train.

    ``n_unfrozen``: trainable top blocks (Table 3: 8); None trains every block. The input
    embeddings always stay frozen (the trunk cache starts after them), and so does an
    output head tied to them. ``temperature`` divides the logits of the policy and the
    reference, as the rollout's sampler does (PPOConfig.temperature), so log-probs, KL
    and entropy are those of the distribution PPO samples from.
    """

    def __init__(self, model: nn.Module, n_unfrozen: int | None, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"PPO temperature must be > 0, got {temperature!r}")
        self.model, self.temperature = model, temperature
        self.adapter = adapter_for(model)
        n_blocks = len(self.adapter.blocks)
        n_top = n_blocks if n_unfrozen is None else min(n_unfrozen, n_blocks)
        self.split = n_blocks - n_top
        freeze_all_but_last(model, n_top)
        self.tied = self.adapter.head.weight is self.adapter.embeddings.weight
        self.ref_blocks = copy.deepcopy(self.adapter.blocks[self.split:]).requires_grad_(False)
        self.ref_norm = copy.deepcopy(self.adapter.final_norm).requires_grad_(False)
        self.ref_head = None if self.tied else copy.deepcopy(self.adapter.head).requires_grad_(False)
        width = model.config.hidden_size
        self.value_head = nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, 1))

    # ---- forward passes -----------------------------------------------------------------

    @torch.no_grad()
    def trunk(self, input_ids: Tensor, attention_mask: Tensor) -> Trunk:
        """Embeddings and the frozen bottom blocks: once per rollout, no gradient."""
        hidden = self.adapter.embed(input_ids)
        kwargs = self.adapter.block_kwargs(hidden, attention_mask)
        for block in self.adapter.blocks[: self.split]:
            hidden = self.adapter.run_block(block, hidden, kwargs)
        return Trunk(hidden, attention_mask)

    def _top(self, trunk: Trunk, response_len: int, reference: bool) -> Tensor:
        """Final-normed hidden states at the positions that predict the response tokens."""
        hidden = trunk.hidden
        kwargs = self.adapter.block_kwargs(hidden, trunk.attention_mask)
        blocks = self.ref_blocks if reference else self.adapter.blocks[self.split:]
        for block in blocks:
            hidden = self.adapter.run_block(block, hidden, kwargs)
        norm = self.ref_norm if reference else self.adapter.final_norm
        # Position p predicts token p + 1: the response's R tokens are predicted by the
        # R positions just before them (the last query token up to the one before last).
        return norm(hidden[:, -response_len - 1 : -1])

    def _logits(self, hidden: Tensor, reference: bool) -> Tensor:
        if not reference:
            logits = self.adapter.head(hidden)
        elif self.ref_head is None:  # tied: the frozen embedding matrix is the head
            logits = F.linear(hidden, self.adapter.embeddings.weight)
        else:
            logits = self.ref_head(hidden)
        return logits.float() / self.temperature

    def forward(self, hidden: Tensor, attention_mask: Tensor, response_ids: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Policy log pi(y_t | s_t), value V(s_t) and entropy (no gradient) per response token.

        Inputs: the cached trunk (``hidden``, ``attention_mask``) of query + response and
        the response ids [batch, R] (the last R columns). This is the call PPO updates
        make (and what a DDP wrapper sees).
        """
        top = self._top(Trunk(hidden, attention_mask), response_ids.shape[1], reference=False)
        logits = self._logits(top, reference=False)
        logprobs = _token_logprobs(logits, response_ids)
        values = self.value_head(top).squeeze(-1).float()
        with torch.no_grad():  # logged only: PPO here has no entropy bonus
            entropy = entropy_from_logits(logits)
        return logprobs, values, entropy

    @torch.no_grad()
    def reference_logprobs(self, trunk: Trunk, response_ids: Tensor) -> Tensor:
        """log pi_ref(y_t | s_t): the frozen trunk + the frozen copy of the top."""
        top = self._top(trunk, response_ids.shape[1], reference=True)
        return _token_logprobs(self._logits(top, reference=True), response_ids)

    # ---- parameters and saving --------------------------------------------------------

    def trainable_state(self) -> dict[str, Tensor]:
        """The weights PPO changes (top blocks, final norm, untied head, value head)."""
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def parameter_counts(self) -> dict[str, int]:
        """held: distinct parameters of the hydra; full_model: one causal LM; trainable."""
        return {
            "held": _n_params(self.parameters()),
            "full_model": _n_params(self.model.parameters()),
            "trainable": _n_params(p for p in self.parameters() if p.requires_grad),
            "reference_top": _n_params(p for m in (self.ref_blocks, self.ref_norm, self.ref_head)
                                       if m is not None for p in m.parameters()),
            "value_head": _n_params(self.value_head.parameters()),
        }

    def save_pretrained(self, folder: str | Path, tokenizer: Any) -> Path:
        """A normal causal LM folder (config, safetensors, tokenizer) + the value head beside it."""
        folder = Path(folder)
        self.model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()},
                  folder / VALUE_HEAD_FILE)
        return folder

    def load_value_head(self, folder: str | Path) -> None:
        self.value_head.load_state_dict(load_file(Path(folder) / VALUE_HEAD_FILE))
