"""``python -m pmoe_rl.train``: train a mixture (PMOE) or Gaussian policy on a gymnasium task.

Examples::

    python -m pmoe_rl.train --env Hopper-v5                       # PMOE-SAC, 4 experts, 1M steps
    python -m pmoe_rl.train --env InvertedPendulum-v5 --steps 20000 --policy gaussian
    python -m pmoe_rl.train --env Hopper-v5 --algo ppo --policy pmoe --num-envs 4  # PMOE-PPO, 5 experts
    python -m pmoe_rl.train --env Hopper-v5 --config configs/sac.yaml --set sac.batch_size=512
    python -m pmoe_rl.train --resume runs/Hopper-v5_sac_pmoe_s0_20261128-101500 --steps 2000000
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import shutil
import sys
from pathlib import Path

import yaml

from pmoe_rl import checkpoint
from pmoe_rl.agents import TRAINERS
from pmoe_rl.agents.base import RunContext
from pmoe_rl.cli import Parser, configure_cpu, resolve_device
from pmoe_rl.config import (
    ALGOS,
    ESTIMATOR_NAMES,
    POLICIES,
    Config,
    apply_dict,
    from_dict,
    load_yaml,
    set_value,
    to_dict,
    validate,
)
from pmoe_rl.envs import check_env_id, make_env
from pmoe_rl.errors import ConfigError, RunDirError, cli_main

# the named flags that set a top-level config key of the same name (None defaults: unset flags leave the
# config alone)
FLAGS = ("env", "algo", "policy", "estimator", "experts", "steps", "seed", "device", "threads", "eval_every",
         "eval_episodes", "checkpoint_every", "log_every", "stop_at_reward", "num_envs", "vec_env")
# what may change when a run is resumed; everything else must match the saved config
RESUMABLE = {"steps", "device", "threads", "eval_every", "eval_episodes", "checkpoint_every", "log_every",
             "stop_at_reward", "vec_env"}


def _hyperparameter_help() -> str:
    lines = ["hyperparameters (set with --set KEY=VALUE or in a --config YAML file; defaults shown):"]

    def walk(obj, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif prefix:
                lines.append(f"  {prefix}{f.name}={value}")

    walk(Config(), "")
    return "\n".join(lines)


def build_parser() -> Parser:
    d = Config()
    p = Parser(prog="python -m pmoe_rl.train", description="Train a mixture-of-experts (PMOE) or Gaussian policy "
               "on a gymnasium task with continuous actions. Writes the resolved config, logs (stdout, CSV, "
               "TensorBoard, JSON) and checkpoints to a run directory.",
               epilog=_hyperparameter_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", help="gymnasium id, e.g. Hopper-v5, HalfCheetah-v5, InvertedPendulum-v5 (required)")
    p.add_argument("--algo", choices=ALGOS, help=f"algorithm (default: {d.algo})")
    p.add_argument("--policy", choices=POLICIES, help=f"pmoe: Gaussian mixture (SAC: trained by --estimator; "
                   f"PPO: mixture ratio + auxiliary Q and gate loss); gaussian: one Gaussian (plain SAC / PPO); "
                   f"moe / mcp (SAC): one Gaussian composed from K primitives by a gated mixture of experts / a "
                   f"multiplicative compositional policy (default: {d.policy})")
    p.add_argument("--estimator", choices=ESTIMATOR_NAMES, help=f"actor-loss estimator of a mixture policy with "
                   f"SAC: pmoe (best expert + gate frequency loss), gumbel (Gumbel-Softmax), score (score "
                   f"function), mrp (marginalised reparameterisation) (default: {d.estimator})")
    p.add_argument("--experts", type=int, metavar="K",
                   help="number of experts K (default: 1 for gaussian; pmoe: 4 with SAC, 5 with PPO)")
    p.add_argument("--steps", type=int, metavar="N", help=f"total environment steps (default: {d.steps})")
    p.add_argument("--seed", type=int, help=f"random seed for env, torch, numpy (default: {d.seed})")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto = CUDA when available)")
    p.add_argument("--threads", type=int, help="torch CPU threads; 0 = measured default (default: 0)")
    p.add_argument("--num-envs", type=int, metavar="N", help=f"parallel environments, PPO only (default: {d.num_envs})")
    p.add_argument("--vec-env", choices=("sync", "async"),
                   help="sync: all envs in this process; async: one subprocess each (default: sync)")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of config values (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any hyperparameter, e.g. --set sac.batch_size=512 (repeatable; listed below)")
    p.add_argument("--run-dir", metavar="DIR", help="where to write the run (default: runs/ENV_ALGO_POLICY_sSEED_TIME)")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help=f"steps between evaluations, 0 = never (default: {d.eval_every})")
    p.add_argument("--eval-episodes", type=int, metavar="N",
                   help=f"episodes per evaluation (default: {d.eval_episodes})")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help=f"steps between checkpoints, 0 = only at the end (default: {d.checkpoint_every})")
    p.add_argument("--log-every", type=int, metavar="N", help=f"steps between log lines (default: {d.log_every})")
    p.add_argument("--stop-at-reward", type=float, metavar="R",
                   help="stop once an evaluation's mean return reaches R (default: never)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its latest checkpoint "
                   "(optionally with a larger --steps)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir (default: refuse)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: only on a terminal)")
    return p


def _flag_values(args) -> dict:
    return {key: getattr(args, key) for key in FLAGS if getattr(args, key) is not None}


def resolve_config(args) -> Config:
    cfg = Config()
    if args.config:
        apply_dict(cfg, load_yaml(args.config))
    apply_dict(cfg, _flag_values(args))
    for assignment in args.set:
        set_value(cfg, assignment)
    return validate(cfg)


def _resume_config(args) -> tuple[Config, Path]:
    run_dir = Path(args.resume)
    if args.run_dir or args.config or args.set or args.overwrite:
        raise ConfigError("--resume continues a run with its saved config; do not combine it with "
                          "--run-dir, --config, --set or --overwrite")
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"cannot resume {run_dir}: it is not a pmoe-rl run directory (no config.yaml)")
    cfg = from_dict(load_yaml(run_dir / "config.yaml"))
    flags = _flag_values(args)
    changed = sorted(k for k, v in flags.items() if k not in RESUMABLE and v != getattr(cfg, k))
    if changed:
        raise ConfigError(f"cannot change {', '.join(changed)} when resuming; start a new run instead")
    apply_dict(cfg, flags)
    return validate(cfg), run_dir


def _prepare_run_dir(args, cfg: Config) -> Path:
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        what = cfg.policy if cfg.estimator == "pmoe" else f"{cfg.policy}-{cfg.estimator}"
        run_dir = Path("runs") / f"{cfg.env.replace('/', '-')}_{cfg.algo}_{what}_s{cfg.seed}_{stamp}"
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not args.overwrite:
            raise RunDirError(f"run directory {run_dir} already exists; pass --resume {run_dir} to continue it "
                              "or --overwrite to replace it")
        if not run_dir.is_dir() or not ((run_dir / "config.yaml").exists() or (run_dir / "checkpoints").exists()):
            raise RunDirError(f"refusing to --overwrite {run_dir}: it is not a pmoe-rl run directory")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resume = None
    if args.resume:
        cfg, run_dir = _resume_config(args)
        check_env_id(cfg.env)
        device = resolve_device(cfg.device)
        resume = checkpoint.load(run_dir, with_state=True)  # on the CPU: RNG states must stay there
        if resume.step >= cfg.steps:
            print(f"run {run_dir} is already at step {resume.step} >= --steps {cfg.steps}; nothing to do")
            return 0
    else:
        cfg = resolve_config(args)
        make_env(cfg.env).close()  # an unusable env is refused before anything is written
        device = resolve_device(cfg.device)
        run_dir = _prepare_run_dir(args, cfg)
    configure_cpu(cfg.threads)
    checkpoint.write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    what = f"{cfg.algo.upper()} with a {cfg.policy} policy ({cfg.n_experts} expert{'s' * (cfg.n_experts > 1)})"
    verb = f"resuming from step {resume.step}" if resume else "training"
    print(f"{verb}: {what} on {cfg.env} for {cfg.steps} steps, device {device}\nrun directory: {run_dir}", flush=True)
    result = TRAINERS[cfg.algo](cfg, RunContext(run_dir, device, resume, args.progress))
    if result:
        print(f"last evaluation (step {result['step']}): mean return {result['mean_return']:.2f} "
              f"+/- {result['std_return']:.2f} over {len(result['returns'])} episodes")
    print(f"run directory: {run_dir}\nevaluate with: python -m pmoe_rl.evaluate {run_dir}")
    return 0


def _entry() -> None:
    sys.exit(cli_main(main))


if __name__ == "__main__":
    _entry()
