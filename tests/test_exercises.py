"""Every notebook exercise's solution passes its checker; a known-wrong answer is rejected with a message."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

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


def unseen_subjects_of_the_wrong_split(train_rows, test_rows):
    """Wrong: the training subjects instead of the test subjects that are new."""
    return {r["subject"] for r in train_rows} - {r["subject"] for r in test_rows}


def retention_of_the_wrong_side(raw, beautified):
    """Wrong: divides by the beautified prompt's keywords."""
    from diffchat.integrity import extract_keywords

    new = set(extract_keywords(beautified))
    return len(set(extract_keywords(raw)) & new) / max(1, len(new))


def ci_without_double_points(keywords, highlighted, y_lemmas):
    """Wrong: a highlighted keyword counts once, like any other."""
    from diffchat.integrity import synonyms

    found = sum(any(s in y_lemmas for s in synonyms(q)) for q in keywords)
    return found / len(keywords) if keywords else 1.0


def labels_without_eos(prompt_ids, completion_ids, eos_id):
    """Wrong: forgets the EOS, so the model never learns where a rewrite stops."""
    return [-100] * len(prompt_ids) + list(completion_ids)


def nucleus_instead_of_typical(probs, p):
    """Wrong: top-p (most likely first), not the tokens closest to the entropy."""
    kept, mass = set(), 0.0
    for token in probs.argsort(descending=True).tolist():
        kept.add(token)
        mass += probs[token].item()
        if mass >= p:
            break
    return kept


def append_without_comma(x, i):
    """Wrong: no comma between the prompt and the instruction."""
    return f"{x} {i}"


def dclip_without_normalising(i0, i1, t0, t1):
    """Wrong: differences of the raw features."""
    import torch.nn.functional as F

    return F.cosine_similarity(i1 - i0, t1 - t0, dim=-1)


def ranks_with_ties_averaged(table):
    """Wrong: ties share the average rank (pandas' default), not the best one."""
    return table.rank(axis=0, ascending=False).mean(axis=1)


def rates_by_side(votes):
    """Wrong: counts the left image as DiffChat's."""
    out = {}
    for o in {v["opponent"] for v in votes}:
        mine = [v for v in votes if v["opponent"] == o]
        out[o] = tuple(sum(v["choice"] == c for v in mine) / len(mine) for c in ("left", "tie", "right"))
    return out


def tokens_per_step_without_accumulation(cfg):
    """Wrong: forgets the gradient-accumulation steps."""
    return cfg.batch_size * cfg.max_length


def loop_of_one_word_only(text):
    """Wrong: sees "purple purple" but not "art nouveau, art nouveau, art nouveau"."""
    w = text.lower().replace(",", " ").split()
    return any(a == b for a, b in zip(w, w[1:]))


def clipped_loss_with_min(logprobs, old_logprobs, advantages, mask, cliprange):
    """Wrong: min of the two losses (the surrogate's max of objectives, negated without flipping)."""
    ratio = torch.exp(logprobs - old_logprobs)
    per_token = torch.min(-advantages * ratio, -advantages * ratio.clamp(1 - cliprange, 1 + cliprange))
    return (per_token * mask).sum() / mask.sum()


# Wrong: "more quality words, more taste", so sharp focus first; night last is right.
TASTE_BY_TAG_COUNT = ["a cat in a park, highly detailed, sharp focus", "a cat in a park, vivid colors, centered",
                      "a cat in a park at night"]


CASES = [
    ("00_quickstart", "tokens_per_step", exercises.check_tokens_per_step, tokens_per_step_without_accumulation),
    ("01_dataset_collection", "unseen_subjects", exercises.check_unseen_subjects,
     unseen_subjects_of_the_wrong_split),
    ("02_pb_model", "retention", exercises.check_keyword_retention, retention_of_the_wrong_side),
    ("02_pb_model", "ci_from_lemmas", exercises.check_ci_from_lemmas, ci_without_double_points),
    ("03_sft", "append_baseline", exercises.check_append_baseline, append_without_comma),
    ("03_sft", "label_mask", exercises.check_label_mask, labels_without_eos),
    ("03_sft", "typical_set", exercises.check_typical_set, nucleus_instead_of_typical),
    ("04_reward_models", "dclip", exercises.check_dclip, dclip_without_normalising),
    ("04_reward_models", "taste_ranking", exercises.check_taste_ranking, TASTE_BY_TAG_COUNT),
    ("05_ppo_adm_vci", "gae", exercises.check_gae, gae_without_padding_mask),
    ("05_ppo_adm_vci", "kl_rewards", exercises.check_kl_penalty, kl_rewards_score_at_the_end),
    ("05_ppo_adm_vci", "clipped_loss", exercises.check_clipped_loss, clipped_loss_with_min),
    ("06_evaluation", "avg_rank", exercises.check_average_ranks, ranks_with_ties_averaged),
    ("06_evaluation", "rates", exercises.check_win_rates, rates_by_side),
    ("07_chat_demo", "has_loop", exercises.check_has_loop, loop_of_one_word_only),
]


@pytest.mark.parametrize("stem,name,checker,wrong", CASES, ids=[c[1] for c in CASES])
def test_solution_passes_and_a_wrong_answer_is_rejected(stem, name, checker, wrong):
    verdict = checker(getattr(load_solutions(stem), name))
    assert verdict.ok, verdict.message
    bad = checker(wrong)
    assert not bad.ok
    assert "expected" in bad.message and "\n" not in bad.message, bad.message
    assert repr(bad).startswith("✘")


def test_a_crashing_answer_is_reported_not_raised():
    def broken(*args):
        raise IndexError("oops")

    verdict = exercises.check_gae(broken)
    assert not verdict.ok and "raised IndexError: oops" in verdict.message


def test_a_ranking_of_other_prompts_is_rejected():
    verdict = exercises.check_taste_ranking(["a cat", "a dog", "a fox"])
    assert not verdict.ok and "TASTE_PROMPTS" in verdict.message


def test_every_solution_file_is_checked():
    assert {c[0] for c in CASES} == {p.stem for p in SOLUTIONS.glob("*.py")}
