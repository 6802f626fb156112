"""Replay storage resident on the training device (DESIGN.md, performance principle 1)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor  # 1.0 where the episode ended in a terminal state (no bootstrap)


class ReplayBuffer:
    """A ring buffer of transitions stored as tensors on ``device``; sampling is ``torch.randint`` there.

    Only true terminations are stored as ``terminated``: a time-limit truncation keeps bootstrapping
    from the real next observation.
    """

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        self.capacity, self.device = int(capacity), torch.device(device)
        self.pos = self.size = 0
        empty = lambda *shape: torch.zeros((self.capacity, *shape), dtype=torch.float32, device=self.device)  # noqa: E731
        self.obs, self.next_obs = empty(obs_dim), empty(obs_dim)
        self.actions = empty(act_dim)
        self.rewards, self.terminated = empty(), empty()

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.pos
        self.obs[i] = torch.as_tensor(obs, dtype=torch.float32)
        self.actions[i] = torch.as_tensor(action, dtype=torch.float32)
        self.rewards[i] = float(reward)
        self.next_obs[i] = torch.as_tensor(next_obs, dtype=torch.float32)
        self.terminated[i] = float(terminated)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return Batch(*(getattr(self, name)[idx] for name in self.FIELDS))

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON metadata) holding the filled part of the buffer."""
        tensors = {name: getattr(self, name)[: self.size].contiguous() for name in self.FIELDS}
        return tensors, {"pos": self.pos, "size": self.size, "capacity": self.capacity}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        if meta["capacity"] != self.capacity:
            raise ValueError(f"buffer capacity {meta['capacity']} != {self.capacity}")
        self.pos, self.size = meta["pos"], meta["size"]
        for name in self.FIELDS:
            getattr(self, name)[: self.size] = tensors[name].to(self.device)
