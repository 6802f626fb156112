"""``python -m pmoe_rl.sweep SPEC.yaml``: a grid of pmoe-rl runs as Ray Tune trials, on this machine or a Ray cluster,
resumable, with one results table.

A spec is a YAML file::

    name: sac_hopper            # the sweep's name (default: the file's stem); --out defaults to sweeps/NAME
    base:                       # config values every trial shares (like a --config file)
      steps: 100000
      eval_every: 5000
      checkpoint_every: 10000   # how far back an interrupted trial restarts
    variants:                   # optional: named groups of values, one per method
      pmoe: {policy: pmoe}
      gumbel: {policy: pmoe, estimator: gumbel}
      gaussian: {policy: gaussian}
    grid:                       # config keys (dotted for sections) and their values: the cross product
      env: [Hopper-v5, Walker2d-v5]
      seed: [0, 1, 2, 3, 4]
      sac.gamma: [0.99]
    resources: {cpus: 1, gpus: 0, threads: 1}   # per trial; threads = torch threads (default: cpus)

Trials = variants x the grid's cross product. Every trial's config is resolved and checked (keys, values, the
environment, the dataset) before Ray starts, so a malformed spec fails at once with one ``error:`` line.

Each trial is an ordinary run directory ``OUT/trials/NAME`` (``evaluate``, ``train --resume``, ``from_checkpoint``
and ``plot`` work on it) whose training output goes to ``OUT/logs/NAME.log``; its evaluations are reported
to Tune as they come (``eval_return``, ``step``; Tune's own records go to ``OUT/ray``). Re-running the same command
skips finished trials and continues unfinished ones from their latest pmoe-rl checkpoint (Ctrl-C stops a sweep;
nothing is lost but the steps since each trial's last checkpoint). At the end, and with ``--results`` without
running anything, ``OUT/results.csv`` gets one row per trial: its swept values, status, last evaluation step, final
return, AUC (the mean return over training), normalised score (offline runs) and wall time.

On a Ray cluster (``--address auto`` on a cluster node, or ``ray://HOST:10001``) ``--out`` must be a directory every
node sees (a shared file system) and pmoe-rl installed on every node.

    python -m pmoe_rl.sweep configs/sweeps/smoke.yaml --out sweeps/smoke --max-concurrent 2
    python -m pmoe_rl.sweep configs/sweeps/pmoe_sac_paper.yaml --address auto --gpus-per-trial 0.25
    python -m pmoe_rl.plot sweeps/smoke --out sweeps/smoke/figures
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pmoe_rl import imitate, train
from pmoe_rl.checkpoint import write_text_atomic
from pmoe_rl.cli import Parser, entry_point
from pmoe_rl.config import Config, apply_dict, load_run_config, load_yaml, nested, resumable, to_dict
from pmoe_rl.errors import ConfigError, PmoeError, RunDirError
from pmoe_rl.plot import flatten_config, read_run

SPEC_KEYS = ("name", "base", "variants", "grid", "resources")
RESOURCES = {"cpus": 1.0, "gpus": 0.0, "threads": None}
DONE = "sweep_trial.json"  # written into a trial's run directory when it has finished


@dataclass
class Trial:
    name: str
    swept: dict  # what sets it apart: its variant and grid values (dotted keys)
    config: dict  # the resolved config (to_dict)
    run_dir: Path

    @property
    def status(self) -> str:
        """``finished`` (for its current step budget), ``partial`` (a checkpoint to continue from) or ``pending``."""
        done = self.run_dir / DONE
        if done.is_file() and json.loads(done.read_text()).get("steps", 0) >= self.config["steps"]:
            return "finished"
        return "partial" if (self.run_dir / "checkpoints" / "latest").is_file() else "pending"

    def check_saved_config(self) -> None:
        """Refuse to continue or skip a trial whose run directory was trained with other values than the spec's now
        (the run-level options that a resume may change aside)."""
        if self.status == "pending" or not (self.run_dir / "config.yaml").is_file():
            return
        saved = flatten_config(to_dict(load_run_config(self.run_dir)))
        wanted = flatten_config(self.config)
        changed = [k for k in wanted if not resumable(k.split(".")[0]) and saved.get(k) != wanted[k]]
        if changed:
            diff = ", ".join(f"{k}: {saved.get(k)!r} -> {wanted[k]!r}" for k in changed[:3])
            raise RunDirError(f"trial {self.name} in {self.run_dir} was run with other values than the spec's "
                              f"({diff}); use another --out or remove that directory")  # fmt: skip


@dataclass
class Spec:
    name: str
    out: Path
    trials: list[Trial]
    resources: dict


def _slug(key: str, value) -> str:
    if key in ("env", "dataset"):
        text = str(value).replace("/", "-")
    else:
        text = f"s{value}" if key == "seed" else f"{key}={value}"
    return re.sub(r"[^A-Za-z0-9._=+-]", "", text.replace(" ", ""))


def _mapping(spec: dict, key: str) -> dict:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"sweep spec: '{key}' must be a mapping, got {value!r}")
    return value


def load_spec(path: str | Path, out: str | Path | None = None) -> Spec:
    """Read a sweep spec and resolve every trial's config (run directories under ``out``, default sweeps/NAME);
    any problem is a ConfigError (or EnvError) naming the key or trial, raised before anything runs."""
    raw = load_yaml(path)
    name = str(raw.get("name") or Path(path).stem)
    out = Path(out or Path("sweeps") / name).resolve()  # absolute: trials run in other processes, maybe other nodes
    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"sweep spec {path}: unknown key(s) {', '.join(unknown)}; a spec has {', '.join(SPEC_KEYS)}")
    base, variants, grid = _mapping(raw, "base"), _mapping(raw, "variants"), _mapping(raw, "grid")
    resources = {**RESOURCES, **_mapping(raw, "resources")}
    if set(resources) - set(RESOURCES):
        raise ConfigError(f"sweep spec {path}: resources take {', '.join(RESOURCES)}, got {', '.join(resources)}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep spec {path}: grid.{key} must be a non-empty list of values, got {values!r}")
    for variant, values in variants.items():
        if not isinstance(values, dict):
            raise ConfigError(f"sweep spec {path}: variant '{variant}' must be a mapping of config values")
    try:
        cpus, gpus = float(resources["cpus"]), float(resources["gpus"])
        threads = int(resources["threads"] if resources["threads"] is not None else max(1, round(cpus)))
    except (TypeError, ValueError):
        raise ConfigError(f"sweep spec {path}: resources must be numbers, got {resources}") from None
    if cpus <= 0 or gpus < 0 or threads < 1:
        raise ConfigError(f"sweep spec {path}: resources need cpus > 0, gpus >= 0, threads >= 1, got {resources}")

    try:
        base_cfg = apply_dict(Config(), {"threads": threads, **base})
    except ConfigError as exc:
        raise ConfigError(f"sweep spec {path}, base: {exc}") from None
    checked: set[tuple] = set()
    trials = []
    for variant, point in itertools.product(list(variants.items()) or [(None, {})], itertools.product(*grid.values())):
        point = dict(zip(grid, point))
        swept = ({"variant": variant[0]} if variant[0] is not None else {}) | point
        trial = "_".join([variant[0]] * (variant[0] is not None) + [_slug(k, v) for k, v in point.items()]) or "trial"
        try:
            cfg = apply_dict(base_cfg, variant[1])
            if cfg.algo == "imitate":  # as python -m pmoe_rl.imitate: evaluate and log after every round
                cfg = apply_dict(cfg, {k: v for k, v in imitate.BASE.items() if k not in base})
            for key, value in point.items():
                cfg = apply_dict(cfg, nested(key, value))
            cfg = train.complete(cfg)
            if cfg.dataset and Path(cfg.dataset).exists():  # a dataset directory (not an id): absolute
                cfg.dataset = str(Path(cfg.dataset).resolve())
            inputs = (cfg.env, cfg.dataset, cfg.imitation.expert if cfg.algo == "imitate" else "")
            if inputs not in checked:
                train.check_inputs(cfg)
                checked.add(inputs)
        except PmoeError as exc:  # an invalid value or combination, an unknown environment, a missing dataset
            raise type(exc)(f"sweep spec {path}, trial {trial}: {exc}") from None
        trials.append(Trial(trial, swept, to_dict(cfg), out / "trials" / trial))
    for t in trials:
        t.check_saved_config()
    names = [t.name for t in trials]
    if len(set(names)) < len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"sweep spec {path}: two trials are named '{duplicate}'; make the grid's values distinct")
    return Spec(name, out, trials, {"cpu": cpus, "gpu": gpus})


# --- one trial, in a Ray worker --------------------------------------------------------------------------------


def run_trial(params: dict, table: dict) -> None:
    """Ray Tune's function trainable: train (or continue) one trial's run directory, reporting each evaluation."""
    from ray import tune

    trial: Trial = table[params["trial"]]
    run_dir, steps = trial.run_dir, trial.config["steps"]

    def report(result: dict) -> None:
        metrics = {"step": result["step"], "eval_return": result["mean_return"]}
        if "normalized_score" in result:
            metrics["normalized_score"] = result["normalized_score"]
        tune.report(metrics)

    if trial.status == "partial":  # continue from the latest checkpoint
        argv, base = ["--resume", str(run_dir), "--steps", str(steps), "--threads", str(trial.config["threads"])], None
    else:  # new, or started and stopped before its first checkpoint: the sweep owns the directory
        started = run_dir.is_dir() and any(run_dir.iterdir())
        argv, base = ["--run-dir", str(run_dir), *(["--overwrite"] * started)], trial.config
    log_file = run_dir.parent.parent / "logs" / f"{trial.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log_file, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        train.run(train.build_parser().parse_args([*argv, "--no-progress"]), base, on_evaluation=report)
    write_text_atomic(run_dir / DONE, json.dumps({"trial": trial.name, "swept": trial.swept, "steps": steps,
                                                  "last_attempt_s": time.time() - start}) + "\n")  # fmt: skip


# --- the driver ------------------------------------------------------------------------------------------------


def wall_time(run_dir: Path) -> float:
    """Training wall-clock seconds over every attempt: ``time/time_elapsed`` restarts at 0 when a run resumes, so
    the sum of each attempt's last value (evaluation time included)."""
    total, last = 0.0, 0.0
    with contextlib.suppress(FileNotFoundError), open(run_dir / "progress.csv") as f:
        for row in csv.DictReader(f):
            value = float(row.get("time/time_elapsed") or 0)
            if value < last:
                total += last
            last = value
    return total + last


