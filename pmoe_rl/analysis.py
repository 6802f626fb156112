"""Expert analysis of a trained policy: which expert acts where, how far apart the experts are, and PNG plots.

``python -m pmoe_rl.evaluate RUN --analyze DIR`` writes into DIR:

- ``expert_usage.png``: for the first episodes, the acting expert at every step and the gate's weights;
- ``expert_actions_pca.png``: every expert's mean action at the visited states, projected on the first two
  principal components (all of them, pooled), coloured by expert;
- ``multigoal_trajectories.png`` (``pmoe_rl/MultiGoal-v0`` only; its episodes start at the exact origin): the
  paths, each step coloured by the expert that acted, over the task's cost landscape and goals;
- ``analysis.json``: the expert separation score (:func:`pmoe_rl.mixture.expert_separation` over the
  visited states), expert usage, and for MultiGoal the goals reached and the goal each expert reaches on
  its own from the origin (:func:`multigoal_expert_goals`).

Works for the SAC mixture (:class:`MixturePolicy`), the composed heads (:class:`CompositePolicy`: its
primitives and their weights) and PPO's mixture (:class:`PPOPolicy`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pmoe_rl.checkpoint import write_text_atomic
from pmoe_rl.envs import MULTIGOAL, make_env
from pmoe_rl.evaluation import Episode, cpu_copy, run_episodes
from pmoe_rl.mixture import SquashedMixture, expert_separation
from pmoe_rl.policies import CompositePolicy


@torch.no_grad()
def expert_params(policy, obs: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each expert's (or primitive's) mean action in the env's [-1, 1] space, its pre-squash mean and log-std,
    and the gate weights: (B, K, A), (B, K, A), (B, K, A), (B, K) as NumPy arrays."""
    if isinstance(policy, CompositePolicy):
        mean, log_std, w = policy.primitives(obs)
        action = torch.tanh(mean)
    else:
        dist = policy(obs)
        mean, log_std, w = dist.mean, dist.log_std.expand_as(dist.mean), dist.weights
        action = torch.tanh(mean) if isinstance(dist, SquashedMixture) else mean.clamp(-1.0, 1.0)
    return tuple(x.cpu().numpy() for x in (action, mean, log_std, w))


def _colors(k: int):
    import matplotlib

    return matplotlib.colormaps["tab10"](np.arange(k) % 10)


