"""Text reward models on a tiny BLOOM (section 3.3); labelling is in test_labels.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from diffchat.profiles import TinyLMConfig, TrainConfig
from diffchat.reward_models import (
    TextRewardModel,
    format_input,
    plot_reward_fit,
    spearman,
    train_reward_model,
)
from diffchat.tiny import build_causal_lm, build_regression_model, train_bpe_tokenizer

WORDS = ["cat", "dog", "castle", "tree", "river", "sunset", "portrait", "city", "forest",
         "painting", "photo", "night", "storm", "garden", "bridge", "mountain"]


# ---------------------------------------------------------------- metrics and formats


def test_spearman_against_hand_computed_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties take the mean rank: a -> [0, 1.5, 1.5, 3], b -> [0, 1, 3, 2]; centred,
    # [-1.5, 0, 0, 1.5] and [-1.5, -0.5, 1.5, 0.5]: Pearson = 3 / sqrt(4.5 * 5).
    assert spearman([1, 5, 5, 9], [1, 2, 4, 3]) == pytest.approx(3 / np.sqrt(22.5))
    # Monotone but not linear: rank correlation is still 1.
    assert spearman([1, 2, 3, 4, 5], [1, 4, 9, 100, 1e6]) == pytest.approx(1.0)
    assert spearman([3, 3, 3], [1, 2, 3]) == 0.0  # a constant predictor ranks nothing
    with pytest.raises(ValueError):
        spearman([1, 2], [1])


def test_reward_model_inputs_follow_beautifulprompt():
    assert format_input("aesthetic", "a cat", "cat", "</s>") == "a cat</s>"
    assert format_input("pickscore", "a cat, 8k", "cat", "</s>") == "Input: cat\nOutput: a cat, 8k</s>"
    assert format_input("pickscore", "a cat", None, "</s>") == "a cat</s>"
    with pytest.raises(ValueError, match="unknown reward target"):
        format_input("hps", "a", None, "</s>")


# ---------------------------------------------------------------- text reward models


def synthetic_rows(n, seed):
    """Prompts whose label counts the word 'golden' (plus noise) and a raw prompt."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(3, 8))
        k = rng.randint(0, 3)
        for _ in range(k):
            words.insert(rng.randint(0, len(words)), "golden")
        rows.append({"prompt": " ".join(words), "raw": " ".join(words[:2]),
                     "aesthetic": 5.0 + k + rng.gauss(0, 0.1), "pickscore": 20.0 - k})
    return rows


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    texts = [r["prompt"] for r in synthetic_rows(300, seed=1)] + ["Input: Output:"] * 5
    tokenizer = train_bpe_tokenizer(texts, vocab_size=300)
    model = build_regression_model(
        tokenizer, TinyLMConfig(vocab_size=300, hidden_size=64, n_layer=2, n_head=4), seed=0
    )
    folder = tmp_path_factory.mktemp("rm_base")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_reward_model_learns_the_label_and_round_trips(tmp_path, base_model):
    train, held_out = synthetic_rows(480, seed=2), synthetic_rows(120, seed=3)
    cfg = TrainConfig(epochs=3, batch_size=16, max_length=32, lr=2e-3, unfreeze_layers=None,
                      weight_decay=1e-3)
    out = tmp_path / "rm_aesthetic"
    result = train_reward_model(train, "aesthetic", base_model, out, cfg, seed=0,
                                eval_rows=held_out)
    losses = result["losses"]
    assert len(losses) == 3 * 480 // 16 == result["loss_steps"][-1]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert result["spearman"] > 0.8 > result["baseline_spearman"] == 0.0
    assert result["mse"] < 0.5 * result["baseline_mse"]

    stats = json.loads((out / "label_stats.json").read_text())
    assert stats["mean"] == pytest.approx(np.mean([r["aesthetic"] for r in train]))
    rm = TextRewardModel.from_pretrained(out)
    pred = rm.predict([r["prompt"] for r in held_out])
    assert pred == pytest.approx(result["y_pred"], abs=1e-4)
    # Predictions are in the score's own units (de-standardised).
    assert abs(np.mean(pred) - np.mean([r["aesthetic"] for r in held_out])) < 0.5
    assert rm.predict(["golden golden golden cat"])[0] > rm.predict(["cat dog tree"])[0]
    assert rm.predict([r["prompt"] for r in held_out[:5]], batch_size=2) == pytest.approx(
        pred[:5], abs=1e-4)

    ax_path = plot_reward_fit(result["y_true"], result["y_pred"], tmp_path / "fit.png")
    assert ax_path.stat().st_size > 1000


