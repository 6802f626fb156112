"""The surrogate optimiser against closed forms: first-order agreement, majorisation for eta <= 1/L (and its failure
far above), the projection view for a linear model, plain gradient descent for m = 1, the evaluation counts and
the host reads of the inner loop."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from test_devices import count_host_reads

from pmoe_rl.sso import SSO, divergence


@pytest.fixture(autouse=True)
def float64():
    """The closed forms are compared tightly: every test here runs in float64."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def mlp(seed: int, d_in: int = 5, d_out: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, 16), torch.nn.Tanh(), torch.nn.Linear(16, d_out))


def logistic(y):
    """mean_i log(1 + exp(-y_i z_i)): each term is 1/4-smooth in z_i."""
    return lambda z: F.softplus(-y * z.squeeze(-1)).mean()


def squared(y):
    """mean_i ||z_i - y_i||^2: each term is 2-smooth."""
    return lambda z: (z - y.view_as(z)).pow(2).sum(-1).mean()


def problem(seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = torch.where(torch.randn(n, generator=g) > 0, 1.0, -1.0)
    return x, y


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def surrogate_at(opt, model, x, loss, eta):
    """g_t as a function of the model's current parameters, taken at the current ones."""
    z_t, grads, value = opt.target_gradient(lambda: model(x), loss, None)
    return (lambda: opt.surrogate(lambda: model(x), z_t, grads, eta)), value


@pytest.mark.parametrize("seed", range(3))
def test_the_surrogate_has_the_objectives_gradient_at_theta_t(seed):
    x, y = problem(seed)
    model = mlp(seed)
    loss = logistic(y)
    opt = SSO(model.parameters(), eta=4.0)
    g_t, _ = surrogate_at(opt, model, x, loss, 4.0)
    grad_g = torch.autograd.grad(g_t(), list(model.parameters()))
    grad_f = torch.autograd.grad(loss(model(x)), list(model.parameters()))
    for a, b in zip(grad_g, grad_f):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert abs(float(g_t().detach())) < 1e-12  # tight at theta_t


def majorisation_gap(seed: int, loss_of, eta: float) -> float:
    """max over random parameters near theta_t of f(theta) - f(theta_t) - g_t(theta) (<= 0: g_t majorises)."""
    x, y = problem(seed)
    model = mlp(seed)
    loss = loss_of(y)
    opt = SSO(model.parameters(), eta=eta)
    g_t, f_t = surrogate_at(opt, model, x, loss, eta)
    start = params_of(model)
    gen = torch.Generator().manual_seed(100 + seed)
    worst = -float("inf")
    with torch.no_grad():
        for scale in (0.03, 0.1, 0.3, 1.0, 3.0):
            for _ in range(40):
                for p, p0 in zip(model.parameters(), start):
                    p.copy_(p0 + scale * torch.randn(p.shape, generator=gen))
                worst = max(worst, float(loss(model(x)) - f_t - g_t()))
    return worst


@pytest.mark.parametrize("seed", range(3))
def test_majorisation_holds_for_eta_up_to_one_over_l_and_fails_far_above(seed):
    # logistic: L = 1/4 per sample; squared error: L = 2
    assert majorisation_gap(seed, logistic, eta=4.0) <= 1e-12
    assert majorisation_gap(seed, logistic, eta=2.0) <= 1e-12
    assert majorisation_gap(seed, squared, eta=0.5) <= 1e-12
    assert majorisation_gap(seed, logistic, eta=40.0) > 1e-3
    assert majorisation_gap(seed, squared, eta=5.0) > 1e-3


def test_kl_logits_surrogate_of_cross_entropy_is_exact_at_eta_one():
    # cross-entropy is l(z) = lse(z) - <y, z>, so l(z) - l(z_t) - <grad, z - z_t> is the Bregman divergence of lse:
    # with eta = 1 the mirror surrogate equals f - f(theta_t) everywhere
    x, _ = problem(0)
    labels = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(0))
    model = mlp(0, d_out=3)
    loss = lambda z: F.cross_entropy(z, labels)  # noqa: E731
    opt = SSO(model.parameters(), eta=1.0, divergence="kl_logits")
    g_t, f_t = surrogate_at(opt, model, x, loss, 1.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape))
        torch.testing.assert_close(g_t(), loss(model(x)) - f_t)
    z, z_t = torch.randn(4, 3), torch.randn(4, 3)
    reference = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=z_t), torch.distributions.Categorical(logits=z)
    ).sum()
    torch.testing.assert_close(divergence("kl_logits", z, z_t), reference)


