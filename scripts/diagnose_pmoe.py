"""Instrumented PMOE-SAC: what the actor update sees, every ``--every`` updates (docs/pmoe_diagnosis.md).

Each variant is an ordinary ``python -m pmoe_rl.train`` run in this process with ``SAC.update`` wrapped: before
every ``--every``-th update, on that update's minibatch, with the policy and critic as they are,

- ``alpha``: the temperature; ``sigma``: the experts' mean pre-squash standard deviation;
- ``noise_alignment``: cos(eps_{k*}, grad_a Q(s, tanh mu_{k*})), the noise of the sample the actor loss is taken
  on against the direction in which the critic wants expert k*'s action to move (a noise drawn independently of
  the critic averages 0);
- ``mean_step_agrees``: the fraction of states where the actor loss's descent direction for mu_{k*} has a positive
  inner product with that critic gradient (1 = the mean moves where the critic points);
- ``entropy_share``: |grad_mu of alpha log pi_{k*}| / (that + |grad_mu of Q|), the share of the mean's gradient that
  comes from the entropy term;
- ``gate_max``: the mean largest gate weight; ``best_freq_max``: the largest share of states whose best expert is
  the same expert;
- identity task only: ``action_error`` |tanh(mu_k) - x| of the deterministic action (k = argmax w) and
  ``critic_error`` |argmax_a Q(x, a) - x| (over a grid of 201 actions).

Writes ``DIR/trace.jsonl`` (one record per variant, seed and probe), ``DIR/summary.md`` and ``DIR/diagnosis.png``.
With ``--checkpoints RUN...`` it trains nothing and probes finished runs' final checkpoints on their replay buffers.

    python scripts/diagnose_pmoe.py --env pmoe_rl/IdentityBox-v0 --steps 400 --every 10 --seeds 0 1 2 \\
        --variants official fresh gaussian --config configs/identity_sac.yaml --out results/diagnose_identity
    python scripts/diagnose_pmoe.py --env Hopper-v5 --steps 10000 --every 250 --eval-every 5000 \\
        --eval-episodes 5 --seeds 0 --variants official fresh gaussian --out results/diagnose_hopper
    python scripts/diagnose_pmoe.py --checkpoints results/issue15_hopper/runs/*_s2
    python scripts/diagnose_pmoe.py --acting results/issue15_hopper/runs/freshmix_s*
    python scripts/diagnose_pmoe.py --behaviour results/issue15_hopper/runs/*_s2 --eval-episodes 5

``--acting RUN...`` plays finished runs' final policies deterministically with each rule for the acting expert: the
gate's argmax (the package's evaluation), the critic's argmax over the experts' means
(argmax_k min_i Q_i(s, tanh mu_k)), and each expert alone; mean return over ``--eval-episodes``, evaluation seed 1000.
``--behaviour RUN...`` plays them stochastically, as they acted while training, and measures on every visited state
the action variance of the behaviour (the expert drawn from the gate at every step, by default) against that of the
most probable expert alone.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pmoe_rl import checkpoint, train  # noqa: E402
from pmoe_rl.agents.sac import SAC  # noqa: E402
from pmoe_rl.config import from_dict  # noqa: E402
from pmoe_rl.envs import IDENTITY, make_env  # noqa: E402
from pmoe_rl.errors import cli_main  # noqa: E402
from pmoe_rl.evaluation import evaluate_policy  # noqa: E402
from pmoe_rl.mixture import SquashedMixture, best_expert, gather_expert, squashed_sample  # noqa: E402

VARIANTS = {
    "official": ["--policy", "pmoe", "--set", "sac.update_sample=selected", "--set", "sac.select_by=sample"],
    "fresh": ["--policy", "pmoe", "--set", "sac.update_sample=fresh", "--set", "sac.select_by=sample"],
    "mean": ["--policy", "pmoe", "--set", "sac.update_sample=selected", "--set", "sac.select_by=mean"],
    "gaussian": ["--policy", "gaussian"],
}
METRICS = ("alpha", "sigma", "noise_alignment", "mean_step_agrees", "entropy_share", "gate_max", "best_freq_max",
           "action_error", "critic_error")  # fmt: skip


def probe(agent: SAC, obs: torch.Tensor, identity: bool, gen: torch.Generator) -> dict[str, float]:
    """The statistics of one actor update on ``obs`` (module docstring), without changing anything (its noise comes
    from its own generator, so the training run is the one it would be without the probes)."""
    estimator, alpha = agent.estimator, agent.log_alpha.detach().exp()
    with torch.no_grad():
        dist = agent.policy(obs)
    mean = dist.mean.detach().requires_grad_(True)
    d = SquashedMixture(mean, dist.log_std.detach(), dist.log_w.detach())
    eps = torch.randn(mean.shape, generator=gen)
    u, logp = d.rsample_with_log_prob(eps=eps)
    k = best_expert(torch.tanh(u.detach()), lambda a: agent.q_min(obs, a))
    if getattr(estimator, "update_sample", "selected") == "fresh":  # the sample the loss is taken on
        eps_k = torch.randn(gather_expert(eps, k).shape, generator=gen)
        u_k, logp_k = squashed_sample(gather_expert(mean, k), gather_expert(d.log_std, k), eps=eps_k)
    else:
        eps_k, u_k, logp_k = gather_expert(eps, k), gather_expert(u, k), gather_expert(logp, k)
    grad_h = torch.autograd.grad((alpha * logp_k).sum(), mean, retain_graph=True)[0]
    grad_q = torch.autograd.grad(-agent.q_min(obs, torch.tanh(u_k)).sum(), mean)[0]
    grad_h, grad_q = gather_expert(grad_h, k), gather_expert(grad_q, k)
    mu_k = torch.tanh(gather_expert(mean, k)).detach().requires_grad_(True)
    ascent = torch.autograd.grad(agent.q_min(obs, mu_k).sum(), mu_k)[0]  # where the critic wants the action to go
    cos = torch.nn.functional.cosine_similarity(eps_k, ascent, dim=-1)
    h, q = grad_h.norm(dim=-1), grad_q.norm(dim=-1)
    n = dist.n_experts
    out = {
        "alpha": float(alpha),
        "sigma": float(dist.log_std.exp().mean()),
        "noise_alignment": float(cos.mean()),
        "mean_step_agrees": float((((-(grad_h + grad_q)) * ascent).sum(-1) > 0).float().mean()),
        "entropy_share": float((h / (h + q + 1e-12)).mean()),
        "gate_max": float(dist.weights.max(-1).values.mean()),
        "best_freq_max": float(torch.bincount(k, minlength=n).max() / len(k)),
    }
    if identity:
        with torch.no_grad():
            x = obs[:, 0]
            top = torch.tanh(gather_expert(dist.mean, dist.weights.argmax(-1)))[:, 0]
            grid = torch.linspace(-1, 1, 201)
            q_grid = agent.q_min(obs, grid.view(1, -1, 1).expand(len(obs), -1, 1))
            out["action_error"] = float((top - x).abs().mean())
            out["critic_error"] = float((grid[q_grid.argmax(1)] - x).abs().mean())
    return out


def run(variant: str, seed: int, args, trace: list[dict]) -> float:
    identity = args.env == IDENTITY
    original = SAC.update
    gen = torch.Generator().manual_seed(seed)

    def update(self, batch, with_metrics=False):
        if self.n_updates % args.every == 0:
            trace.append({"variant": variant, "seed": seed, "update": self.n_updates,
                          **probe(self, batch.obs, identity, gen)})  # fmt: skip
        return original(self, batch, with_metrics)

    run_dir = Path(args.out) / "runs" / f"{variant}_s{seed}"
    config = (["--config", args.config] if args.config else []) + [x for kv in args.set for x in ("--set", kv)]
    argv = ["--env", args.env, "--seed", str(seed), "--steps", str(args.steps), "--eval-every", str(args.eval_every),
            "--eval-episodes", str(args.eval_episodes), "--checkpoint-every", "0", "--log-every", str(args.steps),
            "--threads", "1", "--no-progress", "--overwrite", "--run-dir", str(run_dir), *config,
            *VARIANTS[variant]]  # fmt: skip
    SAC.update = update
    try:
        assert cli_main(train.main, argv) == 0
    finally:
        SAC.update = original
    with open(run_dir / "progress.csv") as f:
        return [float(r["eval/mean_reward"]) for r in csv.DictReader(f) if r["eval/mean_reward"]][-1]


def load_agent(run_dir: str, with_state: bool = False) -> SAC:
    """A finished SAC run's agent at its final checkpoint (with its replay buffer if ``with_state``), on the CPU."""
    ckpt = checkpoint.load(run_dir, with_state=with_state)
    cfg = from_dict(ckpt.meta["config"])
    obs_dim, act_dim = ckpt.meta["observation_space"]["shape"][0], ckpt.meta["action_space"]["shape"][0]
    agent = SAC(cfg, obs_dim, act_dim, torch.device("cpu"))
    agent.load_weights(ckpt.weights)
    if with_state:
        agent.load_extra_state(ckpt.state)
    return agent


