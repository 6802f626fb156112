"""Gradient updates per second of the offline agents, side by side in one invocation: O-DICE with its three value
updates (orthogonal, true gradient, semi-gradient: the same networks, so their ratio is the price of the
projection), IQL and BC, each with its default networks and batch 256.

Rounds alternate between contestants to spread machine noise; the median is reported, with each contestant's
ratio to O-DICE semi-gradient (the issue's bar: orthogonal <= 2x semi-gradient's time per update).

    python scripts/bench_offline.py --dataset pmoe_rl/Hopper-v5/medium-replay-v0 --updates 200 --rounds 3
    python scripts/bench_offline.py            # a random Hopper-v5 dataset made on the fly (50k transitions)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from importlib.metadata import version

import torch

CONTESTANTS = {
    "odice-orthogonal": ("odice", {"update": "orthogonal"}),
    "odice-true": ("odice", {"update": "true"}),
    "odice-semi": ("odice", {"update": "semi"}),
    "iql": ("iql", {}),
    "bc": ("bc", {}),
}


def make_random_dataset(steps: int) -> str:
    from pmoe_rl.collect import UniformPolicy, policy_actor, rollout
    from pmoe_rl.datasets import write_dataset
    from pmoe_rl.envs import make_env

    env = make_env("Hopper-v5", seed=0)
    episodes = rollout(env, policy_actor(UniformPolicy(3), 0), steps, 0, "random", False)
    env.close()
    write_dataset("bench/Hopper-v5/random-v0", episodes, "Hopper-v5", None, None, "benchmark data", "uniform")
    return "bench/Hopper-v5/random-v0"


def build(key: str, dataset: str, device: str):
    from pmoe_rl.agents import AGENTS
    from pmoe_rl.config import Config, validate
    from pmoe_rl.datasets import dataset_env_id, load_for_env

    algo, odice = CONTESTANTS[key]
    cfg = Config(env=dataset_env_id(dataset), algo=algo, dataset=dataset, device=device)
    for name, value in odice.items():
        setattr(cfg.odice, name, value)
    cfg = validate(cfg)
    data = load_for_env(dataset, cfg.env)
    return AGENTS[algo](cfg, data.obs.shape[1], data.actions.shape[1], torch.device(device))


def rate(agent, updates: int) -> float:
    batch_size = agent.cfg.offline.batch_size
    for _ in range(10):  # warm-up
        agent.update(agent.buffer.sample(batch_size))
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(updates):
        agent.update(agent.buffer.sample(batch_size))
    if agent.device.type == "cuda":
        torch.cuda.synchronize()
    return updates / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", help="a local Minari dataset (default: random Hopper-v5 data made on the fly)")
    p.add_argument("--updates", type=int, default=200, help="timed updates per contestant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    from pmoe_rl.cli import configure_cpu

    configure_cpu(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset is None:
            os.environ["MINARI_DATASETS_PATH"] = tmp
            args.dataset = make_random_dataset(50_000)
        agents = {key: build(key, args.dataset, args.device) for key in CONTESTANTS}
        rates: dict[str, list[float]] = {key: [] for key in CONTESTANTS}
        for r in range(args.rounds):
            for key, agent in agents.items():
                rates[key].append(rate(agent, args.updates))
                print(f"round {r + 1}: {key}: {rates[key][-1]:.1f} updates/s", flush=True)
    base = statistics.median(rates["odice-semi"])
    print(
        f"\n{args.dataset}, batch 256, default networks, {args.updates} updates x {args.rounds} rounds, "
        f"{args.threads} torch thread(s), device {args.device}; torch {torch.__version__}, "
        f"minari {version('minari')}, Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs"
    )
    print("| contestant | updates/s (median) | all rounds | time per update / O-DICE semi-gradient's |")
    print("|---|---|---|---|")
    for key, values in rates.items():
        med = statistics.median(values)
        print(f"| {key} | {med:.1f} | {', '.join(f'{v:.1f}' for v in values)} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
