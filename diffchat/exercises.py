"""Checkers for the notebooks' coding exercises: a student's function in, a one-line verdict out.

Each checker runs the student's function on a few fixed cases, compares it with the
package's own implementation (which the stage uses), and says what differs in one line.
Solutions live in ``notebooks/solutions/``; ``tests/test_exercises.py`` runs each one
through its checker and feeds each checker a known-wrong answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Verdict:
    """Whether an answer is right, and a one-line message saying so or what differs."""

    ok: bool
    message: str

    def __repr__(self) -> str:
        return ("✔ " if self.ok else "✘ ") + self.message

    def __bool__(self) -> bool:
        return self.ok


def _episodes(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(rewards, values, mask) cases: a full row, rows padded after their last token, a 1-step row."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for batch, width, lengths in ((1, 5, [5]), (3, 7, [7, 4, 1]), (2, 6, [2, 6])):
        mask = torch.zeros(batch, width)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        rewards = torch.randn(batch, width, generator=gen) * mask
        values = torch.randn(batch, width, generator=gen)
        cases.append((rewards, values, mask))
    return cases


def _compare(name: str, got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor) -> str | None:
    """None when equal on the masked positions; else where they first differ."""
    got = torch.as_tensor(got, dtype=want.dtype)
    if got.shape != want.shape:
        return f"{name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    wrong = ((got - want).abs() > 1e-5) & mask.bool()
    if not wrong.any():
        return None
    row, t = (int(i) for i in wrong.nonzero()[0])
    return f"{name}[{row}, {t}] is {got[row, t]:.4f}, expected {want[row, t]:.4f}"


def check_gae(fn: Callable, gamma: float = 0.99, lam: float = 0.95) -> Verdict:
    """Exercise 05.1: ``fn(rewards, values, mask, gamma, lam) -> (advantages, returns)``,
    compared with ``diffchat.ppo.compute_gae`` on padded batches."""
    from diffchat.ppo import compute_gae

    for n, (rewards, values, mask) in enumerate(_episodes()):
        want_adv, want_ret = compute_gae(rewards, values, mask, gamma, lam)
        try:
            got_adv, got_ret = fn(rewards.clone(), values.clone(), mask.clone(), gamma, lam)
        except Exception as err:  # the student's code: report, don't crash the notebook
            return Verdict(False, f"case {n}: your function raised {type(err).__name__}: {err}")
        for name, got, want in (("advantages", got_adv, want_adv), ("returns", got_ret, want_ret)):
            problem = _compare(name, got, want, mask)
            if problem:
                return Verdict(False, f"case {n} (lengths {mask.sum(1).int().tolist()}): {problem}")
    return Verdict(True, "compute_gae matches on all cases, padding included")


def check_kl_penalty(fn: Callable, kl_coef: float = 0.05) -> Verdict:
    """Exercise 05.2: ``fn(logprobs, ref_logprobs, mask, scores, kl_coef) -> rewards`` per token:
    -kl_coef * (logprobs - ref_logprobs), plus each row's score at its last real token."""
    from diffchat.ppo import kl_penalised_rewards

    for n, (logprobs, ref_logprobs, mask) in enumerate(_episodes(seed=1)):
        scores = torch.arange(1.0, len(mask) + 1)
        want, _ = kl_penalised_rewards(logprobs, ref_logprobs, mask, scores, kl_coef)
        try:
            got = fn(logprobs.clone(), ref_logprobs.clone(), mask.clone(), scores.clone(), kl_coef)
        except Exception as err:
            return Verdict(False, f"case {n}: your function raised {type(err).__name__}: {err}")
        problem = _compare("rewards", got, want, mask)
        if problem:
            return Verdict(False, f"case {n} (lengths {mask.sum(1).int().tolist()}): {problem}")
    return Verdict(True, "per-token KL-penalised rewards match, score on the last real token")


