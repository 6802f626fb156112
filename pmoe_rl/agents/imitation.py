"""Online imitation learning from an expert checkpoint, on the run skeleton (``python -m pmoe_rl.imitate``;
docs/sso.md). One ``iterate`` is one round of the SSO paper's MuJoCo experiments:

  1. collect ``samples_per_round`` environment steps; at each, the expert acts with probability beta (its
     deterministic action), else the learner (a sampled action, or its mean with ``learner_action=mean``); the
     first round is the expert's;
  2. label every visited state s_i with the expert's mean action a*_i (one batched expert query per round);
  3. update the learner on this round's states only: the target-space loss
         l(z) = mean_i ||tanh(z_i) - a*_i||^2,  z_i = mu(s_i) the learner's pre-tanh mean    (``loss=squashed``)
     (or the paper's ||z_i - a*_i||^2, ``loss=squared``), by one outer SSO step (one target gradient, m surrogate
     steps) or by m plain Adam / SGD steps on the same batch.

The learner is a tanh-Gaussian policy (:class:`~pmoe_rl.policies.MixturePolicy` with one expert; linear with
``learner=linear``), saved like a SAC policy, so ``evaluate`` and ``pmoe_rl.sb3.from_checkpoint`` open it.
"""

from __future__ import annotations

import numpy as np
import torch

from pmoe_rl import checkpoint
from pmoe_rl.agents.build import build_policy, load_policy
from pmoe_rl.agents.runner import Agent, EpisodeStats
from pmoe_rl.config import Config
from pmoe_rl.envs import make_env
from pmoe_rl.errors import CheckpointError
from pmoe_rl.logger import RunLogger
from pmoe_rl.nets import adam
from pmoe_rl.sso import SSO


def load_expert(path: str, env_id: str, device: torch.device):
    """The expert policy of a checkpoint, checked against the run's environment."""
    expert, ckpt = load_policy(path, device)
    if ckpt.meta["env_id"] != env_id:
        raise CheckpointError(f"the expert {path} was trained on {ckpt.meta['env_id']}, not on --env {env_id}")
    return expert.requires_grad_(False), ckpt


class Imitation(Agent):
    """The learner, its optimiser, and one round of collection, labelling and update per ``iterate``."""

    def __init__(self, cfg: Config, obs_dim: int, act_dim: int, device: torch.device):
        super().__init__(cfg, device)
        im = cfg.imitation
        self.expert, self.expert_ckpt = load_expert(im.expert, cfg.env, device)
        self.policy = build_policy(cfg, obs_dim, act_dim).to(device)
        self.steps_per_iteration = im.samples_per_round
        params = self.policy.parameters()
        if im.optimizer == "sso":
            self.opt = SSO(params, im.eta, im.inner_steps, im.eta_schedule, im.sso_inner, lr=im.lr)
        elif im.optimizer == "adam":
            self.opt = adam(params, device, lr=im.lr)
        else:
            self.opt = torch.optim.SGD(params, lr=im.lr)
        self.expert_queries = 0
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.env = None

    # --- the update ----------------------------------------------------------------------------------------------
    def targets(self, obs: torch.Tensor) -> torch.Tensor:
        """z = the learner's pre-tanh mean on ``obs`` (B, A)."""
        return self.policy(obs).mean[:, 0]

    def target_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """mean_i ||z_i - a*_i||^2 (squared) or ||tanh(z_i) - a*_i||^2 (squashed)."""
        pred = torch.tanh(z) if self.cfg.imitation.loss == "squashed" else z
        return (pred - labels).pow(2).sum(-1).mean()

    def update(self, obs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One round's update on (states, expert labels); returns the loss before and after it (tensors)."""

        def targets():
            return self.targets(obs)

        def loss(z):
            return self.target_loss(z, labels)

        if isinstance(self.opt, SSO):
            out = self.opt.step(targets, loss)
            metrics = {"loss": out["loss"], "eta": out["eta"], "surrogate": out["surrogate"]}
            if "step_size" in out:
                metrics["step_size"] = out["step_size"]
        else:
            metrics = {}
            for _ in range(self.cfg.imitation.inner_steps):
                value = loss(targets())
                self.opt.zero_grad(set_to_none=True)
                value.backward()
                self.opt.step()
                metrics.setdefault("loss", value.detach())
        self.n_updates += 1
        with torch.no_grad():
            metrics["loss_after"] = loss(targets())
        return metrics

    # --- collection --------------------------------------------------------------------------------------------
    def start(self, seed: int, resumed: bool, step: int) -> None:
        self.env = self.rng_env = make_env(self.cfg.env, seed=seed)
        checkpoint.check_spaces(self.expert_ckpt.meta, self.env.observation_space, self.env.unwrapped.action_space)
        self.obs = None
        if not resumed:  # a resumed run resets in the first round, after its generators are restored
            self.obs = self.env.reset(seed=seed)[0]

    def _act(self, policy, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        return policy.act(obs_t, deterministic)[0][0].cpu().numpy()

    def iterate(self, step: int, stats: EpisodeStats, log: RunLogger, with_metrics: bool) -> dict[str, torch.Tensor]:
        """One round: collect, label, update. The expert acts deterministically, the learner as ``learner_action``."""
        im = self.cfg.imitation
        n, beta, mean_action = im.samples_per_round, im.beta, im.learner_action == "mean"
        if self.obs is None:
            self.obs = self.env.reset()[0]
        states = np.empty((n, self.obs_dim), dtype=np.float32)
        expert_acted = (np.random.random(n) < beta) | (step == 0)
        for i in range(n):
            states[i] = self.obs
            policy = self.expert if expert_acted[i] else self.policy
            action = self._act(policy, self.obs, deterministic=bool(expert_acted[i]) or mean_action)
            self.obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                stats.add(info["episode"]["r"], info["episode"]["l"])
                self.obs = self.env.reset()[0]
                log.progress(0, ret=f"{stats.returns[-1]:.1f}")
            log.progress(1)
        obs = torch.as_tensor(states, device=self.device)
        with torch.no_grad():
            labels = self.expert.act(obs, deterministic=True)[0]
        self.expert_queries += n
        metrics = self.update(obs, labels)
        metrics["expert_fraction"] = torch.tensor(float(expert_acted.mean()))
        return metrics if with_metrics else {}

    def log_records(self) -> dict[str, float]:
        return {"time/expert_queries": self.expert_queries}

    # --- what the run skeleton saves -----------------------------------------------------------------------
    def modules(self) -> dict:
        return {"policy": self.policy}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"learner": self.opt}

    def extra_state(self) -> dict:
        return {"expert_queries": self.expert_queries}

    def load_extra_state(self, state: dict) -> None:
        self.expert_queries = int(state["expert_queries"])

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
