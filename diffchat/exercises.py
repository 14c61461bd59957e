"""Checkers for the notebooks' coding exercises: a student's function in, a one-line verdict out.

Each checker runs the student's function on a few fixed cases, compares it with the
package's own implementation (which the stage uses), and says what differs in one line.
Solutions live in ``notebooks/solutions/``; ``tests/test_exercises.py`` runs each one
through its checker and feeds each checker a known-wrong answer.
"""

from __future__ import annotations

from collections.abc import Callable
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
