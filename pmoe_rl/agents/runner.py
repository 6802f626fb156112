"""The run skeleton, written once for every agent: seeding, the evaluation environment, checkpoints (weights
from the agent's modules, training state from its optimisers and extra state), resume, the logger's
lifecycle, the evaluation, log and checkpoint schedule, ``--stop-at-reward``, the messages and the clean-up.

An algorithm is an :class:`Agent`: it says what it owns (``modules``, ``optimizers``, ``extra_state``) and
implements one ``iterate`` (collect and/or update, advancing ``steps_per_iteration`` environment steps);
:func:`train` does the rest::

    train(SAC, cfg, RunContext(run_dir, device))
"""

from __future__ import annotations

import abc
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pmoe_rl import checkpoint
from pmoe_rl.checkpoint import Checkpoint
from pmoe_rl.config import Config, to_dict
from pmoe_rl.envs import make_env, seed_everything
from pmoe_rl.evaluation import cpu_copy, eval_seed, evaluate_policy
from pmoe_rl.logger import RunLogger
from pmoe_rl.recording import TransitionLog


@dataclass
class RunContext:
    run_dir: Path
    device: torch.device
    resume: Checkpoint | None = None  # loaded with its training state
    progress: bool | None = None  # progress bar: None = only on a terminal
    on_evaluation: Callable[[dict], None] | None = None  # called with each evaluation's result (e.g. a sweep's report)


class EpisodeStats:
    """Finished training episodes: their number and the last 100 returns and lengths (SB3's window), plus how
    often each expert acted since the last log dump."""

    def __init__(self, n_experts: int):
        self.episodes = 0
        self.returns: collections.deque = collections.deque(maxlen=100)
        self.lengths: collections.deque = collections.deque(maxlen=100)
        self.acted = np.zeros(n_experts, dtype=np.int64)

    def add(self, ret: float, length: int) -> None:
        self.episodes += 1
        self.returns.append(float(ret))
        self.lengths.append(int(length))

    def state_dict(self) -> dict:
        return {"episodes": self.episodes, "ep_returns": list(self.returns), "ep_lengths": list(self.lengths)}

    def load_state_dict(self, state: dict) -> None:
        self.episodes = state["episodes"]
        self.returns.extend(state["ep_returns"])
        self.lengths.extend(state["ep_lengths"])


class Recorder:
    """Writes the SB3-named records of a training loop: ``time/*``, ``rollout/*``, ``train/*``, ``eval/*``."""

    def __init__(self, log: RunLogger, stats: EpisodeStats, start_step: int):
        self.log, self.stats = log, stats
        self.start_time, self.start_step = time.perf_counter(), start_step

    def evaluate(self, policy, env, cfg: Config, step: int) -> tuple[dict, bool]:
        """Evaluate (a CPU copy of the policy) with the run's evaluation seed; record ``eval/*``; return (result as
        JSON, stop?)."""
        result = evaluate_policy(cpu_copy(policy), env, cfg.eval_episodes, eval_seed(cfg.seed))
        self.log.record("eval/mean_reward", result.mean_return)
        self.log.record("eval/std_reward", result.std_return)
        self.log.record("eval/mean_ep_length", float(np.mean(result.lengths)))
        if policy.n_experts > 1:
            for k, f in enumerate(result.expert_usage):
                self.log.record(f"eval/expert_usage_{k}", f)
        stop = cfg.stop_at_reward is not None and result.mean_return >= cfg.stop_at_reward
        return {"step": step, **result.to_json()}, stop

    def dump(self, step: int, n_updates: int, metrics: dict[str, torch.Tensor], **extra) -> None:
        """Record time, rollout and train values (tensors: one host sync here) and write everything."""
        log, stats = self.log, self.stats
        elapsed = time.perf_counter() - self.start_time
        log.record("time/total_timesteps", step)
        log.record("time/episodes", stats.episodes)
        log.record("time/fps", int((step - self.start_step) / max(elapsed, 1e-9)))
        log.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        for key, value in extra.items():
            log.record(key, value)
        if stats.returns:
            log.record("rollout/ep_rew_mean", float(np.mean(stats.returns)))
            log.record("rollout/ep_len_mean", float(np.mean(stats.lengths)))
        if len(stats.acted) > 1 and stats.acted.sum():
            for k, f in enumerate(stats.acted / stats.acted.sum()):
                log.record(f"rollout/expert_usage_{k}", float(f))
        if n_updates:
            log.record("train/n_updates", n_updates)
            for key, value in metrics.items():
                value = value.detach().cpu()
                if value.dim() == 0:
                    log.record(f"train/{key}", float(value))
                else:
                    for k, v in enumerate(value.tolist()):
                        log.record(f"train/{key}_{k}", v)
        log.dump(step)
        stats.acted[:] = 0


