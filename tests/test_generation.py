"""``greedy_batch`` (our decoding loop) against ``model.generate``, on tiny random-init BLOOM and
Llama models built from configs: the same tokens for a mixed-length batch whose rows share a
prefix, end at EOS at different steps or run into the ``max_new_tokens`` cap, with and without
the no-repeat-output-ngram rule."""

import pytest
import torch
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessorList,
)

from diffchat.data import miniworld
from diffchat.generation import NoRepeatOutputNGram, TemplateLM, greedy_batch
from diffchat.profiles import TinyLMConfig
from diffchat.tiny import build_causal_lm, train_bpe_tokenizer

PAD, NEVER = 0, 63  # NEVER: an id outside the rows and (checked) never generated


def _model(kind: str):
    torch.manual_seed(0)
    if kind == "bloom":
        config = BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=2, pad_token_id=PAD)
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


@pytest.mark.parametrize("kind", ["bloom", "llama"])
@pytest.mark.parametrize("ngram", [0, 2])
def test_greedy_batch_equals_generate(kind, ngram):
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
