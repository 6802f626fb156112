"""The PMOE estimator (reference/pmoe.md §2): gradient routing, closed-form values, the gate's target."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pmoe_rl.estimators import PMOE, ActorBatch
from pmoe_rl.mixture import SquashedMixture, best_expert, gate_loss, gather_expert
from pmoe_rl.policies import MixturePolicy

TARGET = torch.tensor([0.3, -0.5])


def toy_q(obs, act):
    """A critic that prefers actions near TARGET; works for (B, A) and (B, K, A) actions."""
    return -(act - TARGET).pow(2).sum(-1)


def forward(k=3, b=32, seed=0):
    torch.manual_seed(seed)
    policy = MixturePolicy(4, 2, n_experts=k, hidden=[16])
    obs = torch.randn(b, 4)
    dist = policy(obs)
    for t in (dist.mean, dist.log_std, dist.log_w):
        if t.requires_grad:
            t.retain_grad()
    u = dist.rsample()
    logp = dist.component_log_prob(u)
    return policy, obs, dist, u, logp


def test_best_expert_is_argmax_of_q():
    _, obs, dist, u, _ = forward()
    k_star = best_expert(torch.tanh(u), lambda a: toy_q(obs, a))
    q = torch.stack([toy_q(obs, torch.tanh(u[:, k])) for k in range(3)], -1)
    assert torch.equal(k_star, q.argmax(-1))
    assert len(set(k_star.tolist())) > 1  # the test exercises several experts


@pytest.mark.parametrize("select_by", ["mean", "sample"])
def test_select_by_compares_the_experts_means_or_their_samples(select_by):
    """``select_by=mean`` (default): k* = argmax_k Q(s, tanh(mu_k)), whatever the samples; ``sample`` (official):
    argmax_k Q(s, tanh(u_k)). The reference scores each expert's action with its own critic call."""
    _, obs, dist, u, _ = forward(k=4, b=256)
    k_star = best_expert(PMOE(select_by=select_by).candidates(dist, u), lambda a: toy_q(obs, a))
    by_means, by_samples = (
        torch.stack([toy_q(obs, torch.tanh(x[:, k])) for k in range(4)], -1).argmax(-1) for x in (dist.mean, u)
    )
    assert torch.equal(k_star, by_means if select_by == "mean" else by_samples)
    assert (by_means != by_samples).float().mean() > 0.2  # the two rules really differ on this batch


@pytest.mark.parametrize("update_sample", ["selected", "fresh"])
def test_actor_loss_value_and_gradient_reach_only_the_best_expert(update_sample):
    policy, obs, dist, u, logp = forward()
    alpha = torch.tensor(0.2)
    k_star = best_expert(torch.tanh(u.detach()), lambda a: toy_q(obs, a))
    torch.manual_seed(5)
    out = PMOE(update_sample=update_sample, policy_logp="component")(
        ActorBatch(obs, dist, u, logp, k_star), toy_q, alpha
    )
    rows = torch.arange(32)
    if update_sample == "selected":  # the official loss: the sample that won
        u_star, logp_star = u[rows, k_star], logp[rows, k_star]
    else:  # a new draw of expert k*, with the same generator state
        torch.manual_seed(5)
        eps = torch.randn(32, 2)
        u_star = dist.mean[rows, k_star] + dist.log_std[rows, k_star].exp() * eps
        logp_star = dist.component_log_prob(u_star.unsqueeze(1).expand(-1, 3, -1))[rows, k_star]
    expected = (alpha * logp_star - toy_q(obs, torch.tanh(u_star))).mean()
    torch.testing.assert_close(out["policy_loss"], expected)

    out["policy_loss"].backward(retain_graph=True)
    chosen = F.one_hot(k_star, 3).bool()
    for grad in (dist.mean.grad, dist.log_std.grad):
        assert grad[~chosen].abs().max() == 0  # other experts' outputs get nothing
        assert (grad[chosen].abs().sum(-1) > 0).all()  # the chosen expert's outputs do
    assert dist.log_w.grad is None or dist.log_w.grad.abs().max() == 0  # w does not appear in L_pi
    assert policy.gate.weight.grad is None or policy.gate.weight.grad.abs().max() == 0


def test_gate_receives_only_the_mse_frequency_gradient():
    policy, obs, dist, u, logp = forward()
    k_star = best_expert(torch.tanh(u.detach()), lambda a: toy_q(obs, a))
    g = gate_loss(dist, k_star, "mse")
    onehot = F.one_hot(k_star, 3).float()
    w = dist.weights.detach()
    torch.testing.assert_close(g, ((w - onehot) ** 2).mean())
    g.backward()
    # closed form: dL/dw = 2 (w - onehot) / (B K), and log_w.grad = w * dL/dw
    torch.testing.assert_close(dist.log_w.grad, w * 2 * (w - onehot) / (32 * 3))
    assert dist.mean.grad is None and dist.log_std.grad is None
    assert all(p.grad is None for p in policy.trunk.parameters())  # the gate reads the detached trunk


