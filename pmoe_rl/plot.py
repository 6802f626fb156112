"""``python -m pmoe_rl.plot RUNS...``: the figures and tables a paper needs from pmoe-rl run directories (or folders
that hold them, e.g. a comparison's or a sweep's output).

Runs are grouped into *tasks* (the environment; for offline runs the dataset) and *methods* (the config values
that differ between the runs, seeds, run-level settings and the task aside). Writes into ``--out``:

- ``curves_<task>.png``: each method's mean evaluation return against environment (or gradient) steps, with a
  95% percentile-bootstrap band over seeds;
- ``table.md`` / ``table.csv``: per task and method, the final return and the area under the learning curve
  (AUC: the trapezoid area of the evaluation curve over its step span, i.e. the mean return over training),
  mean and 95% bootstrap interval over seeds, and the final normalised score for offline runs;
- ``aggregate.md`` / ``aggregate.csv``: across tasks, per method, the interquartile mean (IQM) and the mean of the
  normalised final scores with 95% stratified-bootstrap intervals, and ``profile.png``, the performance profile
  (the fraction of runs whose normalised score exceeds tau), as in the rliable protocol (Agarwal et al., NeurIPS
  2021, "Deep RL at the edge of the statistical precipice");
- ``expert_usage_<task>.png`` for mixture runs: how often each expert acted in the evaluations, against steps.

Normalised scores: an offline run's ``eval/normalized_score`` (its dataset's reference scores) / 100; otherwise
(``--normalize task``, default) the final return scaled per task to [0, 1] by the lowest and highest final returns
of all runs on that task, or the raw return (``--normalize none``, for one task).

    python -m pmoe_rl.plot runs/hopper_* runs/walker_* --out figures
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import numpy as np

from pmoe_rl.checkpoint import write_text_atomic
from pmoe_rl.cli import Parser, entry_point
from pmoe_rl.config import load_run_config, to_dict
from pmoe_rl.errors import ConfigError

# settings that do not make a method different (how a run was executed, logged, or its budget)
RUN_LEVEL = {"seed", "device", "threads", "eval_every", "eval_episodes", "checkpoint_every", "log_every",
             "stop_at_reward", "compile", "record_transitions", "vec_env", "steps", "env", "dataset",
             "imitation.expert"}  # fmt: skip


@dataclasses.dataclass
class Run:
    path: Path
    config: dict  # flattened: dotted keys
    steps: np.ndarray  # evaluation steps
    returns: np.ndarray  # evaluation mean returns
    normalized: np.ndarray | None  # offline runs: eval/normalized_score / 100
    usage: np.ndarray | None  # (evaluations, K) expert usage, mixture runs

    @property
    def task(self) -> str:
        return self.config.get("dataset") or self.config["env"]

    @property
    def auc(self) -> float:
        if len(self.steps) < 2:
            return float(self.returns[-1])
        area = ((self.returns[1:] + self.returns[:-1]) / 2 * np.diff(self.steps)).sum()
        return float(area / (self.steps[-1] - self.steps[0]))


def flatten_config(d: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys: ``{'sac': {'gamma': 0.99}}`` -> ``{'sac.gamma': 0.99}``."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_run(path: Path) -> Run | None:
    """A run directory's config and evaluations (None when it has no evaluation yet)."""
    # an option the run's version did not save has the value it ran with (config.from_dict), not None
    config = flatten_config(to_dict(load_run_config(path)))
    with open(path / "progress.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/mean_reward")]
    if not rows:
        return None
    usage_keys = sorted(
        (k for k in rows[0] if k.startswith("eval/expert_usage_")), key=lambda k: int(k.rsplit("_")[-1])
    )
    norm = "eval/normalized_score" in rows[0] and all(r.get("eval/normalized_score") for r in rows)
    return Run(
        path=path,
        config=config,
        steps=np.array([int(float(r["time/total_timesteps"])) for r in rows]),
        returns=np.array([float(r["eval/mean_reward"]) for r in rows]),
        normalized=np.array([float(r["eval/normalized_score"]) / 100 for r in rows]) if norm else None,
        usage=np.array([[float(r[k] or 0) for k in usage_keys] for r in rows]) if usage_keys else None,
    )


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run directory (``config.yaml`` and ``progress.csv``) at or below ``paths`` that has evaluations."""
    dirs = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path} does not exist")
        found = [p.parent for p in sorted(path.rglob("config.yaml")) if (p.parent / "progress.csv").is_file()]
        dirs += [path] if (path / "progress.csv").is_file() and (path / "config.yaml").is_file() else found
    runs = [run for run in (read_run(d) for d in dict.fromkeys(dirs)) if run is not None]
    if not runs:
        raise ConfigError(f"no run directory with evaluations in {', '.join(map(str, paths))}")
    return runs


# the config sections an algorithm reads (top-level options are read by all)
SECTIONS = {"sac": {"sac", "net"}, "ppo": {"ppo", "net"}, "odice": {"odice", "offline"}, "iql": {"iql", "offline"},
            "bc": {"bc", "offline"}, "imitate": {"imitation", "net"}}  # fmt: skip


def _reads(run: Run, key: str) -> bool:
    section, dot, _ = key.partition(".")
    return not dot or section in SECTIONS.get(run.config.get("algo"), {section})


def method_names(runs: list[Run]) -> list[str]:
    """Each run's method: the values of the options that vary between runs (run-level settings, the task and the
    sections its algorithm does not read aside), e.g. ``algo=odice update=semi``; or the algorithm and policy when
    nothing varies."""
    keys = sorted({k for run in runs for k in run.config} - RUN_LEVEL)
    varying = [k for k in keys if len({repr(run.config.get(k)) for run in runs if _reads(run, k)}) > 1]
    if not varying:
        return [f"{run.config.get('algo')} {run.config.get('policy')}" for run in runs]
    return [" ".join(f"{k.rsplit('.', 1)[-1]}={run.config.get(k)}" for k in varying if _reads(run, k))
            for run in runs]  # fmt: skip


# --- statistics ---------------------------------------------------------------------------------------------


def bootstrap_ci(values: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile-bootstrap interval of the mean over the first axis (seeds)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n, len(values)))
    means = values[idx].mean(1)
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of the scores (the 25% trimmed mean, as rliable and
    ``scipy.stats.trim_mean(x, 0.25)``)."""
    x = np.sort(np.asarray(scores, dtype=float).ravel())
    cut = int(np.floor(0.25 * len(x)))
    return float(x[cut : len(x) - cut].mean())


