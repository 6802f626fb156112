"""Final returns of pmoe-rl PPO (Gaussian and PMOE-PPO) and SB3 PPO for the same budget and seeds.

Every run trains for ``--steps`` environment steps and is then evaluated the same way: ``--eval-episodes``
deterministic episodes on a separate env seeded with seed + 1, observation normalisation frozen.
pmoe-rl runs through its CLI with its defaults (``python -m pmoe_rl.train --algo ppo``); SB3 runs
``PPO("MlpPolicy")`` with its defaults inside ``VecNormalize`` (observations and rewards, clip 10), the
RL Zoo's setting for MuJoCo. The two differ only where the defaults differ (pmoe-rl clips the value loss,
as CleanRL and the PMOE-PPO script do). Runs go ``--jobs`` at a time, one torch thread each. Prints a
Markdown table and writes ``--out`` (CSV, one row per run).

    python scripts/returns_vs_sb3.py --env Hopper-v5 --steps 200000 --seeds 0 1 2 --jobs 2
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

CONTESTANTS = {"sb3": "SB3 PPO (+VecNormalize)", "gaussian": "pmoe-rl PPO, Gaussian", "pmoe": "pmoe-rl PMOE-PPO (K=5)"}


def run_sb3(env_id: str, steps: int, seed: int, episodes: int) -> dict:
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), norm_obs=True, norm_reward=True, clip_obs=10.0)
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0)
    model.learn(steps)
    eval_env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed + 1), training=False, norm_reward=False)
    eval_env.obs_rms = env.obs_rms
    returns, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=True,
                                 return_episode_rewards=True)
    train_returns = [ep["r"] for ep in model.ep_info_buffer]
    return {"final_return": float(np.mean(returns)), "train_return_last100": float(np.mean(train_returns)),
            "steps": model.num_timesteps}


def run_pmoe(policy: str, env_id: str, steps: int, seed: int, episodes: int, out_dir: Path) -> dict:
    run_dir = out_dir / f"{env_id}_ppo_{policy}_s{seed}"
    cmd = [sys.executable, "-m", "pmoe_rl.train", "--env", env_id, "--algo", "ppo", "--policy", policy,
           "--steps", str(steps), "--seed", str(seed), "--threads", "1", "--eval-every", str(steps),
           "--eval-episodes", str(episodes), "--checkpoint-every", "0", "--run-dir", str(run_dir), "--overwrite"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    last = json.loads((run_dir / "progress.json").read_text().splitlines()[-1])
    return {"final_return": last["eval/mean_reward"], "train_return_last100": last["rollout/ep_rew_mean"],
            "steps": last["time/total_timesteps"], "run_dir": str(run_dir)}


def one(key: str, args, seed: int, out_dir: Path) -> dict:
    t0 = time.perf_counter()
    if key == "sb3":
        cmd = [sys.executable, __file__, "--worker", "--env", args.env, "--steps", str(args.steps),
               "--seeds", str(seed), "--eval-episodes", str(args.eval_episodes)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    else:
        res = run_pmoe(key, args.env, args.steps, seed, args.eval_episodes, out_dir)
    res.update(contestant=key, seed=seed, minutes=round((time.perf_counter() - t0) / 60, 1))
    print(f"{CONTESTANTS[key]}, seed {seed}: final return {res['final_return']:.1f} "
          f"({res['minutes']} min)", flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--contestants", nargs="+", choices=list(CONTESTANTS), default=list(CONTESTANTS))
    p.add_argument("--runs-dir", default=None, help="where pmoe-rl's run directories go (default: a temp dir)")
    p.add_argument("--out", default="returns_vs_sb3.csv")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(run_sb3(args.env, args.steps, args.seeds[0], args.eval_episodes)))
        return
    out_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="returns_vs_sb3_"))
    jobs = [(key, seed) for seed in args.seeds for key in args.contestants]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: one(job[0], args, job[1], out_dir), jobs))
    fields = ["contestant", "seed", "steps", "final_return", "train_return_last100", "minutes"]
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    print(f"\n{args.env}, {args.steps} steps, seeds {args.seeds}, {args.eval_episodes} deterministic evaluation "
          f"episodes at the end; {os.cpu_count()} CPUs, {args.jobs} runs at a time; CSV: {args.out}")
    print("| contestant | final return, mean +- std over seeds | per seed | training return (last 100 episodes) |")
    print("|---|---|---|---|")
    for key in args.contestants:
        rows = [r for r in results if r["contestant"] == key]
        finals = [r["final_return"] for r in rows]
        spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
        train = statistics.mean(r["train_return_last100"] for r in rows)
        print(f"| {CONTESTANTS[key]} | {statistics.mean(finals):.1f} +- {spread:.1f} | "
              f"{', '.join(f'{x:.1f}' for x in finals)} | {train:.1f} |")


if __name__ == "__main__":
    main()