def test_gate_regresses_onto_best_expert_frequencies():
    """Minimising the MSE gate loss with random k* ~ p drives w to p (the 'frequency' reading)."""
    torch.manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = torch.zeros(4, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.02)
    for _ in range(3000):
        k_star = torch.multinomial(p, 256, replacement=True)
        log_w = torch.log_softmax(logits, -1).expand(256, 4)
        dist = SquashedMixture(torch.zeros(256, 4, 1), torch.zeros(256, 4, 1), log_w)
        loss = gate_loss(dist, k_star, "mse")
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(torch.softmax(logits, -1).detach(), p, atol=0.02, rtol=0)


def test_cross_entropy_gate_option():
    _, obs, dist, u, _ = forward()
    k_star = best_expert(torch.tanh(u.detach()), lambda a: toy_q(obs, a))
    torch.testing.assert_close(gate_loss(dist, k_star, "ce"), -dist.log_w[torch.arange(32), k_star].mean())


def test_all_experts_option_sums_every_experts_loss():
    _, obs, dist, u, logp = forward()
    alpha = torch.tensor(0.1)
    k_star = best_expert(torch.tanh(u.detach()), lambda a: toy_q(obs, a))
    out = PMOE(expert_update="all", policy_logp="component")(ActorBatch(obs, dist, u, logp, k_star), toy_q, alpha)
    q = torch.stack([toy_q(obs, torch.tanh(u[:, k])) for k in range(3)], -1)
    torch.testing.assert_close(out["policy_loss"], (alpha * logp - q).sum(-1).mean())
    out["policy_loss"].backward()
    assert (dist.mean.grad.abs().sum(-1) > 0).all()  # every expert learns


def torch_mixture_log_prob(dist: SquashedMixture, action: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) of squashed actions a (B, A) by torch.distributions: a gate-weighted mixture of tanh-transformed
    diagonal Gaussians (the independent reference)."""
    experts = torch.distributions.TransformedDistribution(
        torch.distributions.Independent(torch.distributions.Normal(dist.mean, dist.log_std.exp()), 1),
        torch.distributions.TanhTransform(),
    )
    return torch.logsumexp(dist.log_w + experts.log_prob(action.unsqueeze(1)), -1)


@pytest.mark.parametrize("expert_update", ["all", "best"])
def test_mixture_policy_logp_option_scores_each_sample_under_the_whole_mixture(expert_update):
    """``policy_logp="mixture"``: L_pi takes log pi(a|s) of the mixture (torch.distributions as the reference) at each
    expert's sample (``all``) or at the best one's; the gate learns only from its frequency regression."""
    _, obs, dist, u, logp = forward()
    u = u.clamp(-2, 2)  # TanhTransform's inverse is exact away from +-1
    alpha = torch.tensor(0.2)
    k_star = best_expert(torch.tanh(u.detach()), lambda a: toy_q(obs, a))
    loss = PMOE(expert_update=expert_update, update_sample="selected", policy_logp="mixture")
    out = loss(ActorBatch(obs, dist, u, logp, k_star), toy_q, alpha)
    with torch.no_grad():
        mix = torch.stack([torch_mixture_log_prob(dist, torch.tanh(u[:, k])) for k in range(3)], -1)
        q = torch.stack([toy_q(obs, torch.tanh(u[:, k])) for k in range(3)], -1)
        terms = alpha * mix - q
        expected = terms.sum(-1).mean() if expert_update == "all" else gather_expert(terms, k_star).mean()
    torch.testing.assert_close(out["policy_loss"], expected, rtol=1e-4, atol=1e-4)
    out["policy_loss"].backward()
    assert dist.log_w.grad is None or not dist.log_w.grad.any()  # the weights are constants in L_pi


def test_mixture_policy_logp_pushes_overlapping_experts_apart():
    """Two experts with the same std at means -0.05 and 0.05 and a flat critic: with the mixture's log-density the
    entropy term moves them apart; with each expert's own, only the squash acts, pulling both toward 0."""

    def distance_gradient(policy_logp):
        n = 4096
        mean = torch.tensor([[[-0.05], [0.05]]], requires_grad=True)
        dist = SquashedMixture(mean.expand(n, 2, 1), torch.full((n, 2, 1), -1.0), torch.full((n, 2), 0.5).log())
        torch.manual_seed(0)
        u = dist.rsample()
        batch = ActorBatch(torch.zeros(n, 1), dist, u, dist.component_log_prob(u), torch.zeros(n, dtype=torch.long))
        flat_q = lambda obs, a: torch.zeros(a.shape[:-1])  # noqa: E731
        loss = PMOE(expert_update="all", policy_logp=policy_logp)(batch, flat_q, torch.tensor(1.0))
        (grad,) = torch.autograd.grad(loss["policy_loss"], mean)
        return (grad[0, 1] - grad[0, 0]).item()  # d loss / d(mu_1 - mu_0), up to a factor 2

    assert distance_gradient("mixture") < -0.1 < 0.1 < distance_gradient("component")