def check_clipped_loss(fn: Callable, cliprange: float = 0.2) -> Verdict:
    """Exercise 05.4: ``fn(logprobs, old_logprobs, advantages, mask, cliprange) -> loss``, PPO's
    clipped surrogate (a scalar), compared with ``diffchat.ppo.policy_loss`` on padded batches whose
    ratios spread over 0.5 - 1.5 and whose advantages take both signs."""
    from diffchat.ppo import policy_loss

    for n, (advantages, old_logprobs, mask) in enumerate(_episodes(seed=2)):
        gen = torch.Generator().manual_seed(n)
        ratio = 0.5 + torch.rand(mask.shape, generator=gen)
        logprobs = old_logprobs + ratio.log()
        want = policy_loss(logprobs, old_logprobs, advantages, mask, cliprange)[0]
        try:
            got = fn(logprobs.clone(), old_logprobs.clone(), advantages.clone(), mask.clone(), cliprange)
        except Exception as err:
            return Verdict(False, f"case {n}: your function raised {type(err).__name__}: {err}")
        got = torch.as_tensor(got, dtype=want.dtype)
        if got.shape != want.shape:
            return Verdict(False, f"case {n}: the loss has shape {tuple(got.shape)}, expected a scalar")
        if abs(float(got) - float(want)) > 1e-5:
            return Verdict(False, f"case {n} (lengths {mask.sum(1).int().tolist()}): loss {float(got):.5f}, "
                                  f"expected {float(want):.5f}")
    return Verdict(True, "the clipped loss matches at every ratio and sign, padding excluded")


def _first_difference(cases: list, got: list, want: list) -> Verdict | None:
    for case, g, w in zip(cases, got, want):
        if isinstance(w, float) and isinstance(g, (int, float)) and abs(g - w) <= 1e-6:
            continue
        if g != w:
            return Verdict(False, f"for {case!r}: got {g!r}, expected {w!r}")
    return None


def _verdict(problem: Verdict | None, success: str) -> Verdict:
    return problem if problem is not None else Verdict(True, success)


def _call_all(fn: Callable, cases: list) -> tuple[list, Verdict | None]:
    try:
        return [fn(*case) for case in cases], None
    except Exception as err:  # the student's code: report, don't crash the notebook
        return [], Verdict(False, f"your function raised {type(err).__name__}: {err}")


def check_tokens_per_step(fn: Callable) -> Verdict:
    """Exercise 00.3: ``fn(cfg) -> int``: the most tokens one optimiser step of a training phase
    sees (``TrainConfig``: batch size x gradient accumulation x max length)."""
    from dataclasses import replace

    from diffchat.profiles import get_profile

    cases = [(getattr(get_profile(name), phase),) for name in ("tiny", "paper") for phase in ("sft", "rm", "rl")]
    cases.append((replace(cases[0][0], grad_accum=4),))
    got, error = _call_all(fn, cases)
    return _verdict(error if error is not None else
                    _first_difference(cases, got, [cfg.tokens_per_step() for (cfg,) in cases]),
                    "tokens per step match on all cases")


def check_unseen_subjects(fn: Callable) -> Verdict:
    """Exercise 01.1: ``fn(train_rows, test_rows) -> set`` of the test rows' subjects that no
    training row has (the mini-world's held-out subjects)."""
    from diffchat.data.miniworld import generate_triplets

    train = generate_triplets(200, seed=1)
    cases = [(train, generate_triplets(40, seed=2, split=split)) for split in ("test_seen", "test_unseen")]
    cases.append((train[:3], train[:10]))
    want = [{r["subject"] for r in test} - {r["subject"] for r in tr} for tr, test in cases]
    got, error = _call_all(fn, cases)
    if error is not None:
        return error
    for n, (g, w) in enumerate(zip(got, want)):
        if set(g) != w:
            extra, missing = sorted(set(g) - w)[:3], sorted(w - set(g))[:3]
            return Verdict(False, f"case {n}: {len(set(g))} subjects, expected {len(w)}"
                                  f" (extra {extra}, missing {missing})")
    return Verdict(True, "the unseen subjects match on all cases")


