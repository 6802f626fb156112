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
import datetime
import shutil
import typing
from collections.abc import Callable
from pathlib import Path

import yaml

from pmoe_rl import checkpoint
from pmoe_rl.agents import AGENTS
from pmoe_rl.agents.imitation import load_expert
from pmoe_rl.agents.runner import RunContext, train
from pmoe_rl.cli import Parser, configure_cpu, entry_point
from pmoe_rl.config import (
    Config,
    apply_dict,
    is_section,
    load_run_config,
    load_yaml,
    parse_value,
    resumable,
    set_value,
    to_dict,
    validate,
)
from pmoe_rl.datasets import dataset_env_id, load_for_env
from pmoe_rl.devices import resolve_device
from pmoe_rl.envs import check_env_id, make_env
from pmoe_rl.errors import ConfigError, RunDirError
from pmoe_rl.estimators import ESTIMATORS


def _choices(annotation) -> list[str] | None:
    """The allowed values of a Literal field (inside Optional/Union too), else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            return list(typing.get_args(arg)) + ["a number"]
    return None


def _describe(name: str, field, default) -> str:
    """A field's help: its doc, then its allowed values and default."""
    doc = " ".join((field.description or "").split())
    choices = _choices(field.annotation)
    if name == "estimator":  # a registry that user code can extend, not a fixed Literal
        choices = list(ESTIMATORS)
    parts = [f"choices: {', '.join(map(str, choices))}"] if choices else []
    if default not in (None, ""):
        parts.append(f"default: {default}")
    return f"{doc} ({'; '.join(parts)})" if parts else doc


def _hyperparameter_help() -> str:
    """Every option of the config's sections, once, with its doc, allowed values and default."""
    lines = ["hyperparameters (set with --set KEY=VALUE, repeatable, values in YAML, or in a --config file):"]
    defaults = Config()
    for section, field in Config.model_fields.items():
        model = field.annotation
        if not is_section(model):
            continue
        lines.append(f"\n  {section}.*: {model.__doc__.split(chr(10))[0]}")
        values = getattr(defaults, section)
        for name, sub in model.model_fields.items():
            lines.append(f"    {section}.{name}: {_describe(name, sub, getattr(values, name))}")
    return "\n".join(lines)


def build_parser(
    prog: str = "python -m pmoe_rl.train",
    description: str = "Train a mixture-of-experts (PMOE) or Gaussian policy on a gymnasium task with continuous "
    "actions. Writes the resolved config, logs (stdout, CSV, TensorBoard, JSON) and checkpoints to a run directory.",
    section: str | None = None,
    exclude: tuple[str, ...] = (),
    base: dict | None = None,
) -> Parser:
    """The CLI: one flag per top-level config field (generated from the fields; those in ``exclude`` left out), one
    per field of ``section`` if given (``--beta`` for ``imitation.beta``), the run-level flags, and the sections'
    options in the epilog. ``base``: the command's own defaults (shown in the help; :func:`run` applies them)."""
    p = Parser(prog=prog, description=description, epilog=_hyperparameter_help(),
               formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    defaults = apply_dict(Config(), base or {})
    fields = [(name, name, field, getattr(defaults, name)) for name, field in Config.model_fields.items()
              if not is_section(field.annotation) and name not in exclude]  # fmt: skip
    if section is not None:
        model, values = Config.model_fields[section].annotation, getattr(defaults, section)
        fields += [(name, f"{section}.{name}", field, getattr(values, name))
                   for name, field in model.model_fields.items()]  # fmt: skip
    for name, dest, field, default in fields:
        # values are validated (and converted from text) by the config, like every other source
        const = (field.json_schema_extra or {}).get("flag_const")  # the value of the flag given alone
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=dest,
            default=argparse.SUPPRESS,
            metavar=name.upper(),
            help=_describe(name, field, default),
            **({"nargs": "?", "const": const} if const is not None else {}),
        )
    p.add_argument("--config", metavar="FILE.yaml", help="YAML file of config values (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any hyperparameter, e.g. --set sac.batch_size=512 (repeatable; listed below)",
    )
    p.add_argument("--run-dir", metavar="DIR", help="where to write the run (default: runs/ENV_ALGO_POLICY_sSEED_TIME)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its latest checkpoint (optionally with a larger --steps)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir (default: refuse)")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: only on a terminal)",
    )
    return p


def _flag_values(args) -> dict:
    """The options given as flags, nested (a section's flag ``imitation.beta`` under ``imitation``)."""
    values: dict = {}
    for dest, value in vars(args).items():
        name, _, sub = dest.partition(".")
        if name not in Config.model_fields:
            continue
        if sub:  # read as YAML, like --set (lists)
            values.setdefault(name, {})[sub] = parse_value(value)
        else:
            values[name] = value
    return values


def resolve_config(args, base: dict | None = None) -> Config:
    """The config of a new run: the defaults, ``base`` (a command's own defaults), the YAML file, the flags, then the
    ``--set`` overrides; an offline run's env defaults to its dataset's, an imitation run's to its expert's."""
    cfg = apply_dict(Config(), base or {})
    if args.config:
        cfg = apply_dict(cfg, load_yaml(args.config))
    cfg = apply_dict(cfg, _flag_values(args))
    for assignment in args.set:
        cfg = set_value(cfg, assignment)
    return complete(cfg)


