"""Ready for a GPU without one: every agent's update and acting on PyTorch's ``meta`` device (which refuses any
CPU/device mix and any host read of a tensor value), counted host round trips per environment step, one shared
device check, the training device's RNG only, and evaluation on a CPU copy of the policy."""

import collections
import contextlib

import pytest
import torch
from conftest import SMALL

from pmoe_rl import checkpoint, evaluate, train
from pmoe_rl.agents import runner
from pmoe_rl.agents.ppo import PPO, Rollouts
from pmoe_rl.agents.runner import EpisodeStats
from pmoe_rl.agents.sac import SAC
from pmoe_rl.buffers import Batch
from pmoe_rl.config import Config, validate
from pmoe_rl.devices import resolve_device
from pmoe_rl.envs import make_vec_env
from pmoe_rl.errors import DeviceError, cli_main
from pmoe_rl.policies import MixturePolicy

META = torch.device("meta")
HOST_READS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")


@contextlib.contextmanager
def count_host_reads():
    """Count every call that reads a tensor's value on the host (on a GPU: a synchronisation)."""
    counts = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name, method):
        def wrapper(self, *args, **kwargs):
            counts[name] += 1
            return method(self, *args, **kwargs)

        return wrapper

    for name, method in originals.items():
        setattr(torch.Tensor, name, counting(name, method))
    try:
        yield counts
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


class NoLog:
    def progress(self, *args, **kwargs):
        pass


SAC_VARIANTS = [("pmoe", "pmoe"), ("gumbel", "pmoe"), ("score", "pmoe"), ("mrp", "pmoe"), ("pmoe", "gaussian"),
                ("pmoe", "moe"), ("pmoe", "mcp")]  # fmt: skip


@pytest.mark.parametrize("estimator, policy", SAC_VARIANTS)
def test_sac_update_and_acting_run_on_the_meta_device(estimator, policy):
    cfg = validate(Config(env="x", policy=policy, estimator=estimator, steps=1000))
    agent = SAC(cfg, 3, 2, META)
    batch = Batch(torch.randn(8, 3, device=META), torch.randn(8, 2, device=META), torch.randn(8, device=META),
                  torch.randn(8, 3, device=META), torch.zeros(8, device=META))  # fmt: skip
    metrics = agent.update(batch, with_metrics=True)
    assert metrics and all(v.device == META for v in metrics.values())
    action, k = agent.policy.act(torch.randn(1, 3, device=META))
    assert action.device == META and action.shape == (1, 2)
    assert agent.policy.act(torch.randn(1, 3, device=META), deterministic=True)[0].device == META


@pytest.mark.parametrize("policy", ["gaussian", "pmoe"])
def test_ppo_update_and_acting_run_on_the_meta_device(policy):
    cfg = validate(Config(env="x", algo="ppo", policy=policy, steps=1000))
    cfg.ppo.n_epochs = 1
    agent = PPO(cfg, 3, 2, META)
    n = 128
    data = {key: torch.randn(n, device=META) for key in ("logp", "values", "advantages", "returns")}
    data.update(obs=torch.randn(n, 3, device=META), actions=torch.randn(n, 2, device=META),
                experts=torch.zeros(n, dtype=torch.long, device=META))  # fmt: skip
    metrics = agent.update(data, 3e-4)
    assert all(v.device == META for v in metrics.values())
    assert agent.policy.act(torch.randn(1, 3, device=META))[0].device == META


def test_sac_reads_the_device_at_most_twice_per_step_and_never_in_an_update():
    cfg = validate(Config(env="InvertedPendulum-v5", steps=1000, experts=4))
    cfg.net.hidden = cfg.sac.critic_hidden = [16]
    cfg.sac.learning_starts, cfg.sac.batch_size = 20, 16
    agent = SAC(cfg, 4, 1, torch.device("cpu"))
    agent.start(seed=0, resumed=False, step=0)
    stats = EpisodeStats(4)
    for step in range(25):  # past the warm-up: every step acts with the policy and updates
        agent.iterate(step, stats, NoLog(), with_metrics=False)
    with count_host_reads() as counts:
        for step in range(25, 75):
            agent.iterate(step, stats, NoLog(), with_metrics=False)
    assert sum(counts.values()) <= 2 * 50, counts  # one device-to-host copy (action and expert) per step
    with count_host_reads() as counts:
        agent.update(agent.buffer.sample(16))
    assert sum(counts.values()) == 0, counts
    agent.close()


