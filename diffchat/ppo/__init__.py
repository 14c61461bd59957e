"""PPO with APC feedback, ADM and VCI (section 3.3 of the DiffChat paper).

One module per idea: core (PPO arithmetic), hydra (policy + value + reference in one
model), adapters (per-family wiring), rollout (sampling, pi+), adm (pi- edits), rewards
(aesthetics, PickScore, CI), vci (CI inside the value), trainer (`train_ppo`).
"""

from diffchat.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    compute_gae,
    entropy_from_logits,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from diffchat.ppo.hydra import Hydra, Trunk
from diffchat.ppo.trainer import train_ppo

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "Hydra",
    "Trunk",
    "compute_gae",
    "entropy_from_logits",
    "kl_penalised_rewards",
    "masked_mean",
    "masked_whiten",
    "policy_loss",
    "train_ppo",
    "value_loss",
]
