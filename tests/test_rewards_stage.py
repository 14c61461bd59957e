"""The rewards stage's glue (section 3.3), run through the stage runner on fake inputs.

``tests/test_reward_models.py`` tests labelling and the text reward models themselves;
this file checks what ``reward_models.rewards_stage`` adds: which InstructPE rows it labels, that
the PickScore RM reads the beautified source prompt as its raw input, the held-out split,
the files and manifest it writes, and that a finished stage is skipped.

The input stages (data, pb, instructpe, base, clip) are replaced by fakes that write valid
artifacts in a second, so the test does not run the upstream chain (minutes); the fake clip
stage saves an untrained tiny CLIP and aesthetic head (tests/test_world_clip.py trains one).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from diffchat import pipeline, runner
from diffchat.data.loaders import save_instructpe
from diffchat.labels import TARGETS, read_labels
from diffchat.profiles import TinyLMConfig, get_profile
from diffchat.reward_models import TextRewardModel

SUBJECTS = ["cat", "dog", "castle", "tree", "river", "city", "forest", "bridge", "mountain",
            "garden", "ship", "owl"]
STYLES = ["oil painting", "watercolor", "photo", "pencil sketch"]
N_LABELS = 30


def instructpe_rows(n: int) -> list[dict]:
    rows = []
    for k in range(n):
        subject, style = SUBJECTS[k % len(SUBJECTS)], STYLES[k % len(STYLES)]
        new_style = STYLES[(k + 1) % len(STYLES)]
        source = f"a {style} of a {subject}, highly detailed, sharp focus"
        rows.append({
            "source_prompt": f"a {subject}",
            "instruction": f"make it a {new_style}",
            "beautified_source_prompt": source,
            "beautified_target_prompt": f"a {new_style} of a {subject} number {k}, highly detailed",
        })
    return rows


ROWS = instructpe_rows(N_LABELS + 10)  # the stage must take only the first N_LABELS


def _fake_data(ctx):
    (ctx.out / "triplets_train.jsonl").write_text("")
    (ctx.out / "pb_train.jsonl").write_text("")


def _fake_pb(ctx):
    (ctx.out / "config.json").write_text("{}")
    (ctx.out / "pb_eval.json").write_text("{}")


def _fake_instructpe(ctx):
    save_instructpe(ROWS, ctx.out / "InstructPE_train.json")
    (ctx.out / "funnel.json").write_text("{}")


def _fake_base(ctx):
    from diffchat.loading import tiny_base

    texts = [r[k] for r in ROWS for k in ("beautified_source_prompt", "beautified_target_prompt")]
    tiny_base(texts * 3 + ["Input: Output:"], ctx.out,
              TinyLMConfig(vocab_size=300, hidden_size=32, n_layer=2, n_head=2))
    (ctx.out / "base.json").write_text(json.dumps({"policy": "."}))


def _fake_clip(ctx):
    import torch

    from diffchat.data.miniworld import vocabulary_texts
    from diffchat.images.clip import WordVocab, WorldClip, WorldClipConfig
    from diffchat.images.clip_train import save_head
    from diffchat.scorers import AestheticHead

    torch.manual_seed(0)
    vocab = WordVocab.build(vocabulary_texts())
    WorldClip(WorldClipConfig(vocab_size=len(vocab)), vocab).save_pretrained(ctx.out)
    save_head(AestheticHead(128), ctx.out)
    (ctx.out / "clip_eval.json").write_text("{}")


@pytest.fixture
def profile():
    """The tiny profile with a few labels and a few RM steps."""
    tiny = get_profile("tiny")
    return replace(tiny, data=replace(tiny.data, n_reward_labels=N_LABELS),
                   rm=replace(tiny.rm, batch_size=8, max_length=32, max_steps=3))


@pytest.fixture
def fake_inputs(monkeypatch, profile, tmp_path):
    """Finished data/pb/instructpe/base/clip folders under tmp_path, made by the real runner."""
    for name, fn in (("data", _fake_data), ("pb", _fake_pb), ("instructpe", _fake_instructpe),
                     ("base", _fake_base), ("clip", _fake_clip)):
        monkeypatch.setitem(pipeline.COURSE.stages, name, replace(pipeline.COURSE.stages[name], fn=fn))
    for name in ("instructpe", "base", "clip"):
        pipeline.ensure(name, profile, tmp_path)
    return tmp_path


def test_rewards_stage_labels_trains_and_evaluates(fake_inputs, profile):
    root = fake_inputs
    out = pipeline.run("rewards", profile, root, ensure_inputs=False)
    assert out == pipeline.stage_dir("rewards", profile, root)

    # Labels: the first n_reward_labels target prompts, in order, one image each.
    labels = read_labels(out / "labels.jsonl")
    targets = [r["beautified_target_prompt"] for r in ROWS[:N_LABELS]]
    assert [r["prompt"] for r in labels] == targets
    assert all(set(r) == {"prompt", "aesthetic", "pickscore"} for r in labels)

    n_eval = N_LABELS // 5
    evaluation = json.loads((out / "rewards_eval.json").read_text())
    manifest = json.loads((out / runner.MANIFEST).read_text())
    raw_of = {r["beautified_target_prompt"]: r["beautified_source_prompt"] for r in ROWS}
    held_out = labels[:n_eval]
    for target in TARGETS:
        res = evaluation[target]
        assert res["n_train"] == N_LABELS - n_eval and res["n_eval"] == n_eval
        assert len(res["losses"]) == 3
        # Held-out rows are the first fifth of the labels; y_true are their labels.
        assert res["y_true"] == pytest.approx([r[target] for r in held_out])
        for key in ("mse", "spearman", "baseline_mse", "baseline_spearman"):
            assert isinstance(res[key], float)
            assert manifest["summary"][target][key] == pytest.approx(res[key], abs=1e-4)
        assert res["baseline_spearman"] == 0.0  # predicting the mean ranks nothing

        # The saved model reproduces the stage's held-out predictions when it reads what
        # the stage gave it: the PickScore RM the beautified source prompt as its raw input.
        rm = TextRewardModel.from_pretrained(out / f"rm_{target}", device="cpu")
        assert rm.target == target
        prompts = [r["prompt"] for r in held_out]
        raws = [raw_of[p] for p in prompts] if target == "pickscore" else None
        assert rm.predict(prompts, raws) == pytest.approx(res["y_pred"], abs=1e-4)
    # Without the raw prompt the PickScore RM reads a different text: the stage did pass it.
    # (A few training steps leave the predictions close together: compare against how closely
    # the same text reproduces them.)
    rm = TextRewardModel.from_pretrained(out / "rm_pickscore", device="cpu")
    prompts = [r["prompt"] for r in held_out]
    stage_pred = np.array(evaluation["pickscore"]["y_pred"])
    same = np.abs(np.array(rm.predict(prompts, [raw_of[p] for p in prompts])) - stage_pred).max()
    assert np.abs(np.array(rm.predict(prompts)) - stage_pred).max() > 10 * same + 1e-7

    # Finished and unchanged: a second run is skipped (the manifest is not rewritten).
    assert pipeline.is_done("rewards", profile, root)
    pipeline.run("rewards", profile, root, ensure_inputs=False)
    assert json.loads((out / runner.MANIFEST).read_text())["finished"] == manifest["finished"]


def test_rewards_stage_relabels_when_image_settings_change(fake_inputs, profile):
    root = fake_inputs
    first = read_labels(pipeline.run("rewards", profile, root, ensure_inputs=False) / "labels.jsonl")
    # Other image settings make other images, hence other labels for the same prompts (the tiny
    # profile's renderer ignores steps and guidance, so another seed).
    other = replace(profile, images=replace(profile.images, seeds=(profile.images.seeds[0] + 1,)))
    assert not pipeline.is_done("rewards", other, root)
    second = read_labels(pipeline.run("rewards", other, root, ensure_inputs=False) / "labels.jsonl")
    assert [r["prompt"] for r in second] == [r["prompt"] for r in first]
    assert [r["pickscore"] for r in second] != pytest.approx([r["pickscore"] for r in first])


def test_rewards_stage_uses_only_the_current_prompts(fake_inputs, profile):
    root = fake_inputs
    pipeline.run("rewards", profile, root, ensure_inputs=False)
    fewer = replace(profile, data=replace(profile.data, n_reward_labels=10))
    out = pipeline.run("rewards", fewer, root)
    assert len(read_labels(out / "labels.jsonl")) == 10
