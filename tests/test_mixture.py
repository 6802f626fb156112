"""Mixture log-densities and sampling against torch.distributions and SB3's squashed Gaussian."""

import pytest
import torch
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    Normal,
    TanhTransform,
    TransformedDistribution,
)

from pmoe_rl.estimators import next_action
from pmoe_rl.mixture import SquashedMixture, gather_expert
from pmoe_rl.policies import MixturePolicy, PPOPolicy


def random_mixture(b=64, k=3, a=2):
    mean = torch.randn(b, k, a) * 0.7
    log_std = torch.randn(b, k, a) * 0.3 - 0.5
    log_w = torch.log_softmax(torch.randn(b, k), -1)
    return SquashedMixture(mean, log_std, log_w)


def reference(dist: SquashedMixture):
    """pi(a|s) = sum_k w_k TanhNormal_k, built from torch.distributions."""
    comp = Independent(TransformedDistribution(Normal(dist.mean, dist.log_std.exp()), [TanhTransform()]), 1)
    return MixtureSameFamily(Categorical(logits=dist.log_w), comp), comp


def test_mixture_log_prob_matches_torch_distributions():
    dist = random_mixture()
    ref, _ = reference(dist)
    u = torch.randn(64, 2) * 0.8  # actions away from +-1, where rlkit's 1e-6 epsilon is negligible
    ours = dist.mixture_log_prob(u)
    torch.testing.assert_close(ours, ref.log_prob(torch.tanh(u)), atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(dist.log_prob(torch.tanh(u)), ours, atol=1e-4, rtol=1e-5)


def test_candidate_actions_and_component_log_prob():
    dist = random_mixture()
    ref, comp = reference(dist)
    u = dist.rsample()  # (B, K, A): expert k's own sample
    # each expert's density of its own sample
    own = comp.log_prob(torch.tanh(u))  # broadcasting: expert k evaluated at u[:, k]
    torch.testing.assert_close(dist.component_log_prob(u), own, atol=2e-4, rtol=1e-5)
    # the mixture density of all K candidates at once equals K separate calls
    many = dist.mixture_log_prob(u)
    for k in range(3):
        torch.testing.assert_close(many[:, k], ref.log_prob(torch.tanh(u[:, k])), atol=2e-4, rtol=1e-5)


def test_single_expert_matches_sb3_squashed_gaussian():
    from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution

    dist = random_mixture(k=1, a=3)
    sb3 = SquashedDiagGaussianDistribution(3).proba_distribution(dist.mean[:, 0], dist.log_std[:, 0])
    actions = torch.tanh(torch.randn(64, 3) * 0.8)
    torch.testing.assert_close(dist.log_prob(actions), sb3.log_prob(actions), atol=1e-4, rtol=1e-5)


def test_rsample_is_reparameterised():
    mean = torch.zeros(5, 2, 3, requires_grad=True)
    log_std = torch.zeros(5, 2, 3, requires_grad=True)
    dist = SquashedMixture(mean, log_std, torch.log(torch.full((5, 2), 0.5)))
    dist.rsample().sum().backward()
    assert torch.equal(mean.grad, torch.ones_like(mean))
    assert log_std.grad.abs().sum() > 0


def test_sample_expert_frequencies_follow_the_gate():
    w = torch.tensor([0.1, 0.6, 0.05, 0.25])
    dist = SquashedMixture(torch.zeros(20000, 4, 1), torch.zeros(20000, 4, 1), w.log().expand(20000, 4))
    freq = torch.bincount(dist.sample_expert(torch.Generator().manual_seed(0)), minlength=4) / 20000
    # 4 sigma of a binomial proportion with n = 20000
    assert torch.all((freq - w).abs() < 4 * torch.sqrt(w * (1 - w) / 20000))


@pytest.mark.parametrize("where", ["mixture", "ppo"])
def test_noise_scale_scales_each_experts_std_and_leaves_the_expert_choice_alone(where):
    """collect's --noise-scale c: a ~ N(mu_k, (c sigma_k)^2) with k ~ Cat(w) as before; the same generator state
    gives the same k and eps, so a_c - mu_k = c (a_1 - mu_k) exactly, and the spread is c sigma_k."""
    torch.manual_seed(0)
    n, c = 20000, 0.3
    if where == "mixture":
        one = random_mixture(b=1, k=3, a=2)
        dist = SquashedMixture(one.mean.expand(n, 3, 2), one.log_std.expand(n, 3, 2), one.log_w.expand(n, 3))
        draw = lambda g, scale: dist.sample(g, noise_scale=scale)  # noqa: E731
        mean, std = dist.mean, dist.log_std.exp()
    else:
        policy = PPOPolicy(obs_dim=4, act_dim=2, n_experts=3, norm_obs=False)
        with torch.no_grad():
            policy.log_std.copy_(torch.randn(3, 2) * 0.3 - 0.5)
            policy.gate.weight.normal_()
        obs = torch.randn(1, 4).expand(n, 4)
        draw = lambda g, scale: policy.sample(obs, generator=g, noise_scale=scale)  # noqa: E731
        with torch.no_grad():
            mean, std = policy(obs).mean, policy.log_std.exp().expand(n, 3, 2)
    a1, k1 = draw(torch.Generator().manual_seed(1), 1.0)
    ac, kc = draw(torch.Generator().manual_seed(1), c)
    a0, _ = draw(torch.Generator().manual_seed(1), 0.0)
    assert torch.equal(k1, kc)
    mu_k, sigma_k = gather_expert(mean, k1), gather_expert(std, k1)
    torch.testing.assert_close(ac - mu_k, c * (a1 - mu_k))
    torch.testing.assert_close(a0, mu_k)
    z = (ac - mu_k) / (c * sigma_k)  # standard normal if the spread is c sigma_k
    assert abs(z.std().item() - 1.0) < 0.02 and abs(z.mean().item()) < 0.02


def test_gather_expert():
    x = torch.arange(24.0).view(2, 3, 4)
    out = gather_expert(x, torch.tensor([2, 0]))
    assert torch.equal(out, torch.stack([x[0, 2], x[1, 0]]))


def test_policy_shapes_gate_detached_and_acting():
    policy = MixturePolicy(5, 2, n_experts=4, hidden=[16, 16])
    obs = torch.randn(7, 5)
    dist = policy(obs)
    assert dist.mean.shape == (7, 4, 2) and dist.log_w.shape == (7, 4)
    torch.testing.assert_close(dist.weights.sum(-1), torch.ones(7))
    # the gate sees the detached trunk: its loss leaves the trunk without gradient
    dist.log_w.sum().backward()
    assert all(p.grad is None for p in policy.trunk.parameters())
    assert policy.gate.weight.grad is not None
    action, k = policy.act(obs, deterministic=True, generator=torch.Generator().manual_seed(1))
    dist = policy(obs)
    torch.testing.assert_close(action, torch.tanh(gather_expert(dist.mean, k)))
    action, _ = policy.act(obs)
    assert action.shape == (7, 2) and action.abs().max() <= 1


def test_log_std_is_clamped():
    policy = MixturePolicy(3, 2, n_experts=2, hidden=[8], log_std_min=-1.0, log_std_max=0.5)
    with torch.no_grad():
        policy.log_std_head.bias.fill_(10.0)
    assert policy(torch.randn(4, 3)).log_std.max().item() == pytest.approx(0.5)
    with torch.no_grad():
        policy.log_std_head.bias.fill_(-10.0)
    assert policy(torch.randn(4, 3)).log_std.min().item() == pytest.approx(-1.0)


def test_deterministic_acting_is_the_most_probable_experts_mean_by_default():
    policy = MixturePolicy(3, 2, n_experts=3, hidden=[8], gate_input="obs")
    with torch.no_grad():
        policy.gate.weight.normal_(0, 3.0)  # gate weights that differ between states
    obs = torch.randn(10, 3)
    action, k = policy.act(obs, deterministic=True)
    dist = policy(obs)
    assert torch.equal(k, dist.log_w.argmax(-1)) and len(set(k.tolist())) > 1
    torch.testing.assert_close(action, torch.tanh(gather_expert(dist.mean, k)))
    torch.rand(1)
    assert torch.equal(policy.act(obs, deterministic=True)[0], action)  # a function of the observation
    assert torch.isfinite(dist.mixture_log_prob(torch.zeros(10, 2))).all()


def test_sample_eval_expert_draws_the_expert_from_the_gate():
    policy = MixturePolicy(3, 2, n_experts=3, hidden=[8], eval_expert="sample")
    obs = torch.randn(1, 3).expand(20000, 3)
    _, k = policy.act(obs, deterministic=True, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(k, minlength=3) / 20000
    torch.testing.assert_close(freq, policy(obs[:1]).weights[0], atol=0.02, rtol=0)


def test_rsample_with_log_prob_matches_component_log_prob_in_value_and_gradient():
    mean = (torch.randn(16, 3, 2) * 0.5).requires_grad_()
    log_std = (torch.randn(16, 3, 2) * 0.3 - 0.5).requires_grad_()
    dist = SquashedMixture(mean, log_std, torch.log_softmax(torch.randn(16, 3), -1))
    u, logp = dist.rsample_with_log_prob(torch.Generator().manual_seed(3))
    reference = dist.component_log_prob(u)
    torch.testing.assert_close(logp, reference)
    g1 = torch.autograd.grad(logp.sum(), (mean, log_std), retain_graph=True)
    g2 = torch.autograd.grad(reference.sum(), (mean, log_std))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_gate_on_the_raw_observation_option():
    policy = MixturePolicy(5, 2, n_experts=3, hidden=[16], gate_input="obs")
    assert policy.gate.weight.shape == (3, 5)
    obs = torch.randn(4, 5)
    policy(obs).log_w.sum().backward()
    assert policy.gate.weight.grad is not None
    assert all(p.grad is None for p in policy.trunk.parameters())


def test_argmax_behavior_expert_samples_the_most_probable_expert_in_acting_and_in_the_target():
    policy = MixturePolicy(3, 2, n_experts=3, hidden=[8], gate_input="obs")
    with torch.no_grad():
        policy.gate.weight.normal_(0, 3.0)  # the most probable expert differs between states
    obs = torch.randn(1, 3).expand(20000, 3)
    dist = policy(obs[:1])
    mode = int(dist.log_w.argmax())
    action, k = policy.act(obs, generator=torch.Generator().manual_seed(0), expert="argmax")
    assert (k == mode).all()
    u = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6))  # back to the pre-squash sample: N(mu_k, sigma_k)
    torch.testing.assert_close(u.mean(0), dist.mean[0, mode], atol=0.03, rtol=0)
    torch.testing.assert_close(u.std(0), dist.log_std[0, mode].exp(), atol=0.03, rtol=0)
    _, k = policy.act(obs, generator=torch.Generator().manual_seed(0))  # the default draws it from the gate
    torch.testing.assert_close(torch.bincount(k, minlength=3) / 20000, dist.weights[0], atol=0.02, rtol=0)
    # the critic target's a' follows the same rule: with near-zero noise it is the most probable expert's mean
    states = torch.randn(50, 3)
    sharp = policy(states)
    sharp = SquashedMixture(sharp.mean, torch.full_like(sharp.log_std, -12.0), sharp.log_w)
    next_a, _ = next_action(sharp, "component", "argmax")
    torch.testing.assert_close(next_a, torch.tanh(gather_expert(sharp.mean, sharp.log_w.argmax(-1))), atol=1e-4, rtol=0)
