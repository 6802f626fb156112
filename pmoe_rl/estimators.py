"""Actor-loss estimators for mixture policies, one function each (DESIGN.md: one mixture, many estimators).

An estimator gets the policy's distribution on a batch of states, one reparameterised pre-squash sample
per expert ``u`` (B, K, A) with the experts' own log-densities ``logp`` (B, K), a critic ``q_fn(obs, act)``
returning min_i Q_i (gradients reach the action only), the temperature and the SAC config, and returns
the actor loss and its parts as tensors (no host sync). Only ``pmoe`` uses the best expert ``k_star``
(None for the others); only ``pmoe`` has a separate gate loss (``gate_loss`` in its output).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pmoe_rl.config import SACConfig
from pmoe_rl.mixture import SquashedMixture, gather_expert, squashed_sample

# q_fn(obs (B, D), act (B, A) or (B, K, A)) -> min_i Q_i, shape (B,) or (B, K)
QFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def score_experts(obs: torch.Tensor, actions: torch.Tensor, q_fn: QFn) -> torch.Tensor:
    """Q(s, a_k) for every expert's action in one critic call: actions (B, K, A) -> (B, K)."""
    return q_fn(obs, actions)


@torch.no_grad()
def best_expert(obs: torch.Tensor, actions: torch.Tensor, q_fn: QFn) -> torch.Tensor:
    """k*(s) = argmax_k min_i Q_i(s, a_k) (reference/pmoe.md §2, steps 2-3), without autograd."""
    if actions.shape[1] == 1:
        return torch.zeros(actions.shape[0], dtype=torch.long, device=actions.device)
    return score_experts(obs, actions, q_fn).argmax(-1)


def gate_loss(dist: SquashedMixture, k_star: torch.Tensor, kind: str) -> torch.Tensor:
    """The frequency loss: the gate regresses onto how often each expert is best (§2, step 5).

    ``mse``: mean over B*K of (w_k - 1[k = k*])^2 (official, ``F.mse_loss``); ``ce``: -log w_{k*}.
    """
    if dist.n_experts == 1:
        return torch.zeros((), device=k_star.device)
    if kind == "ce":
        return F.nll_loss(dist.log_w, k_star)
    return F.mse_loss(dist.weights, F.one_hot(k_star, dist.n_experts).to(dist.log_w.dtype))


def pmoe(dist: SquashedMixture, u: torch.Tensor, logp: torch.Tensor, k_star: torch.Tensor, obs: torch.Tensor,
         q_fn: QFn, alpha: torch.Tensor, cfg: SACConfig) -> dict[str, torch.Tensor]:
    """PMOE's frequency approximate gradient (reference/pmoe.md §2).

    L_pi = mean_s[ alpha log pi_{k*}(a_{k*}|s) - Q(s, a_{k*}) ]  (component log-density; w not involved)
    L_w  = mse(w(s), onehot(k*))                                   (weight ``gate_loss_weight``)

    Only expert k*'s action is re-scored with autograd (the K-way scoring that chose k* ran without it;
    DESIGN.md principle 4). ``expert_update="all"`` instead sums every expert's own SAC loss (NCERL).
    """
    if cfg.expert_update == "all":
        policy_loss = (alpha * logp - score_experts(obs, torch.tanh(u), q_fn)).sum(-1).mean()
    else:
        u_star, logp_star = gather_expert(u, k_star), gather_expert(logp, k_star)
        policy_loss = (alpha * logp_star - q_fn(obs, torch.tanh(u_star))).mean()
    g_loss = gate_loss(dist, k_star, cfg.gate_loss)
    return {"loss": policy_loss + cfg.gate_loss_weight * g_loss, "policy_loss": policy_loss, "gate_loss": g_loss}


def gumbel(dist: SquashedMixture, u: torch.Tensor, logp: torch.Tensor, k_star, obs: torch.Tensor, q_fn: QFn,
           alpha: torch.Tensor, cfg: SACConfig) -> dict[str, torch.Tensor]:
    """Gumbel-Softmax relaxation of the expert choice (Jang et al. 2017; reference §9 baseline).

    y = softmax((log w + g) / tau), g_k ~ Gumbel(0, 1); the action mixes the experts' reparameterised samples
    in pre-squash space, a = tanh(sum_k y_k u_k). With ``gumbel_hard`` (default) y is the one-hot of its argmax
    in the forward pass and the soft y in the backward pass (straight-through), so a is exactly one expert's
    sample; without it a is a soft mix. The SAC loss uses the mixture's log-density: L = mean_s[ alpha log
    pi(a|s) - Q(s, a) ]. Mixing before the squash keeps the density exact without atanh. The gate learns
    through y and through log pi.
    """
    gumbels = -torch.empty_like(dist.log_w).exponential_().log()
    y = torch.softmax((dist.log_w + gumbels) / cfg.gumbel_tau, dim=-1)
    if cfg.gumbel_hard:
        y = F.one_hot(y.argmax(-1), dist.n_experts).to(y.dtype) - y.detach() + y
    u_mix = (y.unsqueeze(-1) * u).sum(1)
    policy_loss = (alpha * dist.mixture_log_prob(u_mix) - q_fn(obs, torch.tanh(u_mix))).mean()
    return {"loss": policy_loss, "policy_loss": policy_loss}