def probe_checkpoint(run_dir: str, batches: int = 20) -> dict[str, float]:
    """The probe's statistics at a finished run's final checkpoint (its policy, critic and replay buffer), averaged
    over ``batches`` minibatches of 256 states."""
    agent = load_agent(run_dir, with_state=True)
    gen = torch.Generator().manual_seed(0)
    rows = [probe(agent, agent.buffer.sample(256).obs, False, gen) for _ in range(batches)]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


@torch.no_grad()
def acting_returns(run_dir: str, episodes: int, seed: int = 1000) -> dict[str, float]:
    """Deterministic mean return of a finished SAC run's final policy per rule for the acting expert."""
    agent = load_agent(run_dir)
    cfg = agent.cfg

    def critic_argmax(dist: SquashedMixture, obs: torch.Tensor) -> torch.Tensor:
        actions = torch.tanh(dist.mean)  # (1, K, A)
        return agent.q_min(obs.expand(dist.n_experts, -1), actions[0]).argmax().view(1)

    class Acting:  # the policy acting with tanh(mu_k), k chosen by ``rule``: what evaluate_policy plays
        n_experts = agent.policy.n_experts

        def __init__(self, rule):
            self.rule = rule

        def act(self, obs, deterministic=True, generator=None):
            dist = agent.policy(obs)
            k = self.rule(dist, obs)
            return torch.tanh(gather_expert(dist.mean, k)), k

    rules = {"gate argmax": lambda dist, obs: dist.mode_expert(), "critic argmax": critic_argmax}
    for k in range(agent.policy.n_experts):
        rules[f"expert {k}"] = lambda dist, obs, k=k: torch.tensor([k])
    env = make_env(cfg.env)
    means = {name: float(np.mean(evaluate_policy(Acting(rule), env, episodes, seed).returns))
             for name, rule in rules.items()}  # fmt: skip
    env.close()
    return means


