"""Solutions to notebook 05's exercises (checked by diffchat.exercises in tests/test_exercises.py)."""

import torch


def gae(rewards, values, mask, gamma, lam):
    """Exercise 05.1: GAE, walking backwards; the state after a row's last token is terminal."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros(rewards.shape[0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, advantages + values


def kl_rewards(logprobs, ref_logprobs, mask, scores, kl_coef):
    """Exercise 05.2: -beta * (log pi - log pi_ref) per token, plus the score on the last real token."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def clipped_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    """Exercise 05.4: mean over real tokens of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps))."""
    ratio = torch.exp(logprobs - old_logprobs)
    per_token = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cliprange, 1 + cliprange))
    return (per_token * mask).sum() / mask.sum()


# Exercise 05.3 (no code): with vci_alpha = 0, V' = V, so vci_gae returns exactly compute_gae's
# advantages; as alpha grows, each token that completes a keyword of y_o earns
# alpha * (gamma * CI(y_<=t) - CI(y_<t)) more advantage where it is written, so the policy is
# pushed to write the instruction's keyword early (Table 2b), and a very large alpha makes that
# shaping term dominate the KL and the image rewards.
