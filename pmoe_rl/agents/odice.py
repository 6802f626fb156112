"""O-DICE (Mao, Xu, Zhang, Zhan, ICLR 2024, "Offline RL with Orthogonal-gradient DICE"), per the official code
(docs/offline.md has the derivation):

  value:  L(V) = (1 - lambda) E_s[V(s)] + lambda E[f*(r + gamma V(s') - V(s))]
          forward residual  delta_f = r + (1 - d) gamma Vbar(s') - V(s)    (gradient through V(s))
          backward residual delta_b = r + (1 - d) gamma V(s') - Vbar(s)    (gradient through V(s'))
          g_f = grad lambda E f*(delta_f),  g_b = grad lambda eta E f*(delta_b)   (one flat vector over all of V)
          orthogonal: g = grad (1 - lambda) E V(s) + g_f + (g_b - c g_f),  c = <g_f, g_b> / max(|g_f|^2, 1e-10)
          true:       the gradient of L through both V(s) and V(s');  semi: through V(s) only (Vbar(s'))
  policy: max E[w log pi(a|s)],  w = min(w_f(delta_f), max_weight) averaged over the twin heads, delta_f detached
          (with the true gradient, the residual through V(s') instead of Vbar(s'));
          chi-square: w = max(delta, 0) (odice.weight=analytic: max(delta / 2 + 1, 0)); reverse KL: exp(delta - 1)
  target: Vbar <- (1 - tau) Vbar + tau V every step.

c stays on the device (no host read per step).
"""

from __future__ import annotations

import copy

import torch

from pmoe_rl.agents.offline import OfflineAgent, ValueNet
from pmoe_rl.buffers import Batch
from pmoe_rl.config import Config
from pmoe_rl.nets import adam


def f_star(y: torch.Tensor, f: str) -> torch.Tensor:
    """The convex conjugate f*(y). Pearson chi-square, f(x) = (x - 1)^2: y w - (w - 1)^2 at its maximiser
    w = max(y / 2 + 1, 0), i.e. y + y^2 / 4 for y >= -2 and -1 below. Reverse KL: exp(y - 1)."""
    if f == "chi2":
        w = (y / 2 + 1).clamp_min(0.0)
        return y * w - (w - 1) ** 2
    return torch.exp(y - 1)


def bc_weight(y: torch.Tensor, f: str, weight: str = "official") -> torch.Tensor:
    """The policy weight of a residual: for chi-square max(y, 0) (``official``, the code's choice) or the analytic
    (f')^-1(y) = max(y / 2 + 1, 0) (``analytic``: f*'(y), the maximiser in :func:`f_star`); exp(y - 1) for
    reverse KL, which is both."""
    if f != "chi2":
        return torch.exp(y - 1)
    return y.clamp_min(0.0) if weight == "official" else (y / 2 + 1).clamp_min(0.0)


def orthogonal_gradient(g_f: torch.Tensor, g_b: torch.Tensor) -> torch.Tensor:
    """g_f + g_perp with g_perp = g_b - (<g_b, g_f> / |g_f|^2) g_f, the part of g_b orthogonal to g_f
    (flat vectors; the coefficient stays a device tensor)."""
    c = torch.dot(g_f, g_b) / torch.dot(g_f, g_f).clamp_min(1e-10)
    return (1.0 - c) * g_f + g_b


