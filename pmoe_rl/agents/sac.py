"""SAC with a mixture policy and the PMOE estimator (reference/pmoe.md §2-§6), CleanRL-style.

The update, per minibatch (order: temperature, critic, then actor against the updated critic):

  1. policy forward on s: one reparameterised sample per expert, a_k = tanh(mu_k + sigma_k eps_k),
     with the experts' own log-densities log pi_k(a_k|s);
  2. k*(s) = argmax_k min(Q_1, Q_2)(s, a_k), all B*K actions scored in one critic call, no autograd;
  3. alpha step:   L_alpha = -mean[ log alpha * (log pi_{k*}(a_{k*}|s) + H_target) ]             (§2.7)
  4. critic step:  y = r_scale r + (1 - terminated) gamma [ min Qbar(s', a') - alpha log pi_{k'}(a'|s') ],
                   k' ~ Cat(w(s')), a' = expert k''s sample, so a' is an exact mixture sample          (§3)
  5. actor step:   the estimator's loss (``estimators.pmoe``: best-expert SAC loss + MSE gate loss)   (§2.4-6)
  6. Polyak update of the target critics.

k* is chosen with the critic before its step (as in the official code); the actor's gradient uses the
updated critic (SB3's order; reference §5). With one expert this is exactly SAC with a tanh-Gaussian.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pmoe_rl import checkpoint
from pmoe_rl.agents.base import EpisodeStats, Recorder, RunContext
from pmoe_rl.buffers import Batch, ReplayBuffer
from pmoe_rl.config import Config, to_dict
from pmoe_rl.envs import make_env, seed_everything
from pmoe_rl.estimators import ESTIMATORS, best_expert, next_action, temperature_log_prob
from pmoe_rl.evaluation import eval_seed
from pmoe_rl.logger import RunLogger
from pmoe_rl.mixture import expert_separation
from pmoe_rl.nets import TwinQ
from pmoe_rl.policies import build_policy


class SAC:
    """The networks, optimisers and update rule; knows nothing about environments or files."""

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device):
        self.cfg, self.device = cfg, device
        sac = cfg.sac
        self.policy = build_policy(cfg, obs_dim, act_dim).to(device)
        self.critic = TwinQ(obs_dim, act_dim, sac.critic_hidden).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.learn_alpha = sac.ent_coef == "auto"
        init = sac.init_alpha if self.learn_alpha else max(float(sac.ent_coef), 1e-30)
        self.log_alpha = torch.tensor(float(np.log(init)), device=device, requires_grad=self.learn_alpha)
        self.target_entropy = float(-act_dim if sac.target_entropy == "auto" else sac.target_entropy)
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=sac.actor_lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=sac.critic_lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=sac.alpha_lr, fused=True) if self.learn_alpha else None
        self.estimator = ESTIMATORS[cfg.estimator]
        self.pmoe = cfg.estimator == "pmoe"
        self.n_updates = 0
        self._params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    def q_min(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """min(Q_1, Q_2)(s, a) with the critic's weights held fixed (gradients reach ``act`` only)."""
        return self.critic(obs, act, detach_params=True).min(0).values

    @torch.no_grad()
    def td_target(self, batch: Batch, alpha: torch.Tensor) -> torch.Tensor:
        """y = r_scale r + (1 - terminated) gamma [min_i Qbar_i(s', a') - alpha log pi(a'|s')] (reference §3):
        k' ~ Cat(w(s')), a' from expert k' (an exact mixture sample), its component log-prob by default."""
        sac = self.cfg.sac
        next_a, next_logp = next_action(self.policy(batch.next_obs), sac.target_logp)
        next_q = self.critic_target(batch.next_obs, next_a).min(0).values - alpha * next_logp
        return sac.reward_scale * batch.rewards + (1.0 - batch.terminated) * sac.gamma * next_q

    def update(self, batch: Batch, with_metrics: bool = False) -> dict[str, torch.Tensor]:
        """One gradient step on a minibatch. Returns the metrics (tensors; SB3 logs the latest update's
        values too) only when asked, so that the other updates spend nothing on diagnostics."""
        sac = self.cfg.sac
        obs = batch.obs
        # 1-2: every expert's reparameterised action, and the best expert under the current critic
        dist = self.policy(obs)
        u, logp = dist.rsample_with_log_prob()  # (B, K, A), (B, K)
        k_star = best_expert(obs, torch.tanh(u.detach()), self.q_min) if self.pmoe else None

        # 3: temperature (other estimators: the mixture density of an exact mixture sample, as SAC)
        alpha_loss = None
        if self.learn_alpha:
            with torch.no_grad():
                if self.pmoe:
                    logp_a = temperature_log_prob(dist, u, logp, k_star, sac.alpha_logp)
                else:
                    logp_a = temperature_log_prob(dist, u, logp, dist.sample_expert(), "mixture")
                # L_alpha is linear in log alpha, so its gradient -mean(log pi + H_target) is written out
                grad = -(logp_a + self.target_entropy).mean()
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
        out = self.estimator(dist, u, logp, k_star, obs, self.q_min, alpha, sac)
        self.actor_opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.actor_opt.step()

        # 6: targets
        self.n_updates += 1
        if self.n_updates % sac.target_update_interval == 0:
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._params, sac.tau)

        if not with_metrics:
            return {}
        metrics = {"critic_loss": critic_loss.detach(), "actor_loss": out["policy_loss"].detach(),
                   "ent_coef": alpha}
        if alpha_loss is not None:
            metrics["ent_coef_loss"] = alpha_loss.detach()
        if self.policy.n_experts > 1:
            w = dist.weights.detach()
            metrics["gate_entropy"] = -(w * dist.log_w.detach()).sum(-1).mean()
            metrics["expert_separation"] = expert_separation(dist.mean.detach(), dist.log_std.detach())
            if self.pmoe:
                metrics["gate_loss"] = out["gate_loss"].detach()
                metrics["best_expert_freq"] = F.one_hot(k_star, self.policy.n_experts).float().mean(0)
        return metrics

    # --- persistence -------------------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        out = {f"policy.{k}": v for k, v in self.policy.state_dict().items()}
        out.update({f"critic.{k}": v for k, v in self.critic.state_dict().items()})
        out.update({f"critic_target.{k}": v for k, v in self.critic_target.state_dict().items()})
        out["log_alpha"] = self.log_alpha.detach().reshape(1)
        return out

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        for name, module in (("policy", self.policy), ("critic", self.critic), ("critic_target", self.critic_target)):
            module.load_state_dict({k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")})
        with torch.no_grad():
            self.log_alpha.copy_(weights["log_alpha"].reshape(()))

    def optim_state(self) -> dict:
        opts = {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}
        return {"n_updates": self.n_updates, **{k: o.state_dict() for k, o in opts.items() if o is not None}}

    def load_optim_state(self, state: dict) -> None:
        self.n_updates = state["n_updates"]
        for name, opt in (("actor", self.actor_opt), ("critic", self.critic_opt), ("alpha", self.alpha_opt)):
            if opt is not None:
                opt.load_state_dict(state[name])


# --- the training loop ------------------------------------------------------------------------------------------

def train(cfg: Config, ctx: RunContext) -> dict:
    """Train SAC on ``cfg.env`` for ``cfg.steps`` environment steps; returns the last evaluation."""
    sac, device = cfg.sac, ctx.device
    seed_everything(cfg.seed)
    env = make_env(cfg.env, seed=cfg.seed)
    eval_env = make_env(cfg.env, seed=eval_seed(cfg.seed))
    obs_space, act_space = env.observation_space, env.unwrapped.action_space
    obs_dim, act_dim = obs_space.shape[0], act_space.shape[0]
    agent = SAC(cfg, obs_dim, act_dim, device)
    buffer = ReplayBuffer(min(sac.buffer_size, cfg.steps), obs_dim, act_dim, device)
    meta = {"algo": "sac", "env_id": cfg.env, "config": to_dict(cfg),
            "observation_space": checkpoint.describe_box(obs_space), "action_space": checkpoint.describe_box(act_space)}

    step, last_eval = 0, {}
    stats = EpisodeStats(agent.policy.n_experts)
    if ctx.resume is not None:
        checkpoint.check_spaces(ctx.resume.meta, obs_space, act_space)
        state = ctx.resume.state
        agent.load_weights(ctx.resume.weights)
        agent.load_optim_state(state["optim"])
        buffer.load_state_dict(state["buffer"], state["buffer_meta"])
        step, last_eval = ctx.resume.step, state["last_eval"]
        stats.load_state_dict(state)
        checkpoint.restore_rng(state["rng"], env)
        obs, _ = env.reset()  # the interrupted episode is lost; a new one starts
    else:
        obs, _ = env.reset(seed=cfg.seed)

    def save_checkpoint() -> Path:
        buf_tensors, buf_meta = buffer.state_dict()
        state = {"optim": agent.optim_state(), "buffer": buf_tensors, "buffer_meta": buf_meta,
                 **stats.state_dict(), "last_eval": last_eval, "rng": checkpoint.capture_rng(env)}
        return checkpoint.save(ctx.run_dir, step, agent.weights(), meta, state)

    log = RunLogger(ctx.run_dir, resume_step=step if ctx.resume else None, total_steps=cfg.steps,
                    progress=ctx.progress)
    rec = Recorder(log, stats, step)
    metrics: dict[str, torch.Tensor] = {}  # the latest update's, as SB3 logs them

    try:
        while step < cfg.steps:
            if step < sac.learning_starts and sac.warmup == "uniform":
                action = env.action_space.sample()
            else:
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)
                action_t, k = agent.policy.act(obs_t)
                action = action_t[0].cpu().numpy()
                stats.acted[int(k)] += 1
            next_obs, reward, terminated, truncated, info = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated)
            obs = next_obs
            step += 1
            if terminated or truncated:
                stats.add(info["episode"]["r"], info["episode"]["l"])
                obs, _ = env.reset()
                log.progress(0, ret=f"{stats.returns[-1]:.1f}")

            evaluate_now = cfg.eval_every and step % cfg.eval_every == 0
            dump_now = evaluate_now or step % cfg.log_every == 0
            if step >= sac.learning_starts and step % sac.train_freq == 0:
                for i in range(sac.gradient_steps):
                    out = agent.update(buffer.sample(sac.batch_size), dump_now and i == sac.gradient_steps - 1)
                    metrics = out or metrics
            log.progress(1)

            stop = False
            if evaluate_now:
                last_eval, stop = rec.evaluate(agent.policy, eval_env, cfg, step, device)
            if dump_now:
                rec.dump(step, agent.n_updates, metrics)
            if stop:
                log.message(f"stopping at step {step}: evaluation mean return {last_eval['mean_return']:.1f} "
                            f">= stop_at_reward {cfg.stop_at_reward}")
                break
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save_checkpoint()
        log.message(f"saved checkpoint {save_checkpoint()}")
    finally:
        log.close()
        env.close()
        eval_env.close()
    return last_eval