def test_the_surrogates_minimiser_for_a_linear_model_is_a_target_step_then_a_least_squares_fit():
    x, y = problem(1)
    x = x[:, :3]
    model = torch.nn.Linear(3, 2)
    labels = torch.randn(64, 2, generator=torch.Generator().manual_seed(5))
    loss = squared(labels)
    eta = 0.2  # < 1/L: the target step does not land on the labels
    with torch.no_grad():
        z_t = model(x)
    target = z_t - eta * 2.0 * (z_t - labels)  # z_t - eta grad l_i(z_t)
    design = torch.cat([x, torch.ones(64, 1)], 1)
    fit = torch.linalg.lstsq(design, target).solution  # (4, 2): weights then bias
    opt = SSO(model.parameters(), eta=eta, inner_steps=500, tol=1e-10)
    opt.step(lambda: model(x), loss=loss)
    torch.testing.assert_close(model.weight.detach(), fit[:3].T, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.bias.detach(), fit[3], rtol=1e-6, atol=1e-7)


def test_one_inner_sgd_step_is_one_gradient_step_on_the_objective():
    x, y = problem(2)
    loss = logistic(y)
    model, reference = mlp(2), mlp(2)
    sso = SSO(model.parameters(), eta=4.0, inner_steps=1, inner="sgd", lr=0.3)
    sgd = torch.optim.SGD(reference.parameters(), lr=0.3)
    for _ in range(3):
        sso.step(lambda: model(x), loss=loss)
        sgd.zero_grad()
        loss(reference(x)).backward()
        sgd.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_full_batch_armijo_never_increases_the_objective_and_more_inner_steps_help():
    x, y = problem(3)
    loss = squared(y.unsqueeze(-1))
    after = {}
    for m in (1, 5, 20):
        model = mlp(3)
        opt = SSO(model.parameters(), eta=0.5, inner_steps=m)
        values = [float(loss(model(x)).detach())]
        for _ in range(5):
            opt.step(lambda m=model: m(x), loss=loss)
            values.append(float(loss(model(x)).detach()))
        assert all(b <= a + 1e-12 for a, b in zip(values, values[1:])), values
        after[m] = values[1]
    assert after[20] < after[5] < after[1]


@pytest.mark.parametrize("inner", ["sgd", "adam", "armijo"])
def test_evaluation_counts_and_host_reads(inner):
    x, y = problem(4)
    model = mlp(4)
    opt = SSO(model.parameters(), eta=0.5, inner_steps=7, inner=inner, lr=0.01)
    grad = torch.randn(64, 1)  # a target gradient from elsewhere (a critic, an environment)
    with count_host_reads() as reads:
        for _ in range(3):
            out = opt.step(lambda: model(x), grad=grad)
    assert opt.expensive_evals == 3 and opt.outer_steps == 3
    assert set(out) >= {"eta", "surrogate"} and "loss" not in out
    if inner == "armijo":  # one read per line-search trial, nothing else
        trials = opt.line_search_trials
        assert opt.inner_steps_taken <= 21 and trials >= opt.inner_steps_taken
        assert opt.cheap_evals == 3 + opt.inner_steps_taken + trials  # z_t, g(w) once per inner step, the trials
        assert sum(reads.values()) == reads["tolist"] == trials
    else:
        assert opt.inner_steps_taken == 21 and opt.cheap_evals == 3 * (1 + 7)
        assert sum(reads.values()) == 0


def test_sqrt_schedule_and_state_dict_round_trip():
    x, y = problem(5)
    loss = logistic(y)
    model = mlp(5)
    opt = SSO(model.parameters(), eta=2.0, inner_steps=3, inner="adam", lr=1e-2, eta_schedule="sqrt")
    etas = [float(opt.step(lambda: model(x), loss=loss)["eta"]) for _ in range(4)]
    assert etas == pytest.approx([2.0 / (t + 1) ** 0.5 for t in range(4)])
    twin_model = copy.deepcopy(model)
    twin = SSO(twin_model.parameters(), eta=2.0, inner_steps=3, inner="adam", lr=1e-2, eta_schedule="sqrt")
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint would: not shared
    assert twin.outer_steps == 4 and twin.expensive_evals == 4
    opt.step(lambda: model(x), loss=loss)
    twin.step(lambda: twin_model(x), loss=loss)
    for a, b in zip(model.parameters(), twin_model.parameters()):
        torch.testing.assert_close(a, b)


def test_bad_arguments_are_refused():
    model = mlp(0)
    with pytest.raises(ValueError, match="inner must be one of"):
        SSO(model.parameters(), inner="lbfgs")
    with pytest.raises(ValueError, match="eta, lr and init_step must be positive"):
        SSO(model.parameters(), eta=0.0)
    opt = SSO(model.parameters())
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match="exactly one of"):
        opt.step(lambda: model(x))
    with pytest.raises(ValueError, match="grad shapes"):
        opt.step(lambda: model(x), grad=torch.zeros(3, 1))