def results(spec: Spec) -> list[dict]:
    """One row per trial from what is on disk; written to ``OUT/results.csv``."""
    out, rows = spec.out, []
    for trial in spec.trials:
        cfg = trial.config
        row = {"trial": trial.name, "status": trial.status, **trial.swept}
        row.update({k: cfg[k] for k in ("algo", "env", "dataset", "policy", "estimator", "seed") if k not in row})
        run = read_run(trial.run_dir) if (trial.run_dir / "progress.csv").is_file() else None
        row.update(step=int(run.steps[-1]) if run else "", final_return=float(run.returns[-1]) if run else "",
                   auc=run.auc if run else "",
                   normalized_score=float(run.normalized[-1]) * 100 if run and run.normalized is not None else "",
                   wall_time_s=round(wall_time(trial.run_dir), 1),
                   run_dir=str(trial.run_dir.relative_to(out)))  # fmt: skip
        rows.append(row)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "results.csv", buffer.getvalue())
    return rows


def summary(rows: list[dict]) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("finished", "partial", "pending")}
    returns = [r["final_return"] for r in rows if r["final_return"] != ""]
    text = f"{counts['finished']} finished, {counts['partial']} partial, {counts['pending']} pending"
    return text + (f"; final returns {np.min(returns):.1f} .. {np.max(returns):.1f}" if returns else "")


