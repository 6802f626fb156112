"""Seeded learning tests on InvertedPendulum-v5, CPU, default hyperparameters: PMOE-SAC (K=4) and Gaussian
SAC reach a deterministic evaluation return >= 900 within 20,000 environment steps (stock SB3 SAC gets there
at about 14,000); PPO and PMOE-PPO (K=5) reach >= 800 within 100,000."""

import csv

import pytest

from pmoe_rl import train
from pmoe_rl.errors import cli_main


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["pmoe", "gaussian"])
def test_sac_learns_inverted_pendulum(policy, tmp_path):
    run_dir = tmp_path / policy
    code = cli_main(train.main, ["--env", "InvertedPendulum-v5", "--policy", policy, "--seed", "0",
                                 "--steps", "20000", "--eval-every", "500", "--eval-episodes", "5",
                                 "--stop-at-reward", "900", "--checkpoint-every", "0", "--log-every", "1000000",
                                 "--run-dir", str(run_dir), "--no-progress"])
    assert code == 0
    with open(run_dir / "progress.csv") as f:
        evals = [(int(r["time/total_timesteps"]), float(r["eval/mean_reward"])) for r in csv.DictReader(f)
                 if r["eval/mean_reward"]]
    best_step, best = max(evals, key=lambda e: e[1])
    print(f"{policy}: evaluations {evals}")
    assert best >= 900, f"{policy} SAC reached only {best} in 20k steps: {evals}"
    assert best_step <= 20000


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["gaussian", "pmoe"])
def test_ppo_learns_inverted_pendulum(policy, tmp_path):
    """PPO (Gaussian) and PMOE-PPO (K=5) with the default hyperparameters reach a deterministic evaluation
    return >= 800 within 100,000 steps."""
    run_dir = tmp_path / policy
    code = cli_main(train.main, ["--env", "InvertedPendulum-v5", "--algo", "ppo", "--policy", policy, "--seed", "0",
                                 "--steps", "100000", "--eval-every", "4096", "--eval-episodes", "5",
                                 "--stop-at-reward", "800", "--checkpoint-every", "0", "--log-every", "1000000",
                                 "--run-dir", str(run_dir), "--no-progress"])
    assert code == 0
    with open(run_dir / "progress.csv") as f:
        evals = [(int(r["time/total_timesteps"]), float(r["eval/mean_reward"])) for r in csv.DictReader(f)
                 if r["eval/mean_reward"]]
    print(f"{policy} PPO: evaluations {evals}")
    best_step, best = max(evals, key=lambda e: e[1])
    assert best >= 800, f"{policy} PPO reached only {best} in 100k steps: {evals}"
    assert best_step <= 100000
