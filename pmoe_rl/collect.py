"""``python -m pmoe_rl.collect RUN_DIR``: D4RL-style offline datasets from a pmoe-rl training run, written in the
Minari format under ``$MINARI_DATASETS_PATH`` as ``pmoe_rl/<env>/<kind>-v0`` (docs/offline.md):

  random         uniform random actions
  medium         the run's checkpoint whose return is closest to 1/3 of the expert's (D4RL's early-stopped SAC)
  medium-replay  every transition the run collected up to that checkpoint (train with --record-transitions)
  expert         the run's final checkpoint (or --expert STEP)
  medium-expert  medium and expert concatenated

Actions are the policy's samples (stochastic, as D4RL and Minari; ``--noise-scale`` scales their noise, which
goes beyond both); terminations and time-outs are kept apart; each
of random, medium and expert holds ``--steps`` transitions (its last episode cut and marked truncated). Every
dataset's metadata holds the reference scores of ``eval/normalized_score``: ref_min the mean return of uniform
random actions, ref_max the expert's (deterministic), each over ``--ref-episodes`` episodes.

Examples::

    python -m pmoe_rl.train --env Hopper-v5 --algo ppo --steps 1000000 --record-transitions --checkpoint-every 50000
    python -m pmoe_rl.collect runs/Hopper-v5_ppo_... --steps 1000000
    python -m pmoe_rl.train --algo odice --dataset pmoe_rl/Hopper-v5/medium-replay-v0
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pmoe_rl import checkpoint
from pmoe_rl.agents.build import load_policy
from pmoe_rl.cli import Parser, configure_cpu, entry_point
from pmoe_rl.datasets import DatasetError, EpisodeArrays, dataset_dir, to_native, write_dataset
from pmoe_rl.envs import make_env
from pmoe_rl.errors import ConfigError
from pmoe_rl.evaluation import evaluate_policy
from pmoe_rl.recording import read_episodes, recorded_steps

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
_STEP = re.compile(r"step_(\d+)$")


def say(text: str) -> None:
    print(text, flush=True)  # progress of a long job, also when its output goes to a file


def dataset_id(env_id: str, kind: str, namespace: str = "pmoe_rl") -> str:
    return f"{namespace}/{env_id.replace('/', '-')}/{kind}-v0"


def run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """A run's complete checkpoints, (step, directory), oldest first."""
    directory = run_dir / "checkpoints"
    found = ((_STEP.match(p.name), p) for p in directory.iterdir()) if directory.is_dir() else ()
    return sorted((int(m.group(1)), p) for m, p in found if m and (p / checkpoint.META_FILE).is_file())


def rollout(env, act, steps: int, seed: int, label: str, progress: bool) -> list[EpisodeArrays]:
    """``steps`` transitions of ``act(obs) -> action in [-1, 1]``; actions stored in the env's own units."""
    space = env.unwrapped.action_space
    episodes, done_steps, i = [], 0, 0
    bar = tqdm(total=steps, desc=label, unit="step", disable=not progress, leave=False)
    while done_steps < steps:
        obs, _ = env.reset(seed=seed + i)
        i += 1
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        terminated = truncated = False
        while not (terminated or truncated) and done_steps < steps:
            action = act(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            done_steps += 1
            truncated = truncated or (done_steps == steps and not terminated)  # the last episode, cut
            terms.append(terminated)
            truncs.append(truncated)
            bar.update(1)
        episodes.append(
            EpisodeArrays(
                np.asarray(observations, np.float32),
                to_native(np.asarray(actions), space),
                np.asarray(rewards, np.float64),
                np.asarray(terms),
                np.asarray(truncs),
            )
        )
    bar.close()
    return episodes


class UniformPolicy:
    """Uniform random actions in [-1, 1] behind the policies' ``act`` (one "expert"), so that the random dataset and
    its reference score go through the same loops as the checkpoints."""

    n_experts = 1

    def __init__(self, act_dim: int):
        self.act_dim = act_dim

    def act(self, obs, deterministic: bool = False, generator=None):
        action = torch.rand(obs.shape[0], self.act_dim, generator=generator) * 2.0 - 1.0
        return action, torch.zeros(obs.shape[0], dtype=torch.long)


def policy_actor(policy, seed: int, **noise):
    """Sampled actions of a saved policy (as D4RL and Minari collect), from a seeded CPU generator; ``noise_scale``,
    when given, is passed on to the policy's ``act``."""
    generator = torch.Generator().manual_seed(seed)

    def act(obs):
        with torch.no_grad():
            action, _ = policy.act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), generator=generator, **noise)
        return action[0].numpy()

    return act