def check_keyword_retention(fn: Callable) -> Verdict:
    """Exercise 02.1: ``fn(raw, beautified) -> float``: the share of the raw prompt's keywords
    (Listing 1, line 10) that are still keywords of the beautified prompt; 1.0 without keywords."""
    from diffchat.instructpe import keyword_retention

    cases = [("a red fox in the snow", "a red fox in the snow, highly detailed, 8k"),
             ("a red fox in the snow", "a fox, highly detailed"),
             ("two cats sleeping on a sofa", "a portrait of a dog, oil painting"),
             ("the", "a castle at night")]
    got, error = _call_all(fn, cases)
    return _verdict(error if error is not None else _first_difference(cases, got, [keyword_retention(*c) for c in cases]),
                    "keyword retention matches on all cases")


def check_append_baseline(fn: Callable) -> Verdict:
    """Exercise 03.1: ``fn(x, i) -> str``: the "human prompt writer" of Fig. 6, the instruction's
    words appended to the prompt after a comma (trailing commas and spaces of x dropped)."""
    from diffchat.edit_metrics import baseline_outputs

    cases = [("a black cat in a garden, highly detailed", "make it night"),
             ("a castle, oil painting, ", "add a dragon"),
             ("portrait of a sailor", "give him a hat")]
    want = baseline_outputs([{"beautified_source_prompt": x, "instruction": i} for x, i in cases], "append")
    got, error = _call_all(fn, cases)
    return _verdict(error if error is not None else _first_difference(cases, got, want), "the append baseline matches on all cases")


def check_dclip(fn: Callable) -> Verdict:
    """Exercise 04.1: ``fn(i0, i1, t0, t1) -> tensor``: D-CLIP-S, cos(I1 - I0, T1 - T0) of the
    L2-normalised features, one value per row."""
    from diffchat.scorers import directional_similarity

    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(4, 16, generator=gen) * scale for scale in (1.0, 3.0, 0.5, 2.0)]
    want = directional_similarity(*feats)
    try:
        got = torch.as_tensor(fn(*(f.clone() for f in feats)), dtype=torch.float32).reshape(-1)
    except Exception as err:
        return Verdict(False, f"your function raised {type(err).__name__}: {err}")
    if got.shape != want.shape:
        return Verdict(False, f"got {got.numel()} values, expected one per row ({want.numel()})")
    bad = (got - want).abs() > 1e-5
    if bad.any():
        row = int(bad.nonzero()[0])
        return Verdict(False, f"row {row}: got {got[row]:.4f}, expected {want[row]:.4f}"
                              " (normalise each feature before taking the differences)")
    return Verdict(True, "D-CLIP-S matches on all rows")


# Exercise 04.2: three prompts to rank by planted taste before looking at their images.
TASTE_PROMPTS = ("a cat in a park at night", "a cat in a park, highly detailed, sharp focus",
                 "a cat in a park, vivid colors, centered")


def check_taste_ranking(ranking: Sequence[str]) -> Verdict:
    """Exercise 04.2: ``ranking``, the three ``TASTE_PROMPTS`` from the highest planted taste to
    the lowest (the mean over the five renderers and eight seeds, ``taste.prompt_taste``)."""
    from diffchat.images.taste import prompt_taste

    ranking = list(ranking)
    if sorted(ranking) != sorted(TASTE_PROMPTS):
        return Verdict(False, f"expected the three prompts of TASTE_PROMPTS, each once; got {ranking!r}")
    scores = dict(zip(TASTE_PROMPTS, prompt_taste(TASTE_PROMPTS).tolist()))
    want = sorted(TASTE_PROMPTS, key=scores.get, reverse=True)
    if ranking != want:
        return Verdict(False, "your order is not the world's; expected, highest first: "
                              + "; ".join(f"{p!r} {scores[p]:.2f}" for p in want))
    return Verdict(True, "right order: " + "; ".join(f"{p!r} {scores[p]:.2f}" for p in want))


