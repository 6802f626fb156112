"""The baseline estimators (gumbel, score, mrp) and the composed heads (moe, mcp): gradients against finite
differences or an exact expectation, densities against torch.distributions."""

import pytest
import torch
from conftest import SMALL
from torch import distributions as D

from pmoe_rl import load_policy, train
from pmoe_rl.errors import cli_main
from pmoe_rl.estimators import MRP, ActorBatch, Gumbel, Score
from pmoe_rl.mixture import expert_separation
from pmoe_rl.policies import CompositePolicy, MixturePolicy

TARGET = torch.tensor([0.3, -0.5], dtype=torch.float64)


def toy_q(obs, act):
    """A smooth critic preferring actions near TARGET, for (B, A) and (B, K, A) actions."""
    return -(act - TARGET.to(act.dtype)).pow(2).sum(-1) + 0.1 * obs[..., :1].mean(-1, keepdim=act.dim() == 3)


def _policy(k=3, seed=0):
    torch.manual_seed(seed)
    policy = MixturePolicy(4, 2, n_experts=k, hidden=[8], gate_input="obs").double()
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0, 0.4)
    return policy


def _loss_with_fixed_noise(policy, obs, eps, estimator, gumbels=None):
    """The estimator's loss as a deterministic function of the parameters (its noise held fixed)."""
    dist = policy(obs)
    u = dist.mean + dist.log_std.exp() * eps
    logp = dist.component_log_prob(u)
    if gumbels is not None:  # replay the same Gumbel noise: exponential_() is what gumbel() draws
        it = iter([gumbels])
        original = torch.Tensor.exponential_
        torch.Tensor.exponential_ = lambda self, *a, **k: self.copy_(next(it))
        try:
            return estimator(ActorBatch(obs, dist, u, logp), toy_q, torch.tensor(0.2, dtype=torch.float64))["loss"]
        finally:
            torch.Tensor.exponential_ = original
    return estimator(ActorBatch(obs, dist, u, logp), toy_q, torch.tensor(0.2, dtype=torch.float64))["loss"]


@pytest.mark.parametrize("name, estimator", [("gumbel", Gumbel(gumbel_tau=0.7, gumbel_hard=False)), ("mrp", MRP())])
def test_pathwise_estimators_match_finite_differences(name, estimator):
    policy = _policy()
    obs = torch.randn(6, 4, dtype=torch.float64)
    eps = torch.randn(6, 3, 2, dtype=torch.float64)
    expo = torch.empty(6, 3, dtype=torch.float64).exponential_() if name == "gumbel" else None
    params = list(policy.parameters())
    loss = _loss_with_fixed_noise(policy, obs, eps, estimator, expo)
    grads = torch.autograd.grad(loss, params)
    h = 1e-6
    for p, g in zip(params, grads):
        for idx in [tuple(torch.randint(0, s, (1,)).item() for s in p.shape) for _ in range(4)]:
            with torch.no_grad():
                p[idx] += h
                up = _loss_with_fixed_noise(policy, obs, eps, estimator, expo)
                p[idx] -= 2 * h
                down = _loss_with_fixed_noise(policy, obs, eps, estimator, expo)
                p[idx] += h
            assert g[idx].item() == pytest.approx(((up - down) / (2 * h)).item(), rel=1e-4, abs=1e-7)


def test_mrp_loss_is_the_expected_sac_loss_over_the_experts():
    policy = _policy()
    obs = torch.randn(5, 4, dtype=torch.float64)
    dist = policy(obs)
    u, logp = dist.rsample_with_log_prob()
    alpha = torch.tensor(0.2, dtype=torch.float64)
    loss = MRP()(ActorBatch(obs, dist, u, logp), toy_q, alpha)["loss"]
    per_expert = torch.stack(
        [alpha * dist.mixture_log_prob(u[:, k]) - toy_q(obs, torch.tanh(u[:, k])) for k in range(3)], -1
    )
    torch.testing.assert_close(loss, (dist.weights * per_expert).sum(-1).mean())


def test_gumbel_hard_acts_with_one_expert_but_differentiates_the_relaxation():
    policy = _policy()
    obs = torch.randn(64, 4, dtype=torch.float64)
    dist = policy(obs)
    u, logp = dist.rsample_with_log_prob()
    out = Gumbel(gumbel_hard=True, gumbel_tau=0.5)(
        ActorBatch(obs, dist, u, logp), toy_q, torch.tensor(0.0, dtype=torch.float64)
    )
    out["loss"].backward()
    assert policy.gate.weight.grad.abs().sum() > 0  # the straight-through gradient reaches the gate