def stratified_bootstrap(scores: list[np.ndarray], statistic, n: int = 2000, seed: int = 0, bands: bool = False):
    """``statistic`` of all scores pooled, and its 95% interval from resampling the runs of each task independently
    (rliable's stratified bootstrap). ``scores``: one array of run scores per task. A scalar statistic gives floats;
    with ``bands`` the statistic may return an array (a curve) and the interval is pointwise."""
    rng = np.random.default_rng(seed)
    point = statistic(np.concatenate(scores))
    samples = [statistic(np.concatenate([s[rng.integers(0, len(s), len(s))] for s in scores])) for _ in range(n)]
    lo, hi = np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)
    return (point, lo, hi) if bands else (float(point), float(lo), float(hi))


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """The fraction of scores strictly above each threshold tau."""
    return (np.asarray(scores)[None, :] > taus[:, None]).mean(1)


# --- outputs ------------------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in text).strip("-")


def final_scores(runs: list[Run], normalize: str) -> np.ndarray:
    """Each run's normalised final score (see the module docstring)."""
    finals = np.array([run.returns[-1] for run in runs])
    out = finals.copy()
    for task in {run.task for run in runs}:
        idx = [i for i, run in enumerate(runs) if run.task == task]
        if all(runs[i].normalized is not None for i in idx):
            out[idx] = [runs[i].normalized[-1] for i in idx]
        elif normalize == "task":
            lo, hi = finals[idx].min(), finals[idx].max()
            out[idx] = (finals[idx] - lo) / (hi - lo) if hi > lo else 1.0
    return out


def write_all(runs: list[Run], out: Path, normalize: str = "task") -> list[Path]:
    """Every figure and table; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    names = method_names(runs)
    written: list[Path] = []
    rows = []
    for task in dict.fromkeys(run.task for run in runs):
        groups = {m: [r for r, n in zip(runs, names) if r.task == task and n == m] for m in dict.fromkeys(names)}
        rows += task_figures(task, {m: g for m, g in groups.items() if g}, out, written)
    lines = ["| task | method | seeds | final return [95% CI] | AUC [95% CI] | normalised score |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        norm = f"{r['normalized_score']:.1f}" if r["normalized_score"] != "" else ""
        lines.append(f"| {r['task']} | {r['method']} | {r['seeds']} | {r['final_return']:.1f} "
                     f"[{r['final_ci_low']:.1f}, {r['final_ci_high']:.1f}] | {r['auc']:.1f} "
                     f"[{r['auc_ci_low']:.1f}, {r['auc_ci_high']:.1f}] | {norm} |")  # fmt: skip
    written += _write_table(out / "table", list(rows[0]), rows, lines)
    written += aggregate(runs, names, final_scores(runs, normalize), normalize, out)
    return written


def _legend(ax) -> None:
    """Below the axes: method names can be wider than the plot (``_save`` grows the canvas to hold it)."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15))


def _save(fig, path: Path, written: list[Path]) -> None:
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append(path)


