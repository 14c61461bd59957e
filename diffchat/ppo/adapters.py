"""The one place that knows how a decoder family is wired (BLOOM, Llama).

The hydra (ppo/hydra.py) runs a causal LM block by block: embed, the frozen bottom blocks
once per rollout, then the top blocks twice (policy and reference). Since transformers 5,
decoder blocks need per-family arguments - BLOOM's ALiBi bias and a causal mask, Llama's
rotary position embeddings - so each family gets a small adapter with four methods:
``embed``, ``block_kwargs``, ``run_block`` and the modules ``blocks``, ``final_norm``,
``head``, ``embeddings``. Nothing outside this file names a module of a model.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers.masking_utils import create_causal_mask


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """0, 1, 2, ... over each row's real tokens (left padding gets 0), as generate() does."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class BloomAdapter:
    """BLOOM: word embeddings + their LayerNorm, ALiBi attention bias, `transformer.h`."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.base = model, model.transformer
        self.blocks: nn.ModuleList = self.base.h
        self.final_norm: nn.Module = self.base.ln_f
        self.head: nn.Module = model.lm_head
        self.embeddings: nn.Embedding = self.base.word_embeddings

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.base.word_embeddings_layernorm(self.base.word_embeddings(input_ids))

    def block_kwargs(self, hidden: Tensor, attention_mask: Tensor) -> dict[str, Any]:
        """ALiBi bias (from the padding mask) and the causal mask, as BloomModel builds them."""
        from transformers.models.bloom.modeling_bloom import build_alibi_tensor

        alibi = build_alibi_tensor(attention_mask, self.base.num_heads, hidden.dtype)
        mask = create_causal_mask(config=self.model.config, inputs_embeds=hidden,
                                  attention_mask=attention_mask, cache=None)
        return {"alibi": alibi, "attention_mask": mask}

    def run_block(self, block: nn.Module, hidden: Tensor, kwargs: dict[str, Any]) -> Tensor:
        return block(hidden, **kwargs)[0]


class LlamaAdapter:
    """Llama family (Llama, SmolLM2, Mistral, Qwen2): `model.layers`, rotary embeddings."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.base = model, model.model
        self.blocks: nn.ModuleList = self.base.layers
        self.final_norm: nn.Module = self.base.norm
        self.head: nn.Module = model.lm_head
        self.embeddings: nn.Embedding = self.base.embed_tokens

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.base.embed_tokens(input_ids)

    def block_kwargs(self, hidden: Tensor, attention_mask: Tensor) -> dict[str, Any]:
        """Causal mask and (cos, sin) rotary embeddings for padding-aware positions."""
        position_ids = position_ids_from_mask(attention_mask)
        mask = create_causal_mask(config=self.model.config, inputs_embeds=hidden,
                                  attention_mask=attention_mask, cache=None,
                                  position_ids=position_ids)
        rotary = self.base.rotary_emb(hidden, position_ids=position_ids)
        return {"attention_mask": mask, "position_embeddings": rotary, "position_ids": position_ids}

    def run_block(self, block: nn.Module, hidden: Tensor, kwargs: dict[str, Any]) -> Tensor:
        out = block(hidden, **kwargs)
        return out[0] if isinstance(out, tuple) else out


ADAPTERS = {"bloom": BloomAdapter, "llama": LlamaAdapter, "mistral": LlamaAdapter,
            "qwen2": LlamaAdapter}


def adapter_for(model: nn.Module) -> BloomAdapter | LlamaAdapter:
    """The adapter for a causal LM, chosen by its config's model_type."""
    model_type = model.config.model_type
    if model_type not in ADAPTERS:
        raise ValueError(f"no PPO adapter for model_type {model_type!r}: add one in "
                         f"diffchat/ppo/adapters.py (known: {', '.join(ADAPTERS)})")
    return ADAPTERS[model_type](model)
