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
    """A ring buffer of transitions on ``device``; sampling is one ``torch.randint`` and one gather there.

    Each transition is one row of a single (capacity, 2 * obs_dim + act_dim + 2) float32 tensor, so
    adding and sampling touch one tensor, not five. Only true terminations are stored as ``terminated``:
    a time-limit truncation keeps bootstrapping from the real next observation.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        self.capacity, self.device = int(capacity), torch.device(device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.pos = self.size = 0
        widths = (obs_dim, act_dim, 1, obs_dim, 1)
        self.storage = torch.zeros((self.capacity, sum(widths)), dtype=torch.float32, device=self.device)
        self._splits = widths
        self._row = np.zeros(sum(widths), dtype=np.float32)

    def __len__(self) -> int:
        return self.size

    def _unpack(self, rows: torch.Tensor) -> Batch:
        obs, actions, rewards, next_obs, terminated = rows.split(self._splits, dim=-1)
        return Batch(obs, actions, rewards.squeeze(-1), next_obs, terminated.squeeze(-1))

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        row, o, a = self._row, self.obs_dim, self.act_dim
        row[:o], row[o : o + a], row[o + a] = obs, action, reward
        row[o + a + 1 : 2 * o + a + 1], row[-1] = next_obs, float(terminated)
        self.add_row(torch.from_numpy(row))

    def add_row(self, row: torch.Tensor) -> None:
        """Store one packed row [obs, action, reward, next_obs, terminated] (on the device: no host round trip)."""
        self.storage[self.pos] = row
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def fill(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Replace the contents with whole arrays of transitions (an offline dataset), in one copy to the device."""
        rows = np.concatenate([obs, actions, rewards[:, None], next_obs, terminated[:, None]], axis=1, dtype=np.float32)
        if rows.shape[0] > self.capacity or rows.shape[1] != self.storage.shape[1]:
            raise ValueError(f"{rows.shape} transitions do not fit a buffer of {tuple(self.storage.shape)}")
        self.storage[: rows.shape[0]] = torch.from_numpy(rows).to(self.device)
        self.size, self.pos = rows.shape[0], rows.shape[0] % self.capacity

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return self._unpack(self.storage[idx])

    def transitions(self) -> Batch:
        """Every stored transition (views into the storage), oldest slot first."""
        return self._unpack(self.storage[: self.size])

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON metadata) holding the filled part of the buffer."""
        return {"storage": self.storage[: self.size]}, {
            "pos": self.pos,
            "size": self.size,
            "capacity": self.capacity,
            "widths": list(self._splits),
        }

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore a saved buffer; a different capacity (a run resumed with more steps) keeps the newest
        transitions in order."""
        if meta["widths"] != list(self._splits):
            raise ValueError(f"replay buffer rows {meta['widths']} do not match this buffer's {list(self._splits)}")
        rows, pos = tensors["storage"].to(self.device), meta["pos"]
        if meta["capacity"] == self.capacity:
            self.pos, self.size = pos, meta["size"]
        else:
            rows = torch.cat([rows[pos:], rows[:pos]])[-self.capacity :]  # oldest first
            self.size = rows.shape[0]
            self.pos = self.size % self.capacity
        self.storage[: self.size] = rows


class Staging:
    """Host-to-device copies of one row of ``width`` floats through a staging tensor: page-locked and
    non-blocking on CUDA (the copy overlaps with the host's work and costs no synchronisation), a plain copy
    elsewhere. Fill ``host`` (a NumPy view), then :meth:`upload`. The next fill must wait until the previous
    copy is done: pass ``blocking=True`` unless a device-to-host read happened in between (it orders the stream)."""

    def __init__(self, width: int, device: torch.device):
        self.device, self.pinned = torch.device(device), torch.device(device).type == "cuda"
        self.tensor = torch.zeros(width, dtype=torch.float32, pin_memory=self.pinned)
        self.host = self.tensor.numpy()

    def upload(self, blocking: bool = False) -> torch.Tensor:
        return self.tensor.to(self.device, non_blocking=self.pinned and not blocking, copy=True)


def compute_gae(
    rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016) over a rollout of shape (T, N).

    ``dones[t]`` marks an episode that ended with step t (terminated or truncated; a truncation's bootstrap
    value is already in ``rewards[t]``), ``last_values`` is V of the observation after the last step:

        delta_t = r_t + gamma (1 - done_t) V_{t+1} - V_t,   A_t = delta_t + gamma lam (1 - done_t) A_{t+1}

    Returns (advantages, returns = advantages + values), float32.
    """
    T = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    next_adv = np.zeros_like(last_values, dtype=np.float32)
    next_values = last_values
    for t in range(T - 1, -1, -1):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * not_done * next_values - values[t]
        next_adv = delta + gamma * lam * not_done * next_adv
        advantages[t] = next_adv
        next_values = values[t]
    return advantages, advantages + values
