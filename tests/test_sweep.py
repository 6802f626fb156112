"""``python -m pmoe_rl.sweep``: spec checks before Ray starts, and a real local Ray Tune sweep interrupted with SIGINT
and run again (the smoke spec CI runs), then ``python -m pmoe_rl.plot`` on it."""

import csv
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from pmoe_rl import plot, sweep
from pmoe_rl.errors import cli_main

ROOT = Path(__file__).parents[1]
SMOKE = ROOT / "configs" / "sweeps" / "smoke.yaml"
GOOD = {"base": {"steps": 1000}, "variants": {"pmoe": {"policy": "pmoe"}}, "grid": {"env": ["Pendulum-v1"]}}


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_specs_resolve(path, tmp_path, monkeypatch):
    """Every spec in configs/sweeps/ resolves to variants x grid valid trial configs (a renamed option breaks it)."""
    raw = yaml.safe_load(path.read_text())
    if "dataset" in raw.get("grid", {}) or "dataset" in raw.get("base", {}):
        # its datasets are made by collect (scripts/make_datasets.sh), not here: the env comes from the id
        # (pmoe_rl/<env>/<kind>-v0) instead of the dataset's metadata; every config check still runs
        monkeypatch.setattr(sweep.train, "dataset_env_id", lambda dataset: dataset.split("/")[1])
        monkeypatch.setattr(sweep.train, "check_inputs", lambda cfg: None)
    spec = sweep.load_spec(path, tmp_path / "out")
    n_variants = len(raw.get("variants") or {}) or 1
    assert len(spec.trials) == n_variants * math.prod(len(v) for v in raw["grid"].values())
    assert len({t.name for t in spec.trials}) == len(spec.trials)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"trials": 3}, "unknown key(s) trials"),
        ({"base": {"stepz": 1000}}, "unknown config key 'stepz'; did you mean steps"),
        ({"variants": {"x": {"algo": "dqn"}}}, "trial x_Pendulum-v1: algo"),
        ({"grid": {"env": ["Hoper-v5"]}}, "unknown environment 'Hoper-v5'; did you mean Hopper-v5"),
        ({"grid": {"seed": 3}}, "grid.seed must be a non-empty list"),
        ({"grid": {"sac.gamma": [0.9, 2.0]}}, "sac.gamma"),
        ({"resources": {"cpus": 0}}, "resources need cpus > 0"),
        ({"grid": {"env": ["Pendulum-v1"], "seed": [0, 0]}}, "two trials are named 'pmoe_Pendulum-v1_s0'"),
    ],
)
def test_malformed_spec_fails_before_anything_runs(change, message, tmp_path, capsys):
    spec = {**GOOD, **change}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert cli_main(sweep.main, [str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep spec") and message in err, err
    assert not out.exists()  # nothing written, Ray not started


def test_trials_are_the_cross_product_with_resolved_configs(tmp_path):
    spec = sweep.load_spec(SMOKE, tmp_path)
    assert [t.name for t in spec.trials] == ["pmoe_Pendulum-v1_s0", "pmoe_Pendulum-v1_s1",
                                             "gaussian_Pendulum-v1_s0", "gaussian_Pendulum-v1_s1"]  # fmt: skip
    pmoe = spec.trials[0].config
    assert (pmoe["policy"], pmoe["experts"], pmoe["steps"], pmoe["threads"], pmoe["sac"]["batch_size"]) == (
        "pmoe", 4, 1000, 1, 64)  # fmt: skip
    assert spec.trials[3].config["experts"] == 1 and spec.trials[3].config["seed"] == 1
    assert spec.resources == {"cpu": 1.0, "gpu": 0.0}
    assert all(t.status == "pending" and t.run_dir.parent == tmp_path / "trials" for t in spec.trials)


def test_wall_time_adds_up_attempts(tmp_path):
    rows = [("t", 0), ("t", 10), ("t", 25), ("t", 3), ("t", 7)]  # resumed after 25 s
    (tmp_path / "progress.csv").write_text("time/time_elapsed\n" + "\n".join(str(v) for _, v in rows) + "\n")
    assert sweep.wall_time(tmp_path) == 32


def statuses(out: Path) -> dict[str, str]:
    return {t.name: t.status for t in sweep.load_spec(SMOKE, out).trials}


@pytest.mark.slow
def test_smoke_sweep_interrupted_then_rerun_resumes_and_plots(tmp_path):
    """The smoke spec on a local Ray, 2 trials at a time: SIGINT once a trial has finished and another has a
    checkpoint; the rerun of the same command skips the finished trials, continues the others from their
    checkpoints, and leaves 4 finished run directories and one results.csv that plot turns into figures."""
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "pmoe_rl.sweep", str(SMOKE), "--out", str(out), "--max-concurrent", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        state = statuses(out) if out.exists() else {}
        if "finished" in state.values() and "partial" in state.values():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, log[-3000:]
    assert "run the same command again" in log
    before = statuses(out)
    assert "finished" in before.values() and set(before.values()) != {"finished"}, before
    with open(out / "results.csv") as f:
        assert {r["trial"]: r["status"] for r in csv.DictReader(f)} == before
    done_at = {n: (out / "trials" / n / sweep.DONE).stat().st_mtime for n, s in before.items() if s == "finished"}

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert statuses(out) == dict.fromkeys(before, "finished")
    for name, status in before.items():
        train_log = (out / "logs" / f"{name}.log").read_text()
        if status == "finished":  # not run again
            assert (out / "trials" / name / sweep.DONE).stat().st_mtime == done_at[name]
            assert "resuming" not in train_log
        elif status == "partial":  # continued from its checkpoint, not from step 0
            assert "resuming from step" in train_log and train_log.count("training: SAC") == 1
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert all(int(r["step"]) == 1000 and float(r["final_return"]) < 0 for r in rows)

    figures = tmp_path / "figures"
    assert cli_main(plot.main, [str(out), "--out", str(figures)]) == 0
    for name in ("curves_Pendulum-v1.png", "profile.png", "aggregate.md", "table.md"):
        assert (figures / name).is_file(), sorted(p.name for p in figures.iterdir())
    for png in figures.glob("*.png"):
        assert matplotlib.image.imread(png)[..., :3].std() > 0.01, png  # not blank


def test_a_trial_directory_trained_with_other_values_is_refused(tmp_path, capsys):
    """A spec edited after its trials ran must not skip or continue them silently; a larger step budget is fine (the
    finished trial is continued)."""
    spec = sweep.load_spec(SMOKE, tmp_path)
    trial = spec.trials[0]
    (trial.run_dir / "checkpoints").mkdir(parents=True)
    (trial.run_dir / "checkpoints" / "latest").write_text("step_000001000\n")
    (trial.run_dir / sweep.DONE).write_text('{"steps": 1000}\n')
    saved = {**trial.config, "sac": {**trial.config["sac"], "gamma": 0.9}}
    (trial.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert cli_main(sweep.main, [str(SMOKE), "--out", str(tmp_path), "--results"]) == 2
    assert "was run with other values than the spec's (sac.gamma: 0.9 -> 0.99)" in capsys.readouterr().err

    (trial.run_dir / "config.yaml").write_text(yaml.safe_dump({**trial.config, "steps": 500}))
    assert sweep.load_spec(SMOKE, tmp_path).trials[0].status == "finished"
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(SMOKE.read_text().replace("steps: 1000", "steps: 2000"))
    assert sweep.load_spec(bigger, tmp_path).trials[0].status == "partial"  # continued to the new budget
