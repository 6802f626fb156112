"""Gaussian-mixture maths: tanh-squashed mixtures for SAC and plain (clipped) mixtures for PPO, with the pieces
every agent and the SB3 bridge share (expert choice, best expert under a critic, gate loss, gate entropy);
docs/algorithms.md derives them.

A state gives K experts with means mu_k, log-stds log sigma_k (shape (B, K, A)) and gate weights w_k
(shape (B, K)). Expert k draws u_k ~ N(mu_k, diag sigma_k^2) and acts a_k = tanh(u_k). Log-densities
follow rlkit's ``TanhNormal``:

    log pi_k(a|s) = sum_d [ log N(u_d; mu_kd, sigma_kd) - log(1 - tanh(u_d)^2 + 1e-6) ]
    log pi(a|s)   = logsumexp_k [ log w_k + sum_d log N(u_d; mu_kd, sigma_kd) ] - sum_d log(1 - tanh(u_d)^2 + 1e-6)

Since tanh is a bijection, every expert's density of the same squashed action uses the same
pre-squash u, so a sample's mixture density never needs atanh.

PPO's experts are not squashed (the environment clips the action), so there
``log pi(a|s) = logsumexp_k [ log w_k + sum_d log N(a_d; mu_kd, sigma_kd) ]`` (:class:`GaussianMixture`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pmoe_rl.options import BehaviorExpert, EvalExpert, GateLoss

TANH_EPS = 1e-6
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def normal_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(u; mean, exp(log_std)^2)."""
    return -0.5 * ((u - mean) * torch.exp(-log_std)).pow(2) - log_std - _HALF_LOG_2PI


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """sum_d log(1 - tanh(u_d)^2 + eps): the log-Jacobian of the squash, summed over the last dim."""
    return torch.log1p(-torch.tanh(u).pow(2) + TANH_EPS).sum(-1)


