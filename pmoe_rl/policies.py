"""Policies. :class:`MixturePolicy` is PMOE's Gaussian-mixture actor for SAC; with one expert it is the
ordinary tanh-Gaussian SAC policy. :class:`PPOPolicy` is the mixture actor for PPO; with one expert it is PPO's
usual Gaussian with a state-independent log-std. docs/algorithms.md describes both.

Both answer ``act(obs, deterministic, generator) -> (action in [-1, 1], expert)``, which is all that
evaluation needs. Deterministic acting is the most probable expert's mean by default, a function of the
observation; ``eval_expert="sample"`` draws the expert from the gate (the official evaluation)."""

from __future__ import annotations

import torch
from torch import nn

from pmoe_rl import options
from pmoe_rl.mixture import GaussianMixture, SquashedMixture, gather_expert
from pmoe_rl.nets import mlp
from pmoe_rl.normalization import ObsNormalizer


class MixturePolicy(nn.Module):
    """pi(a|s) = sum_k w_k(s) pi_k(a|s), expert k a tanh-squashed diagonal Gaussian.

    Shared trunk MLP (ReLU, rlkit fan-in init); mean and log-std heads Linear(h -> K*A), init
    U(+-1e-3), log-std state-dependent and clamped; gate Linear(h -> K) + softmax on the *detached*
    trunk features (or on the raw observation, ``gate_input="obs"``), so the gate loss never reaches
    the trunk. K = 1 has no gate.
    """

    def __init__(self, obs_dim: int, act_dim: int, n_experts: int = options.SAC_EXPERTS, hidden: list[int] = (256, 256),
                 log_std_min: float = options.LOG_STD_MIN, log_std_max: float = options.LOG_STD_MAX,
                 gate_input: options.GateInput = options.GATE_INPUT,
                 eval_expert: options.EvalExpert = options.EVAL_EXPERT,
                 activation: type[nn.Module] = nn.ReLU, mean_init: options.MeanInit = options.MEAN_INIT):  # fmt: skip
        super().__init__()
        self.obs_dim, self.act_dim, self.n_experts = obs_dim, act_dim, n_experts
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.gate_input, self.eval_expert = gate_input, eval_expert
        self.trunk = mlp(obs_dim, list(hidden), activation=activation)
        latent = hidden[-1] if len(hidden) else obs_dim  # no hidden layer: linear heads on the input
        self.mean_head = nn.Linear(latent, n_experts * act_dim)
        self.log_std_head = nn.Linear(latent, n_experts * act_dim)
        # official: both heads U(+-1e-3), so every expert starts at the same action; mean_init="default" keeps
        # PyTorch's init of a mixture's mean head, so the experts start at different actions (one expert: official)
        distinct = mean_init == "default" and n_experts > 1
        for head in (self.log_std_head,) if distinct else (self.mean_head, self.log_std_head):
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
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        expert: options.BehaviorExpert = options.BEHAVIOR_EXPERT,
        noise_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions in [-1, 1] and the expert that produced each, for a batch of observations.

        Stochastic: k ~ Cat(w) (``expert="argmax"``: k = argmax w), a = tanh(mu_k + c sigma_k eps), c =
        ``noise_scale`` (1: the policy's own noise). Deterministic:
        a = tanh(mu_k) with k = argmax w (``eval_expert="argmax"``) or k drawn from Cat(w) (``"sample"``, the
        official ``MakeDeterministic``).
        """
        dist = self(obs)
        if deterministic:
            k = dist.choose_expert(self.eval_expert, generator)
            return torch.tanh(gather_expert(dist.mean, k)), k
        u, k = dist.sample(generator, expert, noise_scale)  # no log-density: acting does not need it
        return torch.tanh(u), k


class CompositePolicy(MixturePolicy):
    """A unimodal tanh-Gaussian composed from K Gaussian primitives (the MoE baselines of the PMOE paper).

    The trunk, the K primitives' mean and log-std heads and the gate are :class:`MixturePolicy`'s; the
    action distribution is one Gaussian (so ``n_experts`` is 1 and SAC trains it by plain reparameterisation,
    gate included):

    - ``moe``, gated mixture of experts (Jacobs, Jordan, Nowlan, Hinton 1991, "Adaptive mixtures of local
      experts"), mixed parameters: w = softmax(gate), mu = sum_k w_k mu_k, sigma = sum_k w_k sigma_k;
    - ``mcp``, multiplicative compositional policy (Peng, Chang, Zhang, Abbeel, Levine, NeurIPS 2019, Eq. 2-4):
      a weighted product of the primitives, per dimension 1/sigma^2 = sum_k w_k / sigma_k^2 and
      mu = sigma^2 sum_k w_k mu_k / sigma_k^2, with w = sigmoid(gate) (weights in [0, 1], not normalised).

    ``primitives(obs)`` returns the K means, log-stds and weights for analysis.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, n_primitives: int = options.SAC_EXPERTS, head: str = "moe", **kwargs
    ):
        if n_primitives < 2:
            raise ValueError(f"a {head} head composes at least 2 primitives, got {n_primitives}")
        super().__init__(obs_dim, act_dim, n_primitives, **kwargs)
        self.head, self.n_primitives, self.n_experts = head, n_primitives, 1

    def primitives(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        shape = (*obs.shape[:-1], self.n_primitives, self.act_dim)
        mean = self.mean_head(h).view(shape)
        log_std = self.log_std_head(h).view(shape).clamp(self.log_std_min, self.log_std_max)
        logits = self.gate(obs if self.gate_input == "obs" else h.detach())
        w = torch.softmax(logits, -1) if self.head == "moe" else torch.sigmoid(logits)
        return mean, log_std, w

    def forward(self, obs: torch.Tensor) -> SquashedMixture:
        mean_k, log_std_k, w = self.primitives(obs)
        w = w.unsqueeze(-1)
        if self.head == "moe":
            mean, std = (w * mean_k).sum(-2), (w * log_std_k.exp()).sum(-2)
            log_std = std.log()
        else:
            precision = (w * torch.exp(-2.0 * log_std_k)).sum(-2)
            log_std = -0.5 * precision.log()
            mean = (w * mean_k * torch.exp(-2.0 * log_std_k)).sum(-2) / precision
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        zeros = torch.zeros((*obs.shape[:-1], 1), device=obs.device, dtype=obs.dtype)
        return SquashedMixture(mean.unsqueeze(-2), log_std.unsqueeze(-2), zeros)


class PPOPolicy(nn.Module):
    """pi(a|s) = sum_k w_k(s) N(a; mu_k(s), diag sigma_k^2), the environment acting on clip(a, -1, 1).

    The observation is normalised first (:class:`ObsNormalizer`; its statistics are buffers of this
    module, so checkpoints carry them and evaluation applies them frozen). Mean MLP (tanh, orthogonal
    init, output gain 0.01) -> K*A, through a tanh with ``tanh_mean``; log-std a free parameter (K, A); gate
    Linear(obs -> K) + softmax on the normalised observation (co-author script). K = 1 has no gate.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_experts: int = options.PPO_EXPERTS,
        hidden: list[int] = (64, 64),
        activation: options.Activation = "tanh",
        log_std_init: float = 0.0,
        norm_obs: bool = True,
        clip_obs: float = 10.0,
        eval_expert: options.EvalExpert = options.EVAL_EXPERT,
        log_std_bounds: tuple[float, float] | None = None,
        tanh_mean: bool = False,
    ):
        super().__init__()
        self.obs_dim, self.act_dim, self.n_experts, self.eval_expert = obs_dim, act_dim, n_experts, eval_expert
        self.log_std_bounds, self.tanh_mean = log_std_bounds, tanh_mean
        self.obs_norm = ObsNormalizer(obs_dim, norm_obs, clip_obs)
        act_fn = nn.Tanh if activation == "tanh" else nn.ReLU
        self.mean_net = mlp(obs_dim, list(hidden), n_experts * act_dim, act_fn, orthogonal=True, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((n_experts, act_dim), float(log_std_init)))
        self.gate = nn.Linear(obs_dim, n_experts) if n_experts > 1 else None
        if self.gate is not None:
            nn.init.orthogonal_(self.gate.weight, 0.01)  # near-uniform initial gate, like the action output
            nn.init.zeros_(self.gate.bias)

    def distribution(self, norm_obs: torch.Tensor) -> GaussianMixture:
        """The mixture for already-normalised observations (what the rollout buffer stores)."""
        mean = self.means(norm_obs).view(*norm_obs.shape[:-1], self.n_experts, self.act_dim)
        if self.gate is None:
            log_w = torch.zeros(mean.shape[:-1], device=mean.device, dtype=mean.dtype)
        else:
            log_w = torch.log_softmax(self.gate(norm_obs), dim=-1)
        return GaussianMixture(mean, self.clamped_log_std().expand_as(mean), log_w)

    def means(self, norm_obs: torch.Tensor) -> torch.Tensor:
        """The experts' means, flat (..., K * A): the mean network's output, through tanh with ``tanh_mean`` (IQL's
        policy: the mean stays inside the action bounds; the distribution around it is not squashed)."""
        out = self.mean_net(norm_obs)
        return torch.tanh(out) if self.tanh_mean else out

    def clamped_log_std(self) -> torch.Tensor:
        """The log-std parameter, clamped to ``log_std_bounds`` when given (the offline agents' policies)."""
        return self.log_std if self.log_std_bounds is None else self.log_std.clamp(*self.log_std_bounds)

    def forward(self, obs: torch.Tensor) -> GaussianMixture:
        return self.distribution(self.obs_norm(obs))

    def sample(
        self,
        norm_obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        noise_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An unclipped action and the acting expert for normalised observations, with the fewest operations
        (this runs once per environment step). Stochastic: k ~ Cat(w), a ~ N(mu_k, sigma_k), an exact mixture
        sample (``noise_scale`` c: a ~ N(mu_k, (c sigma_k)^2)). Deterministic: mu_k of argmax w
        (``eval_expert="argmax"``) or of an expert drawn from Cat(w) (``"sample"``), as :class:`MixturePolicy`."""
        mean = self.means(norm_obs).view(-1, self.n_experts, self.act_dim)
        if self.gate is None:
            k = torch.zeros(mean.shape[0], dtype=torch.long, device=mean.device)
        else:
            dist = GaussianMixture(mean, self.log_std, torch.log_softmax(self.gate(norm_obs), dim=-1))
            k = dist.choose_expert(self.eval_expert if deterministic else "sample", generator)
        mean = gather_expert(mean, k)
        if deterministic:
            return mean, k
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + noise_scale * self.clamped_log_std()[k].exp() * eps, k

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        noise_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """clip(a, -1, 1) and the acting expert (see :meth:`sample`)."""
        action, k = self.sample(self.obs_norm(obs), deterministic, generator, noise_scale)
        return action.clamp(-1.0, 1.0), k