def plot_usage(policy, episodes: list[Episode], path: Path, n_show: int = 3) -> None:
    import matplotlib.pyplot as plt

    shown = episodes[:n_show]
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.2 * len(shown)), squeeze=False)
    for ax, ep in zip(axes[:, 0], shown):
        obs = torch.as_tensor(np.stack(ep.observations[:-1]))
        w = expert_params(policy, obs)[3]
        k = w.shape[1]
        colors = _colors(k)
        ax.stackplot(np.arange(len(w)), w.T, colors=colors, alpha=0.35, labels=[f"w_{i}" for i in range(k)])
        if not isinstance(policy, CompositePolicy):
            ax.scatter(np.arange(len(ep.experts)), [1.02] * len(ep.experts), c=colors[ep.experts], s=6, marker="s")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("gate weight")
        ax.set_title(f"return {ep.ret:.1f}; squares: the expert that acted", fontsize=9)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=min(k, 8))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pca(policy, states: np.ndarray, path: Path) -> None:
    import matplotlib.pyplot as plt

    actions = expert_params(policy, torch.as_tensor(states))[0]  # (B, K, A)
    b, k, a = actions.shape
    flat = actions.reshape(b * k, a)
    centred = flat - flat.mean(0)
    if a > 2:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy, labels = centred @ vt[:2].T, ("PC 1", "PC 2")
    else:
        xy, labels = np.pad(flat, ((0, 0), (0, 2 - a))), ("action 0", "action 1")
    experts = np.tile(np.arange(k), b)
    fig, ax = plt.subplots(figsize=(5, 5))
    colors = _colors(k)
    for i in range(k):
        ax.scatter(*xy[experts == i].T, s=5, alpha=0.5, color=colors[i], label=f"expert {i}")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title("experts' mean actions at visited states", fontsize=10)
    ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_multigoal(policy, episodes: list[Episode], path: Path) -> None:
    import matplotlib.pyplot as plt

    from pmoe_rl.envs.multigoal import draw_plane

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    draw_plane(ax)
    k = max(policy.n_experts, 1)
    colors = _colors(k)
    for ep in episodes:
        path_xy = np.stack(ep.observations)
        ax.plot(path_xy[:, 0], path_xy[:, 1], color="0.6", lw=0.6)
        ax.scatter(path_xy[1:, 0], path_xy[1:, 1], c=colors[ep.experts], s=8)
    reached = sorted({ep.goal for ep in episodes if ep.goal is not None and ep.goal >= 0})
    ax.set_title(f"{len(episodes)} episodes; goals reached: {reached}; colour = acting expert", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def analysis_env(env_id: str):
    """The env the analysis runs on: MultiGoal starts at the exact origin, where reaching several goals can only
    come from several modes of the policy; from a random start a unimodal policy heads to different goals from
    different starts (BENCHMARKS.md, "MultiGoal-v0: modes")."""
    return make_env(env_id, **({"init_sigma": 0.0} if env_id == MULTIGOAL else {}))


@torch.no_grad()
def multigoal_expert_goals(policy) -> list[int]:
    """MultiGoal: the goal each expert reaches when it alone acts, with its mean action, from the origin
    (-1: none within the horizon); distinct goals are distinct modes of the policy at one state. A composed
    head (MoE, MCP) acts as one Gaussian and has one entry."""
    env = analysis_env(MULTIGOAL)
    goals = []
    for k in range(policy.n_experts):
        obs, info = env.reset(seed=0)
        done = False
        while not done:
            obs_t = torch.as_tensor(obs).unsqueeze(0)
            if isinstance(policy, CompositePolicy):  # the composed Gaussian's mean, not a primitive's
                action = policy.act(obs_t, deterministic=True)[0][0].numpy()
            else:
                action = expert_params(policy, obs_t)[0][0, k]
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        goals.append(info["goal"])
    env.close()
    return goals


def analyze(policy, env_id: str, folder: Path, episodes: int, seed: int, deterministic: bool) -> dict:
    """Run the episodes on :func:`analysis_env`, write the plots and ``analysis.json`` into ``folder``; return
    the summary."""
    folder.mkdir(parents=True, exist_ok=True)
    policy = cpu_copy(policy)  # acts on the CPU, as every evaluation does
    env = analysis_env(env_id)
    try:
        eps = run_episodes(policy, env, episodes, seed, deterministic)
    finally:
        env.close()
    states = np.concatenate([np.stack(ep.observations[:-1]) for ep in eps])
    _, mean, log_std, _ = expert_params(policy, torch.as_tensor(states))
    summary = {
        "episodes": episodes,
        "deterministic": deterministic,
        "seed": seed,
        "mean_return": float(np.mean([ep.ret for ep in eps])),
        "expert_separation": float(expert_separation(torch.as_tensor(mean), torch.as_tensor(log_std))),
        "expert_usage": (
            np.bincount(np.concatenate([ep.experts for ep in eps]), minlength=policy.n_experts) / len(states)
        ).tolist(),
    }
    plot_usage(policy, eps, folder / "expert_usage.png")
    plot_pca(policy, states, folder / "expert_actions_pca.png")
    if env_id == MULTIGOAL:
        goals = [ep.goal for ep in eps]
        summary["goals"] = goals
        summary["goals_reached"] = sorted({g for g in goals if g >= 0})
        summary["expert_goals"] = multigoal_expert_goals(policy)
        plot_multigoal(policy, eps, folder / "multigoal_trajectories.png")
    write_text_atomic(folder / "analysis.json", json.dumps(summary, indent=1))
    return summary


def describe(summary: dict) -> str:
    """One line of an :func:`analyze` summary: the expert separation and, for MultiGoal, the goals."""
    line = f"expert separation {summary['expert_separation']:.2f}"
    if "goals_reached" in summary:
        line += (
            f"; goals reached {summary['goals_reached']}; each expert alone from the origin reaches "
            f"{summary['expert_goals']}"
        )
    return line