def test_ppo_reads_the_device_at_most_twice_per_vector_step():
    """Per vector step (the difference between a 48- and a 16-step rollout; a rollout also reads the
    normalisation statistics once)."""
    cfg = validate(Config(env="InvertedPendulum-v5", algo="ppo", steps=1000, num_envs=2))
    envs = make_vec_env(cfg.env, 2)
    agent = PPO(cfg, 4, 1, torch.device("cpu"))
    reads = []
    for n_steps in (16, 48):
        rollouts = Rollouts(envs, agent, n_steps, reward_norm=None)
        rollouts.obs, _ = envs.reset(seed=0)
        with count_host_reads() as counts:
            rollouts.collect(EpisodeStats(agent.policy.n_experts))
        reads.append(sum(counts.values()))
    assert reads[1] - reads[0] <= 2 * 32, reads
    envs.close()


@pytest.mark.parametrize("name, fragment", [
    ("tpu", "unknown device 'tpu'; use auto, cpu, cuda or cuda:N"),
    ("cuda:x", "invalid device 'cuda:x': a GPU is named cuda:N"),
    ("mps", "--device mps is not supported"),
])  # fmt: skip
def test_device_names_are_checked_once_for_train_and_evaluate(name, fragment, capsys, tmp_path):
    for main, args in ((train.main, ["--env", "Hopper-v5"]), (evaluate.main, [str(tmp_path)])):
        assert cli_main(main, [*args, "--device", name]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and len(err.strip().splitlines()) == 1


def test_a_cpu_only_torch_build_and_a_machine_without_cuda_are_named(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    with pytest.raises(DeviceError, match="CPU-only build"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available on this machine"):
        resolve_device("cuda:0")


def test_auto_picks_the_cpu_for_ppo_and_cuda_for_sac(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device, why = resolve_device("auto", "ppo")
    assert device == torch.device("cpu") and "PPO" in why
    device, why = resolve_device("auto", "sac")
    assert device == torch.device("cuda") and "CUDA is available" in why
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "sac")[0] == torch.device("cpu")


def test_checkpoints_capture_and_restore_only_the_training_devices_generator(monkeypatch):
    def untouchable(*args, **kwargs):
        raise AssertionError("a CPU run must not touch CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, untouchable)
    state = checkpoint.capture_rng(None, torch.device("cpu"))
    assert "cuda" not in state
    checkpoint.restore_rng({**state, "cuda": [torch.zeros(3), torch.ones(3)]}, None, torch.device("cpu"))

    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.full((3,), 7.0))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda value, device: restored.append((value, device)))
    saved = checkpoint.capture_rng(None, torch.device("cuda:0"))
    assert torch.equal(saved["cuda"], torch.full((3,), 7.0))
    checkpoint.restore_rng(saved, None, torch.device("cuda:0"))
    # a checkpoint of the old format (every visible GPU) resumes on one GPU, or on fewer than it saved
    checkpoint.restore_rng({**state, "cuda": [torch.zeros(3), torch.ones(3)]}, None, torch.device("cuda:1"))
    checkpoint.restore_rng({**state, "cuda": [torch.zeros(3)]}, None, torch.device("cuda:1"))
    assert [(v.tolist(), str(d)) for v, d in restored] == [([7.0] * 3, "cuda:0"), ([1.0] * 3, "cuda:1")]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "ip"
    assert cli_main(train.main, ["--env", "InvertedPendulum-v5", "--steps", "300", "--eval-every", "0", "--run-dir",
                                 str(run_dir), *SMALL]) == 0  # fmt: skip
    return run_dir


def test_evaluate_with_device_auto_and_analyze_runs_on_a_cpu_copy(small_run, tmp_path, monkeypatch, capsys):
    """On a GPU machine ``--device auto`` resolves to CUDA; the episodes and the analysis still run on the CPU (as
    the training run's own evaluations), so nothing is loaded onto the GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    code = cli_main(evaluate.main, [str(small_run), "--episodes", "2", "--device", "auto", "--analyze",
                                    str(tmp_path / "a")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "a" / "analysis.json").is_file()


def test_training_evaluations_act_on_a_cpu_copy_with_a_cpu_generator(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "cpu_copy", lambda policy: calls.append("copied") or policy)
    monkeypatch.setattr(runner, "evaluate_policy", lambda *args, **kwargs: calls.append(kwargs) or _result())
    rec = runner.Recorder(_Log(), EpisodeStats(1), 0)
    rec.evaluate(MixturePolicy(2, 1, n_experts=1, hidden=[4]), None, Config(env="x"), 0)
    assert calls == ["copied", {}]  # no device argument: the generator is the CPU's


def _result():
    from pmoe_rl.evaluation import EvalResult

    return EvalResult([1.0], [1], [1.0])


class _Log:
    def record(self, *args, **kwargs):
        pass


def test_the_cpu_copy_is_the_policy_itself_on_the_cpu():
    from pmoe_rl.evaluation import cpu_copy

    policy = MixturePolicy(2, 1, hidden=[4])
    assert cpu_copy(policy) is policy
