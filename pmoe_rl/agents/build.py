"""Policies from a config or a saved checkpoint: what the agents, ``evaluate``, the analysis and user code share."""

from __future__ import annotations

from pathlib import Path

import torch

from pmoe_rl import checkpoint, options
from pmoe_rl.config import Config, from_dict
from pmoe_rl.errors import CheckpointError
from pmoe_rl.policies import CompositePolicy, MixturePolicy, PPOPolicy


def build_policy(cfg: Config, obs_dim: int, act_dim: int) -> MixturePolicy | CompositePolicy | PPOPolicy:
    """The policy network a run with config ``cfg`` trains."""
    net = cfg.net
    if cfg.policy in ("moe", "mcp"):
        return CompositePolicy(
            obs_dim,
            act_dim,
            cfg.n_experts,
            cfg.policy,
            hidden=net.hidden,
            log_std_min=net.log_std_min,
            log_std_max=net.log_std_max,
            gate_input=net.gate_input,
        )
    if cfg.algo == "imitate":  # a tanh-Gaussian learner, linear or an MLP
        im = cfg.imitation
        hidden = [] if im.learner == "linear" else im.hidden
        return MixturePolicy(obs_dim, act_dim, 1, hidden, net.log_std_min, net.log_std_max, eval_expert=net.eval_expert)
    if cfg.algo in options.OFFLINE_ALGOS:  # the O-DICE code's Gaussian (a mixture with --policy pmoe)
        off, section = cfg.offline, getattr(cfg, cfg.algo)
        return PPOPolicy(
            obs_dim,
            act_dim,
            cfg.n_experts,
            section.policy_hidden,
            "relu",
            0.0,
            off.normalize_obs,
            options.OBS_CLIP,
            net.eval_expert,
            (off.log_std_min, off.log_std_max),
            section.tanh_mean,
        )
    if cfg.algo == "ppo":
        ppo = cfg.ppo
        return PPOPolicy(
            obs_dim,
            act_dim,
            cfg.n_experts,
            ppo.hidden,
            ppo.activation,
            ppo.log_std_init,
            ppo.norm_obs,
            ppo.clip_obs,
            net.eval_expert,
        )
    return MixturePolicy(obs_dim, act_dim, cfg.n_experts, net.hidden, net.log_std_min, net.log_std_max, net.gate_input,
                         net.eval_expert, mean_init=net.mean_init)  # fmt: skip


def load_policy(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[MixturePolicy | CompositePolicy | PPOPolicy, checkpoint.Checkpoint]:
    """Rebuild the policy saved in a checkpoint (a run directory, a checkpoint directory or a file in one),
    in evaluation mode. Reads tensors and JSON only; nothing is unpickled."""
    ckpt = checkpoint.load(path, device=device)
    cfg = from_dict(ckpt.meta["config"])
    obs_dim, act_dim = ckpt.meta["observation_space"]["shape"][0], ckpt.meta["action_space"]["shape"][0]
    policy = build_policy(cfg, obs_dim, act_dim).to(device)
    try:
        policy.load_state_dict(checkpoint.submodule(ckpt.weights, "policy"))
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {ckpt.path} does not match its config: {exc}") from None
    policy.eval()
    return policy, ckpt
