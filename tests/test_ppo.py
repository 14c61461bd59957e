"""PPO with ADM and VCI (section 3.3) on tiny real models (BLOOM and Llama from configs)."""

from __future__ import annotations

import dataclasses
import json
import os
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import BloomConfig, BloomForCausalLM, LlamaConfig, LlamaForCausalLM

from diffchat.data import miniworld
from diffchat.integrity import ci_score, extract_keywords, keywords_with_pos, synonyms, word_lemmas
from diffchat.loading import tiny_base
from diffchat.model import DiffChat
from diffchat.ppo import (
    AdaptiveKLController,
    Hydra,
    compute_gae,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    policy_loss,
    train_ppo,
    value_loss,
)
from diffchat.ppo.adapters import position_ids_from_mask
from diffchat.ppo.adm import KeywordPool, apply_negative_edits
from diffchat.ppo.hydra import VALUE_HEAD_FILE
from diffchat.ppo.rollout import (
    Rollout,
    TypicalSampling,
    cut_at_eos,
    incremental_pieces,
    pad_right,
    query_texts,
)
from diffchat.ppo.vci import state_ci, vci_gae
from diffchat.profiles import PPOConfig, TinyLMConfig, TrainConfig
from diffchat.reward_models import save_untrained_reward_model
from diffchat.tiny import train_bpe_tokenizer


def _rows(n: int = 40) -> list[dict]:
    return [{"beautified_source_prompt": t["input"], "instruction": t["edit"],
             "beautified_target_prompt": t["output"]} for t in miniworld.generate_triplets(n, seed=1)]


def _bloom(n_layer: int = 3) -> BloomForCausalLM:
    torch.manual_seed(0)
    return BloomForCausalLM(BloomConfig(vocab_size=64, hidden_size=32, n_layer=n_layer, n_head=4)).eval()


def _llama(n_layer: int = 3) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=n_layer, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


FAMILIES = {"bloom": _bloom, "llama": _llama}


def _batch(response_len: int = 4):
    """Left-padded queries + right-padded responses; row 1's response ends (EOS) early."""
    torch.manual_seed(1)
    ids = torch.randint(4, 64, (3, 10))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding of the query
    mask[1, -2:] = 0  # padding after row 1's EOS
    return ids, mask, ids[:, -response_len:], mask[:, -response_len:].float()


# ---- core ---------------------------------------------------------------------------------


def test_compute_gae_against_a_hand_worked_example():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 1.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])  # 9.0 sits after row 1's end
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = compute_gae(rewards, values, mask, gamma, lam)
    # Row 0: delta_2 = 1 + 0 - 0.3 = 0.7                  A_2 = 0.7
    #        delta_1 = 0 + 0.9 * 0.3 - 0.2 = 0.07          A_1 = 0.07 + 0.72 * 0.7 = 0.574
    #        delta_0 = 0 + 0.9 * 0.2 - 0.1 = 0.08          A_0 = 0.08 + 0.72 * 0.574 = 0.49328
    # Row 1 ends at t = 1 (bootstrap 0): delta_1 = 1 - 0.5 = 0.5, A_1 = 0.5
    #        delta_0 = 0.5 + 0.9 * 0.5 - 0.4 = 0.55        A_0 = 0.55 + 0.72 * 0.5 = 0.91
    assert torch.allclose(adv, torch.tensor([[0.49328, 0.574, 0.7], [0.91, 0.5, 0.0]]))
    # returns = advantages + values (before whitening)
    assert torch.allclose(ret, torch.tensor([[0.59328, 0.774, 1.0], [1.31, 1.0, 9.0]]))


def test_kl_penalty_puts_the_score_on_the_last_real_token():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -5.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_penalised_rewards(logprobs, ref, mask, torch.tensor([2.0, 3.0]), kl_coef=0.1)
    assert torch.allclose(kl, torch.tensor([[0.5, 0.0, -1.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.0, 2.1], [-0.1, 3.0, 0.0]]))


def test_adaptive_kl_controller_moves_the_right_way():
    up = AdaptiveKLController(0.05, target=6.0, horizon=10_000)
    up.update(12.0, n_steps=128)  # error clipped to +0.2
    assert up.value == pytest.approx(0.05 * (1 + 0.2 * 128 / 10_000))
    down = AdaptiveKLController(0.05, target=6.0, horizon=10_000)
    down.update(5.4, n_steps=128)  # error = 5.4 / 6 - 1 = -0.1
    assert down.value == pytest.approx(0.05 * (1 - 0.1 * 128 / 10_000))
    assert down.value < 0.05 < up.value


