"""Policy evaluation, shared by training (``eval/*`` metrics) and ``python -m pmoe_rl.evaluate``.

Follows SB3's ``evaluate_policy`` protocol (complete episodes, deterministic by default) and makes it
reproducible: the first reset takes ``seed`` and the experts are drawn from a generator seeded with it,
so the same checkpoint and seed give the same returns in any process.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

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
        return {"mean_return": self.mean_return, "std_return": self.std_return, **dataclasses.asdict(self)}


def cpu_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """The policy itself when it is on the CPU, else a CPU copy: evaluation always acts on the CPU with a CPU
    generator, so a GPU run's ``eval/*`` numbers are reproduced by ``python -m pmoe_rl.evaluate`` (and one
    observation's forward pass is faster there than a GPU round trip)."""
    param = next(policy.parameters())
    return policy if param.device.type == "cpu" else copy.deepcopy(policy).cpu()


def eval_seed(train_seed: int) -> int:
    """The seed of a run's evaluations (its own env, separate from the training env's)."""
    return train_seed + 1


@dataclass
class Episode:
    observations: list = field(default_factory=list)  # the states acted on, then the final one
    experts: list = field(default_factory=list)  # the expert that acted at each step
    ret: float = 0.0
    goal: int | None = None  # MultiGoal: the goal reached (-1: none)


def run_episodes(
    policy: MixturePolicy,
    env: gym.Env,
    n_episodes: int,
    seed: int,
    deterministic: bool = True,
    device: torch.device | str = "cpu",
) -> list[Episode]:
    """Complete episodes; the first reset takes ``seed``, the experts are drawn from a generator seeded with it."""
    generator = torch.Generator(device=device).manual_seed(seed)
    episodes = []
    for i in range(n_episodes):
        obs, _ = env.reset(seed=seed if i == 0 else None)
        ep, done, info = Episode(), False, {}
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
            action, k = policy.act(obs_t, deterministic=deterministic, generator=generator)
            ep.observations.append(np.asarray(obs, dtype=np.float32))
            ep.experts.append(int(k))
            obs, reward, terminated, truncated, info = env.step(action[0].cpu().numpy())
            ep.ret += float(reward)
            done = terminated or truncated
        ep.observations.append(np.asarray(obs, dtype=np.float32))
        ep.goal = info.get("goal")
        episodes.append(ep)
    return episodes


def evaluate_policy(policy: MixturePolicy, env: gym.Env, n_episodes: int, seed: int, **kwargs) -> EvalResult:
    """Returns, lengths and expert usage of :func:`run_episodes` (``kwargs``: its ``deterministic``, ``device``)."""
    episodes = run_episodes(policy, env, n_episodes, seed, **kwargs)
    counts = np.bincount(np.concatenate([ep.experts for ep in episodes]), minlength=policy.n_experts)
    usage = (counts / max(counts.sum(), 1)).tolist()
    return EvalResult([ep.ret for ep in episodes], [len(ep.experts) for ep in episodes], usage)
