"""PMOE-SAC as a stable-baselines3 algorithm: ``SAC`` whose ``train()`` uses the PMOE estimator.

The maths is pmoe-rl's own (``pmoe_rl.estimators``: best expert, PMOE actor and gate loss, temperature and
target log-densities), applied to SB3's replay buffer, critics, target critics and optimisers, in SB3's
order (temperature, critic, actor, Polyak), exactly as the native agent (reference/pmoe.md §2-§6).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import polyak_update

from pmoe_rl.config import SACConfig
from pmoe_rl.estimators import best_expert, next_action, pmoe, temperature_log_prob
from pmoe_rl.sb3.common import record_means
from pmoe_rl.sb3.policies import MixtureSACPolicy


class PMOESAC(SAC):
    """SAC with a Gaussian-mixture policy trained by PMOE's frequency approximate gradient.

    ``PMOESAC("MlpPolicy", env, policy_kwargs=dict(n_experts=4))``; every other argument is SAC's. PMOE options
    (defaults: the official code): ``expert_update`` (``best`` | ``all``), ``gate_loss`` (``mse`` | ``ce``),
    ``gate_loss_weight`` (1.0), ``target_logp`` (``component`` | ``mixture``), ``alpha_logp`` (``best`` |
    ``mixture``). Logs SAC's ``train/*`` values plus ``train/gate_loss``, ``train/gate_entropy`` and
    ``train/best_expert_freq_k``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MixtureSACPolicy}
    policy: MixtureSACPolicy

    def __init__(self, policy, env, *args, expert_update: str = "best", gate_loss: str = "mse",
                 gate_loss_weight: float = 1.0, target_logp: str = "component", alpha_logp: str = "best", **kwargs):
        self.expert_update, self.gate_loss, self.gate_loss_weight = expert_update, gate_loss, gate_loss_weight
        self.target_logp, self.alpha_logp = target_logp, alpha_logp
        super().__init__(policy, env, *args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, MixtureSACPolicy):
            raise ValueError(f"PMOESAC needs a MixtureSACPolicy, got {type(self.policy).__name__}")

    def _options(self) -> SACConfig:
        return SACConfig(expert_update=self.expert_update, gate_loss=self.gate_loss,
                         gate_loss_weight=self.gate_loss_weight, target_logp=self.target_logp,
                         alpha_logp=self.alpha_logp)

    def _q_min(self, obs: torch.Tensor, actions: torch.Tensor, critic=None) -> torch.Tensor:
        """min_i Q_i(s, a) for (B, A) -> (B,) or K actions per state (B, K, A) -> (B, K)."""
        critic = critic or self.critic
        if actions.dim() == 2:
            return torch.cat(critic(obs, actions), dim=1).min(1).values
        bsz, k, _ = actions.shape
        obs_k = obs.unsqueeze(1).expand(bsz, k, *obs.shape[1:]).reshape(bsz * k, *obs.shape[1:])
        return torch.cat(critic(obs_k, actions.reshape(bsz * k, -1)), dim=1).min(1).values.view(bsz, k)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        opts = self._options()
        logs: dict[str, list] = {}

        for gradient_step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = data.discounts if data.discounts is not None else self.gamma
            obs = data.observations
            # every expert's reparameterised action and the best expert under the current critic (§2)
            dist = self.actor.distribution(obs)
            u, logp = dist.rsample_with_log_prob()
            k_star = best_expert(obs, torch.tanh(u.detach()), self._q_min)

            # temperature (§2.7)
            if self.ent_coef_optimizer is not None:
                ent_coef = torch.exp(self.log_ent_coef.detach())
                logp_a = temperature_log_prob(dist, u, logp, k_star, opts.alpha_logp)
                ent_coef_loss = -(self.log_ent_coef * (logp_a + self.target_entropy)).mean()
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()
                logs.setdefault("ent_coef_loss", []).append(ent_coef_loss.item())
            else:
                ent_coef = self.ent_coef_tensor

            # critic (§3): a' from expert k' ~ Cat(w(s'))
            with torch.no_grad():
                next_a, next_logp = next_action(self.actor.distribution(data.next_observations), opts.target_logp)
                next_q = self._q_min(data.next_observations, next_a, self.critic_target) - ent_coef * next_logp
                target = data.rewards + (1 - data.dones) * discounts * next_q.unsqueeze(1)
            critic_loss = 0.5 * sum(F.mse_loss(q, target) for q in self.critic(obs, data.actions))
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            # actor and gate (§2.4-6) against the updated critic
            out = pmoe(dist, u, logp, k_star, obs, self._q_min, ent_coef, opts)
            self.actor.optimizer.zero_grad()
            out["loss"].backward()
            self.actor.optimizer.step()

            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

            logs.setdefault("ent_coef", []).append(ent_coef.item())
            logs.setdefault("critic_loss", []).append(critic_loss.item())
            logs.setdefault("actor_loss", []).append(out["policy_loss"].item())
            if dist.n_experts > 1:
                w = dist.weights.detach()
                logs.setdefault("gate_loss", []).append(out["gate_loss"].item())
                logs.setdefault("gate_entropy", []).append(-(w * dist.log_w.detach()).sum(-1).mean().item())
                logs.setdefault("best_expert_freq", []).append(
                    F.one_hot(k_star, dist.n_experts).float().mean(0).cpu().numpy())

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        record_means(self.logger, logs)
