"""Summarise offline runs: the last evaluation's normalised score per dataset and method (mean +- std over seeds),
as a Markdown table, and optionally a figure of the normalised score against gradient steps.

Finished run directories are grouped by their config (dataset, algorithm, O-DICE update, policy); seeds are
pooled.

    python scripts/offline_table.py runs/offline/*/ --figure docs/offline_results.png
"""

from __future__ import annotations

import argparse
import collections
import csv
from pathlib import Path

import numpy as np

from pmoe_rl.config import Config, load_run_config, to_dict

# the options that make a different method, named in its label when they are not the defaults
LABELLED = {
    "odice": ("lam", "eta", "tanh_mean", "actor_weight_decay"),
    "iql": ("tanh_mean",),
    "bc": ("tanh_mean",),
    "offline": ("normalize_obs", "actor_lr_schedule"),
}


def method(cfg: dict) -> str:
    algo = cfg["algo"]
    name = {"odice": f"O-DICE ({cfg['odice']['update']})", "iql": "IQL", "bc": "BC"}[algo]
    if algo == "odice" and cfg["odice"]["update"] == "orthogonal":
        name = "O-DICE"
    default = to_dict(Config())
    for section in (algo, "offline"):
        name += "".join(f", {k} {cfg[section][k]}" for k in LABELLED[section] if cfg[section][k] != default[section][k])
    return name + (f", {cfg['policy']} K={cfg['experts']}" if cfg["policy"] != "gaussian" else "")


def dataset_label(dataset: str) -> str:
    """``<env>/<kind>-v0`` of an id (``pmoe_rl/Hopper-v5/medium-v0``) or a dataset directory: the same kind of
    dataset of two tasks stays two columns."""
    return "/".join(Path(dataset).parts[-2:])


def curve(run: Path) -> tuple[list[int], list[float]]:
    with open(run / "progress.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/normalized_score")]
    return [int(r["time/total_timesteps"]) for r in rows], [float(r["eval/normalized_score"]) for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--figure", type=Path, help="write the curves (mean over seeds) to this PNG")
    args = p.parse_args()
    groups: dict[tuple[str, str], list[Path]] = collections.defaultdict(list)
    for run in args.runs:
        if (run / "config.yaml").is_file() and (run / "progress.csv").is_file():
            cfg = to_dict(load_run_config(run))
            steps = curve(run)[0]
            if steps and steps[-1] >= cfg["steps"]:  # finished runs only
                groups[(dataset_label(cfg["dataset"]), method(cfg))].append(run)
    datasets = sorted({d for d, _ in groups})
    methods = list(dict.fromkeys(m for _, m in sorted(groups, key=lambda g: g[1])))
    print("| method | " + " | ".join(datasets) + " |")
    print("|---|" + "---|" * len(datasets))
    for m in methods:
        cells = []
        for d in datasets:
            last = [curve(r)[1][-1] for r in groups.get((d, m), []) if curve(r)[1]]
            cells.append(f"{np.mean(last):.1f} ± {np.std(last):.1f} (n={len(last)})" if last else "")
        print(f"| {m} | " + " | ".join(cells) + " |")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
        for ax, d in zip(axes[0], datasets):
            for m in methods:
                curves = [curve(r) for r in groups.get((d, m), [])]
                curves = [c for c in curves if c[1]]
                if curves:
                    n = min(len(c[1]) for c in curves)
                    mean = np.mean([c[1][:n] for c in curves], axis=0)
                    ax.plot(curves[0][0][:n], mean, marker="o", label=m, color=f"C{methods.index(m)}")
            ax.set(title=d, xlabel="gradient steps", ylabel="normalised score")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