def score(dist: SquashedMixture, u: torch.Tensor, logp: torch.Tensor, k_star, obs: torch.Tensor, q_fn: QFn,
          alpha: torch.Tensor, cfg: SACConfig) -> dict[str, torch.Tensor]:
    """Score-function (likelihood-ratio) gradient for the expert choice, reparameterised inside the chosen
    expert (reference §9 baseline). With f(s, a) = Q(s, a) - alpha log pi(a|s) (mixture density) and
    k ~ Cat(w(s)), a = a_k:

        L = -mean_s[ f(s, a_k) + (f(s, a_k) - b(s)).detach() log w_k(s) ]

    The first term is the pathwise gradient within expert k (and log pi's own dependence on w), the second
    the score-function gradient of the choice. Baseline (``score_baseline``): ``experts`` b(s) = sum_j w_j
    f(s, a_j) over every expert's sample (unbiased: the samples do not depend on k), ``batch`` the batch
    mean of f, ``none``.
    """
    k = dist.sample_expert()
    u_k = gather_expert(u, k)
    f = q_fn(obs, torch.tanh(u_k)) - alpha * dist.mixture_log_prob(u_k)
    with torch.no_grad():
        if cfg.score_baseline == "experts":
            f_all = q_fn(obs, torch.tanh(u)) - alpha * dist.mixture_log_prob(u)
            baseline = (dist.weights * f_all).sum(-1)
        elif cfg.score_baseline == "batch":
            baseline = f.mean()
        else:
            baseline = torch.zeros_like(f)
    score_term = (f.detach() - baseline) * gather_expert(dist.log_w, k)
    policy_loss = -f.mean()
    return {"loss": policy_loss - score_term.mean(), "policy_loss": policy_loss}


def mrp(dist: SquashedMixture, u: torch.Tensor, logp: torch.Tensor, k_star, obs: torch.Tensor, q_fn: QFn,
        alpha: torch.Tensor, cfg: SACConfig) -> dict[str, torch.Tensor]:
    """Marginalised reparameterisation (reference §9, not in PMOE): the SAC objective written as an expectation
    over the experts, E_pi[g] = sum_k w_k E_{pi_k}[g], with every expert's reparameterised sample and no
    categorical sampling:

        L = mean_s sum_k w_k(s) [ alpha log pi(a_k|s) - Q(s, a_k) ]     (pi: the mixture density)

    Exact in expectation for the whole policy including the gate, at the cost of K differentiable critic
    evaluations per state.
    """
    f = alpha * dist.mixture_log_prob(u) - q_fn(obs, torch.tanh(u))  # (B, K)
    policy_loss = (dist.weights * f).sum(-1).mean()
    return {"loss": policy_loss, "policy_loss": policy_loss}


ESTIMATORS = {"pmoe": pmoe, "gumbel": gumbel, "score": score, "mrp": mrp}


# --- the other log-densities of a PMOE-SAC update, shared by the native agent and pmoe_rl.sb3.PMOESAC ----------

@torch.no_grad()
def temperature_log_prob(dist: SquashedMixture, u: torch.Tensor, logp: torch.Tensor, k_star: torch.Tensor,
                         kind: str) -> torch.Tensor:
    """log pi of the action in the temperature loss (reference §2.7): expert k*'s own (``best``, official)
    or the mixture's density of it (``mixture``). (B,)"""
    if kind == "best":
        return gather_expert(logp, k_star)
    return dist.mixture_log_prob(gather_expert(u, k_star))


@torch.no_grad()
def next_action(next_dist: SquashedMixture, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic target's a' and log pi(a'|s') (reference §3): k' ~ Cat(w(s')), a' = tanh(u') from expert k'
    (an exact mixture sample), with expert k''s log-density (``component``, official) or the mixture's."""
    k_next = next_dist.sample_expert()
    u, logp = squashed_sample(gather_expert(next_dist.mean, k_next), gather_expert(next_dist.log_std, k_next))
    if kind == "mixture":
        logp = next_dist.mixture_log_prob(u)
    return torch.tanh(u), logp
