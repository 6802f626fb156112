"""PMOE-SAC as a stable-baselines3 algorithm: ``SAC`` whose ``train()`` uses the PMOE estimator.

The maths is pmoe-rl's own (:class:`pmoe_rl.estimators.PMOE`: best expert, actor and gate loss, temperature
log-density; :func:`pmoe_rl.estimators.next_action`: the critic target's action), applied to SB3's replay
buffer, critics, target critics and optimisers, in SB3's order (temperature, critic, actor, Polyak), exactly
as the native agent (docs/algorithms.md).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from stable_baselines3 import SAC
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import polyak_update

from pmoe_rl import options
from pmoe_rl.estimators import PMOE, ActorBatch, next_action
from pmoe_rl.mixture import best_expert
from pmoe_rl.sb3.common import record_means
from pmoe_rl.sb3.policies import MixtureSACPolicy, MultiInputMixtureSACPolicy


class PMOESAC(SAC):
    """SAC with a Gaussian-mixture policy trained by PMOE's frequency approximate gradient.

    ``PMOESAC("MlpPolicy", env, policy_kwargs=dict(n_experts=4))``; every other argument is SAC's. PMOE options
    (defaults shared with the native agent through :mod:`pmoe_rl.options`: the official code's except
    ``update_sample`` and ``select_by``, docs/algorithms.md): ``expert_update``
    (``best`` | ``all``), ``gate_loss`` (``mse`` | ``ce``), ``gate_loss_weight`` (1.0), ``target_logp``
    (``component`` | ``mixture``), ``alpha_logp`` (``best`` | ``mixture``), ``update_sample`` (``selected`` |
    ``fresh``; docs/pmoe_diagnosis.md), ``select_by`` (``sample`` | ``mean``), ``policy_logp`` (``component`` |
    ``mixture``), ``behavior_expert`` (``sample`` | ``argmax``: the expert that acts while collecting and draws a'
    in the critic's target). ``warmup``: the actions of the first ``learning_starts`` steps, uniform random
    (``uniform``, SB3's behaviour and this class's default) or the initial policy (``policy``, the official code's
    and the native agent's default). Logs SAC's ``train/*`` values plus ``train/gate_loss``, ``train/gate_entropy``
    and ``train/best_expert_freq_k``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MixtureSACPolicy,
        "MultiInputPolicy": MultiInputMixtureSACPolicy,
    }
    policy: MixtureSACPolicy

    def __init__(
        self,
        policy,
        env,
        *args,
        expert_update: options.ExpertUpdate = options.EXPERT_UPDATE,
        gate_loss: options.GateLoss = options.GATE_LOSS,
        gate_loss_weight: float = options.GATE_LOSS_WEIGHT,
        target_logp: options.TargetLogp = options.TARGET_LOGP,
        alpha_logp: options.AlphaLogp = options.ALPHA_LOGP,
        update_sample: options.UpdateSample = options.UPDATE_SAMPLE,
        select_by: options.SelectBy = options.SELECT_BY,
        policy_logp: options.PolicyLogp = options.POLICY_LOGP,
        behavior_expert: options.BehaviorExpert = options.BEHAVIOR_EXPERT,
        warmup: options.Warmup = "uniform",
        **kwargs,
    ):
        self.expert_update, self.gate_loss, self.gate_loss_weight = expert_update, gate_loss, gate_loss_weight
        self.target_logp, self.alpha_logp, self.warmup = target_logp, alpha_logp, warmup
        self.update_sample, self.select_by, self.policy_logp = update_sample, select_by, policy_logp
        self.behavior_expert = behavior_expert
        super().__init__(policy, env, *args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, MixtureSACPolicy):
            raise ValueError(f"PMOESAC needs a MixtureSACPolicy, got {type(self.policy).__name__}")
        # the same loss object as the native agent, built once (also after load, which sets the options first)
        self.estimator = PMOE(**{field.name: getattr(self, field.name) for field in dataclasses.fields(PMOE)})
        self.actor.behavior_expert = self.behavior_expert  # the expert that acts while collecting

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "estimator"]  # rebuilt from the saved options

    def _sample_action(self, learning_starts: int, action_noise=None, n_envs: int = 1):
        # warmup="policy": act with the policy from the first step (updates still wait for learning_starts)
        return super()._sample_action(0 if self.warmup == "policy" else learning_starts, action_noise, n_envs)

    def _q_min(self, obs, actions: torch.Tensor, critic=None) -> torch.Tensor:
        """min_i Q_i(s, a) for (B, A) -> (B,) or K actions per state (B, K, A) -> (B, K); ``obs`` is what the
        features extractor takes (a tensor or a dict of tensors)."""
        critic = critic or self.critic
        if actions.dim() == 2:
            return torch.cat(critic(obs, actions), dim=1).min(1).values
        bsz, k, _ = actions.shape
        return torch.cat(critic(_repeat(obs, k), actions.reshape(bsz * k, -1)), dim=1).min(1).values.view(bsz, k)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        estimator = self.estimator
        logs: dict[str, list] = {}

        for gradient_step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = data.discounts if data.discounts is not None else self.gamma
            obs = data.observations
            # every expert's reparameterised action and the best expert under the current critic
            dist = self.actor.distribution(obs)
            u, logp = dist.rsample_with_log_prob()
            k_star = best_expert(estimator.candidates(dist, u), lambda a, obs=obs: self._q_min(obs, a))
            batch = ActorBatch(obs, dist, u, logp, k_star)

            # temperature
            if self.ent_coef_optimizer is not None:
                ent_coef = torch.exp(self.log_ent_coef.detach())
                logp_a = estimator.temperature_log_prob(batch)
                ent_coef_loss = -(self.log_ent_coef * (logp_a + self.target_entropy)).mean()
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()
                logs.setdefault("ent_coef_loss", []).append(ent_coef_loss.detach())
            else:
                ent_coef = self.ent_coef_tensor

            # critic: a' from expert k' ~ Cat(w(s'))
            with torch.no_grad():
                next_a, next_logp = next_action(
                    self.actor.distribution(data.next_observations), self.target_logp, self.behavior_expert
                )
                next_q = self._q_min(data.next_observations, next_a, self.critic_target) - ent_coef * next_logp
                target = data.rewards + (1 - data.dones) * discounts * next_q.unsqueeze(1)
            critic_loss = 0.5 * sum(F.mse_loss(q, target) for q in self.critic(obs, data.actions))
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            # actor and gate against the updated critic
            out = estimator(batch, self._q_min, ent_coef)
            self.actor.optimizer.zero_grad()
            out["loss"].backward()
            self.actor.optimizer.step()

            if gradient_step % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

            # metrics stay on the device; record_means reads them once per train() call
            logs.setdefault("ent_coef", []).append(ent_coef)
            logs.setdefault("critic_loss", []).append(critic_loss.detach())
            logs.setdefault("actor_loss", []).append(out["policy_loss"].detach())
            if dist.n_experts > 1:
                logs.setdefault("gate_loss", []).append(out["gate_loss"].detach())
                logs.setdefault("gate_entropy", []).append(dist.gate_entropy())
                for key, value in estimator.diagnostics(batch).items():
                    logs.setdefault(key, []).append(value)

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        record_means(self.logger, logs)


def _repeat(obs, k: int):
    """Each state's observation k times, (B, ...) -> (B * k, ...), for a tensor or a dict of tensors."""
    if isinstance(obs, dict):
        return {key: _repeat(value, k) for key, value in obs.items()}
    return obs.unsqueeze(1).expand(obs.shape[0], k, *obs.shape[1:]).reshape(-1, *obs.shape[1:])
