"""Offline agents on the run skeleton (docs/offline.md): a dataset in a replay buffer on the training device, one
gradient step per iteration (``--steps`` counts gradient steps), the extracted policy evaluated, logged,
checkpointed and resumed like the online agents' (``eval/normalized_score`` added from the dataset's reference
scores).

:class:`OfflineAgent` holds what the three share — the dataset's preparation (imitation subset, reward scaling,
observation normalisation), the policy and its weighted behaviour-cloning loss, the target networks' update; BC
is the plain case (every weight 1). O-DICE (:mod:`pmoe_rl.agents.odice`) and IQL (:mod:`pmoe_rl.agents.iql`)
add their value functions and weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pmoe_rl.agents.build import build_policy
from pmoe_rl.agents.runner import Agent, EpisodeStats
from pmoe_rl.buffers import Batch, ReplayBuffer
from pmoe_rl.config import Config
from pmoe_rl.datasets import DatasetError, Transitions, load_for_env
from pmoe_rl.logger import RunLogger
from pmoe_rl.nets import adam
from pmoe_rl.normalization import rms_from_state


def imitation_subset(data: Transitions, n_episodes: int) -> dict[str, np.ndarray]:
    """The first ``n_episodes`` episodes of ``data`` with their rewards zeroed (offline imitation)."""
    if n_episodes > len(data.episode_ends):
        raise DatasetError(
            f"offline.imitation_episodes {n_episodes} is more than the {len(data.episode_ends)} episodes of "
            f"dataset {data.dataset_id}"
        )
    end = int(data.episode_ends[n_episodes - 1]) + 1
    arrays = {k: getattr(data, k)[:end] for k in ("obs", "actions", "rewards", "next_obs", "terminated")}
    arrays["rewards"] = np.zeros_like(arrays["rewards"])
    return arrays


def prepare(cfg: Config, data: Transitions) -> dict[str, np.ndarray]:
    """The transitions an offline agent trains on: the imitation subset, or every transition with rewards scaled
    by 1000 / (max - min episode return) (``offline.normalize_reward``, as IQL and O-DICE on MuJoCo)."""
    off = cfg.offline
    if off.imitation:
        return imitation_subset(data, off.imitation_episodes)
    arrays = {k: getattr(data, k) for k in ("obs", "actions", "rewards", "next_obs", "terminated")}
    spread = float(data.episode_returns.max() - data.episode_returns.min()) if off.normalize_reward else 0.0
    if spread > 0:  # one episode (or equal returns) has no range: rewards stay as they are
        arrays["rewards"] = arrays["rewards"] * np.float32(1000.0 / spread)
    return arrays


class ValueNet(nn.Module):
    """``n`` independent V(s) heads, each an MLP with ReLU and optionally LayerNorm after each hidden Linear
    (PyTorch's default init, as the O-DICE code); ``forward`` returns (n, B)."""

    def __init__(self, in_dim: int, hidden: list[int], n: int = 1, layer_norm: bool = False):
        super().__init__()

        def head() -> nn.Sequential:
            layers, d = [], in_dim
            for size in hidden:
                layers += [nn.Linear(d, size), *([nn.LayerNorm(size)] if layer_norm else []), nn.ReLU()]
                d = size
            return nn.Sequential(*layers, nn.Linear(d, 1))

        self.heads = nn.ModuleList([head() for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(x).squeeze(-1) for h in self.heads])


class OfflineAgent(Agent):
    """Behaviour cloning, and the base of the offline agents: maximise E[w log pi(a|s)] over the dataset, with
    w = 1 here (subclasses compute w from their value functions)."""

    section = "bc"  # the config section of the algorithm's own options (policy_hidden, actor_lr, ...)

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device):
        super().__init__(cfg, device)
        self.data = data = load_for_env(cfg.dataset, cfg.env)
        arrays = prepare(cfg, data)
        self.policy = build_policy(cfg, obs_dim, act_dim).to(device)
        if cfg.offline.normalize_obs:  # the dataset's statistics, frozen in the policy (saved with it)
            obs = arrays["obs"]
            stats = rms_from_state({"mean": obs.mean(0, dtype=np.float64), "var": obs.var(0, dtype=np.float64),
                                    "count": len(obs)})  # fmt: skip
            self.policy.obs_norm.load_stats(stats)
            for key in ("obs", "next_obs"):  # the buffer holds what the networks see
                arrays[key] = self.policy.obs_norm.numpy(arrays[key], stats)
        self.buffer = ReplayBuffer(len(arrays["rewards"]), obs_dim, act_dim, device)
        self.buffer.fill(**arrays)
        section = getattr(cfg, self.section)
        decay = getattr(section, "actor_weight_decay", 0.0)
        self.actor_opt = adam(self.policy.parameters(), device, lr=section.actor_lr, weight_decay=decay)
        schedule = cfg.offline.actor_lr_schedule
        self.cosine_lr = schedule == "cosine" or (schedule == "auto" and cfg.algo == "iql")

    def bc_loss(self, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        """-E[w log pi(a|s)] on (already normalised) observations; a mixture policy's log pi is the mixture's."""
        logp = self.policy.distribution(batch.obs).log_prob(batch.actions)
        return -(logp if weights is None else weights * logp).mean()

    def actor_lr(self, n: int) -> float:
        """The policy's learning rate at update ``n``: the section's ``actor_lr``, or with the cosine schedule
        actor_lr (1 + cos(pi n / steps)) / 2, which reaches 0 at the run's last step (IQL's)."""
        lr = getattr(self.cfg, self.section).actor_lr
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(n / self.cfg.steps, 1.0))) if self.cosine_lr else lr

    def actor_step(self, batch: Batch, weights: torch.Tensor | None = None) -> torch.Tensor:
        if self.cosine_lr:
            for group in self.actor_opt.param_groups:
                group["lr"] = self.actor_lr(self.n_updates)
        loss = self.bc_loss(batch, weights)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        return loss.detach()

    @torch.no_grad()
    def batch_weights(self, batch: Batch) -> torch.Tensor:
        """The behaviour-cloning weight of each transition of ``batch`` under the current value functions, as the
        policy step gets it (scripts/offline_weights.py reads it): 1 for behaviour cloning."""
        return torch.ones_like(batch.rewards)

    def update(self, batch: Batch, with_metrics: bool = False) -> dict[str, torch.Tensor]:
        """One gradient step; the metrics (tensors) only when asked."""
        loss = self.actor_step(batch)
        self.n_updates += 1
        return {"actor_loss": loss} if with_metrics else {}

    @staticmethod
    @torch.no_grad()
    def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
        torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)

    # --- the run skeleton's hooks ------------------------------------------------------------------------------
    def iterate(self, step: int, stats: EpisodeStats, log: RunLogger, with_metrics: bool) -> dict[str, torch.Tensor]:
        metrics = self.update(self.buffer.sample(self.cfg.offline.batch_size), with_metrics)
        log.progress(1)
        return metrics

    def modules(self) -> dict:
        return {"policy": self.policy}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt}

    def extra_state(self) -> dict:
        # the dataset is not saved (it is on disk); a resumed run checks it is the same one
        return {"dataset": {"id": self.data.dataset_id, "transitions": len(self.data)}}

    def load_extra_state(self, state: dict) -> None:
        saved, mine = state.get("dataset"), self.extra_state()["dataset"]
        if saved != mine:
            raise DatasetError(f"the run was trained on dataset {saved}, but --dataset now gives {mine}")

    def eval_records(self, mean_return: float) -> dict[str, float]:
        """``eval/normalized_score`` (x100) when the dataset has reference scores."""
        if self.data.ref_min_score is None or self.data.ref_max_score is None:
            return {}
        return {"eval/normalized_score": float(self.data.normalized_score(mean_return))}
