"""``greedy_batch`` (our decoding loop) against ``model.generate``, on tiny random-init BLOOM and
Llama models built from configs: the same tokens for a mixed-length batch whose rows share a
prefix, end at EOS at different steps or run into the ``max_new_tokens`` cap, with and without
the no-repeat-output-ngram rule. BLOOM models decode on ``fast_decode.BloomDecoder`` (checked to
be the path taken), whose logits also match the library forward's step by step."""

import pytest
import torch
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessorList,
)

from diffchat import fast_decode
from diffchat.data import miniworld
from diffchat.fast_decode import BloomDecoder
from diffchat.generation import NoRepeatOutputNGram, TemplateLM, greedy_batch
from diffchat.profiles import TinyLMConfig
from diffchat.tiny import build_causal_lm, train_bpe_tokenizer

PAD, NEVER = 0, 63  # NEVER: an id outside the rows and (checked) never generated


def _model(kind: str):
    torch.manual_seed(0)
    if kind == "bloom":
        config = BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=2, pad_token_id=PAD)
        return BloomForCausalLM(config).eval()
    if kind == "bloom-post-ln":  # the residual taken after the layer norms; 3 heads: ALiBi's odd-count slopes
        config = BloomConfig(vocab_size=64, hidden_size=48, n_layer=3, n_head=3, pad_token_id=PAD,
                             apply_residual_connection_post_layernorm=True)
        return BloomForCausalLM(config).eval()
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def _rows() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(2, 60, (5,), generator=g).tolist()  # a template's shared opening
    return [prefix + torch.randint(2, 60, (n,), generator=g).tolist() for n in (3, 9, 1, 6, 4)]


def _library(model, rows, *, max_new_tokens, eos, ngram) -> list[list[int]]:
    """Today's way: left-padded ``model.generate``, new tokens up to and including EOS."""
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    extra = {"logits_processor": LogitsProcessorList([NoRepeatOutputNGram(ngram, width)])} if ngram else {}
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=eos, pad_token_id=PAD, **extra)[:, width:].tolist()
    return [seq[:seq.index(eos) + 1] if eos in seq else seq for seq in out]


@pytest.fixture
def fast_steps(monkeypatch) -> list[int]:
    """The number of rows of each ``BloomDecoder.step`` call (the real one, counted)."""
    rows, step = [], BloomDecoder.step

    def counted(self, ids, keep=None):
        rows.append(len(ids))
        return step(self, ids, keep)

    monkeypatch.setattr(BloomDecoder, "step", counted)
    return rows


@pytest.mark.parametrize("kind", ["bloom", "bloom-post-ln", "llama"])
@pytest.mark.parametrize("ngram", [0, 2])
def test_greedy_batch_equals_generate(kind, ngram, fast_steps):
    model, rows = _model(kind), _rows()
    free = greedy_batch(model, rows, max_new_tokens=12, eos_token_id=NEVER, pad_token_id=PAD,
                        no_repeat_output_ngram=ngram)
    assert free == _library(model, rows, max_new_tokens=12, eos=NEVER, ngram=ngram)
    assert all(len(seq) == 12 and NEVER not in seq for seq in free)
    # EOS := row 0's fourth token, so some rows stop early, at different steps, and some run to the cap.
    eos = free[0][3]
    ours = greedy_batch(model, rows, max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD,
                        no_repeat_output_ngram=ngram)
    assert ours == _library(model, rows, max_new_tokens=12, eos=eos, ngram=ngram)
    lengths = {len(seq) for seq in ours}
    assert len(lengths) >= 2 and 12 in lengths and min(lengths) < 12
    # 11 steps per call on the fast path (the first token comes from the prefill), rows dropped as they end.
    if kind == "llama":
        assert fast_steps == []
    else:
        assert len(fast_steps) == 22 and fast_steps[:11] == [5] * 11
        assert fast_steps[-1] < 5


def test_fast_decode_is_for_plain_bloom_in_eval_mode():
    assert fast_decode.fits(_model("bloom")) and fast_decode.fits(_model("bloom-post-ln"))
    assert not fast_decode.fits(_model("llama"))
    assert not fast_decode.fits(_model("bloom").train())
    sliced = BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=2, pretraining_tp=2, slow_but_exact=True)
    assert not fast_decode.fits(BloomForCausalLM(sliced).eval())
    sliced.slow_but_exact = False  # the library's forward ignores pretraining_tp then
    assert fast_decode.fits(BloomForCausalLM(sliced).eval())