def run_sweep(spec: Spec, address: str | None = None, max_concurrent: int | None = None) -> list[dict]:
    """Run the trials that are not finished as Ray Tune trials, then gather ``results.csv``."""
    out, todo = spec.out, [t for t in spec.trials if t.status != "finished"]
    partial = sum(t.status == "partial" for t in todo)
    print(f"sweep {spec.name}: {len(spec.trials)} trials, {len(spec.trials) - len(todo)} finished (skipped), "
          f"{partial} to continue from their checkpoints, {len(todo) - partial} to start; output in {out}",
          flush=True)  # fmt: skip
    if todo:
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials keep the driver's working directory
        os.environ.setdefault("RAY_worker_niceness", "0")  # a local Ray runs trials at nice 15 otherwise
        try:
            import ray
            from ray import tune
        except ImportError:
            raise ConfigError("python -m pmoe_rl.sweep runs trials on Ray Tune: pip install 'pmoe-rl[sweep]'") from None

        ray.init(address=address, include_dashboard=False, logging_level="WARNING", configure_logging=True)
        try:
            tuner = tune.Tuner(
                tune.with_resources(tune.with_parameters(run_trial, table={t.name: t for t in todo}), spec.resources),
                param_space={"trial": tune.grid_search([t.name for t in todo])},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=max_concurrent,
                    trial_name_creator=lambda tr: tr.config["trial"],
                    trial_dirname_creator=lambda tr: tr.config["trial"],
                ),  # fmt: skip
                run_config=tune.RunConfig(
                    name=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=str((out / "ray").resolve()),
                    verbose=1,
                ),  # fmt: skip
            )
            tuner.fit()
        finally:
            ray.shutdown()
    return results(spec)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m pmoe_rl.sweep", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
               formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("spec", metavar="SPEC.yaml", help="the sweep spec (configs/sweeps/ has examples)")
    p.add_argument("--out", metavar="DIR", help="the sweep's folder: trials' run directories, results.csv, Ray's "
                   "records (default: sweeps/NAME)")  # fmt: skip
    p.add_argument("--address", help="an existing Ray cluster (auto, or ray://HOST:10001); default: a local Ray "
                   "instance with this machine's CPUs and GPUs")  # fmt: skip
    p.add_argument("--max-concurrent", type=int, metavar="N", help="trials at a time (default: as many as the "
                   "resources allow)")  # fmt: skip
    p.add_argument("--cpus-per-trial", type=float, metavar="C", help="override the spec's resources.cpus")
    p.add_argument("--gpus-per-trial", type=float, metavar="G", help="override resources.gpus (fractions share a GPU)")
    p.add_argument("--results", action="store_true", help="only gather results.csv from what is on disk")
    args = p.parse_args(argv)
    if args.max_concurrent is not None and args.max_concurrent < 1:
        p.error(f"--max-concurrent must be at least 1, got {args.max_concurrent}")
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        if getattr(args, flag) is not None and getattr(args, flag) < (flag == "cpus_per_trial") * 1e-9:
            p.error(f"--{flag.replace('_', '-')} must be {'positive' if flag == 'cpus_per_trial' else '>= 0'}")
    spec = load_spec(args.spec, args.out)
    if args.cpus_per_trial is not None:
        spec.resources["cpu"] = args.cpus_per_trial
    if args.gpus_per_trial is not None:
        spec.resources["gpu"] = args.gpus_per_trial
    spec.out.mkdir(parents=True, exist_ok=True)
    rows = results(spec) if args.results else run_sweep(spec, args.address, args.max_concurrent)
    print(f"results: {spec.out / 'results.csv'} ({summary(rows)})")
    unfinished = [r["trial"] for r in rows if r["status"] != "finished"]
    if unfinished and not args.results:
        print(f"unfinished: {', '.join(unfinished)}; run the same command again to continue them", file=sys.stderr)
        return 1
    return 0


_entry = entry_point(main)


if __name__ == "__main__":
    _entry()
