"""PPO training of DiffChat with APC feedback, ADM and VCI (section 3.3, appendix A.5).

One iteration:
  1. sample `rollouts / samples_per_prompt` InstructPE rows and roll out T(x, i) -> y
     `samples_per_prompt` times each (pi+ = typical sampling, at `temperature`);
  2. pi-: edit ~4% of the responses (ppo/adm.py);
  3. score them (ppo/rewards.py): aesthetics and PickScore gains + content integrity,
     minus `missing_eos_penalty` for a response cut off without EOS;
  4. one no-grad pass over the rollout: frozen trunk (cached), behaviour log-probs and
     values (policy top), reference log-probs (reference top);
  5. per-token rewards -beta * KL with the score at the last real token; GAE with
     V' = V + alpha * CI (VCI); whitened advantages (std floored at `whiten_std_floor`);
     on the first iteration the value head's bias is set so V starts at the mean score;
  6. `rl.epochs` PPO epochs over shuffled mini-batches, reusing the cached trunk, the
     gradient norm clipped at `max_grad_norm`;
  7. adapt the KL coefficient; log; checkpoint every `checkpoint_every` iterations.

Dropout stays off (eval mode) in rollouts and updates, so the first PPO epoch on fresh
data has ratio exactly 1. Accelerate places the model, runs backward and bf16 autocast
on GPUs with fp32 master weights, so `accelerate launch` runs this entry point unchanged
(each process samples its own rows; a resume restores the main process's RNG).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from diffchat.loading import load_causal_lm, load_tokenizer
from diffchat.ppo.adm import KeywordPool, apply_negative_edits
from diffchat.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from diffchat.ppo.hydra import Hydra
from diffchat.ppo.rewards import SequenceReward, references
from diffchat.ppo.rollout import Rollout, sample_rollout
from diffchat.ppo.vci import state_ci, vci_gae
from diffchat.profiles import PPOConfig, TrainConfig
from diffchat.reward_models import TextRewardModel

CHECKPOINT = "checkpoint"
STATE_FILE = "state.safetensors"
# Checkpoints of diffchat before STATE_FILE: a pickle, which is never loaded (it could run code).
OLD_STATE_FILE = "state.pt"
LOG_FILE = "ppo_log.json"

# Scores finished responses: (rows, texts) -> (score per row, {term: value per row}); the terms
# hold at least "reward". SequenceReward is the paper's; tests pass synthetic ones.
RewardFn = Callable[[Sequence[dict], Sequence[str]], tuple[torch.Tensor, dict[str, list[float]]]]


def _settings(rl: TrainConfig, ppo: PPOConfig, seed: int) -> dict[str, Any]:
    return {"rl": dataclasses.asdict(rl), "ppo": dataclasses.asdict(ppo), "seed": seed}


def _rng_state(rng: random.Random) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The RNG states as plain data (Python, NumPy) and tensors (torch, CUDA)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    plain = {"python": rng.getstate(), "global_python": random.getstate(),
             "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return plain, tensors


def _python_state(state: list) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss


def _set_rng_state(rng: random.Random, plain: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    rng.setstate(_python_state(plain["python"]))
    random.setstate(_python_state(plain["global_python"]))
    kind, keys, pos, has_gauss, gauss = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


class _Run:
    """The state of one PPO run: models, optimiser, schedule, KL controller, RNG, log."""

    def __init__(self, sft_model: Path, make_reward: Callable[[torch.device], RewardFn], rows: Sequence[dict],
                 rl: TrainConfig, ppo: PPOConfig, seed: int) -> None:
        from accelerate import Accelerator

        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        self.accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no")
        self.rl, self.ppo, self.rows = rl, ppo, list(rows)
        self.rng = random.Random(seed + self.accelerator.process_index)
        torch.manual_seed(seed + self.accelerator.process_index)
        device = self.accelerator.device

        self.tokenizer = load_tokenizer(sft_model)
        # fp32 master weights; autocast mixes in bf16 on GPUs (section 4.1).
        model = load_causal_lm(sft_model, dtype="float32", device=device).eval()
        self.hydra = Hydra(model, rl.unfreeze_layers, ppo.temperature).to(device).eval()
        self.reward = make_reward(device)
        pool_rows = random.Random(seed).sample(self.rows, min(ppo.adm_pool_rows, len(self.rows)))
        self.pool = KeywordPool(references(r)[2] for r in pool_rows) if ppo.pi_minus else None

        self.params = [p for p in self.hydra.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(self.params, lr=rl.lr, betas=ppo.adam_betas, eps=ppo.adam_eps,
                                      weight_decay=rl.weight_decay)
        self.prompts = min(ppo.rollouts // ppo.samples_per_prompt, len(self.rows))
        updates_per_epoch = math.ceil(self.prompts * ppo.samples_per_prompt / ppo.mini_batch_size)
        self.total_updates = ppo.iterations * int(rl.epochs) * updates_per_epoch
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.total_updates)
        self.model, self.optimizer = self.accelerator.prepare(self.hydra, optimizer)
        self.kl_ctl = (AdaptiveKLController(ppo.init_kl_coef, ppo.target_kl, ppo.kl_horizon)
                       if ppo.adaptive_kl else FixedKLController(ppo.init_kl_coef))
        self.iteration, self.history = 0, []

    # ---- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, folder: Path, settings: dict[str, Any]) -> None:
        """Everything needed to continue exactly where this iteration ended: tensors (weights,
        optimiser moments, torch RNG) in safetensors, the rest as JSON in its metadata, so
        loading it runs no code (no pickle)."""
        if not self.accelerator.is_main_process:
            return
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"trainable.{n}": t for n, t in self.hydra.trainable_state().items()}
        optimizer = self.optimizer.state_dict()
        moments: dict[str, dict[str, Any]] = {}
        for pid, values in optimizer["state"].items():
            moments[str(pid)] = {k: v for k, v in values.items() if not torch.is_tensor(v)}
            tensors.update({f"optimizer.{pid}.{k}": v for k, v in values.items() if torch.is_tensor(v)})
        rng, rng_tensors = _rng_state(self.rng)
        tensors.update(rng_tensors)
        plain = {"iteration": self.iteration, "settings": settings,
                 "optimizer": {"param_groups": optimizer["param_groups"], "state": moments},
                 "scheduler": self.scheduler.state_dict(), "kl": self.kl_ctl.state_dict(),
                 "rng": rng, "history": self.history}
        tmp = folder / f"{STATE_FILE}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                  metadata={"state": json.dumps(plain)})
        tmp.replace(folder / STATE_FILE)

    def load_checkpoint(self, folder: Path, settings: dict[str, Any]) -> None:
        path = folder / STATE_FILE
        try:
            with safe_open(path, "pt") as f:
                plain = json.loads(f.metadata()["state"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if json.loads(json.dumps(plain["settings"])) != json.loads(json.dumps(settings)):
                raise ValueError(f"{folder} was written with other settings: remove it to start over")
            trainable = {k.removeprefix("trainable."): v for k, v in tensors.items() if k.startswith("trainable.")}
            state: dict[int, dict[str, Any]] = {int(pid): dict(values)
                                                for pid, values in plain["optimizer"]["state"].items()}
            for k, v in tensors.items():
                if k.startswith("optimizer."):
                    _, pid, name = k.split(".", 2)
                    state[int(pid)][name] = v
            groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g
                      for g in plain["optimizer"]["param_groups"]]
            self.hydra.load_trainable_state(trainable)
            self.optimizer.load_state_dict({"state": state, "param_groups": groups})
            self.scheduler.load_state_dict(plain["scheduler"])
            self.kl_ctl.load_state_dict(plain["kl"])
            _set_rng_state(self.rng, plain["rng"], tensors)
            self.iteration, self.history = plain["iteration"], plain["history"]
        except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a readable PPO checkpoint ({type(err).__name__}: {err}): "
                             f"remove {folder} to start the PPO run over") from None

    # ---- one iteration ----------------------------------------------------------------------

    def rollout(self) -> tuple[Rollout, list[Any], torch.Tensor, dict[str, list[float]]]:
        """Steps 1-3: sample, pi- edits, sequence scores (with the missing-EOS penalty)."""
        ppo = self.ppo
        picks = self.rng.sample(range(len(self.rows)), self.prompts)
        rows = [self.rows[i] for i in picks for _ in range(ppo.samples_per_prompt)]
        with self.accelerator.autocast():
            rollout = sample_rollout(self.hydra.model, self.tokenizer, rows, max_length=self.rl.max_length,
                                     max_new_tokens=ppo.max_new_tokens,
                                     typical_p=ppo.typical_p if ppo.pi_plus else None,
                                     temperature=ppo.temperature)
        edits: list[Any] = []
        if ppo.pi_minus:
            rollout, edits = apply_negative_edits(
                rollout, self.tokenizer, [references(r)[2] for r in rows], self.pool, self.rng,
                ppo.adm_negative_prob, ppo.adm_remove_prob)
        scores, terms = self.reward(rows, rollout.texts)
        ends = rollout.response_ids.gather(1, rollout.response_mask.sum(1, keepdim=True) - 1).squeeze(1)
        terms["missing_eos"] = (ends != self.tokenizer.eos_token_id).float().tolist()
        scores = scores.float() - ppo.missing_eos_penalty * torch.tensor(terms["missing_eos"])
        return rollout, edits, scores.to(self.accelerator.device), terms

    @torch.no_grad()
    def evaluate(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """Step 4: trunk cache, behaviour log-probs and values, reference log-probs."""
        ids, chunk = rollout.response_ids, self.ppo.mini_batch_size
        with self.accelerator.autocast():
            trunk = self.hydra.trunk(rollout.input_ids, rollout.attention_mask)
            parts = [self.hydra(trunk.hidden[s:s + chunk], trunk.attention_mask[s:s + chunk], ids[s:s + chunk])
                     for s in range(0, len(ids), chunk)]
            ref = torch.cat([self.hydra.reference_logprobs(trunk[s:s + chunk], ids[s:s + chunk])
                             for s in range(0, len(ids), chunk)])
        return {"trunk": trunk, "logprobs": torch.cat([p[0] for p in parts]),
                "values": torch.cat([p[1] for p in parts]), "ref_logprobs": ref}

    @torch.no_grad()
    def init_value_head(self, old: dict[str, torch.Tensor], mask: torch.Tensor, scores: torch.Tensor) -> None:
        """Shift the value head's output bias so that V starts at the mean score (value_init)."""
        shift = scores.mean() - masked_mean(old["values"], mask)
        self.hydra.value_head[-1].bias += shift
        old["values"] += shift

    def advantages(self, rollout: Rollout, old: dict[str, torch.Tensor], scores: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """Step 5: KL-penalised rewards, (VCI-)GAE, whitening.

        Returns (advantages, critic targets, kl, the advantages' std before whitening)."""
        ppo, mask = self.ppo, rollout.response_mask.float()
        rewards, kl = kl_penalised_rewards(old["logprobs"], old["ref_logprobs"], mask, scores, self.kl_ctl.value)
        alpha = ppo.vci_alpha if ppo.vci else 0.0
        if alpha:
            ci = state_ci(rollout.pieces, [references(r) for r in rollout.rows], mask.shape[1],
                          ppo.ci_threshold if ppo.vci_threshold else None).to(mask.device)
        else:
            ci = torch.zeros_like(mask)
        adv, returns = vci_gae(rewards, old["values"], mask, ci, alpha, ppo.gamma, ppo.lam, ppo.vci_critic_target)
        adv_std = float(masked_mean((adv - masked_mean(adv, mask)) ** 2, mask).sqrt())
        if ppo.whiten_advantages:
            adv = masked_whiten(adv, mask, std_floor=ppo.whiten_std_floor)
        return adv, returns, kl, adv_std

    def update(self, rollout: Rollout, old: dict[str, torch.Tensor], adv: torch.Tensor,
               returns: torch.Tensor) -> dict[str, float]:
        """Step 6: `rl.epochs` epochs of clipped PPO updates over shuffled mini-batches."""
        ppo, mask, trunk = self.ppo, rollout.response_mask.float(), old["trunk"]
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "clip_frac", "approx_kl",
                                                         "value_clip_frac", "entropy", "grad_norm")}
        for _ in range(int(self.rl.epochs)):
            order = torch.randperm(len(mask)).to(mask.device)
            for mb in order.split(ppo.mini_batch_size):
                m = mask[mb]
                with self.accelerator.autocast():
                    logprobs, values, entropy = self.model(trunk.hidden[mb], trunk.attention_mask[mb],
                                                           rollout.response_ids[mb])
                    pg, clip_frac, approx_kl = policy_loss(logprobs, old["logprobs"][mb], adv[mb], m,
                                                           ppo.cliprange)
                    vf, value_clip_frac = value_loss(values, old["values"][mb], returns[mb], m,
                                                     ppo.cliprange_value, ppo.vf_coef)
                self.accelerator.backward(pg + vf)
                norm = self.accelerator.clip_grad_norm_(self.params, ppo.max_grad_norm or math.inf)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
                for key, value in (("policy_loss", pg), ("value_loss", vf), ("clip_frac", clip_frac),
                                   ("approx_kl", approx_kl), ("value_clip_frac", value_clip_frac),
                                   ("entropy", masked_mean(entropy.detach(), m)), ("grad_norm", norm)):
                    stats[key].append(float(value.detach()))
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def reward_stats(self, terms: dict[str, list[float]], edits: Sequence[Any]) -> dict[str, Any]:
        """The reward's spread within and across prompts, and its mean on rows pi- left alone
        (``reward_clean``: the learning curve) and on the rows it damaged on purpose."""
        k = self.ppo.samples_per_prompt
        reward = torch.tensor(terms["reward"]).view(-1, k)
        edited = {e.row for e in edits}
        clean = [r for n, r in enumerate(terms["reward"]) if n not in edited]
        damaged = [r for n, r in enumerate(terms["reward"]) if n in edited]
        return {"reward_std_within": float(reward.std(1, unbiased=False).mean()),
                "reward_std_across": float(reward.mean(1).std(unbiased=False)),
                "reward_clean": float(np.mean(clean)) if clean else None,
                "reward_pi_minus": float(np.mean(damaged)) if damaged else None}

    def step(self) -> dict[str, Any]:
        """One PPO iteration; returns its log entry."""
        start, cpu_start = time.time(), time.process_time()
        rollout, edits, scores, terms = self.rollout()
        old = self.evaluate(rollout)
        mask = rollout.response_mask.float()
        if self.iteration == 0 and self.ppo.value_init:
            self.init_value_head(old, mask, scores)
        adv, returns, kl, adv_std = self.advantages(rollout, old, scores)
        seq_kl = float(kl.sum(1).mean())
        entry: dict[str, Any] = {"iteration": self.iteration + 1, "kl_coef": self.kl_ctl.value}
        entry.update({k: float(np.mean(v)) for k, v in terms.items()})
        entry.update(self.reward_stats(terms, edits))
        entry.update(self.update(rollout, old, adv, returns))
        self.kl_ctl.update(seq_kl, n_steps=len(mask))
        entry.update(kl=seq_kl, advantage_std=adv_std,
                     value_error=float(masked_mean((old["values"] - returns) ** 2, mask)),
                     response_length=float(mask.sum(1).mean()), pi_minus_edits=len(edits),
                     lr=self.scheduler.get_last_lr()[0], seconds=time.time() - start,
                     cpu_seconds=time.process_time() - cpu_start)
        self.iteration += 1
        self.history.append(entry)
        return entry


