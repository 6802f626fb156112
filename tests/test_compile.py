"""``--compile``: the compiled SAC gradient step and PPO minibatch loss compute the eager numbers (CPU, inductor),
and the flag reaches the agents."""

import pytest
import torch
import torch._dynamo
import torch._inductor.config as inductor_config

from pmoe_rl.agents.ppo import PPO
from pmoe_rl.agents.sac import SAC
from pmoe_rl.buffers import Batch
from pmoe_rl.config import Config, validate
from pmoe_rl.train import build_parser, resolve_config

CPU = torch.device("cpu")


@pytest.fixture
def same_random_numbers(monkeypatch):
    """Compiled kernels draw their own random numbers; ``fallback_random`` makes them draw eager PyTorch's, so
    the two runs see the same noise and must agree to rounding."""
    monkeypatch.setattr(inductor_config, "fallback_random", True)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def twins(agent_cls, cfg, obs_dim, act_dim):
    """An eager and a compiled agent with the same initial weights."""
    agents = []
    for mode in ("off", "default"):
        torch.manual_seed(0)
        agents.append(agent_cls(validate(cfg.model_copy(update={"compile": mode})), obs_dim, act_dim, CPU))
    return agents


def assert_same(eager, compiled, eager_metrics, compiled_metrics):
    assert compiled_metrics.keys() == eager_metrics.keys()
    for key in eager_metrics:
        torch.testing.assert_close(compiled_metrics[key], eager_metrics[key], rtol=1e-4, atol=1e-5, msg=key)
    for (name, a), (_, b) in zip(eager.weights().items(), compiled.weights().items()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it really was compiled


def test_compiled_sac_update_matches_eager(same_random_numbers):
    cfg = validate(Config(env="x", steps=1000))  # PMOE, 4 experts, learned temperature
    eager, compiled = twins(SAC, cfg, 5, 2)
    g = torch.Generator().manual_seed(1)
    for i in range(3):  # the metrics-free variant twice, then the one with metrics
        batch = Batch(torch.randn(64, 5, generator=g), torch.rand(64, 2, generator=g) * 2 - 1,
                      torch.randn(64, generator=g), torch.randn(64, 5, generator=g), torch.zeros(64))  # fmt: skip
        metrics = []
        for agent in (eager, compiled):
            torch.manual_seed(10 + i)
            metrics.append(agent.update(batch, with_metrics=i == 2))
        assert_same(eager, compiled, *metrics)
    assert metrics[0]["critic_loss"] > 0 and compiled.n_updates == 3


def test_compiled_ppo_update_matches_eager(same_random_numbers):
    cfg = validate(Config(env="x", algo="ppo", steps=1000))  # PMOE-PPO: mixture ratio, auxiliary Q, gate loss
    cfg.ppo.n_epochs, cfg.ppo.batch_size = 2, 64
    eager, compiled = twins(PPO, cfg, 5, 2)
    g = torch.Generator().manual_seed(1)
    n = 160  # two full minibatches and a smaller last one
    data = {key: torch.randn(n, generator=g) for key in ("logp", "values", "advantages", "returns")}
    data.update(obs=torch.randn(n, 5, generator=g), actions=torch.randn(n, 2, generator=g),
                experts=torch.randint(0, 5, (n,), generator=g))  # fmt: skip
    metrics = []
    for agent in (eager, compiled):
        torch.manual_seed(3)
        metrics.append(agent.update(data, 3e-4))
    assert_same(eager, compiled, *metrics)
    assert "gate_loss" in metrics[1]


def test_compile_flag_alone_means_the_default_mode():
    parse = build_parser().parse_args
    assert resolve_config(parse(["--env", "Hopper-v5", "--compile"])).compile == "default"
    assert resolve_config(parse(["--env", "Hopper-v5", "--compile", "reduce-overhead"])).compile == "reduce-overhead"
    assert resolve_config(parse(["--env", "Hopper-v5"])).compile == "off"
