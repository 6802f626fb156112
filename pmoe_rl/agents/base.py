"""What every agent's training loop shares: the CLI's run context, episode statistics, evaluation and the
SB3-named log records."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pmoe_rl.checkpoint import Checkpoint
from pmoe_rl.config import Config
from pmoe_rl.evaluation import eval_seed, evaluate_policy
from pmoe_rl.logger import RunLogger


@dataclass
class RunContext:
    run_dir: Path
    device: torch.device
    resume: Checkpoint | None = None  # loaded with its training state
    progress: bool | None = None  # progress bar: None = only on a terminal


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

    def evaluate(self, policy, env, cfg: Config, step: int, device: torch.device) -> tuple[dict, bool]:
        """Evaluate with the run's evaluation seed; record ``eval/*``; return (result as JSON, stop?)."""
        result = evaluate_policy(policy, env, cfg.eval_episodes, eval_seed(cfg.seed), device=device)
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
