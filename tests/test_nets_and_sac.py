"""The batched twin critic against independent nn.Linear stacks, the replay buffer, and one SAC update."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from pmoe_rl.agents.sac import SAC
from pmoe_rl.buffers import Batch, ReplayBuffer
from pmoe_rl.config import Config


def member(q, i):
    """Member i of the ensemble as an ordinary nn.Sequential of nn.Linear layers."""
    layers = []
    for j, (w, b) in enumerate(zip(q.net.weights, q.net.biases)):
        lin = nn.Linear(*w.shape[1:])
        with torch.no_grad():
            lin.weight.copy_(w[i].T)
            lin.bias.copy_(b[i, 0])
        layers += [lin, nn.ReLU()] if j < len(q.net.weights) - 1 else [lin]
    return nn.Sequential(*layers)


def test_twin_q_matches_independent_mlps_for_single_and_candidate_actions():
    from pmoe_rl.nets import TwinQ

    q = TwinQ(5, 3, [16, 16])
    obs, act = torch.randn(8, 5), torch.rand(8, 3) * 2 - 1
    ref = torch.stack([member(q, i)(torch.cat([obs, act], -1)).squeeze(-1) for i in range(2)])
    torch.testing.assert_close(q(obs, act), ref)
    cand = torch.rand(8, 4, 3) * 2 - 1  # 4 candidate actions per state share the observation projection
    many = q(obs, cand)
    assert many.shape == (2, 8, 4)
    for k in range(4):
        torch.testing.assert_close(many[:, :, k], q(obs, cand[:, k]))


def test_detach_params_passes_gradient_to_actions_only():
    from pmoe_rl.nets import TwinQ

    q = TwinQ(5, 3, [16])
    obs, act = torch.randn(8, 5), torch.randn(8, 3, requires_grad=True)
    q(obs, act, detach_params=True).sum().backward()
    assert all(p.grad is None for p in q.parameters())
    act_ref = act.detach().clone().requires_grad_()
    q(obs, act_ref).sum().backward()
    torch.testing.assert_close(act.grad, act_ref.grad)


def test_replay_buffer_round_trip_wraps_and_samples():
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    for i in range(7):
        buf.add(np.array([i, -i]), np.array([0.1 * i]), float(i), np.array([i + 1, -i - 1]), i == 6)
    assert len(buf) == 5 and buf.pos == 2
    stored = buf.transitions()
    assert sorted(stored.rewards.tolist()) == [2, 3, 4, 5, 6]
    torch.testing.assert_close(stored.next_obs[:, 0], stored.obs[:, 0] + 1)
    assert stored.terminated.tolist() == [0, 1, 0, 0, 0]  # slot 1 holds transition 6
    batch = buf.sample(64)
    assert batch.obs.shape == (64, 2) and batch.rewards.shape == (64,)
    assert set(batch.rewards.tolist()) <= {2.0, 3.0, 4.0, 5.0, 6.0}
    tensors, meta = buf.state_dict()
    other = ReplayBuffer(5, 2, 1)
    other.load_state_dict(tensors, meta)
    assert torch.equal(other.storage, buf.storage) and other.pos == buf.pos


def make_agent(k=4, **sac):
    cfg = Config(env="x", policy="pmoe" if k > 1 else "gaussian", experts=k)
    cfg.net.hidden = cfg.sac.critic_hidden = [32, 32]
    for key, value in sac.items():
        setattr(cfg.sac, key, value)
    return SAC(cfg, 3, 2, torch.device("cpu"))


def random_batch(b=64, terminated=0.0):
    return Batch(
        torch.randn(b, 3), torch.rand(b, 2) * 2 - 1, torch.randn(b), torch.randn(b, 3), torch.full((b,), terminated)
    )


def test_terminal_transitions_do_not_bootstrap():
    agent = make_agent(reward_scale=2.0)
    batch = random_batch(terminated=1.0)
    torch.testing.assert_close(agent.td_target(batch, torch.tensor(0.5)), 2.0 * batch.rewards)
    live = agent.td_target(random_batch(terminated=0.0)._replace(rewards=batch.rewards), torch.tensor(0.5))
    assert (live - 2.0 * batch.rewards).abs().min() > 0  # non-terminal targets include gamma * V(s')


@pytest.mark.parametrize("k", [1, 4])
def test_update_changes_everything_and_polyak_averages_targets(k):
    agent = make_agent(k)
    before_target = copy.deepcopy(agent.critic_target.state_dict())
    before_policy = copy.deepcopy(agent.policy.state_dict())
    log_alpha = agent.log_alpha.item()
    metrics = agent.update(random_batch(), with_metrics=True)
    assert agent.log_alpha.item() != log_alpha
    assert any(not torch.equal(v, agent.policy.state_dict()[n]) for n, v in before_policy.items())
    tau = agent.cfg.sac.tau
    for name, new in agent.critic_target.state_dict().items():
        expected = (1 - tau) * before_target[name] + tau * agent.critic.state_dict()[name]
        torch.testing.assert_close(new, expected)
    assert {"critic_loss", "actor_loss", "ent_coef", "ent_coef_loss"} <= metrics.keys()
    if k > 1:
        assert metrics["best_expert_freq"].shape == (k,)
        assert metrics["best_expert_freq"].sum().item() == pytest.approx(1.0)
    assert agent.update(random_batch()) == {}


def test_fixed_entropy_coefficient():
    agent = make_agent(ent_coef=0.05)
    agent.update(random_batch())
    assert agent.log_alpha.exp().item() == pytest.approx(0.05)
    assert agent.alpha_opt is None


@pytest.mark.parametrize("new_capacity", [3, 8])
def test_replay_buffer_restores_into_another_capacity_keeping_the_newest(new_capacity):
    buf = ReplayBuffer(5, obs_dim=1, act_dim=1)
    for i in range(7):  # wrapped: holds transitions 2..6
        buf.add(np.array([i]), np.array([0.0]), float(i), np.array([i]), False)
    other = ReplayBuffer(new_capacity, 1, 1)
    other.load_state_dict(*buf.state_dict())
    expected = [2.0, 3.0, 4.0, 5.0, 6.0][-new_capacity:]
    assert other.transitions().rewards.tolist()[: len(expected)] == expected
    other.add(np.array([7]), np.array([0.0]), 7.0, np.array([7]), False)
    assert 7.0 in other.transitions().rewards.tolist() and len(other) == min(new_capacity, 6)
