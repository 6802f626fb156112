"""PMOE-PPO as a stable-baselines3 algorithm: ``PPO`` plus the auxiliary Q head and the gate loss
(docs/algorithms.md).

``train()`` is SB3's ``PPO.train`` (same loss, logging and early stop) with two more terms per minibatch,
as pmoe-rl's native PMOE-PPO (``pmoe_rl.agents.ppo``):

    L_Q    = mean (Q(s, clip(a)) - R)^2                 R: the rollout buffer's GAE returns
    L_gate = gate_loss(w(s), k*),  k* = argmax_k Q(s, clip(a_k)),  a_k ~ N(mu_k, sigma_k) fresh, no grad
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from stable_baselines3 import PPO
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import explained_variance

from pmoe_rl import options
from pmoe_rl.mixture import best_expert, expert_frequencies, gate_loss
from pmoe_rl.sb3.common import record_means
from pmoe_rl.sb3.policies import MixtureActorCriticPolicy, MultiInputMixtureActorCriticPolicy


class PMOEPPO(PPO):
    """``PMOEPPO("MlpPolicy", env, policy_kwargs=dict(n_experts=5))``: PPO with a Gaussian-mixture policy
    (mixture log-density in the ratio), an auxiliary Q(s, a) head (``policy_kwargs["q_net_arch"]``, default
    [64, 64, 64]) trained on the GAE returns with weight ``q_coef`` (1.0), and the gate regressed onto the best
    expert under that Q with weight ``gate_loss_weight`` (1.0; ``gate_loss``: ``mse`` | ``ce``). Every other
    argument is PPO's. Logs PPO's ``train/*`` values plus ``train/q_loss``, ``train/gate_loss`` and
    ``train/best_expert_freq_k``."""

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MixtureActorCriticPolicy,
        "MultiInputPolicy": MultiInputMixtureActorCriticPolicy,
    }
    policy: MixtureActorCriticPolicy

    def __init__(
        self,
        policy,
        env,
        *args,
        q_coef: float = options.Q_COEF,
        gate_loss: options.GateLoss = options.GATE_LOSS,
        gate_loss_weight: float = options.GATE_LOSS_WEIGHT,
        policy_kwargs: dict | None = None,
        **kwargs,
    ):
        policy_class = self.policy_aliases.get(policy, policy) if isinstance(policy, str) else policy
        if isinstance(policy_class, type) and not issubclass(policy_class, MixtureActorCriticPolicy):
            raise ValueError(
                f"PMOEPPO needs a MixtureActorCriticPolicy (or the aliases MlpPolicy, MultiInputPolicy), "
                f"got {policy_class.__name__}"
            )
        self.q_coef, self.gate_loss, self.gate_loss_weight = q_coef, gate_loss, gate_loss_weight
        policy_kwargs = {
            "n_experts": options.PPO_EXPERTS,
            "q_net_arch": list(options.Q_HIDDEN),
            **(policy_kwargs or {}),
        }
        super().__init__(policy, env, *args, policy_kwargs=policy_kwargs, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, MixtureActorCriticPolicy) or self.policy.q_net is None:
            raise ValueError("PMOEPPO needs a MixtureActorCriticPolicy with an auxiliary Q head (q_net_arch)")

    def train(self) -> None:
        policy = self.policy
        policy.set_training_mode(True)
        self._update_learning_rate(policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        clip_range_vf = self.clip_range_vf(self._current_progress_remaining) if self.clip_range_vf else None
        logs: dict[str, list] = {}
        continue_training = True
        for _epoch in range(self.n_epochs):
            approx_kl_divs = []
            for data in self.rollout_buffer.get(self.batch_size):
                features, latent_pi, latent_vf = policy._latents(data.observations)
                dist = policy._mixture(features, latent_pi)
                values, log_prob = policy.value_net(latent_vf).flatten(), dist.log_prob(data.actions)
                advantages = data.advantages
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                ratio = torch.exp(log_prob - data.old_log_prob)
                policy_loss = -torch.min(
                    advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                ).mean()
                if clip_range_vf is not None:
                    values = data.old_values + torch.clamp(values - data.old_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(data.returns, values)
                entropy_loss = -torch.mean(-log_prob)

                # PMOE-PPO: the auxiliary Q on the taken action, and the gate toward the best fresh expert
                mix = dist.distribution
                q_loss = F.mse_loss(
                    policy.q_values(data.observations, data.actions.unsqueeze(1)).squeeze(1), data.returns
                )
                with torch.no_grad():  # score a fresh sample of every expert
                    k_star = best_expert(mix.rsample(), lambda a, obs=data.observations: policy.q_values(obs, a))
                g_loss = gate_loss(mix, k_star, self.gate_loss)

                loss = (
                    policy_loss
                    + self.ent_coef * entropy_loss
                    + self.vf_coef * value_loss
                    + self.q_coef * q_loss
                    + self.gate_loss_weight * g_loss
                )
                with torch.no_grad():
                    log_ratio = log_prob - data.old_log_prob
                    approx_kl_div = torch.mean((torch.exp(log_ratio) - 1) - log_ratio)
                    approx_kl_divs.append(approx_kl_div)
                for key, value in (
                    ("policy_gradient_loss", policy_loss),
                    ("value_loss", value_loss),
                    ("entropy_loss", entropy_loss),
                    ("q_loss", q_loss),
                    ("gate_loss", g_loss),
                ):
                    logs.setdefault(key, []).append(value.detach())  # read once, in record_means
                logs.setdefault("clip_fraction", []).append(((ratio - 1).abs() > clip_range).float().mean())
                logs.setdefault("best_expert_freq", []).append(expert_frequencies(k_star, mix.n_experts))
                # the early stop is the only per-minibatch read of the device, and only when asked for
                if self.target_kl is not None and approx_kl_div.item() > 1.5 * self.target_kl:
                    continue_training = False
                    break
                policy.optimizer.zero_grad()
                loss.backward()
                # as the native agent: policy and value clipped together, the auxiliary Q on its own
                q_params = list(policy.q_net.parameters())
                q_ids = {id(p) for p in q_params}
                torch.nn.utils.clip_grad_norm_(
                    [p for p in policy.parameters() if id(p) not in q_ids], self.max_grad_norm
                )
                torch.nn.utils.clip_grad_norm_(q_params, self.max_grad_norm)
                policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        record_means(self.logger, {**logs, "approx_kl": approx_kl_divs, "loss": [loss]})
        buffer = self.rollout_buffer
        self.logger.record(
            "train/explained_variance", explained_variance(buffer.values.flatten(), buffer.returns.flatten())
        )
        self.logger.record("train/std", torch.exp(policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
