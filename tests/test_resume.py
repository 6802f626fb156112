"""A run killed with SIGKILL continues from its latest checkpoint and finishes with the requested steps."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import SMALL

from pmoe_rl import checkpoint, train
from pmoe_rl.errors import cli_main


def read_progress(run_dir):
    with open(run_dir / "progress.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "--env",
        "InvertedPendulum-v5",
        "--steps",
        "4000",
        "--checkpoint-every",
        "500",
        "--eval-every",
        "1000",
        "--eval-episodes",
        "2",
        "--log-every",
        "250",
        "--run-dir",
        str(run_dir),
        *SMALL,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmoe_rl.train", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and int(latest.read_text().split("_")[1]) >= 1500:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint.load(run_dir).step
    assert 1500 <= killed_at < 4000

    assert cli_main(train.main, ["--resume", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"resuming from step {killed_at}" in out
    final = checkpoint.load(run_dir, with_state=True)
    assert final.step == 4000
    assert final.state["buffer_meta"]["size"] == 4000  # the replay buffer came back and kept filling
    rows = read_progress(run_dir)
    steps = [int(r["time/total_timesteps"]) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 4000  # rows past the checkpoint were replaced
    assert len(steps) == 4000 // 250
    # counters continued: one update per step from learning_starts (100) on
    assert int(rows[-1]["train/n_updates"]) == 4000 - 100 + 1
    episodes = [int(r["time/episodes"]) for r in rows]
    assert episodes == sorted(episodes)

    # a finished run can be extended
    assert cli_main(train.main, ["--resume", str(run_dir), "--steps", "4500", "--no-progress"]) == 0
    assert checkpoint.load(run_dir).step == 4500
    assert int(read_progress(run_dir)[-1]["train/n_updates"]) == 4500 - 100 + 1
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    assert os.path.exists(run_dir / "config.yaml")