@torch.no_grad()
def behaviour_spread(run_dir: str, episodes: int, seed: int = 1000, draws: int = 64) -> dict[str, float]:
    """How noisy a finished SAC run's policy acts while training: stochastic episodes with its own rule for the acting
    expert (``sac.behavior_expert``); on every visited state, the action variance (summed over the action's
    dimensions, ``draws`` draws) of the behaviour and of the gate's most probable expert alone."""
    agent = load_agent(run_dir)
    rule, gen = agent.cfg.sac.behavior_expert, torch.Generator().manual_seed(seed)
    env = make_env(agent.cfg.env)
    returns, behaviour, one_expert = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, ret = False, 0.0
        while not done:
            obs_t = torch.as_tensor(obs, dtype=torch.float32).expand(draws, -1)
            dist = agent.policy(obs_t)
            actions = torch.tanh(dist.sample(gen, rule)[0])
            u, _ = dist.expert_sample(dist.mode_expert(), gen)  # the most probable expert alone
            behaviour.append(float(actions.var(0).sum()))
            one_expert.append(float(torch.tanh(u).var(0).sum()))
            obs, reward, terminated, truncated, _ = env.step(actions[0].numpy())
            ret, done = ret + float(reward), terminated or truncated
        returns.append(ret)
    env.close()
    return {"stochastic return": float(np.mean(returns)), "behaviour action variance": float(np.mean(behaviour)),
            "most probable expert's action variance": float(np.mean(one_expert))}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default=IDENTITY)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=10, help="updates between probes")
    p.add_argument("--eval-every", type=int, default=None, help="default: --steps (one evaluation at the end)")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=["official", "fresh"], choices=list(VARIANTS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to every run")
    p.add_argument("--config", help="a pmoe-rl config file (configs/identity_sac.yaml: SB3's identity test)")
    p.add_argument("--out", help="where the runs, trace and figure go")
    p.add_argument("--checkpoints", nargs="+", metavar="RUN", help="instead of training: probe these finished SAC "
                   "runs' final checkpoints and print one table row each")  # fmt: skip
    p.add_argument("--acting", nargs="+", metavar="RUN", help="instead of training: play these finished PMOE-SAC "
                   "runs with each rule for the acting expert and print one table row each")  # fmt: skip
    p.add_argument("--behaviour", nargs="+", metavar="RUN", help="instead of training: play these finished SAC "
                   "runs stochastically, as they acted in training; print return and action variances")  # fmt: skip
    args = p.parse_args()
    for flag, measure in (("acting", acting_returns), ("behaviour", behaviour_spread)):
        for run_dir in getattr(args, flag) or []:
            stats = measure(run_dir, args.eval_episodes)
            print(f"| {run_dir} | " + " | ".join(f"{k} {v:.3f}" for k, v in stats.items()) + " |", flush=True)
    if args.acting or args.behaviour:
        return
    if args.checkpoints:
        for run_dir in args.checkpoints:
            stats = probe_checkpoint(run_dir)
            print(f"| {run_dir} | " + " | ".join(f"{k} {v:.3f}" for k, v in stats.items()) + " |")
        return
    if not args.out:
        p.error("--out is required unless --checkpoints is given")
    args.eval_every = args.eval_every or args.steps
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trace, finals = [], {}
    for variant in args.variants:
        for seed in args.seeds:
            finals[variant, seed] = run(variant, seed, args, trace)
            print(f"{variant} seed {seed}: final evaluation {finals[variant, seed]:.1f}", flush=True)
    with open(out / "trace.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in trace)
    metrics = [m for m in METRICS if m in trace[0]]
    header = " | ".join(f"{m} (first half / second half)" for m in metrics)
    lines = [f"| variant | final return per seed | {header} |", "|---|---|" + "---|" * len(metrics)]
    cols = (len(metrics) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 5.6), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.axis("off")
    for variant in args.variants:
        rows = [r for r in trace if r["variant"] == variant and "noise_alignment" in r]
        updates = sorted({r["update"] for r in rows})
        cells = []
        for ax, m in zip(axes.flat, metrics):
            curve = np.array([np.mean([r[m] for r in rows if r["update"] == u]) for u in updates])
            ax.plot(updates, curve, label=variant)
            ax.set_title(m, fontsize=9)
            ax.set_xlabel("update")
            half = len(curve) // 2
            cells.append(f"{curve[:half].mean():.3f} / {curve[half:].mean():.3f}")
        returns = ", ".join(f"{finals[variant, s]:.1f}" for s in args.seeds)
        lines.append(f"| {variant} | {returns} | " + " | ".join(cells) + " |")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"PMOE-SAC actor update on {args.env} (mean over seeds {args.seeds})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "diagnosis.png", dpi=110)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
