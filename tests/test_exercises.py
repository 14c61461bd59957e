"""Every notebook exercise's solution passes its checker; a known-wrong answer is rejected with a message."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from diffchat import exercises

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"


def load_solutions(stem: str):
    spec = importlib.util.spec_from_file_location(f"solutions_{stem}", SOLUTIONS / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gae_without_padding_mask(rewards, values, mask, gamma, lam):
    """Wrong: bootstraps from the padding after a row's last token."""
    advantages = rewards.clone() * 0
    running = rewards[:, 0] * 0
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        running = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + values


def kl_rewards_score_at_the_end(logprobs, ref_logprobs, mask, scores, kl_coef):
    """Wrong: puts the score in the last column, which is padding for short rows."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    rewards[:, -1] += scores
    return rewards


CASES = [
    ("05_ppo_adm_vci", "gae", exercises.check_gae, gae_without_padding_mask),
    ("05_ppo_adm_vci", "kl_rewards", exercises.check_kl_penalty, kl_rewards_score_at_the_end),
]


@pytest.mark.parametrize("stem,name,checker,wrong", CASES, ids=[c[1] for c in CASES])
def test_solution_passes_and_a_wrong_answer_is_rejected(stem, name, checker, wrong):
    verdict = checker(getattr(load_solutions(stem), name))
    assert verdict.ok, verdict.message
    bad = checker(wrong)
    assert not bad.ok
    assert "expected" in bad.message and "\n" not in bad.message
    assert repr(bad).startswith("✘")


def test_a_crashing_answer_is_reported_not_raised():
    def broken(*args):
        raise IndexError("oops")

    verdict = exercises.check_gae(broken)
    assert not verdict.ok and "raised IndexError: oops" in verdict.message


def test_every_solution_file_is_checked():
    assert {c[0] for c in CASES} == {p.stem for p in SOLUTIONS.glob("*.py")}