def test_single_expert_is_plain_sac_actor_loss():
    _, obs, dist, u, logp = forward(k=1)
    alpha = torch.tensor(0.3)
    k_star = best_expert(torch.tanh(u), lambda a: toy_q(obs, a))
    assert k_star.eq(0).all()
    out = PMOE()(ActorBatch(obs, dist, u, logp, k_star), toy_q, alpha)
    assert "gate_loss" not in out  # one expert has no gate
    torch.testing.assert_close(out["loss"], (alpha * logp[:, 0] - toy_q(obs, torch.tanh(u[:, 0]))).mean())


@pytest.mark.parametrize("weight", [0.0, 2.5])
def test_gate_loss_weight(weight):
    _, obs, dist, u, logp = forward()
    k_star = best_expert(torch.tanh(u.detach()), lambda a: toy_q(obs, a))
    out = PMOE(gate_loss_weight=weight)(ActorBatch(obs, dist, u, logp, k_star), toy_q, torch.tensor(0.2))
    torch.testing.assert_close(out["loss"], out["policy_loss"] + weight * out["gate_loss"])
    assert gather_expert(logp, k_star).shape == (32,)


def sac_objective(mu: float, sigma: float, alpha: float, q) -> float:
    """E_{u ~ N(mu, sigma)}[alpha log pi(tanh u) - Q(tanh u)] for one action dimension, by Gauss-Hermite quadrature
    (200 nodes): the objective of one tanh-Gaussian expert, the independent reference for its expected gradient."""
    x, w = np.polynomial.hermite_e.hermegauss(200)  # nodes and weights for the weight exp(-x^2 / 2)
    u = mu + sigma * x
    logp = -0.5 * x**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi) - np.log(1 - np.tanh(u) ** 2 + 1e-6)
    return float((w * (alpha * logp - q(np.tanh(u)))).sum() / w.sum())


@pytest.mark.parametrize("mu", [0.0, -0.4])
def test_fresh_sample_gives_each_experts_own_sac_gradient_and_the_selected_one_does_not(mu):
    """K = 4 identical experts on a critic peaked at a = 0.5 (the identity task's picture, docs/pmoe_diagnosis.md).
    ``update_sample=fresh``: expert k*'s mean gets, in expectation, the gradient of its own SAC objective (quadrature
    + central finite difference), pointing towards the critic's peak. ``selected`` (official): the winning sample's
    noise points towards the peak, so the squash term of alpha log pi pushes the mean the other way and the expected
    gradient's sign flips."""
    sigma, alpha, b, k = 1.0, 1.0, 400_000, 4
    q = lambda a: -((a - 0.5) ** 2)  # noqa: E731
    h = 1e-4
    reference = (sac_objective(mu + h, sigma, alpha, q) - sac_objective(mu - h, sigma, alpha, q)) / (2 * h)
    assert reference < -0.05  # descending it moves the mean towards 0.5

    torch.manual_seed(0)
    obs = torch.zeros(b, 1, dtype=torch.float64)

    def q_fn(o, a):
        return q(a).sum(-1)

    grads = {}
    for update_sample in ("fresh", "selected"):
        mean0 = torch.tensor(mu, dtype=torch.float64, requires_grad=True)
        mean = mean0.expand(b, k, 1)
        dist = SquashedMixture(mean, torch.full((b, k, 1), np.log(sigma), dtype=torch.float64),
                               torch.full((b, k), -np.log(k), dtype=torch.float64))  # fmt: skip
        u, logp = dist.rsample_with_log_prob()
        k_star = best_expert(torch.tanh(u), lambda a: q(a).sum(-1))
        estimator = PMOE(update_sample=update_sample, policy_logp="component")
        out = estimator(ActorBatch(obs, dist, u, logp, k_star), q_fn, torch.tensor(alpha, dtype=torch.float64))
        # the policy loss is a mean over states of one expert's term: its gradient on the shared mean is that
        # expert's expected gradient
        grads[update_sample] = torch.autograd.grad(out["policy_loss"], mean0)[0].item()
    assert grads["fresh"] == pytest.approx(reference, abs=0.01)
    assert grads["selected"] > 0.05, grads  # the official estimator's mean moves away from the critic's peak