@pytest.mark.parametrize("baseline", ["experts", "batch", "none"])
def test_score_gradient_is_unbiased_for_the_gate(baseline):
    """For fixed expert samples, E_k~Cat(w)[score estimator's gate gradient] equals the exact gradient of
    sum_k w_k f(a_k) (which the mrp estimator computes): averaged over 40,000 draws of k."""
    policy = _policy(k=3, seed=1)
    obs1 = torch.randn(1, 4, dtype=torch.float64)
    dist1 = policy(obs1)
    u1 = dist1.rsample().detach()
    alpha = torch.tensor(0.2, dtype=torch.float64)
    exact = torch.autograd.grad(
        MRP()(ActorBatch(obs1, policy(obs1), u1, None), toy_q, alpha)["loss"], policy.gate.weight
    )[0]
    n = 40_000
    obs, u = obs1.expand(n, 4), u1.expand(n, 3, 2)
    torch.manual_seed(2)
    dist = policy(obs)
    loss = Score(score_baseline=baseline)(ActorBatch(obs, dist, u, None), toy_q, alpha)["loss"]
    estimate = torch.autograd.grad(loss, policy.gate.weight)[0]
    torch.testing.assert_close(estimate, exact, atol=0.03 * exact.abs().max().item(), rtol=0.05)


def _head_reference(policy: CompositePolicy, obs):
    mean_k, log_std_k, w = policy.primitives(obs)
    std_k = log_std_k.exp()
    w = w.unsqueeze(-1)
    if policy.head == "moe":
        mean, std = (w * mean_k).sum(-2), (w * std_k).sum(-2)
    else:  # normalised product of the weighted Gaussian factors N(mu_k, sigma_k^2 / w_k), per dimension
        var = 1.0 / (w / std_k.pow(2)).sum(-2)
        mean, std = var * (w * mean_k / std_k.pow(2)).sum(-2), var.sqrt()
    return D.Independent(D.TransformedDistribution(D.Normal(mean, std), [D.TanhTransform()]), 1)


@pytest.mark.parametrize("head", ["moe", "mcp"])
def test_composed_heads_log_density_matches_torch_distributions(head):
    torch.manual_seed(0)
    policy = CompositePolicy(5, 3, n_primitives=4, head=head, hidden=[16]).double()
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0, 0.3)
    obs = torch.randn(32, 5, dtype=torch.float64)
    dist = policy(obs)
    assert dist.n_experts == 1 and policy.n_primitives == 4
    actions = torch.rand(32, 3, dtype=torch.float64) * 1.6 - 0.8
    torch.testing.assert_close(
        dist.log_prob(actions), _head_reference(policy, obs).log_prob(actions), atol=1e-5, rtol=1e-5
    )  # rlkit's 1e-6 in the tanh correction
    if head == "mcp":  # MCP's weights are sigmoids, not normalised
        assert not torch.allclose(policy.primitives(obs)[2].sum(-1), torch.ones(32, dtype=torch.float64))


def test_mcp_product_of_gaussians_closed_form():
    """Two equally weighted unit-weight primitives N(0, 1) and N(2, 1): the product is N(1, 1/2)."""
    policy = CompositePolicy(1, 1, n_primitives=2, head="mcp", hidden=[4])
    with torch.no_grad():
        policy.mean_head.weight.zero_()
        policy.mean_head.bias.copy_(torch.tensor([0.0, 2.0]))
        policy.log_std_head.weight.zero_()
        policy.log_std_head.bias.zero_()
        policy.gate.weight.zero_()
        policy.gate.bias.fill_(20.0)  # sigmoid -> 1
    dist = policy(torch.zeros(1, 1))
    torch.testing.assert_close(dist.mean, torch.tensor([[[1.0]]]))
    torch.testing.assert_close(dist.log_std.exp().pow(2), torch.tensor([[[0.5]]]))


def test_expert_separation_closed_form():
    mean = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])  # distance 5
    log_std = torch.log(torch.full((1, 2, 2), 0.5))  # spread sqrt(2 * 0.25)
    assert expert_separation(mean, log_std).item() == pytest.approx(5 / (0.5 * 2**0.5))
    assert expert_separation(mean[:, :1], log_std[:, :1]).item() == 0.0


@pytest.mark.parametrize("env_id", ["InvertedPendulum-v5", "pmoe_rl/MultiGoal-v0"])
@pytest.mark.parametrize(
    "variant",
    [
        ["--estimator", "gumbel"],
        ["--estimator", "score"],
        ["--estimator", "mrp"],
        ["--policy", "moe"],
        ["--policy", "mcp"],
    ],
)
def test_every_variant_trains_from_the_cli(variant, env_id, tmp_path):
    """Each baseline trains end to end from the command line (the issue's bar), and its gradient reaches the
    gate: the gate's weights move between the first update and the last, and stay finite."""
    run = tmp_path / "run"
    assert (
        cli_main(
            train.main,
            [
                "--env",
                env_id,
                *variant,
                "--steps",
                "400",
                "--checkpoint-every",
                "100",
                "--eval-every",
                "400",
                "--eval-episodes",
                "2",
                "--run-dir",
                str(run),
                *SMALL,
            ],
        )
        == 0
    )
    first, _ = load_policy(run / "checkpoints" / "step_000000100")
    last, _ = load_policy(run)
    assert torch.isfinite(last.gate.weight).all()
    assert not torch.allclose(first.gate.weight, last.gate.weight)
