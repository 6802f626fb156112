"""Online imitation (``python -m pmoe_rl.imitate``) and SSO actor updates in SAC: the rounds, the counts and logs,
the learner opened by ``evaluate`` and SB3, resume, clear errors; SAC with SSO at m = 1 is SAC."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import SMALL
from test_cli_errors import assert_user_error, run
from test_devices import META, count_host_reads

from pmoe_rl import checkpoint, evaluate, imitate, train
from pmoe_rl.agents.build import load_policy
from pmoe_rl.agents.sac import SAC
from pmoe_rl.buffers import Batch
from pmoe_rl.config import Config, validate
from pmoe_rl.errors import cli_main
from pmoe_rl.sso import SSO

ROUND = ["--samples-per-round", "100", "--eval-episodes", "1", "--hidden", "[32,32]", "--no-progress"]


@pytest.fixture(scope="module")
def expert(tmp_path_factory):
    """A (tiny, untrained) SAC run on InvertedPendulum-v5: imitation only needs a checkpoint that acts."""
    run_dir = tmp_path_factory.mktemp("experts") / "ip"
    args = ["--env", "InvertedPendulum-v5", "--steps", "200", "--eval-every", "0", "--policy", "gaussian",
            "--run-dir", str(run_dir), *SMALL]  # fmt: skip
    assert cli_main(train.main, args) == 0
    return run_dir


def rows(run_dir) -> list[dict]:
    with open(run_dir / "progress.csv") as f:
        return list(csv.DictReader(f))


def test_rounds_are_logged_evaluated_saved_and_resumed(expert, tmp_path):
    run_dir = tmp_path / "im"
    args = ["--expert", expert, "--rounds", "2", "--run-dir", run_dir, "--beta", "0.5", *ROUND]
    assert cli_main(imitate.main, [str(a) for a in args]) == 0
    log = rows(run_dir)
    assert [int(r["time/total_timesteps"]) for r in log] == [100, 200]
    assert [int(r["time/expert_queries"]) for r in log] == [100, 200]
    assert all(r["eval/mean_reward"] for r in log)  # evaluated after every round
    assert float(log[0]["train/expert_fraction"]) == 1.0  # the first round is the expert's
    assert 0.2 < float(log[1]["train/expert_fraction"]) < 0.8
    assert float(log[1]["train/loss_after"]) < float(log[1]["train/loss"])
    # the learner is a policy like any other: evaluate and the SB3 bridge open it
    assert cli_main(evaluate.main, [str(run_dir), "--episodes", "1"]) == 0
    from pmoe_rl.sb3 import from_checkpoint

    model = from_checkpoint(run_dir)
    policy, _ = load_policy(run_dir)
    obs = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    native = policy.act(torch.as_tensor(obs), deterministic=True)[0].numpy()
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], native, atol=1e-6)
    # resume continues at round 3 with the optimiser's counts
    assert cli_main(imitate.main, ["--resume", str(run_dir), "--rounds", "3", "--no-progress"]) == 0
    log = rows(run_dir)
    assert [int(r["time/expert_queries"]) for r in log] == [100, 200, 300]
    state = checkpoint.load(run_dir, with_state=True).state["optim"]["learner"]
    assert state["counts"]["expensive_evals"] == 3 and state["counts"]["outer_steps"] == 3


@pytest.mark.parametrize("optimizer, inner", [("sso", "armijo"), ("adam", "adam"), ("sgd", "adam")])
def test_optimizers_and_learners(expert, tmp_path, optimizer, inner):
    run_dir = tmp_path / optimizer
    args = ["--expert", expert, "--rounds", "1", "--run-dir", run_dir, "--optimizer", optimizer, "--sso-inner", inner,
            "--inner-steps", "3", "--learner", "linear", "--loss", "squashed", "--lr", "0.01",
            "--learner-action", "mean", *ROUND]  # fmt: skip
    assert cli_main(imitate.main, [str(a) for a in args]) == 0
    policy, ckpt = load_policy(run_dir)
    assert ckpt.meta["algo"] == "imitate" and not list(policy.trunk.parameters())  # linear in the observation
    assert float(rows(run_dir)[0]["train/loss_after"]) < float(rows(run_dir)[0]["train/loss"])


def test_help_lists_the_imitation_options_with_their_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        imitate.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    for text in ("--beta BETA", "--inner-steps INNER_STEPS", "--rounds R", "(choices: sso, adam, sgd; default: sso)",
                 "0 = never (default: 1)"):  # fmt: skip
        assert text in out, text
    assert "--algo" not in out.split("hyperparameters")[0]  # imitation's own command has no --algo


@pytest.mark.parametrize(
    "args, fragments",
    [
        ([], ["pass --expert"]),
        (["--expert", "/nonexistent/run"], ["/nonexistent/run"]),
        (["--expert", "EXPERT", "--env", "Hopper-v5"], ["trained on InvertedPendulum-v5, not on --env Hopper-v5"]),
        (["--expert", "EXPERT", "--rounds", "0"], ["--rounds must be at least 1"]),
        (["--expert", "EXPERT", "--beta", "1.5"], ["imitation.beta: should be less than or equal to 1"]),
        (["--expert", "EXPERT", "--optimizer", "lbfgs"], ["imitation.optimizer: should be 'sso', 'adam' or 'sgd'"]),
        (["--expert", "EXPERT", "--algo", "sac"], ["unrecognized arguments: --algo"]),
    ],
)
def test_user_errors(expert, tmp_path, capsys, args, fragments):
    args = [str(expert) if a == "EXPERT" else a for a in args]
    code, _, err = run(imitate.main, [*args, "--run-dir", tmp_path / "x", "--no-progress"], capsys)
    assert_user_error(code, err, *fragments)
    assert not (tmp_path / "x").exists()


def sac_agent(**sac) -> SAC:
    torch.manual_seed(0)
    cfg = validate(Config(env="x", steps=1000))
    for key, value in sac.items():
        setattr(cfg.sac, key, value)
    return SAC(cfg, 5, 2, torch.device("cpu"))


def batches(n: int):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        yield Batch(torch.randn(32, 5, generator=g), torch.rand(32, 2, generator=g) * 2 - 1,
                    torch.randn(32, generator=g), torch.randn(32, 5, generator=g), torch.zeros(32))  # fmt: skip


def test_sac_with_one_adam_surrogate_step_is_sac():
    """First-order agreement in the agent: one inner Adam step on the surrogate is the plain actor step."""
    agents = []
    for sac in ({}, {"actor_update": "sso", "sso_inner_steps": 1}):
        agents.append(sac_agent(**sac))  # each from the same seed, in turn (they draw from torch's generator)
        for batch in batches(3):
            agents[-1].update(batch)
    plain, sso = agents
    assert isinstance(sso.actor_opt, SSO)
    for a, b in zip(plain.policy.parameters(), sso.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_sac_sso_steps_use_one_critic_gradient_and_no_host_read():
    agent = sac_agent(actor_update="sso", sso_inner_steps=5)
    critic_calls = []
    q_min = agent.q_min
    agent.q_min = lambda obs, act: critic_calls.append(act.requires_grad) or q_min(obs, act)
    batch = next(batches(1))
    with count_host_reads() as reads:
        metrics = agent.update(batch, with_metrics=True)
    # the best-expert choice (no autograd) and one differentiated call: the inner steps never call the critic
    assert critic_calls == [False, True]
    assert agent.actor_opt.expensive_evals == 1 and agent.actor_opt.inner_steps_taken == 5
    assert "sso_surrogate" in metrics and sum(reads.values()) == 0


def test_sac_sso_update_runs_on_the_meta_device():
    """The SSO actor step stays on the training device (the meta device stands in for a GPU)."""
    cfg = validate(Config(env="x", steps=1000))
    cfg.sac.actor_update, cfg.sac.sso_inner_steps = "sso", 3
    agent = SAC(cfg, 3, 2, META)
    batch = Batch(*(torch.randn(8, *shape, device=META) for shape in ((3,), (2,), (), (3,))),
                  torch.zeros(8, device=META))  # fmt: skip
    metrics = agent.update(batch, with_metrics=True)
    assert metrics["sso_surrogate"].device == META and metrics["actor_loss"].device == META
