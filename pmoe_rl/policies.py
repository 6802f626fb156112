"""Policies. :class:`MixturePolicy` is PMOE's Gaussian-mixture actor; with one expert it is the
ordinary tanh-Gaussian SAC policy (reference/pmoe.md §1)."""

from __future__ import annotations

import torch
from torch import nn

from pmoe_rl.config import Config
from pmoe_rl.mixture import SquashedMixture, gather_expert, squashed_sample
from pmoe_rl.nets import mlp


class MixturePolicy(nn.Module):
    """pi(a|s) = sum_k w_k(s) pi_k(a|s), expert k a tanh-squashed diagonal Gaussian.

    Shared trunk MLP (ReLU, rlkit fan-in init); mean and log-std heads Linear(h -> K*A), init
    U(+-1e-3), log-std state-dependent and clamped; gate Linear(h -> K) + softmax on the *detached*
    trunk features (or on the raw observation, ``gate_input="obs"``), so the gate loss never reaches
    the trunk. K = 1 has no gate.
    """

    def __init__(self, obs_dim: int, act_dim: int, n_experts: int = 4, hidden: list[int] = (256, 256),
                 log_std_min: float = -20.0, log_std_max: float = 2.0, gate_input: str = "detached_latent",
                 eval_expert: str = "sample"):
        super().__init__()
        self.obs_dim, self.act_dim, self.n_experts = obs_dim, act_dim, n_experts
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.gate_input, self.eval_expert = gate_input, eval_expert
        self.trunk = mlp(obs_dim, list(hidden))
        latent = hidden[-1]
        self.mean_head = nn.Linear(latent, n_experts * act_dim)
        self.log_std_head = nn.Linear(latent, n_experts * act_dim)
        for head in (self.mean_head, self.log_std_head):
            nn.init.uniform_(head.weight, -1e-3, 1e-3)
            nn.init.uniform_(head.bias, -1e-3, 1e-3)
        self.gate = nn.Linear(obs_dim if gate_input == "obs" else latent, n_experts) if n_experts > 1 else None

    def forward(self, obs: torch.Tensor) -> SquashedMixture:
        h = self.trunk(obs)
        shape = (*obs.shape[:-1], self.n_experts, self.act_dim)
        mean = self.mean_head(h).view(shape)
        log_std = self.log_std_head(h).view(shape).clamp(self.log_std_min, self.log_std_max)
        if self.gate is None:
            log_w = torch.zeros(shape[:-1], device=obs.device, dtype=obs.dtype)
        else:
            log_w = torch.log_softmax(self.gate(obs if self.gate_input == "obs" else h.detach()), dim=-1)
        return SquashedMixture(mean, log_std, log_w)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions in [-1, 1] and the expert that produced each, for a batch of observations.

        Stochastic: k ~ Cat(w), a = tanh(mu_k + sigma_k eps). Deterministic: a = tanh(mu_k) with k drawn
        from Cat(w) (``eval_expert="sample"``, the official ``MakeDeterministic``) or k = argmax w.
        """
        dist = self(obs)
        if deterministic and self.eval_expert == "argmax":
            k = dist.mode_expert()
        else:
            k = dist.sample_expert(generator)
        if deterministic:
            return torch.tanh(gather_expert(dist.mean, k)), k
        u, _ = squashed_sample(gather_expert(dist.mean, k), gather_expert(dist.log_std, k), generator)
        return torch.tanh(u), k


def build_policy(cfg: Config, obs_dim: int, act_dim: int) -> MixturePolicy:
    net = cfg.net
    return MixturePolicy(obs_dim, act_dim, cfg.n_experts, net.hidden, net.log_std_min, net.log_std_max,
                         net.gate_input, net.eval_expert)
