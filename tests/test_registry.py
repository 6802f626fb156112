"""A user's own estimator, registered from their script through the public API, trains a real run."""

import csv
import subprocess
import sys
import textwrap

import yaml

SCRIPT = textwrap.dedent('''
    import dataclasses
    import sys

    import torch

    import pmoe_rl
    from pmoe_rl import ActorLoss, register_estimator, train
    from pmoe_rl.errors import cli_main
    from pmoe_rl.mixture import gather_expert

    @register_estimator("halfq")
    @dataclasses.dataclass
    class HalfQ(ActorLoss):
        """SAC's loss on an exact mixture sample with the critic's value scaled by q_scale."""
        q_scale: float = 0.5
        gamma: float = 0.0  # named like sac.gamma: receives the run's value

        def __call__(self, batch, q_fn, alpha):
            k = batch.dist.sample_expert()
            u = gather_expert(batch.u, k)
            loss = (alpha * batch.dist.mixture_log_prob(u) - self.q_scale * q_fn(batch.obs, torch.tanh(u))).mean()
            return {"loss": loss, "policy_loss": loss, "seen_gamma": torch.tensor(self.gamma)}

    assert pmoe_rl.make_estimator("halfq", gamma=0.9, batch_size=5) == HalfQ(q_scale=0.5, gamma=0.9)
    sys.exit(cli_main(train.main, sys.argv[1:]))
''')


def test_a_users_estimator_registers_and_trains_from_their_script(tmp_path):
    script = tmp_path / "my_estimator.py"
    script.write_text(SCRIPT)
    run = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            "--env",
            "InvertedPendulum-v5",
            "--estimator",
            "halfq",
            "--steps",
            "300",
            "--eval-every",
            "0",
            "--log-every",
            "300",
            "--set",
            "net.hidden=[16]",
            "--set",
            "sac.critic_hidden=[16]",
            "--set",
            "sac.learning_starts=100",
            "--set",
            "sac.gamma=0.97",
            "--run-dir",
            str(run),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load((run / "config.yaml").read_text())["estimator"] == "halfq"
    with open(run / "progress.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert abs(float(last["train/seen_gamma"]) - 0.97) < 1e-6  # the estimator got the run's sac.gamma ...
    assert int(last["train/n_updates"]) == 201 and last["train/actor_loss"]  # ... and trained the actor
    assert (run / "checkpoints" / "latest").is_file()


def test_an_unregistered_estimator_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pmoe_rl.train",
            "--env",
            "InvertedPendulum-v5",
            "--estimator",
            "halfq",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: estimator: unknown estimator 'halfq'; choose from pmoe, gumbel, score, mrp")
    assert not (tmp_path / "run").exists()
