"""Environment steps per second of pmoe-rl and SB3, side by side in one invocation.

``--algo sac``: pmoe-rl SAC (K=1 and K=4) and the SB3 bridge's ``PMOESAC`` (K=4) against SB3 SAC, all
with SB3's SAC defaults ([256, 256] nets, batch 256, lr 3e-4, buffer 1e6, train_freq 1, gradient_steps 1,
auto entropy, uniform random warm-up).
Each contestant runs ``--learning-starts`` warm-up steps, then ``--steps`` steps with one update each;
the rate is over the training steps only.

``--algo ppo``: pmoe-rl PPO (Gaussian and PMOE-PPO with K=5) against SB3 PPO with SB3's PPO defaults
(rollout 2048, 10 epochs, minibatch 64, lr 3e-4, [64, 64] tanh actor and critic, unclipped value loss)
and the same normalisation (SB3: ``VecNormalize`` of observations and rewards). The rate is over whole
iterations (collect a rollout, then update), from the end of the first update to the end of the last,
so neither library's start-up (imports, env and logger creation) counts.

Same env and thread count for all. Rounds alternate between contestants to spread machine noise; the
median is reported, with the median of the per-round ratios.

    python scripts/bench_throughput.py --algo sac --env HalfCheetah-v5 --steps 2000 --rounds 3 --threads 2
    python scripts/bench_throughput.py --algo ppo --env HalfCheetah-v5 --steps 10240 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch

DEVICE = "cpu"  # --device: where every contestant trains (set in the worker)
COMPILE = "off"  # --compile: the pmoe-rl contestants' torch.compile mode (set in the worker)
COMPILE_WARMUP = 100  # updates left out of a compiled SAC run's time (the compilation happens in the first)


def run_sb3(env_id: str, steps: int, learning_starts: int, seed: int, pmoe: bool = False) -> float:
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    from pmoe_rl.sb3 import PMOESAC

    env = make_vec_env(env_id, n_envs=1, seed=seed)
    algo = PMOESAC if pmoe else SAC
    model = algo("MlpPolicy", env, learning_starts=learning_starts, seed=seed, device=DEVICE, verbose=0)
    model.learn(learning_starts)
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def _timed_updates(cls, marks: list[float]):
    """Wrap ``cls``'s PPO update method to record when each call returns."""
    name = "train" if hasattr(cls, "train") else "update"
    original = getattr(cls, name)

    def timed(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        marks.append(time.perf_counter())
        return out

    setattr(cls, name, timed)


def run_sb3_ppo(env_id: str, steps: int, seed: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed), norm_obs=True, norm_reward=True, clip_obs=10.0)
    model = PPO("MlpPolicy", env, seed=seed, device=DEVICE, verbose=0)
    marks: list[float] = []
    _timed_updates(PPO, marks)
    model.learn(steps)
    env.close()
    return (len(marks) - 1) * model.n_steps / (marks[-1] - marks[0])


def run_pmoe_ppo(env_id: str, steps: int, seed: int, experts: int) -> float:
    import contextlib
    import io

    from pmoe_rl.agents import ppo
    from pmoe_rl.agents.runner import RunContext, train
    from pmoe_rl.config import Config, validate

    cfg = Config(
        env=env_id,
        algo="ppo",
        policy="pmoe" if experts > 1 else "gaussian",
        experts=experts,
        seed=seed,
        steps=steps,
        device=DEVICE,
        compile=COMPILE,
        eval_every=0,
        checkpoint_every=0,
        log_every=steps,
    )
    cfg.ppo.clip_value = False  # SB3's default value loss
    validate(cfg)
    marks: list[float] = []
    _timed_updates(ppo.PPO, marks)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        train(ppo.PPO, cfg, RunContext(Path(tmp), torch.device(DEVICE), progress=False))
    return (len(marks) - 1) * cfg.ppo.n_steps / (marks[-1] - marks[0])