def test_vci_with_alpha_zero_is_an_exact_no_op():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 5), torch.randn(3, 5)
    mask = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2, [1.0] + [0.0] * 4])
    ci = torch.rand(3, 5)
    plain = compute_gae(rewards, values, mask, 0.99, 0.95)
    for target in ("v", "v_prime"):
        adv, ret = vci_gae(rewards, values, mask, ci, 0.0, 0.99, 0.95, target)
        assert torch.equal(adv, plain[0]) and torch.equal(ret, plain[1])
    # With alpha > 0 the advantages move, and the "v" critic target is A' + V.
    adv, ret = vci_gae(rewards, values, mask, ci, 0.05, 0.99, 0.95, "v")
    assert not torch.equal(adv, plain[0]) and torch.equal(ret, adv + values)


def test_policy_loss_clips_by_hand_at_ratios_half_and_one_and_a_half():
    """Ratios 1.5 and 0.5 with advantages +2 and -1 (clip range 0.2): each of the four cases of
    max(-A * r, -A * clip(r)), a padded column that must not count, and which entries pass a gradient."""
    old = torch.tensor([[-1.0, -2.0, -3.0], [-1.5, -0.5, -7.0]])
    ratio = torch.tensor([[1.5, 1.5, 9.0], [0.5, 0.5, 9.0]])  # 9.0: padding
    logprobs = (old + ratio.log()).requires_grad_(True)
    adv = torch.tensor([[2.0, -1.0, 5.0], [2.0, -1.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    loss, clip_frac, approx_kl = policy_loss(logprobs, old, adv, mask, cliprange=0.2)
    # r=1.5, A=+2: max(-3.0, -2.4) = -2.4 (clipped)   r=1.5, A=-1: max(1.5, 1.2) = 1.5
    # r=0.5, A=+2: max(-1.0, -1.6) = -1.0            r=0.5, A=-1: max(0.5, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-2.4 + 1.5 - 1.0 + 0.8) / 4)
    assert clip_frac.item() == pytest.approx(0.5)
    kl_15, kl_05 = 0.5 - torch.tensor(1.5).log().item(), -0.5 - torch.tensor(0.5).log().item()
    assert approx_kl.item() == pytest.approx((kl_15 + kl_05) / 2)
    loss.backward()  # d/dlogp of -A * r is -A * r / 4; clipped entries and padding pass none
    assert torch.allclose(logprobs.grad, torch.tensor([[0.0, 1.5 / 4, 0.0], [-1.0 / 4, 0.0, 0.0]]))


def test_value_loss_clips_by_hand():
    """V moved from V_old = 0 by +1 and -0.5 (clip range 0.2), returns on either side: the loss
    is the larger of the clipped and unclipped squared errors, times 0.5 * vf_coef."""
    old = torch.zeros(1, 5)
    values = torch.tensor([[1.0, 1.0, -0.5, -0.5, 3.0]])  # last column: padding
    returns = torch.tensor([[1.0, 0.0, 0.5, -0.5, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss, clip_frac = value_loss(values, old, returns, mask, cliprange_value=0.2, vf_coef=0.5)
    # (V - R)^2 vs (V_clip - R)^2: max(0, 0.64) max(1, 0.04) max(1, 0.49) max(0, 0.09)
    assert loss.item() == pytest.approx(0.5 * 0.5 * (0.64 + 1.0 + 1.0 + 0.09) / 4)
    assert clip_frac.item() == pytest.approx(0.5)


def test_masked_whiten_ignores_padding_and_floors_the_std():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, 7.0, -50.0, 8.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    real = torch.tensor([1.0, 2.0, 3.0, 5.0, 7.0])
    mean, std = real.mean(), real.var(unbiased=False).sqrt()  # 3.6 and sqrt(4.64)
    white = masked_whiten(x, mask)
    assert torch.allclose(white[mask.bool()], (real - mean) / std, atol=1e-6)
    assert torch.equal(white[~mask.bool()], torch.zeros(3))
    # Advantages that hardly differ stay small: std 0.0215 under the floor 0.1 divides by 0.1.
    small = masked_whiten(x * 0.01, mask, std_floor=0.1)
    assert torch.allclose(small[mask.bool()], (real - mean) * 0.01 / 0.1, atol=1e-6)


def test_vci_advantages_and_critic_targets_by_hand():
    """One row of two tokens, gamma = lam = 0.5, alpha = 1, CI(s_0) = 0, CI(s_1) = 0.5."""
    rewards, values = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.2, 0.4]])
    mask, ci = torch.ones(1, 2), torch.tensor([[0.0, 0.5]])
    # V' = V + CI = [0.2, 0.9]. delta'_1 = 1 - 0.9 = 0.1; delta'_0 = 0.5 * 0.9 - 0.2 = 0.25;
    # A'_0 = 0.25 + 0.25 * 0.1 = 0.275. Plain GAE: A = [0.15, 0.6], returns A + V = [0.35, 1.0].
    targets = {"plain": [0.35, 1.0], "v": [0.475, 0.5], "v_prime": [0.475, 1.0]}
    for target, want in targets.items():
        adv, ret = vci_gae(rewards, values, mask, ci, 1.0, 0.5, 0.5, target)
        assert torch.allclose(adv, torch.tensor([[0.275, 0.1]])), target
        assert torch.allclose(ret, torch.tensor([want])), target
    with pytest.raises(ValueError, match="vci_critic_target"):
        vci_gae(rewards, values, mask, ci, 1.0, 0.5, 0.5, "returns")


def test_state_ci_scores_the_tokens_before_each_action():
    ref = ("a horse in a field", "turn the horse into a zebra", "a zebra in a field")
    pieces = [[" a", " zebra", " in", " a", " field", ""]]
    ci = state_ci(pieces, [ref], width=8, threshold=None)
    prefixes = ["", " a", " a zebra", " a zebra in", " a zebra in a", " a zebra in a field"]
    expected = [ci_score(*ref, p, threshold=None) for p in prefixes] + [0.0, 0.0]
    assert ci[0].tolist() == pytest.approx(expected)


# ---- hydra ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_trunk_gives_the_full_forward_logprobs(family):
    model = FAMILIES[family]()
    hydra = Hydra(model, n_unfrozen=2).eval()
    ids, mask, response, _ = _batch()
    trunk = hydra.trunk(ids, mask)
    logprobs, values, entropy = hydra(trunk.hidden, trunk.attention_mask, response)
    extra = {"position_ids": position_ids_from_mask(mask)} if family == "llama" else {}
    full = model(input_ids=ids, attention_mask=mask, **extra).logits.log_softmax(-1)
    full = full[:, -response.shape[1] - 1 : -1].gather(-1, response[..., None]).squeeze(-1)
    assert torch.allclose(logprobs, full, atol=1e-5)
    assert values.shape == entropy.shape == response.shape


@pytest.mark.parametrize("family", FAMILIES)
def test_hydra_holds_fewer_parameters_than_two_models(family):
    counts = Hydra(FAMILIES[family](), n_unfrozen=1).parameter_counts()
    assert counts["held"] == counts["full_model"] + counts["reference_top"] + counts["value_head"]
    assert counts["held"] < 2 * counts["full_model"]
    assert counts["trainable"] < counts["full_model"]


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_equals_policy_before_the_first_update(family):
    hydra = Hydra(FAMILIES[family](), n_unfrozen=2).eval()
    ids, mask, response, _ = _batch()
    trunk = hydra.trunk(ids, mask)
    with torch.no_grad():
        logprobs = hydra(trunk.hidden, trunk.attention_mask, response)[0]
    # Computed by a separate (copied) branch: equal up to float rounding, not bit for bit.
    torch.testing.assert_close(hydra.reference_logprobs(trunk, response), logprobs, rtol=0, atol=1e-6)


def test_first_epoch_on_fresh_data_has_ratio_one():
    hydra = Hydra(_bloom(), n_unfrozen=2).eval()
    ids, mask, response, rmask = _batch()
    trunk = hydra.trunk(ids, mask)
    with torch.no_grad():
        old = hydra(trunk.hidden, trunk.attention_mask, response)[0]
    new = hydra(trunk.hidden, trunk.attention_mask, response)[0]
    adv = torch.randn_like(rmask)
    loss, clip_frac, approx_kl = policy_loss(new, old, adv, rmask, cliprange=0.2)
    torch.testing.assert_close(torch.exp(new - old), torch.ones_like(new), rtol=0, atol=1e-6)
    assert loss.item() == pytest.approx(-masked_mean(adv, rmask).item(), abs=1e-7)
    assert clip_frac.item() == 0.0 and approx_kl.item() == 0.0
    loss.backward()  # gradients reach the trainable top and not the frozen bottom
    assert hydra.adapter.blocks[-1].mlp.dense_4h_to_h.weight.grad is not None
    assert hydra.adapter.blocks[0].mlp.dense_4h_to_h.weight.grad is None


@pytest.mark.parametrize("family", FAMILIES)
def test_tokens_after_eos_change_nothing(family):
    hydra = Hydra(FAMILIES[family](), n_unfrozen=2).eval()
    ids, mask, response, rmask = _batch()
    other = ids.clone()
    other[1, -2:] = torch.tensor([5, 6])  # row 1's padding after EOS
    assert not torch.equal(other, ids)
    results = []
    for batch in (ids, other):
        trunk = hydra.trunk(batch, mask)
        with torch.no_grad():
            logprobs, values, _ = hydra(trunk.hidden, trunk.attention_mask, batch[:, -4:])
            ref = hydra.reference_logprobs(trunk, batch[:, -4:])
        rewards, kl = kl_penalised_rewards(logprobs, ref - 0.1, rmask, torch.tensor([1.0, 2.0, 3.0]), 0.05)
        adv, ret = compute_gae(rewards, values, rmask, 0.99, 0.95)
        pg = policy_loss(logprobs, logprobs.detach() - 0.01, adv, rmask, 0.2)[0]
        vf = value_loss(values, values + 0.3, ret, rmask, 0.2, 0.5)[0]
        results.append([logprobs * rmask, values * rmask, rewards, kl, adv, ret * rmask, pg, vf])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-6)
    assert cut_at_eos([7, 8, 2, 9, 2], eos_id=2) == [7, 8, 2]


def test_save_pretrained_round_trips_the_value_head(tmp_path):
    tokenizer = train_bpe_tokenizer(["a red cat", "a blue dog"] * 5, vocab_size=300)
    model = BloomForCausalLM(BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4))
    hydra = Hydra(model, n_unfrozen=1)
    hydra.save_pretrained(tmp_path, tokenizer)
    again = Hydra(BloomForCausalLM.from_pretrained(tmp_path), n_unfrozen=1)
    again.load_value_head(tmp_path)
    for a, b in zip(hydra.value_head.parameters(), again.value_head.parameters()):
        assert torch.equal(a, b)


# ---- rollouts and ADM pi- ---------------------------------------------------------------------


def test_incremental_pieces_join_to_the_decoded_text():
    texts = ["a café at night, naïve art 🎨 and 日本の庭", "a red cat"] * 3
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    pieces = incremental_pieces(tokenizer, ids)
    assert len(pieces) == len(ids) and "".join(pieces) == texts[0]
    # Byte tokens of one character decode to U+FFFD one by one: those pieces stay empty.
    assert "" in pieces[:-1] and "\ufffd" not in "".join(pieces)
    assert pieces[-1] == ""  # EOS adds no text


def test_pi_minus_removes_or_replaces_a_keyword(tmp_path):
    rows = _rows(40)
    targets = [r["beautified_target_prompt"] for r in rows[:8]]
    tokenizer = train_bpe_tokenizer([r["beautified_target_prompt"] for r in rows] * 2, vocab_size=400)
    responses = [tokenizer(" " + t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                 for t in targets]
    ids, mask = pad_right(responses, tokenizer.pad_token_id, "cpu")
    empty = torch.empty(0, dtype=torch.long)
    rollout = Rollout(rows[:8], ids[:, :1], torch.ones_like(ids[:, :1]), empty, empty, [], [])
    rollout = rollout.with_responses(responses, tokenizer)
    pool = KeywordPool(r["beautified_target_prompt"] for r in rows)
    edited, edits = apply_negative_edits(rollout, tokenizer, targets, pool, random.Random(3),
                                         negative_prob=1.0, remove_prob=0.5)
    assert len(edits) == 8 and {e.action for e in edits} == {"remove", "replace"}
    for edit in edits:
        text = edited.texts[edit.row]
        assert text == edit.after and edited.response_lists()[edit.row][-1] == tokenizer.eos_token_id
        assert "".join(edited.pieces[edit.row]) == text
        words = [w for w in text.replace(",", " ").split()]
        assert not any(edit.keyword in word_lemmas(w) for w in words)  # every occurrence is gone
        assert edit.keyword not in extract_keywords(text)
        if edit.action == "replace":
            assert edit.replacement in words
            assert edit.replacement in pool.by_pos[edit.pos]  # a training keyword of the same POS
            assert (edit.keyword, edit.pos) in keywords_with_pos(targets[edit.row])
            assert edit.replacement not in synonyms(edit.keyword)
    # rows not chosen (probability 0) are left alone
    same, none = apply_negative_edits(rollout, tokenizer, targets, pool, random.Random(3), 0.0, 0.5)
    assert same is rollout and none == []


@pytest.mark.parametrize("scale", [0.01, 1.0, 3.0, 8.0, 15.0])
def test_typical_sampling_keeps_the_tokens_transformers_keeps(scale):
    """pi+'s top-k shortcut and its sort fallback (flat rows) keep exactly the typical set."""
    from transformers.generation.logits_process import TypicalLogitsWarper

    g = torch.Generator().manual_seed(int(scale * 100))
    scores = torch.randn(16, 4000, generator=g) * scale
    scores[:4] = scores[4:8] * 3  # peaky and flat rows in one batch
    expected = TypicalLogitsWarper(0.97)(None, scores.clone())
    got = TypicalSampling(0.97)(None, scores.clone())
    assert torch.equal(got.isinf(), expected.isinf())
    assert torch.equal(got[~got.isinf()], scores[~got.isinf()])


def test_query_texts_follow_template_t():
    tokenizer = train_bpe_tokenizer(["a red cat", "make it blue"] * 5, vocab_size=300)
    row = {"beautified_source_prompt": " a red cat ", "instruction": "make it blue",
           "beautified_target_prompt": "a blue cat"}
    from diffchat.profiles import TEMPLATE_T

    assert query_texts(tokenizer, [row], 384, 32) == [TEMPLATE_T.format(x="a red cat", i="make it blue")]


# ---- train_ppo ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random-init tiny SFT model and two tiny text RMs (mechanics, not quality)."""
    rows = _rows(200)
    texts = miniworld.vocabulary_texts() + [r["beautified_target_prompt"] for r in rows]
    root = tmp_path_factory.mktemp("ppo_models")
    sft = tiny_base(texts, root / "sft", TinyLMConfig(vocab_size=600, hidden_size=32, n_layer=2, n_head=2))
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    rms = [save_untrained_reward_model(root / target, tokenizer,
                                       TinyLMConfig(vocab_size=300, hidden_size=32, n_layer=1, n_head=2), target,
                                       seed=seed, mean=5.0 + 15 * seed, std=0.5 + seed)
           for seed, target in enumerate(("aesthetic", "pickscore"))]
    return sft, rms[0], rms[1], rows[:40]


RL = TrainConfig(epochs=2, batch_size=4, max_length=128, lr=1e-3, unfreeze_layers=1, weight_decay=1e-6)
PPO = PPOConfig(rollouts=4, iterations=4, max_new_tokens=8, mini_batch_size=2, checkpoint_every=2,
                adm_negative_prob=0.5, adm_pool_rows=40)


def _weights(folder):
    return {**load_file(folder / "model.safetensors"), **load_file(folder / VALUE_HEAD_FILE)}


class Stop(Exception):
    pass


def test_train_ppo_resumes_to_the_same_weights_and_writes_a_diffchat_model(models, tmp_path):
    sft, aes, pick, rows = models
    full = train_ppo(sft, aes, pick, rows, tmp_path / "a", RL, PPO, seed=0)

    def crash(entry):
        if entry["iteration"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train_ppo(sft, aes, pick, rows, tmp_path / "b", RL, PPO, seed=0, log=crash)
    assert (tmp_path / "b" / "checkpoint" / "state.safetensors").is_file()
    entries = []
    resumed = train_ppo(sft, aes, pick, rows, tmp_path / "b", RL, PPO, seed=0, log=entries.append)
    assert [e["iteration"] for e in entries] == [3, 4]  # continued from the iteration-2 checkpoint
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [e["reward"] for e in full["iterations"]] == [e["reward"] for e in resumed["iterations"]]
    assert not (tmp_path / "b" / "checkpoint").exists()

    # The policy moved, and only in its trainable top (+ value head).
    start = load_file(sft / "model.safetensors")
    moved = {k for k in start if not torch.equal(start[k], a[k])}
    assert moved and all(".h.1." in k or "ln_f" in k for k in moved)

    log = json.loads((tmp_path / "a" / "ppo_log.json").read_text())
    keys = {"reward", "aesthetic", "pickscore", "ci", "ci_raw", "kl", "kl_coef", "approx_kl", "clip_frac",
            "entropy", "value_error", "response_length", "seconds", "policy_loss", "value_loss"}
    assert len(log["iterations"]) == 4 and keys <= log["iterations"][0].keys()
    assert log["parameters"]["held"] < 2 * log["parameters"]["full_model"]
    chat = DiffChat.from_pretrained(tmp_path / "a", device="cpu")
    assert isinstance(chat.rewrite("a red cat", "make it blue", max_new_tokens=5), str)


def test_ablation_switches_run(models, tmp_path):
    sft, aes, pick, rows = models
    ppo = PPOConfig(rollouts=4, iterations=1, max_new_tokens=6, mini_batch_size=4, pi_plus=False,
                    pi_minus=False, vci=False, adaptive_kl=False, whiten_advantages=False)
    result = train_ppo(sft, aes, pick, rows, tmp_path, RL, ppo, seed=1)
    assert result["iterations"][0]["kl_coef"] == 0.05 and result["iterations"][0]["pi_minus_edits"] == 0


def test_train_ppo_on_a_tied_llama_family_model(models, tmp_path):
    """SmolLM2's layout (the small profile): Llama blocks, rotary positions, tied head."""
    sft, aes, pick, rows = models
    from diffchat.loading import load_tokenizer

    tokenizer = load_tokenizer(sft)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    ppo = PPOConfig(rollouts=4, iterations=2, max_new_tokens=6, mini_batch_size=2)
    result = train_ppo(tmp_path / "llama", aes, pick, rows, tmp_path / "out", RL, ppo, seed=0)
    assert len(result["iterations"]) == 2
    assert isinstance(DiffChat.from_pretrained(tmp_path / "out", device="cpu").rewrite("a cat", "make it red"), str)


def test_train_ppo_runs_under_accelerate_launch(models, tmp_path):
    """The training entry point runs unchanged under `accelerate launch` (one CPU process)."""
    import os
    import subprocess
    import sys

    sft, aes, pick, rows = models
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    script = tmp_path / "train.py"
    script.write_text(
        "import json, sys\n"
        "from diffchat.ppo import train_ppo\n"
        "from diffchat.profiles import PPOConfig, TrainConfig\n"
        f"rl = TrainConfig(**{dataclasses.asdict(RL)!r})\n"
        "ppo = PPOConfig(rollouts=4, iterations=1, max_new_tokens=8, mini_batch_size=2)\n"
        f"rows = json.load(open({str(tmp_path / 'rows.json')!r}))\n"
        f"log = train_ppo({str(sft)!r}, {str(aes)!r}, {str(pick)!r}, rows, {str(tmp_path / 'out')!r}, rl, ppo)\n"
        "print('ITERATIONS', len(log['iterations']))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                           "--cpu", str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ITERATIONS 1" in done.stdout
    assert (tmp_path / "out" / "ppo_log.json").is_file()


def test_training_headroom_scores_the_sft_models_own_rewrites(models):
    """The headroom report is the training reward of the SFT model's greedy rewrites: a random-init
    model loses the keywords of most rows, and the report's shares agree with Listing 1's CI."""
    from diffchat.ppo.rewards import references
    from diffchat.ppo.stage import training_headroom

    sft, aes, pick, rows = models
    cfg = PPOConfig(max_new_tokens=8)
    report = training_headroom(sft, aes, pick, rows, cfg, n=12, seed=0)
    picked = random.Random(0).sample(rows, 12)
    model = DiffChat.from_pretrained(sft, max_length=192)
    outputs = model.rewrite_batch([r["beautified_source_prompt"] for r in picked], [r["instruction"] for r in picked])
    ci = [ci_score(*references(r), y, threshold=None) for r, y in zip(picked, outputs)]
    assert report["rows"] == 12
    assert report["ci_raw"] == round(sum(ci) / 12, 4)
    assert report["ci_lost_share"] == round(sum(c < cfg.ci_threshold for c in ci) / 12, 4) > 0.5


# ---- PPO learns: a synthetic reward on a word-level tiny BLOOM ---------------------------------

WORDS = ("a", "red", "blue", "green", "cat", "dog", "horse", "bird", "in", "on", "the", "field", "beach",
         "snow", "night", "painting")


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    """A random-init BLOOM over 16 words + 4 specials, untied head: every word starts near 1/20,
    so a reward on words is felt in the first rollout."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tokenizer_models
    from transformers import PreTrainedTokenizerFast

    vocab = {w: n for n, w in enumerate(("<unk>", "<s>", "</s>", "<pad>") + WORDS)}
    backend = Tokenizer(tokenizer_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    config = BloomConfig(vocab_size=len(vocab), hidden_size=32, n_layer=2, n_head=4, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    folder = tmp_path_factory.mktemp("word_model")
    BloomForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rows = [{"beautified_source_prompt": f"a {c} {a} in a {p}", "instruction": "put it in the snow",
             "beautified_target_prompt": f"a {c} {a} in the snow"}
            for c in ("red", "blue", "green") for a in ("cat", "dog", "horse", "bird") for p in ("field", "beach")]
    return folder, rows


def blue_over_red(sign: float = 1.0):
    """Synthetic reward: sign * (share of "blue" - share of "red") among the response's words.
    Logged as "preference" (unsigned) beside the "reward" PPO maximises."""
    def reward(rows, texts):
        words = [t.split() for t in texts]
        preference = [(w.count("blue") - w.count("red")) / max(len(w), 1) for w in words]
        return torch.tensor([sign * p for p in preference]), {"reward": [sign * p for p in preference],
                                                              "preference": preference}
    return reward


WORD_RL = TrainConfig(epochs=2, batch_size=8, max_length=64, lr=1e-2, unfreeze_layers=None, weight_decay=0.0)
# 8 prompts x 4 samples, 8 updates an iteration. The adaptive controller's target KL is tiny and its
# horizon short, so beta visibly grows once the policy moves (a check on what the controller is fed).
WORD_PPO = PPOConfig(rollouts=32, samples_per_prompt=4, iterations=8, max_new_tokens=8, mini_batch_size=8,
                     pi_plus=False, pi_minus=False, vci=False, missing_eos_penalty=0.0, checkpoint_every=1000,
                     target_kl=0.001, kl_horizon=160)


# The learning tests' seed: 0 in CI; their bars were checked with seeds 0-2 on 1 and 2 threads
# (DIFFCHAT_PPO_TEST_SEED=1 OMP_NUM_THREADS=2 pytest tests/test_ppo.py -k "learns or holds").
SEED = int(os.environ.get("DIFFCHAT_PPO_TEST_SEED", "0"))


def _train_words(word_model, tmp_path, ppo=WORD_PPO, sign=1.0, name="out"):
    folder, rows = word_model
    return train_ppo(folder, None, None, rows, tmp_path / name, WORD_RL, ppo, seed=SEED,
                     reward=blue_over_red(sign))["iterations"]


def _preference(entries):
    return float(np.mean([e["preference"] for e in entries]))


def test_ppo_learns_a_synthetic_reward_and_its_negation(word_model, tmp_path):
    """The preference starts near 0 (random words) and, in 8 iterations, PPO moves it well up when
    rewarded and well down when the reward is negated: the last two iterations' mean moved by +0.48
    to +0.78 and by -0.48 to -0.65 from the first (seeds 0-2, 1 and 2 threads; bar 0.3). The KL
    coefficient grows once the policy drifts past the tiny target KL."""
    up = _train_words(word_model, tmp_path, sign=1.0, name="up")
    down = _train_words(word_model, tmp_path, sign=-1.0, name="down")
    print(f"seed {SEED}: preference up {up[0]['preference']:+.3f} -> {_preference(up[-2:]):+.3f}, "
          f"down {down[0]['preference']:+.3f} -> {_preference(down[-2:]):+.3f}; KL {up[-1]['kl']:.2f}, "
          f"beta {up[-1]['kl_coef']:.4f}")
    for log in (up, down):
        assert abs(log[0]["preference"]) < 0.15
    assert _preference(up[-2:]) > up[0]["preference"] + 0.3
    assert _preference(down[-2:]) < down[0]["preference"] - 0.3
    assert up[-1]["kl"] > 0.5 and up[-1]["kl_coef"] > WORD_PPO.init_kl_coef


def test_kl_penalty_holds_the_policy_near_the_reference(word_model, tmp_path):
    """The same run with a large fixed beta ends much closer to the reference than with beta = 0
    (seeds 0-2: final KL -0.03 to 0.32 against 4.4 to 7.5)."""
    free = _train_words(word_model, tmp_path, dataclasses.replace(WORD_PPO, adaptive_kl=False, init_kl_coef=0.0),
                        name="free")
    held = _train_words(word_model, tmp_path, dataclasses.replace(WORD_PPO, adaptive_kl=False, init_kl_coef=1.0),
                        name="held")
    print(f"seed {SEED}: final KL with beta 0 {free[-1]['kl']:.3f}, with beta 1 {held[-1]['kl']:.3f}")
    assert held[-1]["kl"] < 0.5 * free[-1]["kl"] and free[-1]["kl"] > 1.0


def test_typical_sampling_reaches_generation(word_model, tmp_path):
    """With a typical mass so small that one token is kept, the 4 samples of a prompt are the same
    response; with pi+ off they differ."""
    one = dataclasses.replace(WORD_PPO, iterations=1, pi_plus=True, typical_p=1e-6)
    kept = _train_words(word_model, tmp_path, one, name="typical")
    plain = _train_words(word_model, tmp_path, dataclasses.replace(one, pi_plus=False), name="plain")
    assert kept[0]["reward_std_within"] == 0.0 and plain[0]["reward_std_within"] > 0.05


def test_pi_minus_edits_happen_when_on(word_model, tmp_path):
    """Responses of random words hold keywords of y_o (cat, snow, ...): with pi- on at probability 1
    most rows are edited, and their reward is logged apart from the clean rows'."""
    ppo = dataclasses.replace(WORD_PPO, iterations=1, pi_minus=True, adm_negative_prob=1.0, adm_pool_rows=24)
    log = _train_words(word_model, tmp_path, ppo, name="pi_minus")
    assert log[0]["pi_minus_edits"] >= 16 and log[0]["reward_pi_minus"] is not None
    off = _train_words(word_model, tmp_path, dataclasses.replace(ppo, pi_minus=False), name="pi_minus_off")
    assert off[0]["pi_minus_edits"] == 0 and off[0]["reward_pi_minus"] is None
    assert off[0]["reward_clean"] == pytest.approx(off[0]["reward"])


def test_the_value_loss_trains_the_value_head(word_model, tmp_path):
    """After one iteration the value head's first layer has moved, unless the value loss is scaled
    to 0 (the policy loss never reaches the value head)."""
    heads = {}
    for vf_coef in (0.0, 0.5):
        _train_words(word_model, tmp_path, dataclasses.replace(WORD_PPO, iterations=1, vf_coef=vf_coef),
                     name=f"vf{vf_coef}")
        heads[vf_coef] = load_file(tmp_path / f"vf{vf_coef}" / VALUE_HEAD_FILE)["0.weight"]
    assert (heads[0.5] - heads[0.0]).abs().max() > 1e-3


def test_missing_eos_is_penalised(word_model, tmp_path):
    """max_new_tokens = 1: nearly every response is cut off without EOS, and pays the penalty."""
    ppo = dataclasses.replace(WORD_PPO, iterations=1, max_new_tokens=1, missing_eos_penalty=1.0)
    log = _train_words(word_model, tmp_path, ppo, name="eos")
    assert log[0]["missing_eos"] > 0.5
    assert log[0]["advantage_std"] > 0 and {"value_clip_frac", "grad_norm", "reward_std_across"} <= log[0].keys()


def test_samples_per_prompt_must_divide_rollouts(word_model, tmp_path):
    with pytest.raises(ValueError, match="multiple of samples_per_prompt"):
        _train_words(word_model, tmp_path, dataclasses.replace(WORD_PPO, rollouts=30), name="bad")


def test_the_reward_without_ci_drops_only_the_ci_term(models):
    """ci_reward=False (the ppo_no_ci_reward stage): the score loses the thresholded CI, nothing else."""
    from diffchat.ppo.rewards import SequenceReward
    from diffchat.reward_models import TextRewardModel

    _, aes, pick, rows = models
    rms = TextRewardModel.from_pretrained(aes), TextRewardModel.from_pretrained(pick)
    texts = [r["beautified_target_prompt"] for r in rows[:6]]  # y_o itself: every keyword kept
    with_ci = SequenceReward(*rms, PPOConfig())(rows[:6], texts)[1]
    without = SequenceReward(*rms, PPOConfig(ci_reward=False))(rows[:6], texts)[1]
    assert with_ci["ci"] == without["ci"] == [1.0] * 6
    assert [a - b for a, b in zip(with_ci["score"], without["score"])] == pytest.approx([1.0] * 6)