def test_a_new_score_head_does_not_depend_on_what_ran_before(tmp_path):
    """On a causal-LM backbone (the course's base stage) the score head is new: the same call
    gives the same model whatever the process drew from torch's generator before it."""
    from safetensors.torch import load_file

    texts = [r["prompt"] for r in synthetic_rows(100, seed=1)] + ["Input: Output:"] * 5
    tokenizer = train_bpe_tokenizer(texts, vocab_size=200)
    base = tmp_path / "causal"
    build_causal_lm(tokenizer, TinyLMConfig(vocab_size=200, hidden_size=32, n_layer=1, n_head=2),
                    seed=0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    cfg = TrainConfig(epochs=1, batch_size=8, max_length=16, lr=1e-3, unfreeze_layers=None,
                      weight_decay=0.0, max_steps=1)
    heads = []
    for n, draws in enumerate((0, 7)):
        torch.manual_seed(123)
        torch.rand(draws)
        train_reward_model(synthetic_rows(8, seed=6), "aesthetic", base, tmp_path / f"rm{n}", cfg, seed=0)
        heads.append(load_file(tmp_path / f"rm{n}" / "model.safetensors")["score.weight"])
    assert torch.equal(heads[0], heads[1])


def test_pickscore_model_reads_the_raw_prompt(tmp_path, base_model):
    rows = synthetic_rows(64, seed=4)
    cfg = TrainConfig(epochs=1, batch_size=16, max_length=12, lr=1e-3, unfreeze_layers=1,
                      weight_decay=0.0, max_steps=2)
    out = tmp_path / "rm_pick"
    result = train_reward_model(rows, "pickscore", base_model, out, cfg, eval_rows=rows[:8])
    assert len(result["losses"]) == 2
    rm = TextRewardModel.from_pretrained(out)
    prompts, raws = [r["prompt"] for r in rows[:8]], [r["raw"] for r in rows[:8]]
    assert rm.predict(prompts, raws) == pytest.approx(result["y_pred"], abs=1e-4)
    # Left truncation keeps the end of the input (the prompt and eos) at max_length 12.
    enc = rm.tokenizer([format_input("pickscore", prompts[0], raws[0], "</s>")],
                       truncation=True, max_length=12, add_special_tokens=False)
    assert enc["input_ids"][0][-1] == rm.tokenizer.eos_token_id
    with pytest.raises(ValueError, match="2 prompts but 1 raw"):
        rm.predict(prompts[:2], raws[:1])


def test_reward_model_trains_fp32_master_weights_under_bf16_autocast(tmp_path, base_model):
    """One step at Table 3's RM learning rate (5e-6) with bf16 compute moves fp32 weights that
    a bf16 copy could not hold (see diffchat.device)."""
    from safetensors.torch import load_file

    cfg = TrainConfig(epochs=1, batch_size=8, max_length=12, lr=5e-6, unfreeze_layers=None,
                      weight_decay=0.0, max_steps=1)
    result = train_reward_model(synthetic_rows(8, seed=5), "aesthetic", base_model, tmp_path, cfg,
                                dtype="bfloat16")
    assert result["precision"] == "fp32 master weights, bf16 autocast"
    name = "transformer.ln_f.weight"
    before = load_file(Path(base_model) / "model.safetensors")[name]
    after = load_file(tmp_path / "model.safetensors")[name]
    moved = after != before
    assert after.dtype == torch.float32 and moved.any()
    as_bf16 = before.to(torch.bfloat16)
    assert torch.equal((as_bf16 + (after - before).to(torch.bfloat16))[moved], as_bf16[moved])


def test_plot_reward_fit_draws_on_an_axes():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    assert plot_reward_fit([1.0, 2.0, 3.0], [1.5, 1.8, 3.2], ax) is ax
    assert "Spearman 1.000" in ax.get_title()
