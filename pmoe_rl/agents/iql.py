"""IQL (Kostrikov, Nair, Levine, ICLR 2022, "Offline RL with Implicit Q-Learning"), its MuJoCo settings
(docs/offline.md):

  V:      min_V E[ |tau - 1(u < 0)| u^2 ],  u = min_i Qbar_i(s, a) - V(s)          (expectile tau = 0.7)
  Q:      min_Q sum_i E[(Q_i(s, a) - r - (1 - d) gamma V(s'))^2] / 2                (twin Q)
  policy: max E[ min(exp(beta u), max_weight) log pi(a|s) ]                          (beta = 3, u detached)
  target: Qbar <- (1 - tau) Qbar + tau Q every step; the policy's learning rate decays to 0 on a cosine
          (offline.actor_lr_schedule=auto).
"""

from __future__ import annotations

import copy

import torch

from pmoe_rl.agents.offline import OfflineAgent, ValueNet
from pmoe_rl.buffers import Batch
from pmoe_rl.config import Config
from pmoe_rl.nets import TwinQ, adam


class IQL(OfflineAgent):
    section = "iql"

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device):
        super().__init__(cfg, obs_dim, act_dim, device)
        iql, off = cfg.iql, cfg.offline
        self.v = ValueNet(obs_dim, off.value_hidden).to(device)
        self.q = TwinQ(obs_dim, act_dim, off.value_hidden).to(device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v_opt = adam(self.v.parameters(), device, lr=iql.value_lr)
        self.q_opt = adam(self.q.parameters(), device, lr=iql.critic_lr)

    def extraction_weights(self, u: torch.Tensor) -> torch.Tensor:
        """exp(beta u) clipped at max_weight, for the advantage u = min_i Qbar_i(s, a) - V(s)."""
        return torch.exp(self.cfg.iql.temperature * u).clamp_max(self.cfg.offline.max_weight)

    @torch.no_grad()
    def batch_weights(self, batch: Batch) -> torch.Tensor:
        return self.extraction_weights(self.q_target(batch.obs, batch.actions).min(0).values - self.v(batch.obs)[0])

    def update(self, batch: Batch, with_metrics: bool = False) -> dict[str, torch.Tensor]:
        iql, off = self.cfg.iql, self.cfg.offline
        with torch.no_grad():
            target_q = self.q_target(batch.obs, batch.actions).min(0).values
            next_v = self.v(batch.next_obs)[0]
        # V: expectile regression onto the target Q
        v = self.v(batch.obs)[0]
        u = target_q - v
        v_loss = ((iql.expectile - (u.detach() < 0).float()).abs() * u.pow(2)).mean()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        # Q: one-step TD onto V(s')
        q = self.q(batch.obs, batch.actions)
        q_loss = 0.5 * (q - (batch.rewards + (1.0 - batch.terminated) * off.gamma * next_v)).pow(2).sum(0).mean()
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        # policy: advantage-weighted regression
        weights = self.extraction_weights(u.detach())
        actor_loss = self.actor_step(batch, weights)
        self.soft_update(self.q_target, self.q, off.tau)
        self.n_updates += 1
        if not with_metrics:
            return {}
        return {
            "value_loss": v_loss.detach(),
            "critic_loss": q_loss.detach(),
            "actor_loss": actor_loss,
            "advantage_mean": u.detach().mean(),
            "weight_mean": weights.mean(),
        }

    def modules(self) -> dict:
        return {"policy": self.policy, "v": self.v, "q": self.q, "q_target": self.q_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "value": self.v_opt, "critic": self.q_opt}