def _library_last_logits(model, seqs: list[list[int]]) -> torch.Tensor:
    """The library forward's next-token logits of whole left-padded sequences, no cache."""
    width = max(map(len, seqs))
    ids = torch.tensor([[PAD] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits[:, -1]


@pytest.mark.parametrize("kind", ["bloom", "bloom-post-ln"])
@pytest.mark.parametrize("shared", [5, 0])
@torch.inference_mode()  # as greedy_batch runs it
def test_bloom_decoder_logits_match_the_library_forward(kind, shared, monkeypatch):
    """Prefill (in slices of two rows) and every step, with rows leaving (one kept in the buffers,
    then the buffers compacted) and buffers growing by 3 positions: the logits of the library's
    forward on each row's whole sequence."""
    monkeypatch.setattr(fast_decode, "COMPACT_AT", 0.25)
    monkeypatch.setattr(fast_decode, "PREFILL_ROWS", 2)
    monkeypatch.setattr(fast_decode, "GROW", 3)
    model = _model(kind)
    for p in model.parameters():  # larger weights than the init's: logits of order 1, not 0.01
        p.data.normal_(0, 0.5)
    rows = [r[5 - shared:] for r in _rows()]  # with the 5-token shared prefix, or without it
    decoder = BloomDecoder(model, rows, shared=shared, pad_token_id=PAD, max_new_tokens=8)
    seqs, leave = [list(r) for r in rows], {2: [0, 1, 3, 4], 4: [0, 2, 3]}  # after step: rows kept
    width = max(map(len, rows)) - shared
    sizes = [(5, 3), (5, 3), (5, 3), (4, 6), (3, 7), (3, 7), (3, 7)]
    logits = decoder.prefill()
    for step in range(8):
        assert logits.abs().max() > 1
        torch.testing.assert_close(logits, _library_last_logits(model, seqs), atol=1e-5, rtol=0)
        if step == 7:
            break
        tokens = logits.argmax(-1)
        for seq, token in zip(seqs, tokens.tolist()):
            seq.append(token)
        keep = leave.get(step)
        if keep is not None:
            seqs, tokens = [seqs[j] for j in keep], tokens[keep]
        logits = decoder.step(tokens, None if keep is None else torch.tensor(keep))
        # (buffer rows, positions): the first finished row kept until the buffers grow (step 3),
        # the second dropped at once (3 of 4 rows live), each new layout 3 positions past the
        # filled ones, 7 at most (the tokens fed).
        assert (len(decoder.keys[0]), decoder.keys[0].shape[2] - width) == sizes[step]


def test_the_ngram_rule_changes_the_output_and_is_kept():
    model, rows = _model("bloom"), _rows()
    plain = greedy_batch(model, rows, max_new_tokens=12, eos_token_id=NEVER, pad_token_id=PAD)
    ruled = greedy_batch(model, rows, max_new_tokens=12, eos_token_id=NEVER, pad_token_id=PAD,
                         no_repeat_output_ngram=2)
    assert plain != ruled  # the random model repeats itself; the rule forbids it
    for seq in ruled:
        pairs = list(zip(seq, seq[1:]))
        assert len(pairs) == len(set(pairs))


def test_template_lm_routes_greedy_to_our_loop_and_the_rest_to_generate():
    """Greedy options go to ``greedy_batch``, anything else (here ``num_beams=1``, which changes
    nothing but the route) to ``model.generate``: the same answers; sampling goes to the library."""
    texts = [t["input"] for t in miniworld.generate_triplets(40, seed=0)]
    tokenizer = train_bpe_tokenizer(miniworld.vocabulary_texts() + texts, vocab_size=300)
    model = build_causal_lm(tokenizer, TinyLMConfig(vocab_size=300, hidden_size=32, n_layer=2, n_head=2))
    lm = TemplateLM(model, tokenizer, template="Describe: {x}\nOutput:", device="cpu")
    filled = [lm.fill(10, x=t) for t in texts[:7]] * 2
    ours = lm.generate(filled, batch_size=3, max_new_tokens=10, no_repeat_output_ngram=2)
    library = lm.generate(filled, batch_size=3, max_new_tokens=10, no_repeat_output_ngram=2, num_beams=1)
    assert ours == library and ours[:7] == ours[7:]
    torch.manual_seed(0)
    sampled = lm.generate(filled, max_new_tokens=10, do_sample=True, top_k=0)
    assert len(sampled) == len(filled) and sampled != ours
