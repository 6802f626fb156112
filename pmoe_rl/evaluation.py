"""Policy evaluation, shared by training (``eval/*`` metrics) and ``python -m pmoe_rl.evaluate``.

Follows SB3's ``evaluate_policy`` protocol (complete episodes, deterministic by default) and makes it
reproducible: the first reset takes ``seed`` and the experts are drawn from a generator seeded with it,
so the same checkpoint and seed give the same returns in any process.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from pmoe_rl.policies import MixturePolicy


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    expert_usage: list[float]  # fraction of steps each expert acted

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    def to_json(self) -> dict:
        return {"mean_return": self.mean_return, "std_return": self.std_return, "returns": self.returns,
                "lengths": self.lengths, "expert_usage": self.expert_usage}


def eval_seed(train_seed: int) -> int:
    """The seed of a run's evaluations (its own env, separate from the training env's)."""
    return train_seed + 1


def evaluate_policy(policy: MixturePolicy, env: gym.Env, n_episodes: int, seed: int, deterministic: bool = True,
                    device: torch.device | str = "cpu") -> EvalResult:
    generator = torch.Generator(device=device).manual_seed(seed)
    counts = np.zeros(policy.n_experts, dtype=np.int64)
    returns, lengths = [], []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        done, ret, trace = False, 0.0, []
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
            action, k = policy.act(obs_t, deterministic=deterministic, generator=generator)
            obs, reward, terminated, truncated, _ = env.step(action[0].cpu().numpy())
            ret += float(reward)
            trace.append(int(k))
            done = terminated or truncated
        counts += np.bincount(trace, minlength=policy.n_experts)
        returns.append(ret)
        lengths.append(len(trace))
    usage = (counts / max(counts.sum(), 1)).tolist()
    return EvalResult(returns, lengths, usage)
