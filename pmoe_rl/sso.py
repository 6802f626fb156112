"""Target-based surrogate optimisation (SSO; Lavington, Vaswani, Babanezhad, Schmidt, Le Roux, ICML 2023):
one expensive gradient of a loss with respect to a model's outputs, then many cheap steps on the model's
parameters (docs/sso.md explains the equations; ../shared/reference/sso.md is the spec).

A model maps its parameters theta to *targets* z(theta) (e.g. the pre-tanh mean action of a policy on a batch of
states); the objective is f(theta) = l(z(theta)). At an outer step t, with z_t = z(theta_t) and the target
gradient G_t = grad l(z_t) (the expensive oracle: expert labels, fresh environment data, a critic), the
surrogate

    g_t(theta) = <G_t, z(theta) - z_t> + (1 / eta_t) D(z(theta), z_t)

(Euclidean D = 1/2 ||z - z_t||^2; or the mirror form ``kl_logits``) majorises f - l(z_t) when l is (1/eta)-smooth,
and agrees with it to first order at theta_t. :class:`SSO` makes ``inner_steps`` steps on g_t (Armijo
gradient descent by default, or plain SGD / Adam) without calling the oracle again. Its minimiser is a
gradient step in target space, z_t - eta grad l(z_t), followed by fitting the model to it.

``eta`` is the paper's target-space step size (not the official code's inverse one). With ``reduction="mean"``
(default) l is taken to be a mean over the leading (batch) dimension of the targets, and the proximity term is
averaged the same way, so eta is a per-sample step: the target step is z_i - eta grad l_i(z_i) whatever the batch
size. Example, a linear model fitted to labels y by squared error::

    model = torch.nn.Linear(5, 1)
    opt = SSO(model.parameters(), eta=0.5, inner_steps=10)
    for x, y in batches:
        opt.step(lambda: model(x), loss=lambda z: (z - y).pow(2).sum(-1).mean())

or, when the target gradient comes from elsewhere (a critic, an environment), ``opt.step(targets_fn, grad=G)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch

from pmoe_rl.nets import adam

Targets = torch.Tensor | Sequence[torch.Tensor]
InnerSolver = Literal["armijo", "sgd", "adam"]
EtaSchedule = Literal["constant", "sqrt"]
Divergence = Literal["euclidean", "kl_logits"]


def _tuple(z: Targets) -> tuple[torch.Tensor, ...]:
    return (z,) if isinstance(z, torch.Tensor) else tuple(z)


def divergence(kind: Divergence, z: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """D(z, z_t) summed over every element: ``euclidean`` 1/2 ||z - z_t||^2; ``kl_logits`` the Bregman divergence
    of logsumexp over the last dimension, = KL(softmax(z_t) || softmax(z)) (mirror descent on logits)."""
    if kind == "euclidean":
        return 0.5 * (z - z_t).pow(2).sum()
    p_t = torch.softmax(z_t, -1)
    return (p_t * (torch.log_softmax(z_t, -1) - torch.log_softmax(z, -1))).sum()


class SSO(torch.optim.Optimizer):
    """The target-based surrogate optimiser: ``step(targets_fn, loss=... | grad=...)`` is one outer step.

    Args:
        params: the model's parameters (or parameter groups; the settings below are shared).
        eta: target-space step size eta (majorisation needs eta <= 1/L for an L-smooth per-sample loss).
        inner_steps: m, the cheap steps on the surrogate per outer step.
        eta_schedule: ``constant`` or ``sqrt`` (eta_t = eta / sqrt(t + 1), t the outer step).
        inner: ``armijo`` (gradient descent with a backtracking line search on g_t, the official code's solver),
            ``sgd`` (fixed step ``lr``) or ``adam`` (fused ``torch.optim.Adam(lr)``, its state kept across outer steps).
        lr: the learning rate of ``sgd`` and ``adam``.
        init_step: ``armijo``: the first step size tried at each outer step (reset, as the official code).
        divergence: ``euclidean`` or ``kl_logits`` (every target a vector of logits).
        reduction: ``mean`` (the loss averages per-sample losses over the targets' first dimension) or ``sum``.
        c, beta, expand, max_backtracks: Armijo's sufficient-decrease constant, backtracking factor, the growth
            of the step size from one inner step to the next (warm start), and the trials per step.
        tol: stop the inner loop once ||grad g_t|| <= tol (checked with the line search's read, so only
            ``armijo`` stops early).

    Counters (plain ints, read them freely): ``expensive_evals`` (target gradients), ``cheap_evals`` (target
    evaluations z(theta)), ``inner_steps_taken``, ``outer_steps``, ``line_search_trials``. ``step`` returns
    tensors (no host read): ``loss`` (l(z_t), when ``loss`` was given), ``surrogate`` (g_t after the last inner
    step, 0 at theta_t), ``eta`` and, for ``armijo``, ``step_size`` (the last accepted one).

    Host reads: ``sgd`` and ``adam`` make none; ``armijo`` makes one per line-search trial (the acceptance test).
    """

    def __init__(
        self,
        params: Iterable,
        eta: float = 0.5,
        inner_steps: int = 10,
        eta_schedule: EtaSchedule = "constant",
        inner: InnerSolver = "armijo",
        lr: float = 1e-3,
        init_step: float = 1.0,
        divergence: Divergence = "euclidean",
        reduction: Literal["mean", "sum"] = "mean",
        c: float = 0.1,
        beta: float = 0.9,
        expand: float = 2.0,
        max_backtracks: int = 100,
        tol: float = 1e-6,
    ):
        if min(eta, lr, init_step) <= 0:
            raise ValueError(f"eta, lr and init_step must be positive, got {eta}, {lr}, {init_step}")
        if inner_steps < 1 or max_backtracks < 1:
            raise ValueError(f"inner_steps and max_backtracks must be at least 1, got {inner_steps}, {max_backtracks}")
        for name, value, allowed in (
            ("eta_schedule", eta_schedule, ("constant", "sqrt")),
            ("inner", inner, ("armijo", "sgd", "adam")),
            ("divergence", divergence, ("euclidean", "kl_logits")),
            ("reduction", reduction, ("mean", "sum")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        defaults = dict(eta=eta, inner_steps=inner_steps, eta_schedule=eta_schedule, inner=inner, lr=lr,
                        init_step=init_step, divergence=divergence, reduction=reduction, c=c, beta=beta, expand=expand,
                        max_backtracks=max_backtracks, tol=tol)  # fmt: skip
        super().__init__(params, defaults)
        self.settings = defaults  # one set of settings for every group
        self.params = [p for group in self.param_groups for p in group["params"]]
        self.inner_opt = adam(self.params, self.params[0].device, lr=lr) if inner == "adam" else None
        self.expensive_evals = self.cheap_evals = self.inner_steps_taken = self.outer_steps = 0
        self.line_search_trials = 0

    # --- the surrogate -----------------------------------------------------------------------------------------
    def surrogate(
        self, targets_fn: Callable[[], Targets], z_t: tuple[torch.Tensor, ...], grad: tuple[torch.Tensor, ...],
        eta: float,
    ) -> torch.Tensor:  # fmt: skip
        """g_t(theta) at the current parameters (one cheap evaluation)."""
        s = self.settings
        z = _tuple(targets_fn())
        self.cheap_evals += 1
        if len(z) != len(z_t):
            raise ValueError(f"targets_fn returned {len(z)} targets, expected {len(z_t)}")
        n = z_t[0].shape[0] if s["reduction"] == "mean" and z_t[0].dim() else 1
        linear = sum((g * (zi - zt)).sum() for g, zi, zt in zip(grad, z, z_t))
        proximity = sum(divergence(s["divergence"], zi, zt) for zi, zt in zip(z, z_t))
        return linear + proximity / (eta * n)

    def target_gradient(
        self, targets_fn: Callable[[], Targets], loss: Callable[..., torch.Tensor] | None, grad: Targets | None,
        z_t: Targets | None = None,
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor | None]:  # fmt: skip
        """z_t (evaluated here unless given), G_t = grad l(z_t) (the one expensive evaluation) and l(z_t) (None when
        ``grad`` was given)."""
        if (loss is None) == (grad is None):
            raise ValueError("give exactly one of loss (a function of the targets) or grad (their gradient)")
        if z_t is None:
            with torch.no_grad():
                z_t = targets_fn()
            self.cheap_evals += 1
        z_t = tuple(z.detach() for z in _tuple(z_t))
        self.expensive_evals += 1
        if grad is not None:
            grads = tuple(g.detach() for g in _tuple(grad))
            if [g.shape for g in grads] != [z.shape for z in z_t]:
                raise ValueError(f"grad shapes {[tuple(g.shape) for g in grads]} differ from the targets' "
                                 f"{[tuple(z.shape) for z in z_t]}")  # fmt: skip
            return z_t, grads, None
        with torch.enable_grad():
            leaves = tuple(z.clone().requires_grad_(True) for z in z_t)
            value = loss(*leaves)
            grads = torch.autograd.grad(value, leaves, allow_unused=True, materialize_grads=True)
        return z_t, grads, value.detach()

    def eta_at(self, t: int) -> float:
        s = self.settings
        return s["eta"] / math.sqrt(t + 1) if s["eta_schedule"] == "sqrt" else s["eta"]

    # --- the outer step ----------------------------------------------------------------------------------------
    def step(  # type: ignore[override]
        self,
        targets_fn: Callable[[], Targets],
        loss: Callable[..., torch.Tensor] | None = None,
        grad: Targets | None = None,
        z_t: Targets | None = None,
    ) -> dict[str, torch.Tensor]:
        """One outer step: z_t and G_t once (``loss(*targets)`` is differentiated at z_t, or ``grad`` is G_t),
        then ``inner_steps`` steps on g_t. ``targets_fn`` must be a deterministic function of the parameters
        (fix any noise and inputs in the closure); ``z_t``, its value now, when the caller already has it."""
        s = self.settings
        z_t, grads, value = self.target_gradient(targets_fn, loss, grad, z_t)
        eta = self.eta_at(self.outer_steps)
        self.outer_steps += 1
        params = [p for p in self.params if p.requires_grad]
        out = {"eta": torch.tensor(eta)}
        if value is not None:
            out["loss"] = value
        with torch.enable_grad():
            if s["inner"] == "armijo":
                out.update(self._armijo(params, lambda: self.surrogate(targets_fn, z_t, grads, eta)))
            else:
                out["surrogate"] = self._plain(params, lambda: self.surrogate(targets_fn, z_t, grads, eta))
        return out

    def _plain(self, params: list[torch.Tensor], surrogate: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``inner_steps`` steps of SGD or Adam on g_t; no host read."""
        value = torch.zeros(())
        for _ in range(self.settings["inner_steps"]):
            value = surrogate()
            grads = torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True)
            if self.inner_opt is not None:
                for p, g in zip(params, grads):
                    p.grad = g
                self.inner_opt.step()
            else:
                with torch.no_grad():
                    torch._foreach_add_(params, grads, alpha=-self.settings["lr"])
            self.inner_steps_taken += 1
        return value.detach()

    def _armijo(self, params: list[torch.Tensor], surrogate: Callable[[], torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gradient descent on g_t with Armijo backtracking: accept alpha once
        g(w - alpha grad) <= g(w) - c alpha ||grad||^2, else alpha <- beta alpha; the next inner step first tries
        expand * alpha. One host read per trial."""
        s = self.settings
        alpha, value = s["init_step"], torch.zeros(())
        start = [torch.empty_like(p) for p in params]  # the inner step's starting point w
        for k in range(s["inner_steps"]):
            value = surrogate()
            grads = torch.autograd.grad(value, params, allow_unused=True, materialize_grads=True)
            value = value.detach()
            with torch.no_grad():
                norm2 = sum(g.pow(2).sum() for g in grads)
                torch._foreach_copy_(start, params)
                if k:
                    alpha *= s["expand"]
                for _ in range(s["max_backtracks"]):
                    torch._foreach_copy_(params, start)
                    torch._foreach_add_(params, grads, alpha=-alpha)
                    trial = surrogate()
                    self.line_search_trials += 1
                    accept, converged = torch.stack(
                        [trial <= value - s["c"] * alpha * norm2, norm2 <= s["tol"] ** 2]
                    ).tolist()
                    if accept or converged:
                        break
                    alpha *= s["beta"]
                else:  # no decrease found: stay at w and stop
                    torch._foreach_copy_(params, start)
                    break
            self.inner_steps_taken += 1
            value = trial
            if converged:
                break
        return {"surrogate": value, "step_size": torch.tensor(alpha)}

    # --- state ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        out = super().state_dict()
        out["counts"] = {"expensive_evals": self.expensive_evals, "cheap_evals": self.cheap_evals,
                         "inner_steps_taken": self.inner_steps_taken, "outer_steps": self.outer_steps,
                         "line_search_trials": self.line_search_trials}  # fmt: skip
        if self.inner_opt is not None:
            out["inner"] = self.inner_opt.state_dict()
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        counts, inner = state_dict.pop("counts", {}), state_dict.pop("inner", None)
        super().load_state_dict(state_dict)
        for name, value in counts.items():
            setattr(self, name, int(value))
        if inner is not None and self.inner_opt is not None:
            self.inner_opt.load_state_dict(inner)
