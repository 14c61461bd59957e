"""Greedy decoding steps for BLOOM-architecture models, run on the model's own weights.

The library's forward pays, at every step, for what a fixed greedy batch does not need: the
key/value cache concatenated anew, the ALiBi bias and causal mask rebuilt from the whole
attention mask, BLOOM's GELU as eight elementwise kernels, and a module call per layer part.
``BloomDecoder`` does the same arithmetic as ``BloomForCausalLM.forward`` on the same weights,
up to float rounding (``tests/test_generation.py`` compares logits and tokens): keys and values
are written in place into buffers that grow a few positions at a time, the bias (ALiBi plus padding mask) is built once per
batch, the GELU is BLOOM's tanh form written with a sigmoid. ``greedy_batch`` uses it where
``fits`` says so; other models keep the library's forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BloomForCausalLM
from transformers.models.bloom.modeling_bloom import build_alibi_tensor

# A finished row stays in the buffers (computed, its output unused) until this share of the
# buffer rows has finished: copying the live rows' keys and values costs more than a few steps of
# the dead ones. Measured on the 600 prompts of benchmarks/bench_generate.py with the trained tiny
# PB model, batches of 128, CPU seconds in one process: 1.31-1.40 s against 1.82-1.90 s when
# compacting at every finished row; 0.5 and 0.75 measure the same as 0.25 (which computes fewer
# dead rows: 1.2% of the rows).
COMPACT_AT = 0.25
# Positions a row's key/value buffers grow by when full (see ``BloomDecoder._relayout``); measured
# as above: 16 as fast as 8, 2% faster than 32, 4 slower.
GROW = 16
# Rows per slice of the prefill (see ``prefill``; measured as above: about 4% less CPU time than
# the whole batch of 128 at once).
PREFILL_ROWS = 32


def fits(model) -> bool:
    """Whether ``BloomDecoder`` computes what this model's forward does: a plain BLOOM in eval
    mode (no dropout), without the tensor-parallel slicing of ``slow_but_exact``, whose linear
    layers are plain ``nn.Linear`` (not LoRA or quantized wrappers)."""
    if not isinstance(model, BloomForCausalLM) or model.training:
        return False
    config = model.config
    if config.pretraining_tp > 1 and config.slow_but_exact:
        return False
    linears = [model.lm_head] + [m for block in model.transformer.h for m in (
        block.self_attention.query_key_value, block.self_attention.dense,
        block.mlp.dense_h_to_4h, block.mlp.dense_4h_to_h)]
    return all(type(m) is nn.Linear for m in linears)


class BloomDecoder:
    """Prefill and greedy steps of a batch of token rows on a BLOOM model.

    Rows are laid out as in ``greedy_batch``: the ``shared`` prefix, padding, each row's own
    tokens. The prefix runs once, for one row, and its keys and values are kept once: every
    row's query attends to them with one matrix product per head, so a step reads them once
    instead of once per row (the prefix is a template's instruction, about 40% of what a
    PB-model row attends to). Each row's own keys and values go into buffers that grow by
    ``GROW`` positions (``_relayout``); pad keys are masked, and ALiBi counts positions over the
    attention mask, as ``build_alibi_tensor`` does.
    """

    def __init__(self, model: BloomForCausalLM, rows: list[list[int]], *, shared: int, pad_token_id: int,
                 max_new_tokens: int, workspace: dict | None = None):
        config, tf = model.config, model.transformer
        self.heads, self.head_dim = config.n_head, config.hidden_size // config.n_head
        self.post_ln_residual = config.apply_residual_connection_post_layernorm
        self.embedding, self.embedding_norm = tf.word_embeddings.weight, _ln(tf.word_embeddings_layernorm)
        self.layers = [_Layer(block) for block in tf.h]
        self.final_norm, self.head = _ln(tf.ln_f), model.lm_head.weight
        dev, dtype = self.embedding.device, self.embedding.dtype
        self.shared, width = shared, max(len(r) for r in rows) - shared
        total = width + max(max_new_tokens, 1) - 1  # positions after the prefix; the last new token is never fed
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), shared + total), dtype=torch.bool)
        mask[:, :shared] = True
        mask[:, shared + width:] = True
        for row, tokens in enumerate(rows):
            own = tokens[shared:]
            ids[row, width - len(own):] = torch.tensor(own)
            mask[row, shared + width - len(own):shared + width] = True
        mask = mask.to(dev)
        # [rows * heads, 1, positions]: ALiBi where a key is attended, the dtype's minimum where it is padding.
        bias = build_alibi_tensor(mask.long(), self.heads, dtype)
        bias = bias.masked_fill(~mask.repeat_interleave(self.heads, 0)[:, None], torch.finfo(dtype).min)
        self.prefix_bias, self.alibi = bias[:self.heads, :, :shared], bias[:, :, shared:].contiguous()
        self.bias = self.alibi.clone()  # what a step attends: positions not yet filled masked too
        self.bias[:, :, width:] = torch.finfo(dtype).min
        self.prefix: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: [heads, shared, head_dim] keys, values
        self.filled = 0  # positions after the prefix whose keys and values are in the buffers
        # flip: which of the workspace's two blocks the next buffers take (the other holds the current ones)
        self.total, self.workspace, self.flip = total, workspace, False
        self.keys: list[torch.Tensor] = []  # per layer: [rows, heads, capacity, head_dim]; none before the first layout
        self.values: list[torch.Tensor] = []
        self.keys, self.values = self._relayout(torch.arange(len(rows), device=dev), min(total, width + GROW))
        self.slots = torch.arange(len(rows), device=dev)  # buffer row of each live row, in order
        self.ids, self.prefix_ids = ids.to(dev), torch.tensor([rows[0][:shared]], device=dev)

    def prefill(self) -> torch.Tensor:
        """The logits of each row's last token after its prompt."""
        if self.shared:
            shape = (1, self.heads, self.shared, self.head_dim)
            keys = [self.embedding.new_empty(shape) for _ in self.layers]
            values = [self.embedding.new_empty(shape) for _ in self.layers]
            self._run(self.prefix_ids, _causal(self.prefix_bias), keys, values, [], 0)
            self.prefix = [(k[0], v[0]) for k, v in zip(keys, values)]
        width, h = self.ids.shape[1], self.heads
        bias = _causal(self.bias[:, :, :width])
        # In slices of rows: smaller temporaries, which the allocator reuses instead of asking the
        # kernel for fresh (zeroed) pages each time.
        last = torch.cat([self._run(self.ids[a:a + PREFILL_ROWS], bias[a * h:(a + PREFILL_ROWS) * h],
                                    [k[a:a + PREFILL_ROWS] for k in self.keys],
                                    [v[a:a + PREFILL_ROWS] for v in self.values], self.prefix, 0)
                          for a in range(0, len(self.ids), PREFILL_ROWS)])
        self.filled = width
        return self._logits(last)

    def step(self, ids: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Feed one new token per live row (``ids``), after dropping the rows not in ``keep``
        (indices among the live rows); the logits of each live row's next token."""
        if keep is not None:
            self.slots = self.slots[keep]
        compact = len(self.slots) <= (1 - COMPACT_AT) * len(self.keys[0])
        if compact or self.filled == self.keys[0].shape[2]:  # a new layout: live rows only, room to grow
            live, self.slots = self.slots, torch.arange(len(self.slots), device=self.slots.device)
            self.alibi, self.bias = self._rows(self.alibi, live), self._rows(self.bias, live)
            self.keys, self.values = self._relayout(live, min(self.total, self.filled + GROW))
        rows, capacity = len(self.keys[0]), self.keys[0].shape[2]
        if len(self.slots) < rows:
            ids = self.slots.new_zeros(rows).index_copy_(0, self.slots, ids)
        self.bias[:, :, self.filled] = self.alibi[:, :, self.filled]
        last = self._run(ids[:, None], self.bias[:, :, :capacity], self.keys, self.values, self.prefix, self.filled)
        self.filled += 1
        return self._logits(last[self.slots] if len(self.slots) < rows else last)

    def _logits(self, last: torch.Tensor) -> torch.Tensor:
        return F.linear(F.layer_norm(last, *self.final_norm), self.head)

    def _rows(self, bias: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return bias.view(-1, self.heads, bias.shape[-1])[rows].view(len(rows) * self.heads, 1, -1)

    def _relayout(self, rows: torch.Tensor, capacity: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """New key and value buffers for buffer rows ``rows`` (those that go on) and ``capacity``
        positions, the filled ones copied over, the rest zero.

        A step reads a buffer whole, its unfilled positions masked: the rows' keys then lie
        back to back in memory, and a step reads them two to three times faster than the same
        keys with gaps between rows (measured on this CPU, one thread). A buffer grows by
        ``GROW`` positions at a time; the copy comes with it."""
        buffers = _buffers(self.workspace, self.flip, 2 * len(self.layers),
                           (len(rows), self.heads, capacity, self.head_dim), self.embedding)
        self.flip = not self.flip  # the next buffers in the workspace's other block
        for old, new in zip(self.keys + self.values, buffers):
            old = old[:, :, :self.filled]
            new[:, :, :self.filled] = old if len(rows) == len(old) else old[rows]
        for new in buffers:
            new[:, :, self.filled:].zero_()  # masked, and finite: 0 times their value must be 0
        return buffers[:len(self.layers)], buffers[len(self.layers):]

    def _run(self, ids: torch.Tensor, bias: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
             prefix: list[tuple[torch.Tensor, torch.Tensor]], start: int) -> torch.Tensor:
        """Run ``ids`` ([rows, queries], the rows of ``keys`` and ``values``, at positions ``start``
        on) through the model, storing their keys and values; the last position's hidden state.
        ``bias``: [rows * heads, queries, keys read] over the buffers' first positions (a step
        reads them all); ``prefix``: the shared prefix's keys and values per layer, attended with
        ``self.prefix_bias`` (none: no prefix)."""
        heads, dim = self.heads, self.head_dim
        x = F.layer_norm(F.embedding(ids, self.embedding), *self.embedding_norm)
        rows, q, hidden = x.shape
        end, length = start + q, bias.shape[-1]  # written up to, read up to
        for i, layer in enumerate(self.layers):
            ln = F.layer_norm(x, *layer.input_norm)
            residual = ln if self.post_ln_residual else x
            qkv = F.linear(ln, *layer.qkv).view(rows, q, heads, 3, dim)
            keys[i][:, :, start:end] = qkv[..., 1, :].transpose(1, 2)
            values[i][:, :, start:end] = qkv[..., 2, :].transpose(1, 2)
            if i == len(self.layers) - 1 and q > 1:  # past the last keys, only the last position counts
                qkv, residual, bias, q = qkv[:, -1:], residual[:, -1:], bias[:, -1:], 1
            query = qkv[..., 0, :].transpose(1, 2).reshape(rows * heads, q, dim)
            key = keys[i][:, :, :length].reshape(rows * heads, length, dim)
            value = values[i][:, :, :length].reshape(rows * heads, length, dim)
            scores = torch.baddbmm(bias, query, key.transpose(1, 2), beta=layer.beta, alpha=layer.alpha)
            if prefix:
                # The same scores over the prefix's keys, per head for all rows and queries at once.
                prefix_key, prefix_value = prefix[i]
                by_head = qkv[..., 0, :].permute(2, 0, 1, 3).reshape(heads, rows * q, dim)
                shared = torch.baddbmm(self.prefix_bias, by_head, prefix_key.transpose(1, 2), beta=layer.beta,
                                       alpha=layer.alpha).view(heads, rows, q, -1).transpose(0, 1)
                scores = torch.cat([shared, scores.view(rows, heads, q, length)], -1).view(rows * heads, q, -1)
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(x.dtype)
            context = torch.bmm(probs[..., scores.shape[-1] - length:], value)
            if prefix:
                on_prefix = probs[..., :self.shared].reshape(rows, heads, q, -1).transpose(0, 1)
                on_prefix = torch.bmm(on_prefix.reshape(heads, rows * q, -1), prefix_value)
                context += on_prefix.view(heads, rows, q, dim).transpose(0, 1).reshape(rows * heads, q, dim)
            context = context.view(rows, heads, q, dim).transpose(1, 2).reshape(rows, q, hidden)
            x = F.linear(context, *layer.dense).add_(residual)
            ln = F.layer_norm(x, *layer.post_norm)
            residual = ln if self.post_ln_residual else x
            x = F.linear(_gelu(F.linear(ln, *layer.up)), *layer.down).add_(residual)
        return x[:, -1]


class _Layer:
    """One BLOOM block's weights and attention scaling, looked up once."""

    def __init__(self, block):
        attn, mlp = block.self_attention, block.mlp
        self.input_norm, self.post_norm = _ln(block.input_layernorm), _ln(block.post_attention_layernorm)
        self.qkv = attn.query_key_value.weight, attn.query_key_value.bias
        self.dense = attn.dense.weight, attn.dense.bias
        self.up = mlp.dense_h_to_4h.weight, mlp.dense_h_to_4h.bias
        self.down = mlp.dense_4h_to_h.weight, mlp.dense_4h_to_h.bias
        self.beta, self.alpha = attn.beta, attn.inv_norm_factor


def _buffers(workspace: dict | None, block: bool, count: int, shape: tuple[int, ...],
             like: torch.Tensor) -> list[torch.Tensor]:
    """``count`` uninitialised tensors of ``shape`` and ``like``'s dtype and device, views of one
    of two blocks (``block``: which). The block is kept in ``workspace`` for the next buffers
    (twice the size asked, in case they need more): pages once written are then not handed over,
    and zeroed, by the kernel again; pages never written cost nothing."""
    size, key = math.prod(shape), (like.device, like.dtype, block)
    block = workspace.get(key) if workspace is not None else None
    if block is None or len(block) < count * size:
        block = like.new_empty(2 * count * size)
        if workspace is not None:
            workspace[key] = block
    return [block[n * size:(n + 1) * size].view(shape) for n in range(count)]


def _causal(bias: torch.Tensor) -> torch.Tensor:
    """``bias`` ([rows * heads, 1, keys]) for a query at each key's position, every key after
    the query masked."""
    keys = bias.shape[-1]
    later = torch.ones(keys, keys, dtype=torch.bool, device=bias.device).triu(1)
    return bias.expand(-1, keys, -1).masked_fill(later, torch.finfo(bias.dtype).min)


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """BLOOM's GELU, x (1 + tanh z) / 2 with z = 0.79788456 x (1 + 0.044715 x^2), as x sigmoid(2z):
    five light in-place kernels take half the time of ``F.gelu(x, approximate="tanh")``, whose
    tanh is slow on this CPU build (58 against 114 us for 128 x 512, one thread); they differ by
    float rounding (5e-7 there)."""
    z = (x * x).mul_(2 * 0.79788456 * 0.044715).add_(2 * 0.79788456).mul_(x)
    return z.sigmoid_().mul_(x)


def _ln(norm: nn.LayerNorm) -> tuple:
    return norm.normalized_shape, norm.weight, norm.bias, norm.eps