def run_pmoe(env_id: str, steps: int, learning_starts: int, seed: int, experts: int) -> float:
    from pmoe_rl.agents.runner import RunContext, train
    from pmoe_rl.config import Config, validate

    cfg = Config(
        env=env_id,
        policy="pmoe" if experts > 1 else "gaussian",
        experts=experts,
        seed=seed,
        steps=learning_starts + steps,
        device=DEVICE,
        compile=COMPILE,
        eval_every=0,
        checkpoint_every=0,
        log_every=learning_starts,
    )
    cfg.sac.learning_starts, cfg.sac.warmup = learning_starts, "uniform"
    validate(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        ctx = RunContext(run_dir, torch.device(DEVICE), progress=False)
        marks: dict[str, float] = {}
        import pmoe_rl.agents.sac as sac_mod

        original = sac_mod.SAC.update
        skip = COMPILE_WARMUP if COMPILE != "off" else 0

        def timed_update(self, *args, **kwargs):  # start the clock at the first update (compiled: after skip)
            if self.n_updates == skip:
                marks["start"] = time.perf_counter()
            return original(self, *args, **kwargs)

        sac_mod.SAC.update = timed_update
        try:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                train(sac_mod.SAC, cfg, ctx)
        finally:
            sac_mod.SAC.update = original
        # the end includes writing the final checkpoint, a fixed cost pmoe-rl pays and SB3 does not
        return (steps - skip) / (time.perf_counter() - marks["start"])


CONTESTANTS = {
    "sac": {
        "sb3": "SB3 SAC",
        "k1": "pmoe-rl SAC, Gaussian (K=1)",
        "k4": "pmoe-rl SAC, PMOE (K=4)",
        "sb3-pmoe": "pmoe_rl.sb3.PMOESAC (K=4) in SB3",
    },
    "ppo": {"sb3": "SB3 PPO", "k1": "pmoe-rl PPO, Gaussian (K=1)", "k5": "pmoe-rl PMOE-PPO (K=5)"},
}


def worker(args) -> None:
    global DEVICE, COMPILE
    DEVICE, COMPILE = args.device, args.compile
    if args.worker.startswith("sb3"):
        torch.set_num_threads(args.threads)
        if args.algo == "sac":
            rate = run_sb3(args.env, args.steps, args.learning_starts, args.seed, pmoe=args.worker == "sb3-pmoe")
        else:
            rate = run_sb3_ppo(args.env, args.steps, args.seed)
    else:
        from pmoe_rl.cli import configure_cpu

        configure_cpu(args.threads)
        experts = int(args.worker[1:])
        if args.algo == "sac":
            rate = run_pmoe(args.env, args.steps, args.learning_starts, args.seed, experts)
        else:
            rate = run_pmoe_ppo(args.env, args.steps, args.seed, experts)
    print(f"RATE {rate}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=list(CONTESTANTS), default="sac")
    p.add_argument("--env", default="HalfCheetah-v5")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed training steps per contestant and round (default: 2000 for sac, 10240 for ppo)",
    )
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N], for every contestant (default: cpu)")
    p.add_argument(
        "--compile",
        default="off",
        help="torch.compile mode of the pmoe-rl contestants (off, default, reduce-overhead; default: off); "
        f"compiled SAC runs leave their first {COMPILE_WARMUP} updates out of the time, PPO runs always leave out "
        "their first update",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.steps = args.steps or (2000 if args.algo == "sac" else 10240)
    if args.worker:
        return worker(args)
    contestants = CONTESTANTS[args.algo]
    rates: dict[str, list[float]] = {key: [] for key in contestants}
    for r in range(args.rounds):
        for key, name in contestants.items():
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                key,
                "--algo",
                args.algo,
                "--env",
                args.env,
                "--steps",
                str(args.steps),
                "--learning-starts",
                str(args.learning_starts),
                "--threads",
                str(args.threads),
                "--seed",
                str(args.seed),
                "--device",
                args.device,
                "--compile",
                args.compile,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rates[key].append(float(out.split("RATE ")[-1]))
            print(f"round {r + 1}: {name}: {rates[key][-1]:.1f} steps/s", flush=True)
    base = statistics.median(rates["sb3"])
    what = (
        f"{args.steps} training steps after {args.learning_starts} warm-up"
        if args.algo == "sac"
        else f"{args.steps} steps of PPO (collection and updates)"
    )
    print(
        f"\n{args.env}, {what}, {args.rounds} rounds, "
        f"{args.threads} torch thread(s), device {args.device}, pmoe-rl compile {args.compile}; "
        f"torch {torch.__version__}, SB3 {version('stable-baselines3')}, "
        f"gymnasium {version('gymnasium')}, mujoco {version('mujoco')}, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
    )
    print("| contestant | steps/s (median) | all rounds | ratio of medians | median of per-round ratios |")
    print("|---|---|---|---|---|")
    for key, name in contestants.items():
        med = statistics.median(rates[key])
        paired = statistics.median(x / y for x, y in zip(rates[key], rates["sb3"]))  # same round, same machine state
        rounds = ", ".join(f"{x:.1f}" for x in rates[key])
        print(f"| {name} | {med:.1f} | {rounds} | {med / base:.2f}x | {paired:.2f}x |")


if __name__ == "__main__":
    main()
