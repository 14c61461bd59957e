import pytest

from diffchat.profiles import PROFILES, TEMPLATE_T, get_profile


def test_paper_profile_carries_table3_and_a5():
    p = get_profile("paper")
    assert (p.sft.epochs, p.sft.batch_size * p.sft.grad_accum, p.sft.max_length, p.sft.lr) == (3, 64, 384, 2e-5)
    assert p.pb == p.sft and p.sft.batch_size <= 8, "Table 3's batch of 64, accumulated to fit 40 GB"
    assert p.sft.unfreeze_layers is None and p.sft.weight_decay == 0
    assert (p.rm.epochs, p.rm.batch_size, p.rm.lr, p.rm.weight_decay) == (1, 64, 5e-6, 1e-3)
    assert (p.rl.epochs, p.rl.batch_size, p.rl.lr, p.rl.unfreeze_layers, p.rl.weight_decay) == (
        5, 128, 5e-6, 8, 1e-6)
    a5 = p.ppo
    assert (a5.init_kl_coef, a5.gamma, a5.lam, a5.typical_p, a5.vci_alpha) == (0.05, 0.99, 0.95, 0.97, 0.05)
    assert (a5.adam_eps, a5.adam_betas, a5.cliprange, a5.vf_coef) == (1e-8, (0.9, 0.95), 0.2, 0.5)
    assert a5.lr_schedule == "cosine" and a5.adm_negative_prob == 0.04
    assert p.models.policy == "bigscience/bloom-1b1" and p.models.dtype == "bfloat16"
    assert len(p.models.tis) == 5


def test_template_is_the_papers():
    assert TEMPLATE_T.format(x="a cat", i="make it night").endswith(
        "Input: a cat\nModification: make it night\nOutput:")


def test_default_and_unknown_profiles():
    assert get_profile(None).name == "tiny"
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_profile("huge")


def test_overrides_and_describe():
    p = get_profile("tiny").with_overrides(sft={"max_steps": 3})
    assert p.sft.max_steps == 3 and PROFILES["tiny"].sft.max_steps != 3
    with pytest.raises(ValueError, match="no section"):
        p.with_overrides(nope={"a": 1})
    text = get_profile("paper").describe()
    assert "Table 3, RL column" in text and "vci_alpha" in text


def test_quick_tiny_is_explicit(monkeypatch):
    monkeypatch.setenv("DIFFCHAT_QUICK", "1")
    quick = get_profile("tiny")
    assert "QUICK" in quick.description and quick.sft.max_steps < PROFILES["tiny"].sft.max_steps
    assert get_profile("paper") is PROFILES["paper"]
    monkeypatch.delenv("DIFFCHAT_QUICK")
    assert get_profile("tiny") is PROFILES["tiny"]


def test_speed_only_settings_leave_the_stage_keys_as_they_were():
    """Activation checkpointing changes no weights (tests/test_sft.py), so turning it reuses
    finished stages: it is not part of any stage's key."""
    from diffchat.pipeline import COURSE

    tiny = get_profile("tiny")
    flipped = tiny.with_overrides(**{s: {"activation_checkpointing": not getattr(tiny, s).activation_checkpointing}
                                     for s in ("pb", "sft", "rm", "rl")})
    for stage in ("pb", "sft", "rewards", "ppo"):
        assert COURSE.key(stage, flipped) == COURSE.key(stage, tiny)
    assert COURSE.key("sft", tiny.with_overrides(sft={"lr": 1e-3})) != COURSE.key("sft", tiny)