class Agent(abc.ABC):
    """An algorithm as the run skeleton sees it. Subclasses build their networks and optimisers in
    ``__init__(cfg, obs_dim, act_dim, device)`` and implement :meth:`modules`, :meth:`optimizers` and
    :meth:`iterate`; agents that interact with environments open them in :meth:`start` and close them in
    :meth:`close`."""

    policy: nn.Module  # what evaluation acts with
    transitions: TransitionLog | None = None  # where collected transitions go (--record-transitions)
    steps_per_iteration: int = 1  # environment steps one ``iterate`` advances
    rng_env = None  # a single training env whose generators checkpoints capture (None: only the global ones)

    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.device = cfg, device
        self.n_updates = 0
        # CUDA graphs (the compile modes that capture them, on CUDA) need optimisers that step on the device
        self.capturable = cfg.compile in ("reduce-overhead", "max-autotune") and torch.device(device).type == "cuda"

    def compiled(self, fn):
        """``fn`` under ``torch.compile`` in the run's mode (``--compile``), or ``fn`` itself when it is off.
        Shapes are specialised: an update sees one batch size (PPO: two, with a smaller last minibatch)."""
        return fn if self.cfg.compile == "off" else torch.compile(fn, mode=self.cfg.compile, dynamic=False)

    @abc.abstractmethod
    def modules(self) -> dict[str, nn.Module | torch.Tensor]:
        """What the weights file holds, by name: modules (their ``state_dict``) and single tensors."""

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers, by name (their state is training state)."""

    def extra_state(self) -> dict:
        """Training state besides the optimisers (replay buffer, normalisation statistics, ...): a nested
        structure of tensors and JSON values."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned (``state`` is the whole saved training state)."""

    def start(self, seed: int, resumed: bool, step: int) -> None:
        """Open the training environments; reset them with ``seed`` for a new run. A resumed run (continuing at
        ``step``) restores the random generators after this call (``rng_env``'s included), so an env whose own
        generator is restored must be reset after that, in the first ``iterate``."""

    @abc.abstractmethod
    def iterate(self, step: int, stats: EpisodeStats, log: RunLogger, with_metrics: bool) -> dict[str, torch.Tensor]:
        """Advance ``steps_per_iteration`` environment steps from ``step``: collect, record finished episodes in
        ``stats``, move the progress bar, update. Return the metrics (tensors) when ``with_metrics`` (the
        skeleton logs after this iteration), else ``{}``."""

    def eval_records(self, mean_return: float) -> dict[str, float]:
        """Extra ``eval/*`` records of an evaluation with this mean return (e.g. a normalised score)."""
        return {}

    def log_records(self) -> dict[str, float]:
        """Extra top-level records for the next log dump (e.g. ``time/iterations``)."""
        return {}

    def close(self) -> None:
        """Close what :meth:`start` opened."""

    # --- persistence, the same for every agent ----------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, item in self.modules().items():
            if isinstance(item, torch.Tensor):
                out[name] = item.detach().reshape(item.shape or (1,))
            else:
                out.update({f"{name}.{k}": v for k, v in item.state_dict().items()})
        return out

    @torch.no_grad()
    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        for name, item in self.modules().items():
            if isinstance(item, torch.Tensor):
                item.copy_(weights[name].reshape(item.shape))
            else:
                item.load_state_dict(checkpoint.submodule(weights, name))

    def optim_state(self) -> dict:
        return {"n_updates": self.n_updates, **{k: opt.state_dict() for k, opt in self.optimizers().items()}}

    def load_optim_state(self, state: dict) -> None:
        self.n_updates = state["n_updates"]
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state[name])


