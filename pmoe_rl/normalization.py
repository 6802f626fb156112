"""Running observation and reward normalisation (SB3 ``VecNormalize`` semantics), saved in checkpoints.

:class:`ObsNormalizer` is a module whose statistics are buffers, so they travel with the policy's
weights: a checkpoint's policy normalises exactly as it did when it was saved, and evaluation applies
the statistics frozen. The training loop keeps the statistics in a NumPy :class:`RunningMeanStd`
while it collects (SB3's own class: one update per environment step, as ``VecNormalize``) and copies them
into the module after each rollout. :class:`RewardNormalizer` scales rewards by the running standard deviation
of the discounted return; its state is training state.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.running_mean_std import RunningMeanStd
from torch import nn


def rms_state(stats: RunningMeanStd) -> dict:
    """A JSON state of SB3's ``RunningMeanStd``."""
    return {"mean": np.asarray(stats.mean).tolist(), "var": np.asarray(stats.var).tolist(), "count": stats.count}


def rms_from_state(state: dict) -> RunningMeanStd:
    stats = RunningMeanStd(shape=np.shape(state["mean"]))
    stats.mean, stats.var = np.array(state["mean"], dtype=np.float64), np.array(state["var"], dtype=np.float64)
    stats.count = float(state["count"])
    return stats


class ObsNormalizer(nn.Module):
    """x -> clip((x - mean) / sqrt(var + eps), -clip, clip). ``enabled=False`` is the identity and keeps
    no statistics."""

    def __init__(self, dim: int, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.enabled, self.clip, self.eps = enabled, clip, eps
        if enabled:
            self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
            self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
            self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
            # float32 copies of mean and sqrt(var + eps) (not saved): acting computes nothing from the statistics,
            # and devices without float64 (MPS) or kernels that want one dtype see none
            self.register_buffer("shift", torch.zeros(dim), persistent=False)
            self.register_buffer("scale", torch.ones(dim), persistent=False)
            self.refresh()
            self.register_load_state_dict_post_hook(lambda module, keys: module.refresh())

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the float32 cache after the statistics changed (loading does this itself)."""
        if self.enabled:
            self.shift.copy_(self.mean)
            self.scale.copy_((self.var + self.eps).sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return ((x - self.shift) / self.scale).clamp(-self.clip, self.clip)

    def numpy(self, x: np.ndarray, stats: RunningMeanStd | None) -> np.ndarray:
        """The same map in NumPy with ``stats`` (the training loop's live statistics), as float32."""
        if stats is None:
            return np.asarray(x, dtype=np.float32)
        return np.clip((x - stats.mean) / np.sqrt(stats.var + self.eps), -self.clip, self.clip).astype(np.float32)

    def running_stats(self) -> RunningMeanStd | None:
        """A NumPy copy of the statistics for the training loop to update (None when disabled)."""
        if not self.enabled:
            return None
        return rms_from_state(
            {"mean": self.mean.cpu().numpy(), "var": self.var.cpu().numpy(), "count": float(self.count)}
        )

    @torch.no_grad()
    def load_stats(self, stats: RunningMeanStd | None) -> None:
        if stats is None:
            return
        self.mean.copy_(torch.from_numpy(np.asarray(stats.mean)))
        self.var.copy_(torch.from_numpy(np.asarray(stats.var)))
        self.count.fill_(stats.count)
        self.refresh()


class RewardNormalizer:
    """r -> clip(r / sqrt(Var[R] + eps), -clip, clip), R the running discounted return of each env, reset
    at episode ends (SB3 ``VecNormalize(norm_reward=True)``; the return is not centred)."""

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.returns = np.zeros(n_envs)
        self.stats = RunningMeanStd(shape=())

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + rewards
        self.stats.update(self.returns)
        self.returns[dones] = 0.0
        return np.clip(rewards / np.sqrt(self.stats.var + self.eps), -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        return {"returns": self.returns.tolist(), **rms_state(self.stats)}

    def load_state_dict(self, state: dict) -> None:
        self.returns = np.asarray(state["returns"], dtype=np.float64)
        self.stats = rms_from_state(state)
