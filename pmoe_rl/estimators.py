"""Actor-loss estimators for mixture policies in SAC: one small loss object each, owning its settings
(DESIGN.md: one mixture, many estimators; the equations: docs/algorithms.md).

Every estimator is called the same way, ``estimator(batch, q_fn, alpha)``:

- ``batch`` (:class:`ActorBatch`): the states, the policy's distribution on them, one reparameterised pre-squash
  sample per expert ``u`` (B, K, A) with the experts' own log-densities ``logp`` (B, K), and the best expert
  ``k_star`` (B,) when the estimator declares ``needs_best_expert`` (None otherwise);
- ``q_fn(obs, act)``: min_i Q_i with the critic's weights held fixed (gradients reach the action only), for
  one action per state (B, A) -> (B,) or K candidates (B, K, A) -> (B, K);
- ``alpha``: the temperature.

It returns a dict of tensors (no host sync): ``loss`` (what the actor minimises), ``policy_loss`` (logged as
``train/actor_loss``) and any other part worth logging (``gate_loss``). ``temperature_log_prob(batch)`` gives
the log pi of the temperature loss and ``diagnostics(batch)`` extra metrics, computed only at log time.

A new estimator is one class and one registry entry, from a user's own script too::

    from pmoe_rl import ActorLoss, register_estimator

    @register_estimator("mine")
    @dataclasses.dataclass
    class Mine(ActorLoss):
        scale: float = 1.0   # settings are constructor arguments; those named like a sac.* option get its value

        def __call__(self, batch, q_fn, alpha):
            k = batch.dist.sample_expert()
            u = gather_expert(batch.u, k)
            loss = (alpha * batch.dist.mixture_log_prob(u) - self.scale * q_fn(batch.obs, torch.tanh(u))).mean()
            return {"loss": loss, "policy_loss": loss}

then ``python -m pmoe_rl.train --estimator mine`` (in a process that imported the script) or
``make_estimator("mine")``.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from pmoe_rl import options
from pmoe_rl.mixture import SquashedMixture, expert_frequencies, gate_loss, gather_expert

# q_fn(obs (B, D), act (B, A) or (B, K, A)) -> min_i Q_i, shape (B,) or (B, K)
QFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ActorBatch(NamedTuple):
    obs: torch.Tensor  # (B, D)
    dist: SquashedMixture  # the policy on obs
    u: torch.Tensor  # (B, K, A) one reparameterised pre-squash sample per expert
    logp: torch.Tensor  # (B, K) each expert's log-density of its own sample
    k_star: torch.Tensor | None = None  # (B,) argmax_k Q(s, tanh(u_k)), for estimators that need it


class ActorLoss(abc.ABC):
    """Base class of the estimators. Subclasses implement ``__call__``; the defaults below are SAC's."""

    needs_best_expert: ClassVar[bool] = False  # the agent computes k* (one K-way critic call) only if True

    @abc.abstractmethod
    def __call__(self, batch: ActorBatch, q_fn: QFn, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """The actor loss and its parts (see the module docstring)."""

    @torch.no_grad()
    def temperature_log_prob(self, batch: ActorBatch) -> torch.Tensor:
        """log pi(a|s) in the temperature loss: the mixture density of an exact mixture sample (k ~ Cat(w),
        the sample of expert k), as SAC uses its policy's density. (B,)"""
        return batch.dist.mixture_log_prob(gather_expert(batch.u, batch.dist.sample_expert()))

    def diagnostics(self, batch: ActorBatch) -> dict[str, torch.Tensor]:
        """Extra metrics (tensors) logged under ``train/``; called only when the agent logs."""
        return {}

    def candidates(self, dist: SquashedMixture, u: torch.Tensor) -> torch.Tensor:
        """The K actions per state that the critic compares to choose k* (B, K, A): each expert's sample."""
        return torch.tanh(u.detach())


ESTIMATORS: dict[str, type[ActorLoss]] = {}


def register_estimator(name: str, cls: type[ActorLoss] | None = None):
    """Register an :class:`ActorLoss` subclass under ``name`` (``--estimator NAME``); usable as a decorator.
    Registering a name again replaces the entry."""

    def add(cls: type[ActorLoss]) -> type[ActorLoss]:
        if not (isinstance(cls, type) and issubclass(cls, ActorLoss)):
            raise TypeError(f"an estimator must be an ActorLoss subclass, got {cls!r}")
        ESTIMATORS[name] = cls
        return cls

    return add if cls is None else add(cls)


def make_estimator(name: str, **settings) -> ActorLoss:
    """The estimator ``name`` built with those of ``settings`` its constructor takes (the others are ignored,
    so the agent can pass every ``sac.*`` option)."""
    if name not in ESTIMATORS:
        raise KeyError(f"unknown estimator '{name}'; registered: {', '.join(ESTIMATORS)}")
    cls = ESTIMATORS[name]
    accepted = inspect.signature(cls).parameters
    return cls(**{key: value for key, value in settings.items() if key in accepted})


@register_estimator("pmoe")
@dataclasses.dataclass
class PMOE(ActorLoss):
    """PMOE's frequency approximate gradient (docs/algorithms.md, "PMOE-SAC").

    L_pi = mean_s[ alpha log pi(a|s) - Q(s, a) ]   a: a sample of expert k*; log pi: k*'s own or the mixture's
    L_w  = gate_loss(w(s), k*)                      (weight ``gate_loss_weight``)

    Only expert k*'s action is re-scored with autograd (the K-way scoring that chose k* ran without it;
    DESIGN.md principle 4). ``expert_update="all"`` instead sums every expert's own SAC loss (NCERL). The
    temperature uses expert k*'s log-density (``alpha_logp="best"``, official) or the mixture's (``mixture``).

    ``update_sample``: the official code takes L_pi (and the temperature's log pi) on the very sample that won the
    choice of k* (``selected``); that sample's noise is conditioned on the critic, which biases the gradient
    (the squash term pushes the mean away from the critic's maximum, the noise scale grows; docs/pmoe_diagnosis.md).
    ``fresh`` (default) draws a new sample of expert k*: given k*, an unbiased SAC gradient of that expert.
    ``policy_logp``: log pi in L_pi, k*'s own (``component``, official and default) or the mixture's (``mixture``).
    ``select_by``: k* compares each expert's sample (``sample``, official) or its mean action (``mean``, default).
    """

    expert_update: options.ExpertUpdate = options.EXPERT_UPDATE
    gate_loss: options.GateLoss = options.GATE_LOSS
    gate_loss_weight: float = options.GATE_LOSS_WEIGHT
    alpha_logp: options.AlphaLogp = options.ALPHA_LOGP
    update_sample: options.UpdateSample = options.UPDATE_SAMPLE
    select_by: options.SelectBy = options.SELECT_BY
    policy_logp: options.PolicyLogp = options.POLICY_LOGP
    needs_best_expert: ClassVar[bool] = True

    def candidates(self, dist: SquashedMixture, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh((dist.mean if self.select_by == "mean" else u).detach())

    def __call__(self, batch: ActorBatch, q_fn: QFn, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        obs, dist, u, logp, k_star = batch
        if self.expert_update == "all":
            policy_loss = (alpha * self.policy_log_prob(dist, u, logp) - q_fn(obs, torch.tanh(u))).sum(-1).mean()
        else:
            if self.update_sample == "fresh" and dist.n_experts > 1:  # one expert: no choice, plain SAC
                u_star, logp_star = dist.expert_sample(k_star)
            else:
                u_star, logp_star = gather_expert(u, k_star), gather_expert(logp, k_star)
            logp_star = self.policy_log_prob(dist, u_star, logp_star)
            policy_loss = (alpha * logp_star - q_fn(obs, torch.tanh(u_star))).mean()
        if dist.n_experts == 1:  # one expert, no gate: plain SAC
            return {"loss": policy_loss, "policy_loss": policy_loss}
        g_loss = gate_loss(dist, k_star, self.gate_loss)
        return {"loss": policy_loss + self.gate_loss_weight * g_loss, "policy_loss": policy_loss, "gate_loss": g_loss}

    def policy_log_prob(self, dist: SquashedMixture, u: torch.Tensor, component_logp: torch.Tensor) -> torch.Tensor:
        """log pi in L_pi of the samples u: each one's own expert's (``component``, official) or the mixture's, the
        gate's weights as constants (``mixture``: experts that overlap lower each other's entropy)."""
        if self.policy_logp == "component" or dist.n_experts == 1:
            return component_logp
        return SquashedMixture(dist.mean, dist.log_std, dist.log_w.detach()).mixture_log_prob(u)

    @torch.no_grad()
    def temperature_log_prob(self, batch: ActorBatch) -> torch.Tensor:
        if self.update_sample == "fresh" and batch.dist.n_experts > 1:  # a draw of k* the critic did not choose
            u, logp = batch.dist.expert_sample(batch.k_star)
        else:
            u, logp = gather_expert(batch.u, batch.k_star), gather_expert(batch.logp, batch.k_star)
        return logp if self.alpha_logp == "best" else batch.dist.mixture_log_prob(u)

    def diagnostics(self, batch: ActorBatch) -> dict[str, torch.Tensor]:
        if batch.dist.n_experts == 1:
            return {}
        return {"best_expert_freq": expert_frequencies(batch.k_star, batch.dist.n_experts)}


@register_estimator("gumbel")
@dataclasses.dataclass
class Gumbel(ActorLoss):
    """Gumbel-Softmax relaxation of the expert choice (Jang et al. 2017; a baseline of the PMOE paper).

    y = softmax((log w + g) / tau), g_k ~ Gumbel(0, 1); the action mixes the experts' reparameterised samples
    in pre-squash space, a = tanh(sum_k y_k u_k). With ``gumbel_hard`` (default) y is the one-hot of its argmax
    in the forward pass and the soft y in the backward pass (straight-through), so a is exactly one expert's
    sample; without it a is a soft mix (it diverged on MultiGoal-v0, BENCHMARKS.md). The SAC loss uses the
    mixture's log-density: L = mean_s[ alpha log pi(a|s) - Q(s, a) ]. Mixing before the squash keeps the
    density exact without atanh. The gate learns through y and through log pi.
    """

    gumbel_tau: float = options.GUMBEL_TAU
    gumbel_hard: bool = options.GUMBEL_HARD

    def __call__(self, batch: ActorBatch, q_fn: QFn, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        dist = batch.dist
        gumbels = -torch.empty_like(dist.log_w).exponential_().log()
        y = torch.softmax((dist.log_w + gumbels) / self.gumbel_tau, dim=-1)
        if self.gumbel_hard:
            y = F.one_hot(y.argmax(-1), dist.n_experts).to(y.dtype) - y.detach() + y
        u_mix = (y.unsqueeze(-1) * batch.u).sum(1)
        policy_loss = (alpha * dist.mixture_log_prob(u_mix) - q_fn(batch.obs, torch.tanh(u_mix))).mean()
        return {"loss": policy_loss, "policy_loss": policy_loss}


@register_estimator("score")
@dataclasses.dataclass
class Score(ActorLoss):
    """Score-function (likelihood-ratio) gradient for the expert choice, reparameterised inside the chosen
    expert (a baseline of the PMOE paper). With f(s, a) = Q(s, a) - alpha log pi(a|s) (mixture density) and
    k ~ Cat(w(s)), a = a_k:

        L = -mean_s[ f(s, a_k) + (f(s, a_k) - b(s)).detach() log w_k(s) ]

    The first term is the pathwise gradient within expert k (and log pi's own dependence on w), the second
    the score-function gradient of the choice. Baseline (``score_baseline``): ``experts`` b(s) = sum_j w_j
    f(s, a_j) over every expert's sample (unbiased: the samples do not depend on k), ``batch`` the batch
    mean of f, ``none``.
    """

    score_baseline: options.ScoreBaseline = options.SCORE_BASELINE

    def __call__(self, batch: ActorBatch, q_fn: QFn, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        obs, dist, u = batch.obs, batch.dist, batch.u
        k = dist.sample_expert()
        u_k = gather_expert(u, k)
        f = q_fn(obs, torch.tanh(u_k)) - alpha * dist.mixture_log_prob(u_k)
        with torch.no_grad():
            if self.score_baseline == "experts":
                f_all = q_fn(obs, torch.tanh(u)) - alpha * dist.mixture_log_prob(u)
                baseline = (dist.weights * f_all).sum(-1)
            elif self.score_baseline == "batch":
                baseline = f.mean()
            else:
                baseline = torch.zeros_like(f)
        score_term = (f.detach() - baseline) * gather_expert(dist.log_w, k)
        policy_loss = -f.mean()
        return {"loss": policy_loss - score_term.mean(), "policy_loss": policy_loss}


@register_estimator("mrp")
class MRP(ActorLoss):
    """Marginalised reparameterisation (not in PMOE): the SAC objective written as an expectation over the
    experts, E_pi[g] = sum_k w_k E_{pi_k}[g], with every expert's reparameterised sample and no categorical
    sampling:

        L = mean_s sum_k w_k(s) [ alpha log pi(a_k|s) - Q(s, a_k) ]     (pi: the mixture density)

    Exact in expectation for the whole policy including the gate, at the cost of K differentiable critic
    evaluations per state.
    """

    def __call__(self, batch: ActorBatch, q_fn: QFn, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        dist, u = batch.dist, batch.u
        f = alpha * dist.mixture_log_prob(u) - q_fn(batch.obs, torch.tanh(u))  # (B, K)
        policy_loss = (dist.weights * f).sum(-1).mean()
        return {"loss": policy_loss, "policy_loss": policy_loss}


@torch.no_grad()
def next_action(
    next_dist: SquashedMixture, kind: options.TargetLogp, expert: options.BehaviorExpert = options.BEHAVIOR_EXPERT
) -> tuple[torch.Tensor, torch.Tensor]:
    """The critic target's a' and log pi(a'|s') (docs/algorithms.md): k' ~ Cat(w(s')) (``expert="sample"``: a' is
    an exact mixture sample) or k' = argmax w(s') (``"argmax"``), a' = tanh(u') from expert k', with expert k''s
    log-density (``component``, official) or the mixture's."""
    u, logp = next_dist.expert_sample(next_dist.choose_expert(expert))
    if kind == "mixture":
        logp = next_dist.mixture_log_prob(u)
    return torch.tanh(u), logp