def task_figures(task: str, groups: dict[str, list[Run]], out: Path, written: list[Path]) -> list[dict]:
    """One task's learning curves (and expert usage); returns its table rows."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    usage_fig = usage_ax = None
    rows = []
    for method, group in groups.items():
        n = min(len(r.steps) for r in group)
        steps, curves = group[0].steps[:n], np.stack([r.returns[:n] for r in group])
        lo, hi = bootstrap_ci(curves)
        ax.plot(steps, curves.mean(0), label=method)
        ax.fill_between(steps, lo, hi, alpha=0.2)
        finals, aucs = np.array([r.returns[-1] for r in group]), np.array([r.auc for r in group])
        (f_lo, f_hi), (a_lo, a_hi) = bootstrap_ci(finals), bootstrap_ci(aucs)
        norm = [r.normalized[-1] * 100 for r in group if r.normalized is not None]
        rows.append({"task": task, "method": method, "seeds": len(group), "final_return": finals.mean(),
                     "final_ci_low": f_lo, "final_ci_high": f_hi, "auc": aucs.mean(), "auc_ci_low": a_lo,
                     "auc_ci_high": a_hi, "normalized_score": np.mean(norm) if norm else ""})  # fmt: skip
        if group[0].usage is not None and group[0].usage.shape[1] > 1:
            if usage_fig is None:
                usage_fig, usage_ax = plt.subplots(figsize=(7, 4.5))
            usage = np.stack([r.usage[:n] for r in group]).mean(0)
            for k in range(usage.shape[1]):
                usage_ax.plot(steps, usage[:, k], label=f"{method}: expert {k}")
    ax.set(xlabel="steps", ylabel="evaluation return", title=f"{task}: mean, 95% bootstrap CI over seeds")
    _legend(ax)
    _save(fig, out / f"curves_{_slug(task)}.png", written)
    if usage_fig is not None:
        usage_ax.set(xlabel="steps", ylabel="fraction of evaluation steps", title=f"{task}: expert usage")
        _legend(usage_ax)
        _save(usage_fig, out / f"expert_usage_{_slug(task)}.png", written)
    return rows


def aggregate(runs: list[Run], names: list[str], scores: np.ndarray, normalize: str, out: Path) -> list[Path]:
    """IQM and mean of the normalised final scores per method across tasks, with stratified-bootstrap intervals,
    and the performance profile."""
    plt = _plt()
    tasks = list(dict.fromkeys(run.task for run in runs))
    taus = np.linspace(0.0, max(1.0, float(scores.max())), 101)
    rows, lines = [], ["| method | runs | IQM [95% CI] | mean [95% CI] |", "|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in dict.fromkeys(names):
        per_task = [scores[[i for i, (r, m) in enumerate(zip(runs, names)) if r.task == t and m == method]]
                    for t in tasks]  # fmt: skip
        per_task = [s for s in per_task if len(s)]
        i_point, i_lo, i_hi = stratified_bootstrap(per_task, iqm)
        m_point, m_lo, m_hi = stratified_bootstrap(per_task, np.mean)
        rows.append({"method": method, "runs": sum(map(len, per_task)), "iqm": i_point, "iqm_ci_low": i_lo,
                     "iqm_ci_high": i_hi, "mean": m_point, "mean_ci_low": m_lo, "mean_ci_high": m_hi})  # fmt: skip
        lines.append(f"| {method} | {rows[-1]['runs']} | {i_point:.3f} [{i_lo:.3f}, {i_hi:.3f}] | "
                     f"{m_point:.3f} [{m_lo:.3f}, {m_hi:.3f}] |")  # fmt: skip
        profile = stratified_bootstrap(per_task, lambda x: performance_profile(x, taus), n=500, bands=True)
        ax.plot(taus, profile[0], label=method)
        ax.fill_between(taus, profile[1], profile[2], alpha=0.2)
    ax.set(xlabel="normalised score tau", ylabel="fraction of runs with score > tau",
           title=f"performance profile over {len(tasks)} task(s)")  # fmt: skip
    _legend(ax)
    written: list[Path] = []
    _save(fig, out / "profile.png", written)
    header = f"Normalised final scores ({normalize}), {len(tasks)} task(s); 95% stratified-bootstrap intervals."
    return written + _write_table(out / "aggregate", list(rows[0]), rows, [header, "", *lines])


def _write_table(stem: Path, fields: list[str], rows: list[dict], lines: list[str]) -> list[Path]:
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(csv_path)
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return [csv_path, md_path]


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m pmoe_rl.plot", description="Figures and tables from pmoe-rl run directories (or "
               "folders that hold them): learning curves, final-return and AUC tables, IQM and performance profiles.",
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    p.add_argument("runs", nargs="+", type=Path, help="run directories, or folders that hold them")
    p.add_argument("--out", type=Path, default=Path("figures"), help="where to write (default: figures)")
    p.add_argument("--normalize", choices=["task", "none"], default="task",
                   help="online runs' aggregate scores: scaled to [0, 1] per task (task) or raw (none)")  # fmt: skip
    args = p.parse_args(argv)
    runs = find_runs(args.runs)
    written = write_all(runs, args.out, args.normalize)
    tasks = len({r.task for r in runs})
    print(f"{len(runs)} runs, {tasks} task(s), {len(set(method_names(runs)))} method(s); wrote:")
    for path in written:
        print(f"  {path}")
    return 0


_entry = entry_point(main)


if __name__ == "__main__":
    _entry()
