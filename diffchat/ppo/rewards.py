"""The sequence reward of section 3.3: aesthetics, preference (PickScore) and content integrity.

score(y) = (1 - a) * G_aes(y) + a * G_pick(y) + w_ci * CI_0.7(x_o, i, y_o, y),
reward   = clip(score, -reward_clip, reward_clip).

* G_rm(y) = (RM(y) - RM(y_ref)) / std_rm: each text reward model's prediction taken as
  a gain over its prediction for the dataset's reference target y_ref (the row's
  beautified_target_prompt), in units of the RM's label std - BeautifulPrompt's recipe,
  which removes the per-prompt offset both RMs carry. The PickScore RM also reads the
  input prompt x, as it was trained to (reward_models.format_input).
* a = 0.7 (BeautifulPrompt's mix); w_ci = 1 (ours: the gains move by about +-1, CI in
  [0.7, 1] or 0, so a prompt that loses its content loses about one std of image
  quality); CI thresholded at 0.7 as section 3.3 says; clip 10 (BeautifulPrompt).
* References for CI: (x_o, i, y_o) are InstructPix2Pix's raw source prompt, instruction
  and raw target prompt. The released InstructPE rows have no raw prompts: there we use
  beautified_source_prompt as x_o and beautified_target_prompt as y_o.

``ci_reward=False`` (the ppo_no_ci_reward ablation) drops the CI term from the score; CI is
still computed and logged. Every term is returned separately for logging. BeautifulPrompt also scaled rewards by a
running std; we do not: the gains are already in std units and advantages are whitened.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from diffchat.integrity import ci_score
from diffchat.profiles import PPOConfig
from diffchat.reward_models import TextRewardModel


def references(row: dict) -> tuple[str, str, str]:
    """(x_o, i, y_o) for the CI score of a row (beautified prompts when raw ones are missing)."""
    x_o = row.get("source_prompt") or row["beautified_source_prompt"]
    y_o = row.get("target_prompt") or row["beautified_target_prompt"]
    return x_o.strip(), row["instruction"].strip(), y_o.strip()


class SequenceReward:
    """Scores finished responses: the clipped score and every term behind it."""

    def __init__(self, aesthetic: TextRewardModel, pickscore: TextRewardModel, cfg: PPOConfig) -> None:
        self.aesthetic, self.pickscore, self.cfg = aesthetic, pickscore, cfg
        self._reference_scores: dict[tuple[str, str], tuple[float, float]] = {}

    def _rm_scores(self, prompts: Sequence[str], inputs: Sequence[str]) -> tuple[list[float], list[float]]:
        return self.aesthetic.predict(prompts), self.pickscore.predict(prompts, list(inputs))

    def _reference(self, rows: Sequence[dict]) -> tuple[list[float], list[float]]:
        """RM scores of each row's reference target (cached: they never change)."""
        keys = [(r["beautified_target_prompt"].strip(), r["beautified_source_prompt"].strip()) for r in rows]
        new = sorted({k for k in keys if k not in self._reference_scores})
        if new:
            aes, pick = self._rm_scores([y for y, _ in new], [x for _, x in new])
            self._reference_scores.update(zip(new, zip(aes, pick)))
        return [self._reference_scores[k][0] for k in keys], [self._reference_scores[k][1] for k in keys]

    def __call__(self, rows: Sequence[dict], texts: Sequence[str]) -> tuple[Tensor, dict[str, list[float]]]:
        cfg = self.cfg
        prompts = [t.strip() for t in texts]
        aes, pick = self._rm_scores(prompts, [r["beautified_source_prompt"].strip() for r in rows])
        ref_aes, ref_pick = self._reference(rows)
        aes_gain = [(a - r) / self.aesthetic.std for a, r in zip(aes, ref_aes)]
        pick_gain = [(p - r) / self.pickscore.std for p, r in zip(pick, ref_pick)]
        ci_raw = [ci_score(*references(r), y, threshold=None) for r, y in zip(rows, prompts)]
        ci = [c if c >= cfg.ci_threshold else 0.0 for c in ci_raw]
        mix, ci_weight = cfg.reward_mix_pickscore, cfg.reward_ci_weight if cfg.ci_reward else 0.0
        score = [(1 - mix) * a + mix * p + ci_weight * c
                 for a, p, c in zip(aes_gain, pick_gain, ci)]
        reward = [min(max(s, -cfg.reward_clip), cfg.reward_clip) for s in score]
        terms = {"reward": reward, "score": score, "aesthetic": aes, "aesthetic_gain": aes_gain,
                 "pickscore": pick, "pickscore_gain": pick_gain, "ci": ci, "ci_raw": ci_raw}
        return torch.tensor(reward), terms
