"""Running observation and reward normalisation (SB3 ``VecNormalize`` semantics), saved in checkpoints.

:class:`ObsNormalizer` is a module whose statistics are buffers, so they travel with the policy's
weights: a checkpoint's policy normalises exactly as it did when it was saved, and evaluation applies
the statistics frozen (only the training loop calls ``update``). :class:`RewardNormalizer` scales
rewards by the running standard deviation of the discounted return; its state is training state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ObsNormalizer(nn.Module):
    """x -> clip((x - mean) / sqrt(var + eps), -clip, clip), statistics in float64 (Chan et al. parallel
    update, as ``stable_baselines3.common.running_mean_std.RunningMeanStd``). ``enabled=False`` is the
    identity and keeps no statistics."""

    def __init__(self, dim: int, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.enabled, self.clip, self.eps = enabled, clip, eps
        if enabled:
            self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
            self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
            self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if not self.enabled:
            return
        x = x.reshape(-1, self.mean.shape[0]).to(torch.float64)
        batch_mean, batch_var, n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        mean, std = self.mean.to(x.dtype), (self.var + self.eps).sqrt().to(x.dtype)
        return ((x - mean) / std).clamp(-self.clip, self.clip)


class RewardNormalizer:
    """r -> clip(r / sqrt(Var[R] + eps), -clip, clip), R the running discounted return of each env, reset
    at episode ends (SB3 ``VecNormalize(norm_reward=True)``; the return is not centred)."""

    def __init__(self, n_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.returns = np.zeros(n_envs)
        self.ret_mean, self.ret_var, self.ret_count = 0.0, 1.0, 1e-4

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + rewards
        batch_mean, batch_var, n = float(self.returns.mean()), float(self.returns.var()), self.returns.shape[0]
        delta, total = batch_mean - self.ret_mean, self.ret_count + n
        m2 = self.ret_var * self.ret_count + batch_var * n + delta**2 * self.ret_count * n / total
        self.ret_mean, self.ret_var, self.ret_count = self.ret_mean + delta * n / total, m2 / total, total
        self.returns[dones] = 0.0
        return np.clip(rewards / np.sqrt(self.ret_var + self.eps), -self.clip, self.clip)

    def state_dict(self) -> dict:
        return {"returns": self.returns.tolist(), "mean": self.ret_mean, "var": self.ret_var, "count": self.ret_count}

    def load_state_dict(self, state: dict) -> None:
        self.returns = np.asarray(state["returns"], dtype=np.float64)
        self.ret_mean, self.ret_var, self.ret_count = state["mean"], state["var"], state["count"]