class ODICE(OfflineAgent):
    section = "odice"

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device):
        super().__init__(cfg, obs_dim, act_dim, device)
        o = cfg.odice
        self.v = ValueNet(obs_dim, cfg.offline.value_hidden, 2 if o.twin_v else 1, o.layer_norm).to(device)
        self.v_target = copy.deepcopy(self.v).requires_grad_(False)
        self.v_params = list(self.v.parameters())
        self.v_opt = adam(self.v_params, device, lr=o.value_lr)

    def residual(self, batch: Batch, v: torch.Tensor) -> torch.Tensor:
        """delta_f = r + gamma (1 - d) min_i Vbar_i(s') - V(s), for V(s) of shape (n, B): the forward residual."""
        with torch.no_grad():
            v_target_next = self.v_target(batch.next_obs).min(0).values
        return batch.rewards + self.cfg.offline.gamma * (1.0 - batch.terminated) * v_target_next - v

    def extraction_weights(self, delta: torch.Tensor) -> torch.Tensor:
        """The behaviour-cloning weight of each transition: w(delta) clipped at max_weight, twin heads averaged."""
        o = self.cfg.odice
        return bc_weight(delta, o.f, o.weight).clamp_max(self.cfg.offline.max_weight).mean(0)

    def true_residual(self, batch: Batch, v: torch.Tensor) -> torch.Tensor:
        """r + gamma (1 - d) V_i(s') - V_i(s) per head, through V(s'): the residual of ``odice.update=true``."""
        return batch.rewards + self.cfg.offline.gamma * (1.0 - batch.terminated) * self.v(batch.next_obs) - v

    @torch.no_grad()
    def batch_weights(self, batch: Batch) -> torch.Tensor:
        v = self.v(batch.obs)
        true = self.cfg.odice.update == "true"
        return self.extraction_weights(self.true_residual(batch, v) if true else self.residual(batch, v))

    def value_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of V (``odice.update``); returns (the value loss, the residual of the policy weights, detached:
        delta_f, or with the true gradient r + gamma V(s') - V(s), as the official code)."""
        o, off = self.cfg.odice, self.cfg.offline
        lam, f = o.lam, o.f
        discount = off.gamma * (1.0 - batch.terminated)
        v = self.v(batch.obs)  # (n, B)
        delta_f = self.residual(batch, v)
        base = (1.0 - lam) * v.mean()
        if o.update == "semi":
            loss = base + lam * f_star(delta_f, f).mean()
            self.v_opt.zero_grad(set_to_none=True)
            loss.backward()
        elif o.update == "true":
            delta_f = self.true_residual(batch, v)  # the policy weighs this residual too
            loss = base + lam * f_star(delta_f, f).mean()
            self.v_opt.zero_grad(set_to_none=True)
            loss.backward()
        else:
            with torch.no_grad():
                v_target = self.v_target(batch.obs).min(0).values
            delta_b = batch.rewards + discount * self.v(batch.next_obs) - v_target
            loss_f = lam * f_star(delta_f, f).mean()
            loss_b = lam * o.eta * f_star(delta_b, f).mean()  # eta folded in: the projection is linear
            params = self.v_params
            g_f = torch.cat([g.flatten() for g in torch.autograd.grad(loss_f, params, retain_graph=True)])
            g_b = torch.cat([g.flatten() for g in torch.autograd.grad(loss_b, params)])
            g_base = torch.autograd.grad(base, params)
            combined = orthogonal_gradient(g_f, g_b)
            offset = 0
            for p, g in zip(params, g_base):
                n = p.numel()
                p.grad = g + combined[offset : offset + n].view_as(p)
                offset += n
            loss = base + loss_f
        self.v_opt.step()
        return loss.detach(), delta_f.detach()

    def update(self, batch: Batch, with_metrics: bool = False) -> dict[str, torch.Tensor]:
        value_loss, delta_f = self.value_step(batch)
        weights = self.extraction_weights(delta_f)
        actor_loss = self.actor_step(batch, weights)
        self.soft_update(self.v_target, self.v, self.cfg.offline.tau)
        self.n_updates += 1
        if not with_metrics:
            return {}
        return {
            "value_loss": value_loss,
            "actor_loss": actor_loss,
            "v_mean": self.v(batch.obs).detach().mean(),
            "residual_mean": delta_f.mean(),
            "weight_mean": weights.mean(),
            "weight_nonzero": (weights > 0).float().mean(),
        }

    def modules(self) -> dict:
        return {"policy": self.policy, "v": self.v, "v_target": self.v_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "value": self.v_opt}