def check_average_ranks(fn: Callable) -> Verdict:
    """Exercise 06.1: ``fn(table) -> Series`` of each method's rank averaged over its metrics
    (higher is better, ties share the best rank, NaN skipped), compared with ``average_ranks``
    on the paper's Table 1 and on tables with ties and missing metrics."""
    import math

    import pandas as pd

    from diffchat.evaluation import PAPER_TABLE1, average_ranks

    nan = math.nan
    cases = [PAPER_TABLE1.drop(columns="Avg. Rank"),
             pd.DataFrame({"a": [3.0, 3.0, 1.0], "b": [1.0, nan, 2.0]}, index=["x", "y", "z"]),
             pd.DataFrame({"a": [1.0, 1.0, 1.0], "b": [nan, 2.0, 5.0]}, index=["x", "y", "z"])]
    for n, table in enumerate(cases):
        want = average_ranks(table)
        try:
            got = pd.Series(fn(table.copy()), dtype=float)
        except Exception as err:
            return Verdict(False, f"case {n}: your function raised {type(err).__name__}: {err}")
        for method in table.index:
            if method not in got.index:
                return Verdict(False, f"case {n}: no value for {method!r}")
            if abs(got[method] - want[method]) > 1e-9:
                return Verdict(False, f"case {n}: {method!r} got {got[method]:.3f}, expected {want[method]:.3f}")
    return Verdict(True, "average ranks match, the paper's Table 1 included")


def check_win_rates(fn: Callable) -> Verdict:
    """Exercise 06.2: ``fn(votes) -> {opponent: (win, tie, lose)}`` shares from DiffChat's side,
    whichever side its image was shown on; compared with ``human_eval.win_rates``."""
    from diffchat.human_eval import win_rates

    votes = [{"rater": r, "item": f"{o}/{k}", "left": left, "right": right, "choice": c,
              "winner": {"left": left, "right": right, "tie": "tie"}[c], "ours": "ppo", "opponent": o}
             for r, o, k, left, right, c in (
                 ("ann", "teacher", 0, "ppo", "teacher", "left"), ("ann", "teacher", 1, "teacher", "ppo", "left"),
                 ("bob", "teacher", 0, "teacher", "ppo", "right"), ("ann", "human", 0, "human", "ppo", "tie"),
                 ("bob", "human", 0, "ppo", "human", "right"), ("cat", "human", 0, "human", "ppo", "right"))]
    want = {o: tuple(row) for o, row in win_rates(votes)[["Win", "Tie", "Lose"]].iterrows()}
    labels = {"Teacher LLM (ChatGPT row)": "teacher", "Human prompt writer (append)": "human"}
    try:
        got = fn([dict(v) for v in votes])
    except Exception as err:
        return Verdict(False, f"your function raised {type(err).__name__}: {err}")
    for label, shares in want.items():
        opponent = labels[label]
        if opponent not in got:
            return Verdict(False, f"no rates for opponent {opponent!r}")
        if any(abs(g - w) > 1e-9 for g, w in zip(got[opponent], shares)):
            return Verdict(False, f"{opponent}: got {tuple(round(g, 3) for g in got[opponent])}, "
                                  f"expected {tuple(round(w, 3) for w in shares)} (win, tie, lose)")
    return Verdict(True, "win / tie / lose rates match for every opponent")


def check_has_loop(fn: Callable) -> Verdict:
    """Exercise 07.1: ``fn(text) -> bool``: does the prompt loop, a word twice in a row or a 2- or
    3-word phrase three times in a row (case and punctuation ignored)? The tiny model's chats do."""
    from diffchat.edit_metrics import has_loop

    cases = [("a purple purple cat",), ("a cat in a garden, vaporwave, Vaporwave",),
             ("a cat, art nouveau, art nouveau, art nouveau",), ("a red cat with a red hat",),
             ("a fox in a forest in a forest",), ("soft light, 8k, soft light, 8k, soft light, 8k",),
             ("a cat at night, highly detailed",), ("",)]
    got, error = _call_all(fn, cases)
    return _verdict(error if error is not None else _first_difference(cases, got, [has_loop(*c) for c in cases]),
                    "loop detection matches on all cases")


