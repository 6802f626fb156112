"""Compare estimators and policy heads: a grid of variants x seeds on one env for a step budget.

A variant is an estimator for the mixture policy (``pmoe``, ``gumbel``, ``score``, ``mrp``: ``--policy pmoe
--estimator NAME``) or a policy (``gaussian``, ``moe``, ``mcp``: ``--policy NAME``). Every run is
``python -m pmoe_rl.train`` with the same flags (plus ``--set`` overrides for all), evaluated every
``--eval-every`` steps. Writes into ``--out``:

- ``runs/VARIANT_sSEED/``: the run directories;
- ``results.csv``: one row per run: final evaluation return, area under the learning curve (AUC, the
  trapezoid area of the evaluation curve divided by its step span, i.e. the mean return over training),
  wall-clock minutes;
- ``summary.md``: per variant, mean and 95% bootstrap confidence interval (over seeds) of both;
- ``curves.png``: mean evaluation curves with 95% bootstrap confidence bands.

    python scripts/compare.py --env pmoe_rl/MultiGoal-v0 --steps 4000 --eval-every 500 --seeds 0 1 2 \\
        --variants pmoe gumbel score mrp gaussian moe mcp --jobs 2 --out results/multigoal
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pmoe_rl.plot import bootstrap_ci, read_run

ESTIMATORS = ("pmoe", "gumbel", "score", "mrp")
POLICIES = ("gaussian", "moe", "mcp")


def run(variant: str, seed: int, args) -> dict:
    run_dir = Path(args.out) / "runs" / f"{variant}_s{seed}"
    which = ["--policy", "pmoe", "--estimator", variant] if variant in ESTIMATORS else ["--policy", variant]
    cmd = [
        sys.executable,
        "-m",
        "pmoe_rl.train",
        "--env",
        args.env,
        *which,
        "--seed",
        str(seed),
        "--steps",
        str(args.steps),
        "--eval-every",
        str(args.eval_every),
        "--eval-episodes",
        str(args.eval_episodes),
        "--checkpoint-every",
        "0",
        "--log-every",
        str(args.eval_every),
        "--threads",
        "1",
        "--run-dir",
        str(run_dir),
        "--no-progress",
    ]
    for assignment in args.set:
        cmd += ["--set", assignment]
    if run_dir.exists() and (run_dir / "checkpoints").exists() and not args.rerun:
        print(f"{variant} seed {seed}: reusing {run_dir}", flush=True)
    else:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: {variant} seed {seed} failed: {proc.stderr.strip().splitlines()[-1]}")
        print(f"{variant} seed {seed}: {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    result = read_run(run_dir)  # the evaluations and their AUC, as python -m pmoe_rl.plot reads them
    return {
        "variant": variant,
        "seed": seed,
        "final_return": float(result.returns[-1]),
        "auc": result.auc,
        "steps": result.steps,
        "returns": result.returns,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--eval-every", type=int, required=True)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=[*ESTIMATORS, *POLICIES], choices=[*ESTIMATORS, *POLICIES])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every run")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rerun", action="store_true", help="train again even where a finished run exists")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for s in args.seeds for v in args.variants]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: run(job[0], job[1], args), jobs))

    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "seed", "final_return", "auc"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"{args.env}, {args.steps} steps, seeds {args.seeds}, evaluation every {args.eval_every} steps "
        f"({args.eval_episodes} deterministic episodes); overrides: {' '.join(args.set) or 'none'}",
        "",
        "| variant | final return (mean [95% CI]) | AUC (mean [95% CI]) | per seed (final) |",
        "|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in args.variants:
        runs = [r for r in results if r["variant"] == variant]
        finals, aucs = np.array([r["final_return"] for r in runs]), np.array([r["auc"] for r in runs])
        (f_lo, f_hi), (a_lo, a_hi) = bootstrap_ci(finals), bootstrap_ci(aucs)
        lines.append(
            f"| {variant} | {finals.mean():.1f} [{f_lo:.1f}, {f_hi:.1f}] | {aucs.mean():.1f} "
            f"[{a_lo:.1f}, {a_hi:.1f}] | {', '.join(f'{x:.1f}' for x in finals)} |"
        )
        n = min(len(r["steps"]) for r in runs)
        steps, curves = runs[0]["steps"][:n], np.stack([r["returns"][:n] for r in runs])
        lo, hi = bootstrap_ci(curves)
        ax.plot(steps, curves.mean(0), label=variant)
        ax.fill_between(steps, lo, hi, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{args.env}: mean over {len(args.seeds)} seeds, 95% bootstrap CI", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
