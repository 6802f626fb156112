"""pmoe_rl/MultiGoal-v0 (reference/multigoal.md) and the expert analysis written by ``evaluate --analyze``."""

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import SMALL
from gymnasium.utils.env_checker import check_env

from pmoe_rl import evaluate, train
from pmoe_rl.envs import make_env
from pmoe_rl.envs.multigoal import GOALS
from pmoe_rl.errors import cli_main

ENV = "pmoe_rl/MultiGoal-v0"


def test_passes_gymnasium_env_checker_and_has_the_reference_horizon():
    env = gym.make(ENV, render_mode="rgb_array")
    check_env(env.unwrapped)
    assert env.spec.max_episode_steps == 30
    env.reset(seed=0)
    for t in range(30):
        _, _, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        assert not terminated
    assert truncated
    env.close()


def test_reward_and_termination_follow_the_reference_formula():
    env = gym.make(ENV).unwrapped
    obs, _ = env.reset(seed=1)
    position = obs.astype(np.float64)
    for action in ([1.0, 0.0], [1.5, 0.2], [1.0, 0.0], [0.9, -0.1], [1.0, 0.0]):
        obs, reward, terminated, _, info = env.step(np.array(action, dtype=np.float32))
        a = np.clip(action, -1, 1)
        position = np.clip(position + a, -7, 7)
        d = np.linalg.norm(GOALS - position, axis=1)
        expected = -30 * a @ a - d.min() ** 2 + (10 if d.min() < 1 else 0)
        assert reward == pytest.approx(expected, rel=1e-5)
        np.testing.assert_allclose(obs, position, atol=1e-5)
        assert terminated == (d.min() < 1) and info["goal"] == (0 if terminated else -1)
        if terminated:
            break
    assert terminated  # reached goal 0 at (5, 0)


def test_deterministic_under_a_seed_and_renders_its_path():
    runs = []
    for _ in range(2):
        env = make_env(ENV, render_mode="rgb_array")
        obs, _ = env.reset(seed=7)
        frames, trace = [env.render()], [obs]
        rng = np.random.default_rng(0)
        for _ in range(5):
            obs, reward, *_ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
            trace.append(np.append(obs, reward))
        frames.append(env.render())
        env.close()
        runs.append((np.concatenate(trace), frames))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    first, last = runs[0][1]
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    assert (first != last).any()  # the path is drawn


def test_analyze_writes_the_plots_and_scores(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(train.main, ["--env", ENV, "--steps", "300", "--eval-every", "0", "--run-dir", str(run),
                                 *SMALL]) == 0
    out = tmp_path / "analysis"
    assert cli_main(evaluate.main, [str(run), "--episodes", "4", "--stochastic", "--analyze", str(out)]) == 0
    assert "expert separation" in capsys.readouterr().out
    import matplotlib.image

    for name in ("expert_usage.png", "expert_actions_pca.png", "multigoal_trajectories.png"):
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 100 and image.std() > 0.01, name  # a real, non-blank picture
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["expert_separation"] > 0 and len(summary["expert_usage"]) == 4
    assert len(summary["goals"]) == 4
    # nothing is overwritten
    assert cli_main(evaluate.main, [str(run), "--analyze", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
