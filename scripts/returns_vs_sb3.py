"""Final returns of pmoe-rl and stable-baselines3 for the same budget and seeds.

``--algo ppo``: pmoe-rl PPO (Gaussian and PMOE-PPO) through its CLI with its defaults against SB3's
``PPO("MlpPolicy")`` with its defaults inside ``VecNormalize`` (observations and rewards, clip 10), the RL
Zoo's setting for MuJoCo. They differ only where the defaults differ (pmoe-rl clips the value loss, as
CleanRL and the PMOE-PPO script do).

``--algo sac``: native PMOE-SAC (K=4) against the SB3 bridge's ``pmoe_rl.sb3.PMOESAC`` (K=4), both with
the official hyperparameters and uniform random warm-up actions for the first 1,000 steps (SB3's warm-up).

Every run trains for ``--steps`` environment steps and is then evaluated the same way: ``--eval-episodes``
deterministic episodes on a separate env seeded with seed + 1 (observation statistics frozen). Runs go
``--jobs`` at a time, one torch thread each. Prints a Markdown table and writes ``--out`` (CSV).

    python scripts/returns_vs_sb3.py --algo ppo --env Hopper-v5 --steps 200000 --seeds 0 1 2 --jobs 2
    python scripts/returns_vs_sb3.py --algo sac --env Hopper-v5 --steps 30000 --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONTESTANTS = {
    "ppo": {"sb3": "SB3 PPO (+VecNormalize)", "gaussian": "pmoe-rl PPO, Gaussian", "pmoe": "pmoe-rl PMOE-PPO (K=5)"},
    "sac": {"sb3": "pmoe_rl.sb3.PMOESAC (K=4) in SB3", "pmoe": "pmoe-rl PMOE-SAC (K=4), native"},
}
SAC_WARMUP = ["--set", "sac.warmup=uniform"]  # SB3's warm-up, so that both SAC contestants start alike


def run_sb3(algo: str, env_id: str, steps: int, seed: int, episodes: int) -> dict:
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    from pmoe_rl.envs import make_env
    from pmoe_rl.sb3 import PMOESAC

    torch.set_num_threads(1)
    if algo == "ppo":
        env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), norm_obs=True, norm_reward=True, clip_obs=10.0)
        model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    else:  # the native defaults, in SB3's argument names
        env = make_vec_env(make_env, n_envs=1, seed=seed, env_kwargs=dict(env_id=env_id))
        model = PMOESAC("MlpPolicy", env, learning_starts=1000, seed=seed, device="cpu", verbose=0)
    model.learn(steps)
    eval_env = make_vec_env(make_env, n_envs=1, seed=seed + 1, env_kwargs=dict(env_id=env_id))
    if algo == "ppo":
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
        eval_env.obs_rms = env.obs_rms
    returns, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=episodes, deterministic=True, return_episode_rewards=True
    )
    train_returns = [ep["r"] for ep in model.ep_info_buffer]
    return {
        "final_return": float(np.mean(returns)),
        "train_return_last100": float(np.mean(train_returns)),
        "steps": model.num_timesteps,
    }


def run_pmoe(algo: str, policy: str, env_id: str, steps: int, seed: int, episodes: int, out_dir: Path) -> dict:
    run_dir = out_dir / f"{env_id}_{algo}_{policy}_s{seed}"
    cmd = [
        sys.executable,
        "-m",
        "pmoe_rl.train",
        "--env",
        env_id,
        "--algo",
        algo,
        "--policy",
        policy,
        "--steps",
        str(steps),
        "--seed",
        str(seed),
        "--threads",
        "1",
        "--eval-every",
        str(steps),
        "--eval-episodes",
        str(episodes),
        "--checkpoint-every",
        "0",
        "--log-every",
        str(steps),
        "--run-dir",
        str(run_dir),
        "--overwrite",
        *(SAC_WARMUP if algo == "sac" else []),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    last = json.loads((run_dir / "progress.json").read_text().splitlines()[-1])
    return {
        "final_return": last["eval/mean_reward"],
        "train_return_last100": last["rollout/ep_rew_mean"],
        "steps": last["time/total_timesteps"],
        "run_dir": str(run_dir),
    }


def one(key: str, args, seed: int, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    if key == "sb3":
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--algo",
            args.algo,
            "--env",
            args.env,
            "--steps",
            str(args.steps),
            "--seeds",
            str(seed),
            "--eval-episodes",
            str(args.eval_episodes),
        ]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    else:
        res = run_pmoe(args.algo, key, args.env, args.steps, seed, args.eval_episodes, out_dir)
    res.update(contestant=key, seed=seed, minutes=round((time.perf_counter() - t0) / 60, 1))
    print(
        f"{CONTESTANTS[args.algo][key]}, seed {seed}: final return {res['final_return']:.1f} ({res['minutes']} min)",
        flush=True,
    )
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=list(CONTESTANTS), default="ppo")
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument(
        "--contestants", nargs="+", choices=["sb3", "gaussian", "pmoe"], default=None, help="default: all of --algo's"
    )
    p.add_argument("--runs-dir", default=None, help="where pmoe-rl's run directories go (default: a temp dir)")
    p.add_argument("--out", default="returns_vs_sb3.csv")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(run_sb3(args.algo, args.env, args.steps, args.seeds[0], args.eval_episodes)))
        return
    args.contestants = args.contestants or list(CONTESTANTS[args.algo])
    out_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="returns_vs_sb3_"))
    jobs = [(key, seed) for seed in args.seeds for key in args.contestants]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: one(job[0], args, job[1], out_dir), jobs))
    fields = ["contestant", "seed", "steps", "final_return", "train_return_last100", "minutes"]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    print(
        f"\n{args.env}, {args.steps} steps, seeds {args.seeds}, {args.eval_episodes} deterministic evaluation "
        f"episodes at the end; {os.cpu_count()} CPUs, {args.jobs} runs at a time; CSV: {args.out}"
    )
    print("| contestant | final return, mean +- std over seeds | per seed | training return (last 100 episodes) |")
    print("|---|---|---|---|")
    for key in args.contestants:
        rows = [r for r in results if r["contestant"] == key]
        finals = [r["final_return"] for r in rows]
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        train = statistics.mean(r["train_return_last100"] for r in rows)
        print(
            f"| {CONTESTANTS[args.algo][key]} | {statistics.mean(finals):.1f} +- {spread:.1f} | "
            f"{', '.join(f'{x:.1f}' for x in finals)} | {train:.1f} |"
        )


if __name__ == "__main__":
    main()
