"""``python -m pmoe_rl.plot``: run directories grouped into tasks and methods, the tables' numbers against NumPy and
closed forms, the rliable statistics, figures that exist and are not blank, clear errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml
from matplotlib.image import imread
from test_cli_errors import assert_user_error, run

from pmoe_rl import plot
from pmoe_rl.config import Config, to_dict


def make_run(folder, env: str, seed: int, returns: list[float], algo="sac", policy="pmoe", usage=None, **sections):
    """A run directory as ``train`` writes it: the config and an evaluation every 1000 steps."""
    folder.mkdir(parents=True)
    cfg = to_dict(Config(env=env, algo=algo, policy=policy, seed=seed))
    for key, value in sections.items():
        section, name = key.split("__")
        cfg[section][name] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    with open(folder / "progress.csv", "w", newline="") as f:
        fields = ["time/total_timesteps", "eval/mean_reward", "train/critic_loss"]
        fields += [f"eval/expert_usage_{k}" for k in range(len(usage or []))]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerow({"time/total_timesteps": 500, "train/critic_loss": 1.0})  # a log row without evaluation
        for i, ret in enumerate(returns):
            row = {"time/total_timesteps": 1000 * (i + 1), "eval/mean_reward": ret}
            row.update({f"eval/expert_usage_{k}": u for k, u in enumerate(usage or [])})
            writer.writerow(row)


@pytest.fixture
def runs(tmp_path):
    """Two tasks x two methods (PMOE and Gaussian) x three seeds, returns known."""
    for env, scale in (("Hopper-v5", 1.0), ("Walker2d-v5", 2.0)):
        for seed in range(3):
            make_run(tmp_path / f"{env}_pmoe_{seed}", env, seed, [scale * (100 + seed), scale * (200 + 10 * seed)],
                     usage=[0.75, 0.25])  # fmt: skip
            make_run(tmp_path / f"{env}_gauss_{seed}", env, seed, [scale * 50, scale * (100 + seed)], policy="gaussian")
    return tmp_path


def test_statistics_against_closed_forms():
    assert plot.iqm(np.arange(8.0)[::-1]) == 3.5  # the middle four of 0..7
    assert plot.iqm([1.0, 2.0, 3.0]) == 2.0  # too few to trim: the mean
    x = np.random.default_rng(0).normal(size=20)
    assert plot.iqm(x) == pytest.approx(np.sort(x)[5:15].mean())
    np.testing.assert_array_equal(plot.performance_profile(np.array([0.1, 0.5, 0.9]), np.array([0.0, 0.5, 1.0])),
                                  [1.0, 1 / 3, 0.0])  # fmt: skip
    point, lo, hi = plot.stratified_bootstrap([np.array([1.0, 2.0, 3.0]), np.array([10.0, 10.0])], np.mean)
    assert point == pytest.approx(26 / 5) and lo <= point <= hi
    same = plot.stratified_bootstrap([np.array([4.0, 4.0])], plot.iqm)
    assert same == (4.0, 4.0, 4.0)


def test_tables_and_figures(runs, tmp_path):
    found = plot.find_runs([runs])
    assert len(found) == 12 and sorted(set(plot.method_names(found))) == ["policy=gaussian", "policy=pmoe"]
    out = tmp_path / "figures"
    written = plot.write_all(found, out)
    names = {p.name for p in written}
    assert {"curves_Hopper-v5.png", "curves_Walker2d-v5.png", "expert_usage_Hopper-v5.png", "profile.png",
            "table.md", "table.csv", "aggregate.md", "aggregate.csv"} <= names  # fmt: skip
    for png in out.glob("*.png"):
        image = imread(png)
        assert image.shape[0] > 200 and image[..., :3].std() > 0.05, png  # drawn on, not blank
    with open(out / "table.csv") as f:
        table = {(r["task"], r["method"]): r for r in csv.DictReader(f)}
    hopper = table[("Hopper-v5", "policy=pmoe")]
    assert float(hopper["final_return"]) == pytest.approx(np.mean([200, 210, 220]))
    # AUC of a two-point curve is the mean of its ends
    assert float(hopper["auc"]) == pytest.approx(np.mean([(100 + s + 200 + 10 * s) / 2 for s in range(3)]))
    assert float(hopper["final_ci_low"]) <= 210 <= float(hopper["final_ci_high"])
    with open(out / "aggregate.csv") as f:
        aggregate = {r["method"]: r for r in csv.DictReader(f)}
    # per task, scores are scaled by the lowest (Gaussian seed 0) and highest (PMOE seed 2) final returns
    expected = np.mean([(200 + 10 * s - 100) / (220 - 100) for s in range(3)])
    assert float(aggregate["policy=pmoe"]["mean"]) == pytest.approx(expected)
    assert float(aggregate["policy=pmoe"]["iqm"]) > float(aggregate["policy=gaussian"]["iqm"])


def test_offline_runs_use_their_normalised_scores_and_methods_ignore_unread_sections(tmp_path):
    for algo, update in (("odice", "orthogonal"), ("odice", "semi"), ("bc", "orthogonal")):
        folder = tmp_path / f"{algo}_{update}"
        make_run(folder, "Hopper-v5", 0, [300.0], algo=algo, policy="gaussian", odice__update=update)
        with open(folder / "progress.csv") as f:
            rows = list(csv.DictReader(f))
        with open(folder / "progress.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[*rows[0], "eval/normalized_score"])
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "eval/normalized_score": 42.0 if row["eval/mean_reward"] else ""})
    found = plot.find_runs([tmp_path])
    assert sorted(plot.method_names(found)) == ["algo=bc", "algo=odice update=orthogonal", "algo=odice update=semi"]
    assert np.allclose(plot.final_scores(found, "task"), 0.42)


def test_a_run_saved_before_an_option_existed_is_grouped_by_the_value_it_ran_with(tmp_path):
    """A run whose config.yaml predates ``sac.select_by`` ran with the choice by samples (config.SAVED_BEFORE): it is
    that method, not ``select_by=None``, and groups with a new run that sets ``sample`` explicitly."""
    make_run(tmp_path / "old", "Hopper-v5", 0, [1.0, 2.0], sac__select_by="sample")
    saved = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())
    del saved["sac"]["select_by"]
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(saved))
    make_run(tmp_path / "new_sample", "Hopper-v5", 1, [1.0, 2.0], sac__select_by="sample")
    make_run(tmp_path / "new_default", "Hopper-v5", 0, [1.0, 2.0])
    found = plot.find_runs([tmp_path])
    names = dict(zip((r.path.name for r in found), plot.method_names(found)))
    assert names == {"old": "select_by=sample", "new_sample": "select_by=sample", "new_default": "select_by=mean"}


def test_user_errors(tmp_path, capsys):
    code, _, err = run(plot.main, [tmp_path / "missing"], capsys)
    assert_user_error(code, err, "does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = run(plot.main, [tmp_path / "empty"], capsys)
    assert_user_error(code, err, "no run directory with evaluations")
    make_run(tmp_path / "edited", "Hopper-v5", 0, [1.0, 2.0], sac__gamma=2.0)  # a hand-edited, invalid config
    code, _, err = run(plot.main, [tmp_path / "edited"], capsys)
    assert_user_error(code, err, "edited/config.yaml")
