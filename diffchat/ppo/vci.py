"""VCI: value estimation with content integrity (section 3.3).

V'(s_t) = V(s_t) + alpha * CI(s_t), used in place of V inside GAE (eqs. 5-6), with
s_t = (x_o, i, y_o, y_<t): the state in which token y_t is chosen holds the first t
response tokens, and CI(s_t) is Listing 1's score of that prefix (computed exactly for
every prefix by ``integrity.batch_prefix_ci_scores`` from the per-token text pieces).
delta_t then carries alpha * (gamma * CI(y_<=t) - CI(y_<t)): a token that completes a
keyword of y_o earns credit where it is written, which pushes key content earlier
(the paper's Table 2b). The state after the last token is terminal (V' = 0).

Two choices the paper leaves open, each a switch (PPOConfig):

* ``vci_threshold`` (default False): CI inside V' is the raw score, not Listing 1's
  thresholded one. Thresholded CI is 0 for every prefix until 70% of the keywords are
  in, then jumps: it tells the critic nothing about progress before that, which is what
  VCI is for. The reward keeps the thresholded CI (section 3.3). True gives Listing 1's.
* ``vci_critic_target``: what the value head regresses on.
  "plain" (default): the plain GAE returns A + V of the rewards, so V estimates the
  policy's value and V' = V + alpha * CI stays V plus the CI term. This keeps VCI's
  effect once the critic has fit: the advantages carry the one-step shaping
  alpha * (gamma * CI(s_{t+1}) - CI(s_t)), summed with weights (gamma * lam)^l, which
  with lam < 1 does not telescope down to a baseline.
  "v": returns A' + V (advantages computed with V', plus the critic's own V). Then
  alpha * CI is potential-based shaping that the critic learns to cancel: once it fits,
  V + alpha * CI equals plain PPO's V and so do the advantages (measured: 8e-9 apart).
  "v_prime": returns A' + V', the lambda-returns of V': the critic learns to include
  the CI terms itself, and alpha * CI is added on top again at the next rollout.

alpha = 0 makes all of this an exact no-op.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from diffchat.integrity import batch_prefix_ci_scores
from diffchat.ppo.core import compute_gae

CRITIC_TARGETS = ("plain", "v", "v_prime")


def state_ci(pieces: Sequence[Sequence[str]], references: Sequence[tuple[str, str, str]],
             width: int, threshold: float | None) -> Tensor:
    """CI(s_t) for t = 0 .. len-1 of each row: the score of its first t response tokens.

    `pieces[b]` are row b's per-token text pieces, `references[b]` its (x_o, i, y_o);
    the result is [batch, width], zero after each row's last token.
    """
    batch = [(*ref, ["", *p[:-1]]) for ref, p in zip(references, pieces)]
    out = torch.zeros(len(batch), width)
    for b, scores in enumerate(batch_prefix_ci_scores(batch, threshold)):
        out[b, : len(scores)] = torch.tensor(scores)
    return out


def vci_gae(rewards: Tensor, values: Tensor, mask: Tensor, ci: Tensor, alpha: float,
            gamma: float, lam: float, critic_target: str = "plain") -> tuple[Tensor, Tensor]:
    """GAE with V'(s_t) = V(s_t) + alpha * CI(s_t); returns (advantages, critic targets)."""
    if critic_target not in CRITIC_TARGETS:
        raise ValueError(f"vci_critic_target must be one of {CRITIC_TARGETS}, got {critic_target!r}")
    values_prime = values + alpha * ci.to(values)
    advantages, returns_prime = compute_gae(rewards, values_prime, mask, gamma, lam)
    if critic_target == "plain":
        return advantages, compute_gae(rewards, values, mask, gamma, lam)[1]
    return advantages, (returns_prime if critic_target == "v_prime" else advantages + values)