def complete(cfg: Config) -> Config:
    """Resolve what a new run's config leaves to its inputs, then :func:`validate` it: an offline run's env defaults
    to its dataset's, an imitation run's to its expert's (whose path is made absolute)."""
    if cfg.dataset and not cfg.env:
        cfg.env = dataset_env_id(cfg.dataset)
    if cfg.algo == "imitate" and cfg.imitation.expert:
        cfg.imitation.expert = str(Path(cfg.imitation.expert).resolve())  # the run can be resumed from elsewhere
        if not cfg.env:
            cfg.env = checkpoint.load(cfg.imitation.expert).meta["env_id"]
    return validate(cfg)


def check_inputs(cfg: Config) -> None:
    """Refuse an unusable env, dataset or expert before anything is written."""
    make_env(cfg.env).close()
    if cfg.dataset:
        load_for_env(cfg.dataset, cfg.env)
    if cfg.algo == "imitate":
        load_expert(cfg.imitation.expert, cfg.env, "cpu")


def _resume_config(args) -> tuple[Config, Path]:
    run_dir = Path(args.resume)
    if args.run_dir or args.config or args.set or args.overwrite:
        raise ConfigError(
            "--resume continues a run with its saved config; do not combine it with "
            "--run-dir, --config, --set or --overwrite"
        )
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"cannot resume {run_dir}: it is not a pmoe-rl run directory (no config.yaml)")
    cfg = load_run_config(run_dir)
    flags = apply_dict(cfg, _flag_values(args))
    changed = sorted(k for k in _flag_values(args) if not resumable(k) and getattr(flags, k) != getattr(cfg, k))
    if changed:
        raise ConfigError(f"cannot change {', '.join(changed)} when resuming; start a new run instead")
    return validate(flags), run_dir


def _prepare_run_dir(args, cfg: Config) -> Path:
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        what = cfg.policy if cfg.estimator == "pmoe" else f"{cfg.policy}-{cfg.estimator}"
        if cfg.algo == "imitate":
            what = cfg.imitation.optimizer
        run_dir = Path("runs") / f"{cfg.env.replace('/', '-')}_{cfg.algo}_{what}_s{cfg.seed}_{stamp}"
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not args.overwrite:
            raise RunDirError(
                f"run directory {run_dir} already exists; pass --resume {run_dir} to continue it "
                "or --overwrite to replace it"
            )
        if not run_dir.is_dir() or not ((run_dir / "config.yaml").exists() or (run_dir / "checkpoints").exists()):
            raise RunDirError(f"refusing to --overwrite {run_dir}: it is not a pmoe-rl run directory")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args, base: dict | None = None, steps: Callable[[Config], int] | None = None,
        on_evaluation: Callable[[dict], None] | None = None) -> int:  # fmt: skip
    """Start or resume the run that the parsed ``args`` describe (``base``: the command's own defaults, see
    :func:`resolve_config`; ``steps``: the budget as a function of the config, e.g. rounds x samples per round for
    ``python -m pmoe_rl.imitate``; ``on_evaluation``: called with every evaluation's result)."""
    resume = None

    def in_units(cfg: Config) -> Config:
        if steps is not None:
            cfg.steps = steps(cfg)
        return cfg

    if args.resume:
        cfg, run_dir = _resume_config(args)
        cfg = in_units(cfg)
        check_env_id(cfg.env)
        if cfg.dataset:
            load_for_env(cfg.dataset, cfg.env)
        device, why = resolve_device(cfg.device, cfg.algo)
        resume = checkpoint.load(run_dir, with_state=True)  # on the CPU: RNG states must stay there
        if resume.step >= cfg.steps:
            print(f"run {run_dir} is already at step {resume.step} >= --steps {cfg.steps}; nothing to do")
            return 0
    else:
        cfg = in_units(resolve_config(args, base))
        check_inputs(cfg)
        device, why = resolve_device(cfg.device, cfg.algo)
        run_dir = _prepare_run_dir(args, cfg)
    configure_cpu(cfg.threads)
    checkpoint.write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    what = f"{cfg.algo.upper()} with a {cfg.policy} policy ({cfg.n_experts} expert{'s' * (cfg.n_experts > 1)})"
    if cfg.dataset:
        what += f" on dataset {cfg.dataset}"
    verb = f"resuming from step {resume.step}" if resume else "training"
    print(
        f"{verb}: {what} on {cfg.env} for {cfg.steps} steps, device {device} ({why})\nrun directory: {run_dir}",
        flush=True,
    )
    result = train(AGENTS[cfg.algo], cfg, RunContext(run_dir, device, resume, args.progress, on_evaluation))
    if result:
        print(
            f"last evaluation (step {result['step']}): mean return {result['mean_return']:.2f} "
            f"+/- {result['std_return']:.2f} over {len(result['returns'])} episodes"
        )
    print(f"run directory: {run_dir}\nevaluate with: python -m pmoe_rl.evaluate {run_dir}")
    return 0


_entry = entry_point(main)


if __name__ == "__main__":
    _entry()
