"""PPO with Gaussian and mixture policies, and PMOE-PPO (docs/algorithms.md), CleanRL-style.

Rollout: ``num_envs`` environments step ``n_steps`` times with k ~ Cat(w(s)), a ~ N(mu_k, sigma_k)
(the env acts on clip(a, -1, 1)); stored: the normalised observation, a, k, log pi_old(a|s) (the
**mixture** density by default, ``ppo.ratio``) and V(s). A truncated episode bootstraps from its true
final observation: r += gamma V(s_final) (as SB3). Then GAE(gamma, lambda) and ``n_epochs`` passes over
shuffled minibatches, each minimising

    L = L_clip + vf_coef L_V - ent_coef H + q_coef L_Q + gate_loss_weight L_gate

    L_clip = mean max(-A r, -A clip(r, 1 - eps, 1 + eps)),  r = exp(log pi(a|s) - log pi_old(a|s))
    L_V    = mean (V - R)^2, or mean max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)  (clip_value)
    H      = -mean log pi(a|s)   (estimate: a mixture has no closed-form entropy)
    L_Q    = mean (Q(s, clip(a)) - R)^2                                 (PMOE-PPO only, R = GAE return)
    L_gate = mean_k (w_k(s) - 1[k = k*])^2,  k* = argmax_k Q(s, clip(a_k)), a_k ~ N(mu_k, sigma_k) fresh

With one expert (``--policy gaussian``) this is standard PPO. Gradient norms are clipped to
``max_grad_norm`` for the policy and value together (SB3) and separately for the auxiliary Q.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from pmoe_rl.agents.build import build_policy
from pmoe_rl.agents.runner import Agent, EpisodeStats
from pmoe_rl.buffers import compute_gae
from pmoe_rl.config import Config
from pmoe_rl.envs import make_vec_env
from pmoe_rl.logger import RunLogger
from pmoe_rl.mixture import best_expert, expert_frequencies, gate_loss, gather_expert
from pmoe_rl.nets import FlatParameters, adam, mlp
from pmoe_rl.normalization import RewardNormalizer


class PPO(Agent):
    """Networks, optimiser, update rule and rollout collection of PPO."""

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device):
        super().__init__(cfg, device)
        ppo = cfg.ppo
        act_fn = nn.Tanh if ppo.activation == "tanh" else nn.ReLU
        self.policy = build_policy(cfg, obs_dim, act_dim).to(device)
        self.value = mlp(obs_dim, ppo.value_hidden, 1, act_fn, orthogonal=True, out_gain=1.0).to(device)
        # PMOE-PPO's auxiliary Q(s, a) (ReLU, as the co-author script); only for mixtures with a gate loss
        self.pmoe = cfg.policy == "pmoe" and cfg.n_experts > 1
        self.q = mlp(obs_dim + act_dim, ppo.q_hidden, 1, nn.ReLU, orthogonal=True).to(device) if self.pmoe else None
        # one flat tensor per clipping group: policy and value together (SB3), the auxiliary Q on its own
        self.groups = [FlatParameters([*self.policy.parameters(), *self.value.parameters()])]
        if self.q is not None:
            self.groups.append(FlatParameters(list(self.q.parameters())))
        self.optimizer = adam([g.flat for g in self.groups], device, lr=ppo.learning_rate, eps=ppo.adam_eps)
        self._minibatch_loss = self.compiled(self.minibatch_loss)
        self.reward_norm = RewardNormalizer(cfg.num_envs, ppo.gamma, ppo.clip_reward) if ppo.norm_reward else None
        self.steps_per_iteration = ppo.n_steps * cfg.num_envs
        self.total_iterations = math.ceil(cfg.steps / self.steps_per_iteration)
        self.iterations = 0
        self.envs = self.rollouts = None

    def values(self, norm_obs: torch.Tensor) -> torch.Tensor:
        return self.value(norm_obs).squeeze(-1)

    def q_values(self, norm_obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s, clip(a)) for M actions per state: (B, M, A) -> (B, M)."""
        norm_obs = norm_obs.unsqueeze(1).expand(-1, actions.shape[1], -1)
        return self.q(torch.cat([norm_obs, actions.clamp(-1.0, 1.0)], -1)).squeeze(-1)

    def log_prob(self, dist, actions: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        """The density of the PPO ratio: the mixture's, or the component of the expert that acted."""
        if self.cfg.ppo.ratio == "component":
            return gather_expert(dist.expert_log_probs(actions), experts)
        return dist.log_prob(actions)

    def update(self, data: dict[str, torch.Tensor], lr: float) -> dict[str, torch.Tensor]:
        """``n_epochs`` passes over the rollout ``data`` (flat tensors: obs, actions, experts, logp, values,
        advantages, returns) in shuffled minibatches. Returns the metrics averaged as SB3 logs them."""
        ppo = self.cfg.ppo
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n = data["obs"].shape[0]
        sums: dict[str, list[torch.Tensor]] = {}
        for _ in range(ppo.n_epochs):
            kls = []
            for idx in torch.randperm(n, device=self.device).split(ppo.batch_size):
                for group in self.groups:
                    group.zero_grad()
                parts = self._minibatch_loss({key: value[idx] for key, value in data.items()})
                for group in self.groups:
                    nn.utils.clip_grad_norm_(group.flat, ppo.max_grad_norm)
                self.optimizer.step()
                self.n_updates += 1
                kls.append(parts["approx_kl"])
                for key, value in parts.items():
                    sums.setdefault(key, []).append(value)
            if ppo.target_kl is not None and torch.stack(kls).mean() > 1.5 * ppo.target_kl:
                break  # SB3's early stop
        metrics = {key: torch.stack(values).mean(0) for key, values in sums.items()}
        with torch.no_grad():
            var_y = data["returns"].var()
            metrics["explained_variance"] = 1.0 - (data["returns"] - data["values"]).var() / var_y
            metrics["std"] = self.policy.log_std.exp().mean()
            if self.policy.n_experts > 1:
                metrics["gate_entropy"] = self.policy.distribution(data["obs"]).gate_entropy()
        return metrics

    def minibatch_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss of one minibatch (the rollout's tensors at its indices), backpropagated into the flat
        gradients; returns its parts (detached) for the logs. No host read: ``torch.compile`` captures it with
        its backward (``--compile``)."""
        ppo, clip = self.cfg.ppo, self.cfg.ppo.clip_range
        obs, actions, adv, returns = batch["obs"], batch["actions"], batch["advantages"], batch["returns"]
        dist = self.policy.distribution(obs)
        logp = self.log_prob(dist, actions, batch["experts"])
        log_ratio = logp - batch["logp"]
        ratio = log_ratio.exp()
        if ppo.normalize_advantage and adv.shape[0] > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - clip, 1.0 + clip)).mean()
        v = self.values(obs)
        v_loss = (v - returns).pow(2)
        if ppo.clip_value:
            old_values = batch["values"]
            v_clipped = old_values + (v - old_values).clamp(-clip, clip)
            v_loss = torch.max(v_loss, (v_clipped - returns).pow(2))
        v_loss = v_loss.mean()
        entropy = -logp.mean()
        loss = pg_loss + ppo.vf_coef * v_loss - ppo.ent_coef * entropy
        parts = {"policy_gradient_loss": pg_loss, "value_loss": v_loss, "entropy_loss": -entropy}
        if self.pmoe:
            q_loss = (self.q_values(obs, actions.unsqueeze(1)).squeeze(1) - returns).pow(2).mean()
            with torch.no_grad():  # score a fresh sample of every expert
                k_star = best_expert(dist.rsample(), lambda a: self.q_values(obs, a))
            g_loss = gate_loss(dist, k_star, ppo.gate_loss)
            loss = loss + ppo.q_coef * q_loss + ppo.gate_loss_weight * g_loss
            parts.update(
                q_loss=q_loss, gate_loss=g_loss, best_expert_freq=expert_frequencies(k_star, self.policy.n_experts)
            )
        loss.backward()
        with torch.no_grad():
            kl = ((ratio - 1.0) - log_ratio).mean()  # http://joschu.net/blog/kl-approx.html
            parts.update(loss=loss, approx_kl=kl, clip_fraction=((ratio - 1.0).abs() > clip).float().mean())
        return {key: value.detach() for key, value in parts.items()}

    # --- what the run skeleton saves -----------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        mods = {"policy": self.policy, "value": self.value}
        if self.q is not None:
            mods["q"] = self.q
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def extra_state(self) -> dict:
        return {"reward_norm": self.reward_norm.state_dict()} if self.reward_norm is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.reward_norm is not None:
            self.reward_norm.load_state_dict(state["reward_norm"])

    # --- collection --------------------------------------------------------------------------------------------
    def start(self, seed: int, resumed: bool, step: int) -> None:
        cfg = self.cfg
        self.envs = make_vec_env(cfg.env, cfg.num_envs, cfg.vec_env)
        self.rollouts = Rollouts(self.envs, self, cfg.ppo.n_steps, self.reward_norm)
        # a resumed run's episodes in flight are lost; the vector env's generators cannot be captured portably,
        # so it is re-seeded with seed + step
        self.rollouts.obs, _ = self.envs.reset(seed=seed + step if resumed else seed)

    def iterate(self, step: int, stats: EpisodeStats, log: RunLogger, with_metrics: bool) -> dict[str, torch.Tensor]:
        """Collect one rollout of ``n_steps x num_envs`` steps, then ``n_epochs`` of minibatch updates."""
        ppo = self.cfg.ppo
        iteration = step // self.steps_per_iteration
        lr = ppo.learning_rate * (1.0 - iteration / self.total_iterations) if ppo.anneal_lr else ppo.learning_rate
        self.rollouts.collect(stats, log)
        metrics = self.update(self.rollouts.batch(), lr)
        metrics.update(learning_rate=torch.tensor(lr), clip_range=torch.tensor(ppo.clip_range))
        self.iterations = iteration + 1
        return metrics

    def log_records(self) -> dict[str, float]:
        return {"time/iterations": self.iterations}

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()


# --- rollouts ------------------------------------------------------------------------------------------------


class Rollouts:
    """Collects ``n_steps`` from every environment of a vector env and turns them into PPO's batch.

    Per step only the action is computed (the policy does not change during a rollout, so log pi_old(a|s)
    and V(s) come afterwards in one batched forward). Observations are normalised with the running
    statistics, updated once per step as SB3's ``VecNormalize`` does, and copied into the policy at the end.
    """

    def __init__(self, envs, agent: PPO, n_steps: int, reward_norm: RewardNormalizer | None):
        self.envs, self.agent, self.reward_norm = envs, agent, reward_norm
        self.policy, self.device = agent.policy, agent.device
        T, n, obs_dim, act_dim = n_steps, envs.num_envs, agent.policy.obs_dim, agent.policy.act_dim
        self.obs_buf = np.zeros((T, n, obs_dim), dtype=np.float32)  # normalised, as the update sees them
        self.act_buf = np.zeros((T, n, act_dim), dtype=np.float32)  # unclipped samples
        self.expert_buf = np.zeros((T, n), dtype=np.int64)
        self.rewards = np.zeros((T, n), dtype=np.float32)
        self.dones = np.zeros((T, n), dtype=np.float32)  # the episode ended with this step
        self.cuts: list[tuple[int, int, np.ndarray]] = []  # (t, env, normalised true final obs) of truncations
        self.obs: np.ndarray | None = None  # the next observation to act on; set from ``envs.reset``
        self.obs_rms = None

    def collect(self, stats: EpisodeStats, log: RunLogger | None = None) -> None:
        obs_norm = self.policy.obs_norm
        self.obs_rms = obs_rms = obs_norm.running_stats()
        self.cuts = []
        obs = self.obs
        for t in range(self.obs_buf.shape[0]):
            if obs_rms is not None:
                obs_rms.update(obs)
            self.obs_buf[t] = x = obs_norm.numpy(obs, obs_rms)
            with torch.inference_mode():
                action, k = self.policy.sample(torch.as_tensor(x, device=self.device))
            out = torch.cat([action, k.unsqueeze(-1).to(action.dtype)], -1).cpu().numpy()  # one device-to-host copy
            self.act_buf[t], self.expert_buf[t] = out[:, :-1], out[:, -1]
            acted, previous = np.clip(self.act_buf[t], -1.0, 1.0), obs
            obs, reward, terminated, truncated, info = self.envs.step(acted)
            if self.agent.transitions is not None:
                next_obs = obs.copy()
                for i in np.flatnonzero(terminated | truncated):
                    next_obs[i] = info["final_obs"][i]
                self.agent.transitions.add(previous, acted, reward, next_obs, terminated, truncated)
            self.dones[t] = done = terminated | truncated
            self.rewards[t] = self.reward_norm(reward, done) if self.reward_norm is not None else reward
            for i in np.flatnonzero(truncated & ~terminated):
                self.cuts.append((t, i, obs_norm.numpy(info["final_obs"][i], obs_rms)))
            if done.any():
                ep = info["final_info"]["episode"]
                for i in np.flatnonzero(info["final_info"]["_episode"]):
                    stats.add(ep["r"][i], ep["l"][i])
                if log is not None:
                    log.progress(0, ret=f"{stats.returns[-1]:.1f}")
            if log is not None:
                log.progress(len(obs))
        self.obs = obs
        obs_norm.load_stats(obs_rms)
        stats.acted += np.bincount(self.expert_buf.ravel(), minlength=self.policy.n_experts)

    def batch(self) -> dict[str, torch.Tensor]:
        """Flat tensors for :meth:`PPO.update`: log pi_old, V, truncation bootstraps (r += gamma V(s_final),
        as SB3) and GAE advantages and returns."""
        agent, ppo, device = self.agent, self.agent.cfg.ppo, self.device
        as_tensor = functools.partial(torch.as_tensor, device=device)
        T, n, obs_dim = self.obs_buf.shape
        data = {
            "obs": as_tensor(self.obs_buf).reshape(T * n, obs_dim),
            "actions": as_tensor(self.act_buf).reshape(T * n, -1),
            "experts": as_tensor(self.expert_buf).reshape(-1),
        }
        rewards = self.rewards.copy()
        with torch.inference_mode():
            data["logp"] = agent.log_prob(self.policy.distribution(data["obs"]), data["actions"], data["experts"])
            data["values"] = agent.values(data["obs"])
            last_values = agent.values(as_tensor(self.policy.obs_norm.numpy(self.obs, self.obs_rms))).cpu().numpy()
            if self.cuts:
                final_values = agent.values(as_tensor(np.stack([c[2] for c in self.cuts]))).cpu().numpy()
                for (t, i, _), v in zip(self.cuts, final_values):
                    rewards[t, i] += ppo.gamma * v
        values = data["values"].cpu().numpy().reshape(T, n)
        advantages, returns = compute_gae(rewards, values, self.dones, last_values, ppo.gamma, ppo.gae_lambda)
        data["advantages"] = as_tensor(advantages).reshape(-1)
        data["returns"] = as_tensor(returns).reshape(-1)
        return {key: value.clone() for key, value in data.items()}  # out of inference mode, for autograd
