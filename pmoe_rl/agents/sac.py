"""SAC with a mixture policy and a named actor-loss estimator (PMOE by default; docs/algorithms.md), CleanRL-style.

The update, per minibatch (order: temperature, critic, then actor against the updated critic):

  1. policy forward on s: one reparameterised sample per expert, a_k = tanh(mu_k + sigma_k eps_k),
     with the experts' own log-densities log pi_k(a_k|s);
  2. k*(s) = argmax_k min(Q_1, Q_2)(s, a_k), all B*K actions scored in one critic call, no autograd;
  3. alpha step:   L_alpha = -mean[ log alpha * (log pi(a|s) + H_target) ], log pi from the estimator
                   (PMOE: expert k*'s own log pi_{k*}(a_{k*}|s))
  4. critic step:  y = r_scale r + (1 - terminated) gamma [ min Qbar(s', a') - alpha log pi_{k'}(a'|s') ],
                   k' ~ Cat(w(s')), a' = expert k''s sample, so a' is an exact mixture sample
  5. actor step:   the estimator's loss (``estimators.PMOE``: best-expert SAC loss + MSE gate loss); with
                   ``sac.actor_update=sso`` the loss's gradient with respect to the policy's outputs (means,
                   log-stds, log gate weights; the noise fixed) is taken once, then ``sso_inner_steps`` cheap
                   steps on the target-based surrogate (:mod:`pmoe_rl.sso`, docs/sso.md)
  6. Polyak update of the target critics.

k* is chosen with the critic before its step (as in the official code); the actor's gradient uses the
updated critic (SB3's order). With one expert this is exactly SAC with a tanh-Gaussian.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from pmoe_rl.agents.build import build_policy
from pmoe_rl.agents.runner import Agent, EpisodeStats
from pmoe_rl.buffers import Batch, ReplayBuffer, Staging
from pmoe_rl.config import Config
from pmoe_rl.envs import make_env
from pmoe_rl.estimators import ActorBatch, make_estimator, next_action
from pmoe_rl.logger import RunLogger
from pmoe_rl.mixture import SquashedMixture, best_expert, expert_separation
from pmoe_rl.nets import TwinQ, adam
from pmoe_rl.sso import SSO


class SAC(Agent):
    """The networks, optimisers, update rule and one-step collection of SAC."""

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device):
        super().__init__(cfg, device)
        sac = cfg.sac
        self.policy = build_policy(cfg, obs_dim, act_dim).to(device)
        self.critic = TwinQ(obs_dim, act_dim, sac.critic_hidden).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.learn_alpha = sac.ent_coef == "auto"
        init = sac.init_alpha if self.learn_alpha else max(float(sac.ent_coef), 1e-30)
        self.log_alpha = torch.tensor(float(np.log(init)), device=device, requires_grad=self.learn_alpha)
        self.target_entropy = float(-act_dim if sac.target_entropy == "auto" else sac.target_entropy)
        if sac.actor_update == "sso":
            self.actor_opt = SSO(self.policy.parameters(), sac.sso_eta, sac.sso_inner_steps, sac.sso_eta_schedule,
                                 sac.sso_inner, lr=sac.actor_lr)  # fmt: skip
        else:
            self.actor_opt = adam(self.policy.parameters(), device, self.capturable, lr=sac.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), device, self.capturable, lr=sac.critic_lr)
        self.alpha_opt = adam([self.log_alpha], device, self.capturable, lr=sac.alpha_lr) if self.learn_alpha else None
        self._gradient_step = self.compiled(self.gradient_step)
        self.estimator = make_estimator(cfg.estimator, **sac.model_dump())
        self._params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self.buffer = ReplayBuffer(min(sac.buffer_size, cfg.steps), obs_dim, act_dim, device)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.env = None

    def q_min(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min(Q_1, Q_2)(s, a) with the critic's weights held fixed (gradients reach ``act`` only)."""
        return self.critic(obs, act, detach_params=True).min(0).values

    @torch.no_grad()
    def td_target(self, batch: Batch, alpha: torch.Tensor) -> torch.Tensor:
        """y = r_scale r + (1 - terminated) gamma [min_i Qbar_i(s', a') - alpha log pi(a'|s')]: k' ~ Cat(w(s')),
        a' from expert k' (an exact mixture sample), its component log-prob by default (``sac.target_logp``)."""
        sac = self.cfg.sac
        next_a, next_logp = next_action(self.policy(batch.next_obs), sac.target_logp, sac.behavior_expert)
        next_q = self.critic_target(batch.next_obs, next_a).min(0).values - alpha * next_logp
        return sac.reward_scale * batch.rewards + (1.0 - batch.terminated) * sac.gamma * next_q

    def update(self, batch: Batch, with_metrics: bool = False) -> dict[str, torch.Tensor]:
        """One gradient step on a minibatch (steps 1-5, compiled with ``--compile``), then the target critics'
        update. Returns the metrics (tensors; SB3 logs the latest update's values too) only when asked, so that
        the other updates spend nothing on diagnostics."""
        metrics = self._gradient_step(batch, with_metrics)
        # 6: targets
        self.n_updates += 1
        if self.n_updates % self.cfg.sac.target_update_interval == 0:
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._params, self.cfg.sac.tau)
        return metrics

    def gradient_step(self, batch: Batch, with_metrics: bool) -> dict[str, torch.Tensor]:
        """Steps 1-5 of the update: no Python branch on tensor values and no host read, so that
        ``torch.compile`` captures it whole (but for the backward calls) and CUDA graphs can replay it."""
        estimator = self.estimator
        obs = batch.obs
        # 1-2: every expert's reparameterised action, and the best expert under the current critic if needed
        dist = self.policy(obs)
        eps = torch.randn(dist.mean.shape, device=obs.device, dtype=obs.dtype)
        u, logp = dist.rsample_with_log_prob(eps=eps)  # (B, K, A), (B, K)
        k_star = (
            best_expert(estimator.candidates(dist, u), lambda a: self.q_min(obs, a))
            if estimator.needs_best_expert
            else None
        )
        actor_batch = ActorBatch(obs, dist, u, logp, k_star)

        # 3: temperature
        alpha_loss = None
        if self.learn_alpha:
            with torch.no_grad():
                # L_alpha is linear in log alpha, so its gradient -mean(log pi + H_target) is written out
                grad = -(estimator.temperature_log_prob(actor_batch) + self.target_entropy).mean()
                alpha_loss = self.log_alpha * grad
            self.log_alpha.grad = grad
            self.alpha_opt.step()
        alpha = self.log_alpha.detach().exp()

        # 4: critic
        target = self.td_target(batch, alpha)
        q = self.critic(obs, batch.actions)  # (2, B)
        critic_loss = (q - target).pow(2).mean()  # = 0.5 * (mse(Q_1) + mse(Q_2)), SB3's critic loss
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        # 5: actor (and gate) against the updated critic
        if isinstance(self.actor_opt, SSO):
            out = self.sso_actor_step(actor_batch, eps, alpha)
        else:
            out = estimator(actor_batch, self.q_min, alpha)
            self.actor_opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            self.actor_opt.step()

        if not with_metrics:
            return {}
        metrics = {"critic_loss": critic_loss.detach(), "actor_loss": out["policy_loss"].detach(), "ent_coef": alpha}
        if alpha_loss is not None:
            metrics["ent_coef_loss"] = alpha_loss.detach()
        metrics.update({k: v.detach() for k, v in out.items() if k not in ("loss", "policy_loss")})
        metrics.update(estimator.diagnostics(actor_batch))
        if self.policy.n_experts > 1:
            metrics["gate_entropy"] = dist.gate_entropy()
            metrics["expert_separation"] = expert_separation(dist.mean.detach(), dist.log_std.detach())
        return metrics

    def sso_actor_step(self, batch: ActorBatch, eps: torch.Tensor, alpha: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 5 by target-based surrogate optimisation: the targets are the policy's outputs on the batch's
        states, z = (mu, log sigma, log w); the expensive oracle is the estimator's loss as a function of z (the
        noise ``eps`` and the best expert fixed; one critic backward to the actions); then m cheap policy-only steps
        on <G, z(theta) - z_t> + 1/(2 eta) mean_s ||z(theta) - z_t||^2. For PMOE, G is zero but for the best
        expert's mean and log-std and the gate."""
        obs, out = batch.obs, {}

        def targets():
            dist = self.policy(obs)
            return dist.mean, dist.log_std, dist.log_w

        def loss(mean, log_std, log_w):
            dist = SquashedMixture(mean, log_std, log_w)
            u, logp = dist.rsample_with_log_prob(eps=eps)
            out.update(self.estimator(ActorBatch(obs, dist, u, logp, batch.k_star), self.q_min, alpha))
            return out["loss"]

        dist = batch.dist  # the policy on obs, computed in step 1 (its weights have not changed since)
        stats = self.actor_opt.step(targets, loss, z_t=(dist.mean, dist.log_std, dist.log_w))
        return {**out, "sso_surrogate": stats["surrogate"]}

    # --- what the run skeleton saves -----------------------------------------------------------------------
    def modules(self) -> dict:
        return dict(policy=self.policy, critic=self.critic, critic_target=self.critic_target, log_alpha=self.log_alpha)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}
        return {name: opt for name, opt in opts.items() if opt is not None}

    def extra_state(self) -> dict:
        tensors, meta = self.buffer.state_dict()
        return {"buffer": tensors, "buffer_meta": meta}

    def load_extra_state(self, state: dict) -> None:
        self.buffer.load_state_dict(state["buffer"], state["buffer_meta"])

    # --- collection --------------------------------------------------------------------------------------------
    def start(self, seed: int, resumed: bool, step: int) -> None:
        self.env = self.rng_env = make_env(self.cfg.env, seed=seed)
        # a transition after its observation, [a, r, s', terminated], goes to the device in one copy
        self.staging = Staging(self.act_dim + self.obs_dim + 2, self.device)
        self.obs_t = None  # the observation to act on, on the device
        if not resumed:  # a resumed run resets in the first iteration, after its generators are restored
            self._reset(seed)

    def _reset(self, seed: int | None = None) -> None:
        self.obs_np = self.env.reset(seed=seed)[0]
        self.obs_t = self._upload_obs(self.obs_np)

    def _upload_obs(self, obs) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    def iterate(self, step: int, stats: EpisodeStats, log: RunLogger, with_metrics: bool) -> dict[str, torch.Tensor]:
        """One environment step (warm-up actions before ``learning_starts``), then ``gradient_steps`` updates
        every ``train_freq`` steps. Host round trips per step: one device-to-host copy (the action and its
        expert together) and one host-to-device copy (the transition); the replay row is written on the device."""
        sac, env, a = self.cfg.sac, self.env, self.act_dim
        if self.obs_t is None:  # the interrupted episode of a resumed run is lost; a new one starts
            self._reset()
        warmup = step < sac.learning_starts and sac.warmup == "uniform"
        if warmup:
            action = env.action_space.sample()
        else:
            action_t, k = self.policy.act(self.obs_t.unsqueeze(0), expert=sac.behavior_expert)
            out = torch.cat([action_t[0], k.to(action_t.dtype)]).cpu().numpy()
            action = out[:a]
            stats.acted[int(out[a])] += 1
        next_obs, reward, terminated, truncated, info = env.step(action)
        if self.transitions is not None:
            self.transitions.add(self.obs_np, action, reward, next_obs, terminated, truncated)
        self.obs_np = next_obs
        host = self.staging.host
        host[:a], host[a], host[a + 1 : -1], host[-1] = action, reward, next_obs, float(terminated)
        transition = self.staging.upload(blocking=warmup)  # warm-up steps read nothing back to order the copies
        self.buffer.add_row(torch.cat([self.obs_t, transition]))
        self.obs_t = transition[a + 1 : -1]
        step += 1
        if terminated or truncated:
            stats.add(info["episode"]["r"], info["episode"]["l"])
            self._reset()
            log.progress(0, ret=f"{stats.returns[-1]:.1f}")
        metrics = {}
        if step >= sac.learning_starts and step % sac.train_freq == 0:
            for i in range(sac.gradient_steps):
                out = self.update(self.buffer.sample(sac.batch_size), with_metrics and i == sac.gradient_steps - 1)
                metrics = out or metrics
        log.progress(1)
        return metrics

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
