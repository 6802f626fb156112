"""Compare optimisers for online imitation: a grid of ``python -m pmoe_rl.imitate`` runs (variants x seeds) from one
expert, then the expert queries each needs to reach 90% of the expert's return, and the curves.

A variant is ``OPTIMIZER-mM``: ``sso-m10`` is SSO with 10 inner steps per round, ``adam-m1`` one Adam step per round
(the paper's online baseline), ``adam-m10`` ten Adam steps on the same round's batch (the fair baseline). Runs
are ordinary run directories under ``--out/runs``; a finished one is not trained again (one with fewer rounds than
``--rounds`` is resumed and extended). Writes ``results.csv`` (one
row per run), ``summary.md`` (per variant over seeds) and ``curves.png`` (return and loss on fresh states against
expert queries; mean over seeds, min-max band).

    python scripts/bench_imitation.py --expert runs/hopper_ppo_expert --out results/imitation_hopper \\
        --variants sso-m1 sso-m10 sso-m100 adam-m1 sgd-m1 adam-m10 --seeds 0 1 2 --rounds 60 --jobs 2 \\
        -- --loss squashed
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def variant_flags(variant: str) -> list[str]:
    optimizer, _, m = variant.partition("-m")
    if optimizer not in ("sso", "adam", "sgd") or not m.isdigit():
        raise SystemExit(f"error: a variant is OPTIMIZER-mSTEPS with OPTIMIZER sso, adam or sgd, got {variant!r}")
    return ["--optimizer", optimizer, "--inner-steps", m]


def train(variant: str, seed: int, args) -> Path:
    """Train a run, or continue a finished one with fewer rounds (``imitate --resume``: a larger ``--rounds``
    extends the grid's runs instead of repeating them)."""
    run_dir = Path(args.out) / "runs" / f"{variant}_s{seed}"
    if (run_dir / "checkpoints" / "latest").exists():
        if len(read(run_dir)["queries"]) >= args.rounds:
            return run_dir
        cmd = [sys.executable, "-m", "pmoe_rl.imitate", "--resume", str(run_dir), "--rounds", str(args.rounds),
               "--threads", "1", "--no-progress"]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "pmoe_rl.imitate", "--expert", args.expert, "--rounds", str(args.rounds),
               "--samples-per-round", str(args.samples_per_round), "--eval-episodes", str(args.eval_episodes),
               "--seed", str(seed), "--threads", "1", "--run-dir", str(run_dir), "--overwrite", "--no-progress",
               *variant_flags(variant), *args.extra]  # fmt: skip
    with open(Path(args.out) / "runs" / f"{variant}_s{seed}.log", "a") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    return run_dir


def read(run_dir: Path) -> dict[str, np.ndarray]:
    with open(run_dir / "progress.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/mean_reward")]
    return {
        "queries": np.array([int(r["time/expert_queries"]) for r in rows]),
        "returns": np.array([float(r["eval/mean_reward"]) for r in rows]),
        "loss": np.array([float(r["train/loss"]) for r in rows]),
    }


def expert_return(path: str, episodes: int) -> float:
    """The expert's deterministic mean return under the learners' evaluation protocol (seed 0's episodes)."""
    from pmoe_rl.agents.build import load_policy
    from pmoe_rl.envs import make_env
    from pmoe_rl.evaluation import eval_seed, evaluate_policy

    policy, ckpt = load_policy(path)
    env = make_env(ckpt.meta["env_id"])
    try:
        return evaluate_policy(policy, env, episodes, eval_seed(0)).mean_return
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--expert", required=True, help="the expert's run directory or checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--variants", nargs="+", default=["sso-m1", "sso-m10", "sso-m100", "adam-m1", "sgd-m1", "adam-m10"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--samples-per-round", type=int, default=1000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--fraction", type=float, default=0.9, help="the return threshold, as a fraction of the expert's")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    p.add_argument("extra", nargs="*", help="after --: flags passed to every run (e.g. --loss squashed --lr 1e-3)")
    args = p.parse_args()
    (Path(args.out) / "runs").mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for s in args.seeds for v in args.variants]
    with ThreadPoolExecutor(args.jobs) as pool:
        dirs = dict(zip(jobs, pool.map(lambda job: train(*job, args), jobs)))
    target = args.fraction * expert_return(args.expert, 10)

    rows = []
    for (variant, seed), run_dir in dirs.items():
        data = read(run_dir)
        hit = np.flatnonzero(data["returns"] >= target)
        rows.append({"variant": variant, "seed": seed, "queries_to_target": int(data["queries"][hit[0]]) if len(hit)
                     else "", "final_return": data["returns"][-1], "best_return": data["returns"].max(),
                     "final_loss": data["loss"][-1], **{k: data[k] for k in data}})  # fmt: skip
    with open(Path(args.out) / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0])[:6], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"expert {args.expert}: 90% target {target:.1f}; {args.rounds} rounds x {args.samples_per_round} steps, seeds "
        f"{args.seeds}, {args.eval_episodes} deterministic evaluation episodes per round; flags: "
        f"{' '.join(args.extra) or 'none'}",
        "",
        f"| variant | expert queries to {args.fraction:.0%} (mean; seeds reaching) | final return | best return | "
        "final loss (fresh states) |",
        "|---|---|---|---|---|",
    ]
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant in args.variants:
        runs = [r for r in rows if r["variant"] == variant]
        hits = [r["queries_to_target"] for r in runs if r["queries_to_target"] != ""]
        reached = f"{np.mean(hits):,.0f} ({len(hits)}/{len(runs)})" if hits else f"not reached (0/{len(runs)})"
        finals, bests, losses = (np.array([r[k] for r in runs]) for k in ("final_return", "best_return", "final_loss"))
        lines.append(f"| {variant} | {reached} | {finals.mean():.0f} ± {finals.std():.0f} | {bests.mean():.0f} | "
                     f"{losses.mean():.3f} |")  # fmt: skip
        n = min(len(r["queries"]) for r in runs)
        x = runs[0]["queries"][:n]
        for ax, key in ((ax_r, "returns"), (ax_l, "loss")):
            y = np.stack([r[key][:n] for r in runs])
            ax.plot(x, y.mean(0), label=variant)
            ax.fill_between(x, y.min(0), y.max(0), alpha=0.15)
    ax_r.axhline(target, color="k", lw=0.8, ls="--", label=f"{args.fraction:.0%} of the expert")
    ax_r.set(xlabel="expert queries", ylabel="evaluation return")
    ax_l.set(xlabel="expert queries", ylabel="loss on the round's fresh states", yscale="log")
    ax_r.legend(fontsize=8)
    fig.suptitle(f"online imitation: mean over seeds {args.seeds}, min-max band", fontsize=10)
    fig.tight_layout()
    fig.savefig(Path(args.out) / "curves.png", dpi=110)
    (Path(args.out) / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