def squashed_sample(
    mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised u = mean + sigma * eps and log pi(tanh(u)), summed over the last dim (``eps`` drawn here
    unless given).

    The Gaussian term is written with eps, -eps^2/2 - log sigma - log sqrt(2 pi): the same function of
    (mean, log_std) as ``normal_log_prob(u, mean, log_std)`` for this sample, so values and gradients
    agree, with fewer operations.
    """
    if eps is None:
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    u = mean + log_std.exp() * eps
    logp = (-0.5 * eps.pow(2) - log_std).sum(-1) - mean.shape[-1] * _HALF_LOG_2PI - tanh_log_det(u)
    return u, logp


class GaussianMixture:
    """sum_k w_k(s) N(mu_k(s), diag sigma_k(s)^2) for a batch of states: means and log-stds (B, K, A)
    (log-stds may be broadcast), log gate weights (B, K)."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor, log_w: torch.Tensor):
        self.mean = mean  # (B, K, A)
        self.log_std = log_std  # (B, K, A)
        self.log_w = log_w  # (B, K) log gate weights (log-softmax)

    @property
    def n_experts(self) -> int:
        return self.mean.shape[-2]

    @property
    def weights(self) -> torch.Tensor:
        return self.log_w.exp()

    def expert_log_probs(self, action: torch.Tensor) -> torch.Tensor:
        """log N(a; mu_k, sigma_k) of one action per state under every expert: (B, A) -> (B, K)."""
        return normal_log_prob(action.unsqueeze(-2), self.mean, self.log_std).sum(-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """Mixture log-density log sum_k w_k N(a; mu_k, sigma_k): (B, A) -> (B,)."""
        return torch.logsumexp(self.log_w + self.expert_log_probs(action), dim=-1)

    def sample(
        self, generator: torch.Generator | None = None, expert: BehaviorExpert = "sample", noise_scale: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An exact mixture sample: k ~ Cat(w), a ~ N(mu_k, sigma_k) (``expert="argmax"``: k = argmax w, a sample
        of the most probable expert); ``noise_scale`` c draws a ~ N(mu_k, (c sigma_k)^2) instead (``collect``'s
        steadier data). Returns (a (B, A), k (B,))."""
        k = self.choose_expert(expert, generator)
        mean, std = gather_expert(self.mean, k), gather_expert(self.log_std.expand_as(self.mean), k).exp()
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + noise_scale * std * eps, k

    def rsample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One reparameterised sample per expert, x_k = mu_k + sigma_k * eps (pre-squash for a
        :class:`SquashedMixture`): (B, K, A)."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.log_std.exp() * eps

    def sample_expert(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """k ~ Cat(w(s)) for every state: (B,) int64."""
        if self.n_experts == 1:
            return torch.zeros(self.mean.shape[0], dtype=torch.long, device=self.mean.device)
        # inverse-CDF sampling: a few elementwise ops, much cheaper than torch.multinomial on small rows
        r = torch.rand((self.mean.shape[0], 1), generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        k = (self.weights.cumsum(-1) < r).sum(-1)
        return k.clamp_(max=self.n_experts - 1)

    def mode_expert(self) -> torch.Tensor:
        """The most probable expert, argmax_k w_k(s): (B,) int64."""
        return self.log_w.argmax(-1)

    def choose_expert(
        self, rule: EvalExpert | BehaviorExpert = "sample", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The expert that acts, per state: the most probable one (``"argmax"``, a function of the observation) or
        one drawn from Cat(w) (``"sample"``). Deterministic acting uses ``net.eval_expert``, sampling
        ``sac.behavior_expert`` ("sample" for every other caller)."""
        return self.mode_expert() if rule == "argmax" else self.sample_expert(generator)

    def gate_entropy(self) -> torch.Tensor:
        """H(w(s)) = -sum_k w_k log w_k, averaged over the states (no gradient)."""
        log_w = self.log_w.detach()
        return -(log_w.exp() * log_w).sum(-1).mean()


class SquashedMixture(GaussianMixture):
    """The action distribution of a :class:`~pmoe_rl.policies.MixturePolicy`: expert k acts tanh(u),
    u ~ N(mu_k, sigma_k). Densities here are of the squashed action and take the pre-squash u; the inherited
    ``sample`` and ``expert_log_probs`` work on u itself (no tanh)."""

    def rsample_with_log_prob(
        self, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each expert's reparameterised sample u_k (B, K, A) and its own log pi_k(tanh(u_k)|s) (B, K); with
        ``eps`` (B, K, A) given, u_k = mu_k + sigma_k eps_k for that noise."""
        return squashed_sample(self.mean, self.log_std, generator, eps)

    def expert_sample(
        self, k: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised pre-squash sample u of expert k[b] for every state and its log pi_k(tanh(u)|s):
        (B, A), (B,). With k ~ Cat(w), tanh(u) is an exact sample of the mixture."""
        return squashed_sample(gather_expert(self.mean, k), gather_expert(self.log_std, k), generator)

    def component_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """log pi_k(tanh(u_k)|s) of each expert's own sample u (B, K, A): returns (B, K)."""
        return normal_log_prob(u, self.mean, self.log_std).sum(-1) - tanh_log_det(u)

    def mixture_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """log pi(tanh(u)|s) under the whole mixture for pre-squash actions u of shape (B, A) or (B, M, A)
        (M candidate actions per state); returns (B,) or (B, M)."""
        if u.dim() == self.mean.dim() - 1:
            return self.mixture_log_prob(u.unsqueeze(1)).squeeze(1)
        # (B, M, 1, A) against (B, 1, K, A) -> (B, M, K)
        log_n = normal_log_prob(u.unsqueeze(2), self.mean.unsqueeze(1), self.log_std.unsqueeze(1)).sum(-1)
        return torch.logsumexp(log_n + self.log_w.unsqueeze(1), dim=-1) - tanh_log_det(u)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """Mixture log-density of squashed actions in (-1, 1), shape (B, A) -> (B,)."""
        bound = 1.0 - 1e-6
        return self.mixture_log_prob(torch.atanh(action.clamp(-bound, bound)))


def gather_expert(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pick expert k[b] from x of shape (B, K, ...) -> (B, ...)."""
    index = k.view(-1, *([1] * (x.dim() - 1))).expand(-1, 1, *x.shape[2:])
    return x.gather(1, index).squeeze(1)


@torch.no_grad()
def best_expert(actions: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """k*(s) = argmax_k score(a_k): the best of one candidate action per expert, (B, K, A) -> (B,), without
    autograd. ``score`` maps (B, K, A) to (B, K) (a critic's value of every candidate in one call). With one
    expert the critic is not called."""
    if actions.shape[1] == 1:
        return torch.zeros(actions.shape[0], dtype=torch.long, device=actions.device)
    return score(actions).argmax(-1)


def expert_frequencies(k: torch.Tensor, n_experts: int) -> torch.Tensor:
    """How often each expert appears in ``k`` (B,): (K,) fractions."""
    return F.one_hot(k, n_experts).float().mean(0)


def gate_loss(dist: GaussianMixture, k_star: torch.Tensor, kind: GateLoss) -> torch.Tensor:
    """The frequency loss: the gate regresses onto how often each expert is best (docs/algorithms.md).

    ``mse``: mean over B*K of (w_k - 1[k = k*])^2 (official, ``F.mse_loss``); ``ce``: -log w_{k*}.
    """
    if dist.n_experts == 1:
        return torch.zeros((), device=k_star.device)
    if kind == "ce":
        return F.nll_loss(dist.log_w, k_star)
    return F.mse_loss(dist.weights, F.one_hot(k_star, dist.n_experts).to(dist.log_w.dtype))


def expert_separation(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """How distinguishable the experts are: the mean pairwise distance between expert means divided by the
    experts' mean spread sqrt(sum_d sigma_kd^2), averaged over states (pre-squash; means, log-stds (B, K, A)).
    About 0 when the experts coincide; > 2 when they are further apart than their own noise."""
    k = mean.shape[-2]
    if k < 2:
        return torch.zeros((), device=mean.device, dtype=mean.dtype)
    pairs = torch.cdist(mean, mean)  # (B, K, K)
    mean_distance = pairs.sum((-1, -2)) / (k * (k - 1))
    spread = log_std.exp().pow(2).sum(-1).sqrt().mean(-1)
    return (mean_distance / spread).mean()
