"""PPO's arithmetic (Schulman et al., 2017; Ziegler et al., 2019), on [batch, time] tensors.

Every tensor here is indexed by response token: column t is the action y_t, taken in the
state s_t = (T(x, i), y_<t). ``mask`` is 1 on a row's real response tokens (a prefix of the
row, up to and including its EOS) and 0 on the padding after it; every sum and mean is
taken over the mask only, so whatever sits after EOS never counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(x * m) / sum(m), over all elements or along `dim`."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, std_floor: float = 0.0) -> Tensor:
    """(x - mean) / max(std, std_floor) over the masked elements; masked-out entries become 0.

    std = sqrt(var + 1e-8). ``std_floor`` keeps advantages that hardly differ (samples that all
    scored alike) from being blown up to unit variance: below the floor they are scaled by
    1 / std_floor, not 1 / std. With ``shift_mean=False`` the mean is added back.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    white = (x - mean) / torch.sqrt(var + 1e-8).clamp(min=std_floor)
    if not shift_mean:
        white = white + mean
    return white * mask


def kl_penalised_rewards(
    logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, scores: Tensor, kl_coef: float
) -> tuple[Tensor, Tensor]:
    """Per-token rewards r_t = -beta * kl_t, plus the sequence score at the last real token.

    kl_t = log pi(y_t | s_t) - log pi_ref(y_t | s_t) (Ziegler et al.'s per-token KL
    estimate). Returns (rewards, kl), both zero after each row's last real token.
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(1).long() - 1  # index of each row's last real token (its EOS if any)
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards, kl


class AdaptiveKLController:
    """beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon) (Ziegler et al.).

    KL is the mean per-sequence KL of the last rollout; beta grows when the policy drifts
    further than `target` from the reference and shrinks when it stays closer.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


class FixedKLController:
    """A constant beta (the adaptive controller switched off)."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


def compute_gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al., 2015b; paper eqs. 5-6).

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t);  A_t = delta_t + gamma * lam * A_{t+1}.
    ``values[:, t]`` is V(s_t); the state after a row's last real token is terminal
    (bootstrap 0). Masked positions get advantage 0. Returns (advantages, returns) with
    returns = advantages + values, before any whitening.
    """
    rewards, masked_values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = masked_values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        delta = rewards[:, t] + gamma * next_value - masked_values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
    return advantages, advantages + values


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Clipped surrogate: mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    ratio = exp(logp - logp_old). Returns (loss, clip fraction, approx-KL), where
    approx-KL = mean((ratio - 1) - log ratio), the low-variance estimate of KL(old || new).
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, clip_frac.detach(), approx_kl.detach()


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float,
    vf_coef: float,
) -> tuple[Tensor, Tensor]:
    """vf_coef * 0.5 * mean(max((V - R)^2, (V_clip - R)^2)), V_clip = V_old + clip(V - V_old).

    Returns (scaled loss, value clip fraction).
    """
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(loss_unclipped, loss_clipped), mask)
    clip_frac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return vf_coef * loss, clip_frac.detach()


def entropy_from_logits(logits: Tensor) -> Tensor:
    """H(pi(. | s_t)) = logsumexp(z) - sum(softmax(z) * z), per position."""
    probs = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)