CI_CASES = [("a red fox in the snow", "give it a hat", "a red fox with a hat in the snow", y)
            for y in ("a red fox with a hat in the snow", "a red fox in the snow", "a fox with a hat",
                      "a crimson fox with a chapeau in the snow", "")]
CI_CASES.append(("a castle at night", "make it a watercolor painting", "a castle at night, watercolor painting",
                 "a watercolor painting"))


def check_ci_from_lemmas(fn: Callable) -> Verdict:
    """Exercise 02.2: ``fn(keywords, highlighted, y_lemmas) -> float``: Listing 1's raw CI score
    from its three sets (``explain_ci``'s fields): each keyword of y_o found in y, itself or a
    synonym (``integrity.synonyms``), adds 2 points when the word found is highlighted, else 1;
    the score is min(points / number of keywords, 1), and 1.0 when y_o has no keywords."""
    from diffchat.integrity import explain_ci

    traces = [explain_ci(*case) for case in CI_CASES]
    cases = [(list(t.keywords), list(t.highlighted), list(t.y_lemmas)) for t in traces]
    got, error = _call_all(fn, cases)
    if error is not None:
        return error
    for case, g, t in zip(CI_CASES, got, traces):
        if not isinstance(g, (int, float)) or abs(g - t.raw) > 1e-6:
            return Verdict(False, f"for y={case[3]!r} (keywords {t.keywords}, highlighted {t.highlighted}): "
                                  f"got {g!r}, expected {t.raw}")
    return Verdict(True, "the raw CI score matches ci_score on all cases")


def check_label_mask(fn: Callable) -> Verdict:
    """Exercise 03.1: ``fn(prompt_ids, completion_ids, eos_id) -> labels`` of the row
    ``prompt + completion + [eos]``: -100 under the prompt, the ids of the completion and EOS."""
    from diffchat.sft import completion_labels

    cases = [([5, 6, 7, 8], [9, 10], 2), ([11], [12, 13, 14], 0), ([3, 4], [], 1)]
    got, error = _call_all(fn, [(list(prompt), list(completion), eos) for prompt, completion, eos in cases])
    if error is not None:
        return error
    return _verdict(_first_difference(cases, [list(g) for g in got], [completion_labels(*c) for c in cases]),
                    "the labels match the trainer's on all cases")


def _distributions() -> list[torch.Tensor]:
    """Next-token distributions: peaked, flat-ish, two-humped, nearly uniform."""
    gen = torch.Generator().manual_seed(3)
    logits = [torch.tensor([4.0, 2.5, 1.0, 0.5, 0.0, -1.0]), torch.randn(12, generator=gen),
              torch.tensor([3.0, 3.1, -2.0, -2.5, -3.0, 0.2, 0.1]), torch.randn(20, generator=gen) * 0.1]
    return [x.softmax(-1) for x in logits]


def check_typical_set(fn: Callable) -> Verdict:
    """Exercise 03.3: ``fn(probs, p) -> set`` of the token ids locally typical sampling with mass
    ``p`` keeps: sort the tokens by |-log prob - entropy| (closest first) and keep them until they
    hold mass p, the one that crosses p included. Compared with the warper PPO's pi+ uses."""
    from diffchat.ppo.rollout import TypicalSampling

    cases = [(probs, p) for probs in _distributions() for p in (0.5, 0.9)]
    for n, (probs, p) in enumerate(cases):
        kept = TypicalSampling(p)(None, probs.log()[None])[0].isfinite()
        want = set(kept.nonzero().flatten().tolist())
        try:
            got = {int(t) for t in fn(probs.clone(), p)}
        except Exception as err:
            return Verdict(False, f"case {n}: your function raised {type(err).__name__}: {err}")
        if got != want:
            return Verdict(False, f"case {n} (p={p}, probs {[round(x, 3) for x in probs.tolist()]}): "
                                  f"got {sorted(got)}, expected {sorted(want)}")
    return Verdict(True, "the typical sets match the warper's on all cases")
