"""Which transitions an O-DICE or IQL run's policy extraction learns from: the weights of its checkpoint's value
functions over every transition of its dataset (O-DICE: w(delta_f); IQL: exp(beta (min Qbar(s, a) - V(s))), both
clipped), summarised overall and for the dataset's first and second half in file order (for a medium-expert
dataset made by ``collect``: the medium and the expert transitions).

    MINARI_DATASETS_PATH=datasets python scripts/offline_weights.py runs/my_odice_run    # or .../checkpoints/step_N

Prints the share of the total weight and of non-zero weights in each half, the coefficient of variation of the
weights, and the effective sample size (sum w)^2 / sum w^2 as a share of the dataset (1: plain behaviour cloning);
then V (the minimum of the heads) and the mean weight by the number of steps before the episode's end, for episodes
that ended in a terminal state (a fall) and for the others: whether V sees what a termination costs; and for each
half, the share of its weight on the episodes that end in a fall against their share of its transitions, and the
mean weight by the steps before the fall relative to the half's mean: whether the extraction avoids what leads to a
fall; and the mean weight by the steps since the episode's start, relative to the half's mean: what the policy learns
at the start states, which both halves of a medium-expert dataset share.

With ``--extract N`` it then goes on training only the policy for N steps, with the value functions frozen at the
checkpoint's and the policy's learning rate held at ``--actor-lr`` (default: the run's, constant), and prints the
normalised score of ``--eval-episodes`` deterministic episodes every ``--eval-every`` steps: whether the policy
extracted from these value functions settles, or swings while they stand still. ``--fresh-policy`` starts the
policy from a new initialisation instead of the checkpoint's, and ``--set KEY=VALUE`` changes the run's options for
the extraction (``odice.policy_hidden=[1024,1024]``, the official size, with ``--fresh-policy``;
``offline.batch_size=1024``, the policy's batch, the value functions being frozen; ``offline.max_weight=5``;
``iql.tanh_mean=false``): what the swing depends on. ``--ema 0.999`` also evaluates an exponential moving average
of the policy's weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pmoe_rl import checkpoint
from pmoe_rl.agents import AGENTS
from pmoe_rl.agents.offline import OfflineAgent
from pmoe_rl.config import from_dict, set_value
from pmoe_rl.envs import make_env, seed_everything
from pmoe_rl.errors import ConfigError, cli_main
from pmoe_rl.evaluation import eval_seed, evaluate_policy

CHUNK = 65536  # transitions per forward pass
TO_END = (0, 5, 20, 50, 200)  # lower edges of the bins of steps before the episode's end
FALL_BINS = (0, 50, 200)  # the same, coarser, for each half's summary
START_BINS = (0, 25, 50, 100, 200)  # lower edges of the bins of steps since the episode's start


def load(path: Path, overrides: tuple[str, ...] = (), fresh_policy: bool = False) -> OfflineAgent:
    """The O-DICE or IQL agent of a run directory (its latest checkpoint) or a checkpoint, on the CPU, with the run's
    options changed by ``overrides`` (``--set KEY=VALUE``); with ``fresh_policy``, only the value functions (and
    their targets) come from the checkpoint and the policy is newly initialised."""
    ckpt = checkpoint.load(path)
    cfg = from_dict(ckpt.meta["config"])
    if cfg.algo not in ("odice", "iql"):
        raise ConfigError(f"{path} holds a {cfg.algo} run; this script reads O-DICE and IQL runs")
    for assignment in overrides:
        cfg = set_value(cfg, assignment)
    dims = (ckpt.meta[space]["shape"][0] for space in ("observation_space", "action_space"))
    seed_everything(cfg.seed)  # a fresh policy's initialisation is the run seed's
    agent = AGENTS[cfg.algo](cfg, *dims, torch.device("cpu"))
    weights = ckpt.weights
    if fresh_policy:  # the value functions from the checkpoint, the policy as just initialised
        policy = {k: v for k, v in agent.weights().items() if k.startswith("policy.")}
        weights = {k: v for k, v in weights.items() if not k.startswith("policy.")} | policy
    try:
        agent.load_weights(weights)
    except RuntimeError:  # a size mismatch
        raise ConfigError(
            "the checkpoint does not fit the changed options (a new policy size needs --fresh-policy)"
        ) from None
    fresh = ", a fresh policy" if fresh_policy else ""
    print(f"{path} at step {ckpt.step}: {len(agent.buffer)} transitions of {cfg.dataset}{fresh}")
    return agent


@torch.no_grad()
def weights(agent: OfflineAgent) -> tuple[torch.Tensor, torch.Tensor]:
    """The extraction weight and V (the heads' minimum) of every transition."""
    batch = agent.buffer.transitions()
    w, v = [], []
    for start in range(0, len(agent.buffer), CHUNK):
        part = type(batch)(*(t[start : start + CHUNK] for t in batch))
        w.append(agent.batch_weights(part))
        v.append(agent.v(part.obs).min(0).values)
    return torch.cat(w), torch.cat(v)


def extract(agent: OfflineAgent, steps: int, lr: float, eval_every: int, episodes: int, ema: float = 0.0) -> None:
    """Train only the policy, on the weights of the frozen value functions, at a constant learning rate; print the
    normalised score of a deterministic evaluation every ``eval_every`` steps (the run's evaluation seed each time),
    and with ``ema`` > 0 that of the exponential moving average of the policy's weights (decay ``ema`` per step)
    too."""
    cfg = agent.cfg
    average = AveragedModel(agent.policy, multi_avg_fn=get_ema_multi_avg_fn(ema)) if ema else None
    agent.cosine_lr = False
    for group in agent.actor_opt.param_groups:
        group["lr"] = lr
    seed_everything(cfg.seed)
    env = make_env(cfg.env)

    def score(policy) -> float:
        return agent.data.normalized_score(evaluate_policy(policy, env, episodes, eval_seed(cfg.seed)).mean_return)

    try:
        print(f"policy only, value functions frozen, learning rate {lr:g}: normalised score every {eval_every} steps")
        for n in range(steps + 1):
            if n % eval_every == 0:
                line = f"{n}: {score(agent.policy):.1f}"
                if average:
                    line += f" (average {score(average.module):.1f})"
                print(line, flush=True)
            if n < steps:
                batch = agent.buffer.sample(cfg.offline.batch_size)
                agent.actor_step(batch, agent.batch_weights(batch))
                if average:
                    average.update_parameters(agent.policy)
    finally:
        env.close()


def steps_to_end(episode_ends: np.ndarray, terminated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each transition: the steps left before its episode's last one, and whether that episode terminated."""
    lengths = np.diff(episode_ends, prepend=-1)
    left = np.concatenate([np.arange(n - 1, -1, -1) for n in lengths])
    return left, np.repeat(terminated[episode_ends].astype(bool), lengths)


def bins(x: np.ndarray, edges: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """("lo-hi", mask) for each bin [lo, next edge) of ``x`` given by its lower ``edges``, the last one open ("lo+")."""
    uppers = edges[1:] + (None,)
    return [(f"{lo}-{hi - 1}" if hi else f"{lo}+", (x >= lo) & (x < (hi or np.inf))) for lo, hi in zip(edges, uppers)]


def relative_weights(w: np.ndarray, groups: list[tuple[str, np.ndarray]]) -> str:
    """Per group, "name 1.23x": its mean weight relative to the mean of ``w`` ("name -" for an empty group)."""
    return ", ".join(f"{name} {w[g].mean() / w.mean():.2f}x" if g.any() else f"{name} -" for name, g in groups)


def steps_since_start(episode_ends: np.ndarray) -> np.ndarray:
    """For each transition: the steps since its episode's first one (0 for the first)."""
    return np.concatenate([np.arange(n) for n in np.diff(episode_ends, prepend=-1)])


def start_summary(w: np.ndarray, since: np.ndarray) -> str:
    """For one part of the data: the mean weight by the steps since the episode's start, relative to the part's mean
    weight (1x: no preference)."""
    return "mean weight by steps since the start: " + relative_weights(w, bins(since, START_BINS))


def fall_summary(w: np.ndarray, left: np.ndarray, fell: np.ndarray) -> str:
    """For one part of the data (weights, steps before the episode's end, whether the episode ends in a fall): the
    share of its transitions and of its weight in episodes that end in a fall, and the mean weight 0-49, 50-199 and
    200 or more steps before a fall and in the other episodes, relative to the part's mean weight (1x: no
    preference)."""
    line = f"episodes that end in a fall hold {fell.mean():.2f} of the transitions, "
    line += f"{w[fell].sum() / w.sum():.2f} of the weight;"
    groups = [(f"{label} before a fall", fell & in_bin) for label, in_bin in bins(left, FALL_BINS)]
    return line + " mean weight: " + relative_weights(w, groups + [("no fall", ~fell)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="an O-DICE or IQL run directory (its latest checkpoint) or checkpoint")
    parser.add_argument(
        "--extract",
        type=int,
        default=0,
        metavar="N",
        help="then train only the policy for N steps with the value functions frozen (default: 0, no)",
    )
    parser.add_argument("--actor-lr", type=float, help="the policy's constant learning rate there (default: the run's)")
    parser.add_argument(
        "--fresh-policy", action="store_true", help="with --extract: start from a new policy, not the checkpoint's"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one of the run's options, e.g. offline.batch_size=1024 (repeatable)",
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="with --extract: also evaluate an exponential moving average of the policy's weights (e.g. 0.999)",
    )
    parser.add_argument("--eval-every", type=int, default=2500, help="evaluate every this many steps (default: 2500)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation (default: 10)")
    args = parser.parse_args(argv)
    lr_given = args.actor_lr is not None
    if args.extract < 0 or args.eval_every < 1 or args.eval_episodes < 1 or (lr_given and args.actor_lr <= 0):
        parser.error("--extract must be >= 0; --eval-every, --eval-episodes and --actor-lr must be positive")
    if (args.fresh_policy or args.ema) and not args.extract:
        parser.error("--fresh-policy and --ema need --extract N")
    if not 0 <= args.ema < 1:
        parser.error("--ema must be in [0, 1)")
    torch.set_num_threads(1)
    agent = load(args.path, tuple(args.set), args.fresh_policy)
    w, v = weights(agent)
    n, half = len(w), len(w) // 2
    ess = w.sum() ** 2 / (w**2).sum() / n
    print(f"weights: mean {w.mean():.3f}, non-zero {(w > 0).float().mean():.3f}, coefficient of variation "
          f"{w.std() / w.mean():.2f}, max {w.max():.2f}, effective sample {ess:.3f} of n")  # fmt: skip
    for name, part in (("first half", w[:half]), ("second half", w[half:])):
        print(f"{name}: share of the total weight {part.sum() / w.sum():.3f}, non-zero {(part > 0).float().mean():.3f}")
    left, fell = steps_to_end(np.asarray(agent.data.episode_ends), np.asarray(agent.data.terminated))
    w, v = w.numpy(), v.numpy()
    print("steps before the end | ended in a terminal state: n, V, mean w | the others: n, V, mean w")
    for row, in_bin in bins(left, TO_END):
        for group in (in_bin & fell, in_bin & ~fell):
            row += f" | {group.sum()}, " + (f"{v[group].mean():.2f}, {w[group].mean():.3f}" if group.any() else "-, -")
        print(row)
    since = steps_since_start(np.asarray(agent.data.episode_ends))
    for name, part in (("first half", slice(0, half)), ("second half", slice(half, n))):
        print(f"{name}: {fall_summary(w[part], left[part], fell[part])}")
        print(f"{name}: {start_summary(w[part], since[part])}")
    if args.extract:
        lr = args.actor_lr if lr_given else getattr(agent.cfg, agent.section).actor_lr
        extract(agent, args.extract, lr, args.eval_every, args.eval_episodes, args.ema)


if __name__ == "__main__":
    sys.exit(cli_main(main))