def train_ppo(
    sft_model: str | Path,
    aesthetic_rm: str | Path | None,
    pickscore_rm: str | Path | None,
    rows: Sequence[dict],
    out_dir: str | Path,
    rl: TrainConfig,
    ppo: PPOConfig,
    seed: int = 0,
    log: Callable[[dict[str, Any]], None] | None = None,
    reward: RewardFn | None = None,
) -> dict[str, Any]:
    """PPO from the SFT model; writes a DiffChat model folder and ``ppo_log.json`` to `out_dir`.

    sft_model: folder of the SFT causal LM (the policy's start and the reference).
    aesthetic_rm, pickscore_rm: folders written by ``reward_models.train_reward_model``.
    rows: InstructPE train rows (beautified_source_prompt, instruction,
        beautified_target_prompt; source_prompt / target_prompt when known).
    rl: the profile's ``rl`` section (Table 3: PPO epochs per rollout, lr, unfrozen
        layers, weight decay, max length of T(x, i) + y). Its batch_size is not read:
        ``ppo.rollouts`` (Table 3's RL batch, 128) sets the rows per iteration and
        ``ppo.mini_batch_size`` the rows per update.
    ppo: PPOConfig (A.5; switches for the ablations: pi_plus, pi_minus, vci).
    log: called with each iteration's log entry (after its checkpoint is written).
    reward: scores rollouts instead of the paper's reward (``RewardFn``; the reward model
        folders are then not read): tests train on synthetic rewards with it.

    A checkpoint is written every ``ppo.checkpoint_every`` iterations to
    ``out_dir/checkpoint``; calling again with the same arguments resumes from it and
    ends with the same weights as an uninterrupted run. It is removed once the final
    model is written. Returns the log.
    """
    out_dir = Path(out_dir)
    if not rows:
        raise ValueError("no InstructPE rows to train on")
    if ppo.samples_per_prompt < 1 or ppo.rollouts % ppo.samples_per_prompt:
        raise ValueError(f"PPO rollouts ({ppo.rollouts}) must be a multiple of samples_per_prompt "
                         f"({ppo.samples_per_prompt})")
    if reward is None and (aesthetic_rm is None or pickscore_rm is None):
        raise ValueError("train_ppo needs the two reward model folders, or a reward function")
    settings = _settings(rl, ppo, seed)

    def make_reward(device: torch.device) -> RewardFn:
        if reward is not None:
            return reward
        return SequenceReward(TextRewardModel.from_pretrained(aesthetic_rm, device=device),
                              TextRewardModel.from_pretrained(pickscore_rm, device=device), ppo)

    run = _Run(Path(sft_model), make_reward, rows, rl, ppo, seed)
    checkpoint = out_dir / CHECKPOINT
    if (checkpoint / STATE_FILE).is_file():
        run.load_checkpoint(checkpoint, settings)
    elif (checkpoint / OLD_STATE_FILE).is_file():
        raise ValueError(f"{checkpoint / OLD_STATE_FILE} is a PPO checkpoint in the old pickle format, "
                         f"which diffchat no longer loads (loading it could run code): remove {checkpoint} "
                         "to start the PPO run over")
    while run.iteration < ppo.iterations:
        entry = run.step()
        if run.iteration % ppo.checkpoint_every == 0 and run.iteration < ppo.iterations:
            run.save_checkpoint(checkpoint, settings)
        if log is not None and run.accelerator.is_main_process:
            log(entry)

    result = {**settings, "parameters": run.hydra.parameter_counts(), "iterations": run.history}
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        run.accelerator.unwrap_model(run.model).save_pretrained(out_dir, run.tokenizer)
        (out_dir / LOG_FILE).write_text(json.dumps(result, indent=2))
        shutil.rmtree(checkpoint, ignore_errors=True)
    return result