def build_parser() -> Parser:
    p = Parser(
        prog="python -m pmoe_rl.collect",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pmoe-rl training run (its checkpoints)")
    p.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated datasets to write (default: all of {', '.join(KINDS)})",
    )
    p.add_argument("--steps", type=int, default=1_000_000, help="transitions of random, medium, expert (default: 1M)")
    p.add_argument("--ref-episodes", type=int, default=100, help="episodes of each reference score (default: 100)")
    p.add_argument(
        "--medium",
        type=int,
        metavar="STEP",
        help="the checkpoint step of medium and medium-replay (default: the one closest to --medium-fraction)",
    )
    p.add_argument("--expert", type=int, metavar="STEP", help="the checkpoint step of expert (default: the final one)")
    p.add_argument("--medium-fraction", type=float, default=1 / 3, help="medium's return / expert's (default: 1/3)")
    p.add_argument("--select-episodes", type=int, default=10, help="episodes to evaluate each checkpoint (default 10)")
    p.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="medium's and expert's action noise, times the policy's own std (default 1: the policy's samples, as "
        "D4RL and Minari; below 1: steadier than the policy's own noise; 0: the mean, the expert still drawn)",
    )
    p.add_argument("--namespace", default="pmoe_rl", help="dataset id namespace (default: pmoe_rl)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resets and the action samples (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: the default)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ConfigError(f"--kinds: unknown {', '.join(unknown) or 'nothing'}; choose from {', '.join(KINDS)}")
    for name in ("steps", "ref_episodes", "select_episodes"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if not args.noise_scale >= 0:
        raise ConfigError(f"--noise-scale must be 0 or more, got {args.noise_scale}")
    configure_cpu(args.threads)
    run_dir = Path(args.run_dir)
    checkpoints = run_checkpoints(run_dir)
    if not checkpoints:
        raise DatasetError(f"{run_dir} holds no checkpoints: pass a pmoe-rl run directory")
    by_step = dict(checkpoints)
    for name in ("expert", "medium"):
        if getattr(args, name) is not None and getattr(args, name) not in by_step:
            raise DatasetError(f"--{name} {getattr(args, name)}: no checkpoint at that step (have {sorted(by_step)})")
    if args.expert is not None:  # later checkpoints are not candidates for medium either
        checkpoints = [(step, path) for step, path in checkpoints if step <= args.expert]
    expert, meta = load_policy(checkpoints[-1][1])
    env_id = meta.meta["env_id"]
    ids = {kind: dataset_id(env_id, kind, args.namespace) for kind in kinds}
    existing = [i for i in ids.values() if dataset_dir(i).exists()]
    if existing:
        raise DatasetError(f"dataset {existing[0]} already exists at {dataset_dir(existing[0])}; delete it first")
    if "medium-replay" in kinds and not recorded_steps(run_dir):
        raise DatasetError(
            f"{run_dir} recorded no transitions: medium-replay needs a run trained with --record-transitions"
        )
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    final_step = checkpoints[-1][0]
    env = make_env(env_id, seed=args.seed)
    try:
        # reference scores: uniform random actions and the expert (deterministic), ref_episodes each
        uniform = UniformPolicy(env.action_space.shape[0])
        ref_min = evaluate_policy(uniform, env, args.ref_episodes, args.seed).mean_return
        ref_max = evaluate_policy(expert, env, args.ref_episodes, args.seed).mean_return
        say(f"{env_id}: reference scores over {args.ref_episodes} episodes: random {ref_min:.1f}, expert {ref_max:.1f}")
        medium_step = None
        if {"medium", "medium-replay", "medium-expert"} & set(kinds):
            medium_step = args.medium
            if medium_step is None:
                target = ref_max * args.medium_fraction
                medium_step = select_medium(checkpoints, env, target, args.select_episodes, args.seed)
        made: dict[str, list[EpisodeArrays]] = {}
        noise = f" (noise x{args.noise_scale:g})" if args.noise_scale != 1 else ""

        def sampled(part: str) -> list[EpisodeArrays]:  # medium or expert episodes, made once
            if part not in made:
                policy = expert if part == "expert" else load_policy(by_step[medium_step])[0]
                act = policy_actor(policy, args.seed, noise_scale=args.noise_scale)
                made[part] = rollout(env, act, args.steps, args.seed, part, show)
            return made[part]

        for kind in kinds:
            if kind == "random":
                episodes = rollout(env, policy_actor(uniform, args.seed), args.steps, args.seed, kind, show)
                how = "uniform random actions"
            elif kind in ("medium", "expert"):
                step = medium_step if kind == "medium" else final_step
                episodes, how = sampled(kind), f"sampled actions of the checkpoint at step {step}{noise}"
            elif kind == "medium-replay":
                space = env.unwrapped.action_space
                episodes = [
                    EpisodeArrays(**{**ep, "actions": to_native(ep["actions"], space)})
                    for ep in read_episodes(run_dir, medium_step)
                ]
                how = f"every transition the run collected up to step {medium_step}"
            else:
                episodes, how = sampled("medium") + sampled("expert"), f"medium and expert concatenated{noise}"
            algo = meta.meta["algo"]
            path = write_dataset(
                ids[kind], episodes, env_id, ref_min, ref_max,
                f"{kind} dataset of {env_id} from pmoe-rl run {run_dir.name} ({algo}): {how}", f"pmoe-rl {algo}",
            )  # fmt: skip
            n, mean = sum(len(ep) for ep in episodes), np.mean([ep.rewards.sum() for ep in episodes])
            say(f"wrote {ids[kind]}: {n} transitions, {len(episodes)} episodes, mean return {mean:.1f} -> {path}")
    finally:
        env.close()
    return 0


def select_medium(checkpoints, env, target: float, n_episodes: int, seed: int) -> int:
    """The step of the checkpoint (not the final one) whose deterministic mean return is closest to ``target``."""
    if len(checkpoints) < 2:
        raise DatasetError("medium datasets need an intermediate checkpoint: train with a smaller --checkpoint-every")
    scores = {}
    for step, path in checkpoints[:-1]:
        scores[step] = evaluate_policy(load_policy(path)[0], env, n_episodes, seed).mean_return
    best = min(scores, key=lambda s: abs(scores[s] - target))
    say(f"medium: checkpoint at step {best}, return {scores[best]:.1f} (target {target:.1f})")
    return best


_entry = entry_point(main)


if __name__ == "__main__":
    _entry()