def train(agent_cls: type[Agent], cfg: Config, ctx: RunContext) -> dict:
    """Train ``agent_cls`` on ``cfg.env`` for ``cfg.steps`` environment steps (whole iterations); return the
    last evaluation (JSON)."""
    seed_everything(cfg.seed)
    eval_env = make_env(cfg.env, seed=eval_seed(cfg.seed))
    obs_space, act_space = eval_env.observation_space, eval_env.unwrapped.action_space
    agent = agent_cls(cfg, obs_space.shape[0], act_space.shape[0], ctx.device)
    meta = {
        "algo": cfg.algo,
        "env_id": cfg.env,
        "config": to_dict(cfg),
        "observation_space": checkpoint.describe_box(obs_space),
        "action_space": checkpoint.describe_box(act_space),
    }
    step, last_eval = 0, {}
    stats = EpisodeStats(agent.policy.n_experts)
    try:
        if ctx.resume is not None:
            checkpoint.check_spaces(ctx.resume.meta, obs_space, act_space)
            state = ctx.resume.state
            agent.load_weights(ctx.resume.weights)
            agent.load_optim_state(state["optim"])
            agent.load_extra_state(state)
            step, last_eval = ctx.resume.step, state["last_eval"]
            stats.load_state_dict(state)
        if cfg.record_transitions:
            agent.transitions = TransitionLog(ctx.run_dir)
            agent.transitions.discard_after(step)
        agent.start(cfg.seed, ctx.resume is not None, step)
        if ctx.resume is not None:
            checkpoint.restore_rng(ctx.resume.state["rng"], agent.rng_env, ctx.device)
    except BaseException:
        agent.close()
        eval_env.close()
        raise

    def save_checkpoint() -> Path:
        if agent.transitions is not None:
            agent.transitions.flush(step)
        state = {
            "optim": agent.optim_state(),
            **stats.state_dict(),
            "last_eval": last_eval,
            "rng": checkpoint.capture_rng(agent.rng_env, ctx.device),
            **agent.extra_state(),
        }
        return checkpoint.save(ctx.run_dir, step, agent.weights(), meta, state)

    def crossed(every: int, before: int) -> bool:
        return bool(every) and step // every > before // every

    log = RunLogger(ctx.run_dir, resume_step=step if ctx.resume else None, total_steps=cfg.steps, progress=ctx.progress)
    rec = Recorder(log, stats, step)
    metrics: dict[str, torch.Tensor] = {}  # the latest logged update's, as SB3 logs them
    try:
        while step < cfg.steps:
            before, step = step, step + agent.steps_per_iteration
            evaluate_now = crossed(cfg.eval_every, before) or (cfg.eval_every and step >= cfg.steps)
            dump_now = evaluate_now or crossed(cfg.log_every, before) or step >= cfg.steps
            metrics = agent.iterate(before, stats, log, dump_now) or metrics
            stop = False
            if evaluate_now:
                last_eval, stop = rec.evaluate(agent.policy, eval_env, cfg, step)
                for key, value in agent.eval_records(last_eval["mean_return"]).items():
                    log.record(key, value)
                    last_eval[key.removeprefix("eval/")] = value
                if ctx.on_evaluation is not None:
                    ctx.on_evaluation(last_eval)
            if dump_now:
                rec.dump(step, agent.n_updates, metrics, **agent.log_records())
            if stop:
                log.message(
                    f"stopping at step {step}: evaluation mean return {last_eval['mean_return']:.1f} "
                    f">= stop_at_reward {cfg.stop_at_reward}"
                )
                break
            if crossed(cfg.checkpoint_every, before) and step < cfg.steps:
                save_checkpoint()
        log.message(f"saved checkpoint {save_checkpoint()}")
    finally:
        log.close()
        agent.close()
        eval_env.close()
    return last_eval
