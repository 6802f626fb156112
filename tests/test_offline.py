"""Offline RL: O-DICE's gradients against hand computations and closed forms, Minari datasets written by ``collect``
and by other code, every bad dataset's error, the offline agents on the run skeleton, and a seeded learning test."""

import copy
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from pmoe_rl import collect, evaluate, train
from pmoe_rl.agents.build import load_policy
from pmoe_rl.agents.iql import IQL
from pmoe_rl.agents.odice import ODICE, bc_weight, f_star, orthogonal_gradient
from pmoe_rl.agents.offline import OfflineAgent
from pmoe_rl.buffers import Batch
from pmoe_rl.config import Config, validate
from pmoe_rl.datasets import DatasetError, load_transitions
from pmoe_rl.errors import ConfigError, cli_main
from pmoe_rl.recording import read_episodes

ROOT = Path(__file__).resolve().parents[1]
SMALL_OFFLINE = [
    "--set", "odice.policy_hidden=[32,32]", "--set", "iql.policy_hidden=[32,32]", "--set", "bc.policy_hidden=[32,32]",
    "--set", "offline.value_hidden=[32,32]", "--set", "offline.batch_size=32", "--no-progress",
]  # fmt: skip


def write_other_dataset(dataset_id, episodes, env_id=None, obs_dim=3, act_bound=2.0, **kwargs):
    """A Minari dataset written with Minari's own API (not ``collect``)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, **ep) for i, ep in enumerate(episodes)]
    extra = {}
    if env_id is None:
        box = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        extra = dict(observation_space=box, action_space=spaces.Box(-act_bound, act_bound, (1,), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minari.create_dataset_from_buffers(dataset_id, buffers, env=env_id, **extra, **kwargs)


def random_episodes(env_id, n, seed=0, controller=None, noise=0.0):
    env = gym.make(env_id)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        ep = dict(observations=[obs], actions=[], rewards=[], terminations=[], truncations=[])
        done = False
        while not done:
            if controller is None:
                action = env.action_space.sample()
            else:
                action = np.clip(controller(obs) + noise * rng.standard_normal(1), -3, 3).astype(np.float32)
            obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(("observations", "actions", "rewards", "terminations", "truncations"),
                                  (obs, action, reward, terminated, truncated)):  # fmt: skip
                ep[key].append(value)
            done = terminated or truncated
        ep["observations"] = np.asarray(ep["observations"], np.float32)
        ep["actions"] = np.asarray(ep["actions"], np.float32)
        episodes.append(ep)
    env.close()
    return episodes


@pytest.fixture
def datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


@pytest.fixture
def pendulum(datasets):
    """Pendulum-v1 (actions in [-2, 2]) random data with reference scores, written by Minari's API."""
    write_other_dataset("other/pendulum/random-v0", random_episodes("Pendulum-v1", 3), "Pendulum-v1",
                        eval_env="Pendulum-v1", ref_min_score=-1500.0, ref_max_score=-150.0)  # fmt: skip
    return "other/pendulum/random-v0"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def agent(cls, dataset, env="Pendulum-v1", device="cpu", **sections):
    cfg = Config(env=env, algo={ODICE: "odice", IQL: "iql", OfflineAgent: "bc"}[cls], dataset=dataset, steps=1000)
    cfg.offline.value_hidden = [16, 16]
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    getattr(cfg, cfg.algo).policy_hidden = [16, 16]
    return cls(validate(cfg), 3, 1, torch.device(device))


# --- O-DICE's maths ------------------------------------------------------------------------------------------


def test_orthogonal_gradient_by_hand():
    g_f, g_b = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([1.0, 2.0, 2.0])
    c = (3 * 1 + 0 * 2 + 4 * 2) / (9 + 16)  # <g_f, g_b> / |g_f|^2 = 11 / 25
    perp = g_b - c * g_f
    assert torch.dot(perp, g_f).abs() < 1e-6  # the backward gradient's part orthogonal to the forward one
    torch.testing.assert_close(orthogonal_gradient(g_f, g_b), g_f + perp)
    torch.testing.assert_close(orthogonal_gradient(torch.zeros(3), g_b), g_b)  # guarded: no division by zero


def test_f_star_and_weights_against_closed_forms():
    y = torch.linspace(-5, 5, 101, dtype=torch.float64)
    expected = torch.where(y >= -2, y + y**2 / 4, torch.full_like(y, -1.0))
    torch.testing.assert_close(f_star(y, "chi2"), expected)
    torch.testing.assert_close(f_star(y, "kl"), torch.exp(y - 1))
    # both are convex conjugates: f*(y) = max_{x >= 0} x y - f(x), by brute force on a grid holding the maximisers
    x, y = torch.linspace(1e-9, 10, 200_001, dtype=torch.float64), y[y <= 3]
    for name, f in (("chi2", (x - 1) ** 2), ("kl", x * torch.log(x))):
        brute = (x[None] * y[:, None] - f[None]).max(1).values
        torch.testing.assert_close(f_star(y, name), brute, atol=1e-3, rtol=1e-4)
    y = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(bc_weight(y, "chi2"), y.clamp_min(0))
    torch.testing.assert_close(bc_weight(y, "kl"), torch.exp(y - 1))
    # the analytic weight is (f')^-1 = f*' (the maximiser): against autograd through f* and the grid's argmax
    y.requires_grad_(True)
    for name, f in (("chi2", (x - 1) ** 2), ("kl", x * torch.log(x))):
        (slope,) = torch.autograd.grad(f_star(y, name).sum(), y)
        torch.testing.assert_close(bc_weight(y.detach(), name, "analytic"), slope)
        argmax = x[(x[None] * y.detach()[y <= 2, None] - f[None]).argmax(1)]
        torch.testing.assert_close(bc_weight(y.detach()[y <= 2], name, "analytic"), argmax, atol=1e-4, rtol=1e-4)
    assert bc_weight(torch.tensor(-0.5), "chi2", "analytic") == 0.75 and bc_weight(torch.tensor(-0.5), "chi2") == 0


def value_gradient(agent_, batch):
    """The gradient O-DICE's value step gives V (captured instead of the optimiser's step)."""
    captured = {}
    agent_.v_opt.step = lambda: captured.update({n: p.grad.clone() for n, p in agent_.v.named_parameters()})
    agent_.value_step(batch)
    return torch.cat([captured[n].flatten() for n, _ in agent_.v.named_parameters()])


@pytest.mark.parametrize("update", ["orthogonal", "true", "semi"])
def test_odice_value_gradients_by_hand(pendulum, update):
    eta, lam, gamma = 0.5, 0.6, 0.99
    a = agent(ODICE, pendulum, odice={"update": update, "eta": eta, "lam": lam})
    torch.manual_seed(1)
    for p in a.v_target.parameters():  # a target unlike V, so that every term matters
        p.data.add_(0.1 * torch.randn_like(p))
    batch = a.buffer.sample(64)
    v, v_target = copy.deepcopy(a.v), a.v_target
    params = list(v.parameters())
    r, d = batch.rewards, gamma * (1 - batch.terminated)

    def grad(loss):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

    with torch.no_grad():
        tgt_next, tgt_now = v_target(batch.next_obs).min(0).values, v_target(batch.obs).min(0).values
    base = grad((1 - lam) * v(batch.obs).mean())
    g_f = grad(lam * f_star(r + d * tgt_next - v(batch.obs), "chi2").mean())
    g_b1 = grad(lam * f_star(r + d * v(batch.next_obs) - tgt_now, "chi2").mean())  # without eta
    if update == "orthogonal":
        c1 = torch.dot(g_f, g_b1) / torch.dot(g_f, g_f)
        expected = base + g_f + eta * (g_b1 - c1 * g_f)  # eta times the orthogonal part
    elif update == "true":
        expected = base + grad(lam * f_star(r + d * v(batch.next_obs) - v(batch.obs), "chi2").mean())
    else:
        expected = base + g_f
    torch.testing.assert_close(value_gradient(a, batch), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("f, weight", [("chi2", "official"), ("chi2", "analytic"), ("kl", "official")])
def test_odice_extraction_weights_by_hand(pendulum, f, weight):
    """The weights the policy step gets: w(r + gamma (1 - d) min Vbar(s') - V(s)) per head, clipped, heads averaged,
    computed with V before its step (scripts/offline_weights.py reads them through batch_weights)."""
    a = agent(ODICE, pendulum, odice={"f": f, "weight": weight})
    torch.manual_seed(1)
    for p in a.v_target.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    batch = a.buffer.sample(64)
    with torch.no_grad():
        v_next = a.v_target(batch.next_obs).min(0).values
        delta = batch.rewards + 0.99 * (1 - batch.terminated) * v_next - a.v(batch.obs)
        unclipped = {"official": delta, "analytic": delta / 2 + 1}[weight].clamp_min(0)
        unclipped = unclipped if f == "chi2" else torch.exp(delta - 1)
        a.cfg.offline.max_weight = clip = float(unclipped[unclipped > 0].median())  # the clip bites on some
        expected = unclipped.clamp_max(clip).mean(0)
        torch.testing.assert_close(a.batch_weights(batch), expected)
    seen = {}
    a.actor_step = lambda b, w: seen.setdefault("w", w)
    a.update(batch)
    torch.testing.assert_close(seen["w"], expected)


def test_iql_extraction_weights_by_hand(pendulum):
    """IQL's policy weights: min(exp(beta (min_i Qbar_i(s, a) - V(s))), max_weight), with V before its step; what
    batch_weights gives (scripts/offline_weights.py) is what the policy step gets."""
    a = agent(IQL, pendulum, iql={"temperature": 2.0})
    torch.manual_seed(1)
    for p in a.q_target.parameters():
        p.data.add_(0.3 * torch.randn_like(p))
    batch = a.buffer.sample(64)
    with torch.no_grad():
        q1, q2 = a.q_target(batch.obs, batch.actions)
        unclipped = torch.exp(2.0 * (torch.minimum(q1, q2) - a.v(batch.obs)[0]))
    a.cfg.offline.max_weight = clip = float(unclipped.median())  # the clip bites on half of them
    expected = unclipped.clamp_max(clip)
    torch.testing.assert_close(a.batch_weights(batch), expected)
    seen = {}
    a.actor_step = lambda b, w: seen.setdefault("w", w)
    a.update(batch)
    torch.testing.assert_close(seen["w"], expected)


@pytest.mark.parametrize("f,lam", [("chi2", 0.4), ("chi2", 0.6), ("kl", 0.6)])
def test_odice_value_settles_where_the_residual_is_the_closed_form_offset(pendulum, f, lam):
    """On a self-loop with reward r, V settles where lambda f*'(delta) = 1 - lambda: delta* = 2 (1 - lambda) / lambda
    - 2 (chi-square) or 1 + log((1 - lambda) / lambda) (reverse KL), i.e. V = (r - delta*) / (1 - gamma). The offset
    acts as a per-step reward shift, which is why lambda interacts with the reward scale (docs/offline.md)."""
    r, gamma = 0.5, 0.9
    a = agent(ODICE, pendulum, odice={"f": f, "lam": lam, "value_lr": 3e-3}, offline={"gamma": gamma, "tau": 0.05})
    s = torch.tensor([[0.3, -0.2, 0.5]]).expand(32, 3)
    loop = Batch(s, torch.zeros(32, 1), torch.full((32,), r), s, torch.zeros(32))
    for _ in range(2000):
        a.value_step(loop)
        a.soft_update(a.v_target, a.v, a.cfg.offline.tau)
    offset = 2 * (1 - lam) / lam - 2 if f == "chi2" else 1 + np.log((1 - lam) / lam)
    with torch.no_grad():
        v = a.v(s[:1])
    torch.testing.assert_close(v, torch.full_like(v, (r - offset) / (1 - gamma)), rtol=0.01, atol=0.01)


@pytest.mark.parametrize(
    "cls,schedule,cosine",
    [(IQL, "auto", True), (ODICE, "auto", False), (OfflineAgent, "auto", False), (ODICE, "cosine", True),
     (IQL, "constant", False)],
)  # fmt: skip
def test_the_policy_learning_rate_follows_its_schedule(pendulum, cls, schedule, cosine):
    """offline.actor_lr_schedule: auto is cosine for IQL only (its official code); the cosine follows PyTorch's
    CosineAnnealingLR over the run's steps down to 0, the constant stays at actor_lr."""
    a = agent(cls, pendulum, offline={"actor_lr_schedule": schedule})
    lr = getattr(a.cfg, a.section).actor_lr
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    cosine_lr = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=a.cfg.steps, eta_min=0.0)
    for n in range(a.cfg.steps + 1):
        a.n_updates = n
        if n in (0, 1, 250, 500, 999, 1000):
            a.actor_step(a.buffer.sample(8))
            expected = reference.param_groups[0]["lr"] if cosine else lr
            assert a.actor_opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6, abs=1e-12)
        reference.step()
        cosine_lr.step()


# --- datasets ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collected_once(tmp_path_factory):
    """A short PPO run with recorded transitions, and every dataset ``collect`` makes from it (once per module)."""
    root = tmp_path_factory.mktemp("collected")
    run, datasets = root / "run", root / "datasets"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(datasets))
        args = ["--env", "Hopper-v5", "--algo", "ppo", "--steps", "1024", "--set", "ppo.n_steps=256",
                "--checkpoint-every", "512", "--eval-every", "0", "--record-transitions", "--run-dir", str(run),
                "--no-progress"]  # fmt: skip
        assert cli_main(train.main, args) == 0
        args = [str(run), "--steps", "300", "--ref-episodes", "2", "--select-episodes", "1", "--no-progress"]
        assert cli_main(collect.main, args) == 0
    return run, datasets


@pytest.fixture
def collected(collected_once, monkeypatch):
    run, datasets = collected_once
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    return run


def test_collect_writes_every_kind_and_loading_gives_back_every_transition(collected):
    import minari

    for kind in collect.KINDS:
        dataset_id = f"pmoe_rl/Hopper-v5/{kind}-v0"
        ds = minari.load_dataset(dataset_id)
        data = load_transitions(dataset_id)
        episodes = list(ds.iterate_episodes())
        assert len(data) == ds.total_steps == sum(len(ep.rewards) for ep in episodes)
        if kind in ("random", "medium", "expert"):
            assert len(data) == 300
        meta = ds.storage.metadata
        assert meta["ref_min_score"] < meta["ref_max_score"] and data.env_id == "Hopper-v5"
        # each episode's last transition is there, with its own final observation and flags
        for ep, end in zip(episodes, data.episode_ends):
            np.testing.assert_array_equal(data.next_obs[end], ep.observations[-1])
            assert data.terminated[end] == ep.terminations[-1] and data.timeouts[end] == ep.truncations[-1]
            assert ep.terminations[-1] or ep.truncations[-1]
        assert not np.any(data.terminated.astype(bool) & data.timeouts.astype(bool))
    # medium-replay holds exactly the transitions the run recorded up to the medium checkpoint
    replay = load_transitions("pmoe_rl/Hopper-v5/medium-replay-v0")
    description = minari.load_dataset("pmoe_rl/Hopper-v5/medium-replay-v0").storage.metadata["description"]
    medium_step = int(description.rsplit("up to step ", 1)[1])
    recorded = read_episodes(collected, medium_step)
    assert len(replay) == sum(len(ep["rewards"]) for ep in recorded) == medium_step  # one env: a step each
    np.testing.assert_array_equal(replay.obs, np.concatenate([ep["observations"][:-1] for ep in recorded]))
    np.testing.assert_array_equal(replay.next_obs, np.concatenate([ep["observations"][1:] for ep in recorded]))
    np.testing.assert_allclose(replay.actions, np.concatenate([ep["actions"] for ep in recorded]), atol=1e-6)
    np.testing.assert_array_equal(replay.rewards, np.concatenate([ep["rewards"] for ep in recorded]))
    medium = load_transitions("pmoe_rl/Hopper-v5/medium-v0")
    both = load_transitions("pmoe_rl/Hopper-v5/medium-expert-v0")
    assert len(both) == 600
    np.testing.assert_array_equal(both.obs[:300], medium.obs)


def test_a_collected_dataset_opens_with_minari_in_a_fresh_process_without_network(collected):
    code = "import minari; ds = minari.load_dataset('pmoe_rl/Hopper-v5/expert-v0'); print(ds.total_steps)"
    env = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "300"


def test_collect_refuses_to_overwrite_and_needs_recorded_transitions_for_medium_replay(collected, capsys):
    assert cli_main(collect.main, [str(collected), "--kinds", "random", "--steps", "10", "--ref-episodes", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(collect.main, [str(collected), "--kinds", "bogus"]) == 2
    assert "unknown bogus" in capsys.readouterr().err


def test_collect_writes_under_a_relative_minari_path(collected, tmp_path, monkeypatch):
    """BENCHMARKS' commands set MINARI_DATASETS_PATH=datasets; Minari 0.5.4 alone fails on that while writing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", "relative")
    args = [str(collected), "--kinds", "random", "--steps", "50", "--ref-episodes", "1", "--no-progress"]
    assert cli_main(collect.main, args) == 0
    assert (tmp_path / "relative" / "pmoe_rl" / "Hopper-v5" / "random-v0" / "data" / "main_data.hdf5").is_file()
    assert len(load_transitions("pmoe_rl/Hopper-v5/random-v0").rewards) == 50


def test_collect_noise_scale_zero_records_the_experts_mean_action(collected, capsys):
    import minari

    args = [str(collected), "--kinds", "expert", "--steps", "50", "--ref-episodes", "1", "--namespace", "quiet",
            "--noise-scale", "0", "--no-progress"]  # fmt: skip
    assert cli_main(collect.main, args) == 0
    ds = minari.load_dataset("quiet/Hopper-v5/expert-v0")
    assert "(noise x0)" in ds.storage.metadata["description"]
    data = load_transitions("quiet/Hopper-v5/expert-v0")
    expert, _ = load_policy(collect.run_checkpoints(collected)[-1][1])  # PPO's mixture: k drawn, no noise
    with torch.no_grad():
        means = expert(torch.as_tensor(data.obs)).mean.clamp(-1, 1).numpy()  # (N, K, A), the env's clip
    gap = np.abs(means - data.actions[:, None, :]).max(-1).min(-1)  # to the nearest expert's clipped mean
    assert expert.n_experts > 1 and gap.max() < 1e-6
    assert cli_main(collect.main, [str(collected), "--kinds", "expert", "--noise-scale", "-1"]) == 2
    assert "--noise-scale must be 0 or more" in capsys.readouterr().err


def test_a_dataset_written_by_other_code_trains_and_evaluates(pendulum, datasets, tmp_path, capsys):
    data = load_transitions(pendulum)
    native = np.concatenate([ep["actions"] for ep in random_episodes("Pendulum-v1", 3)])
    np.testing.assert_allclose(data.actions, native[:, :1] / 2.0, atol=1e-6)  # [-2, 2] -> [-1, 1]
    run = tmp_path / "bc"
    directory = datasets / pendulum  # by directory as well as by id
    args = ["--algo", "bc", "--dataset", str(directory), "--steps", "60", "--eval-every", "30", "--eval-episodes",
            "1", "--run-dir", str(run), *SMALL_OFFLINE]  # fmt: skip
    assert cli_main(train.main, args) == 0
    out = capsys.readouterr().out
    assert "normalized_score" in out and (run / "checkpoints" / "latest").is_file()
    assert cli_main(evaluate.main, [str(run), "--episodes", "1", "--json", str(tmp_path / "eval.json")]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["normalized_score"] == pytest.approx(100 * (result["mean_return"] + 1500) / 1350)
    # the extracted policy in stable-baselines3 acts as the native one
    from pmoe_rl import load_policy
    from pmoe_rl.sb3 import from_checkpoint

    model, (policy, _) = from_checkpoint(run), load_policy(run)
    obs = np.stack([model.observation_space.sample() for _ in range(16)])
    native = policy.act(torch.as_tensor(obs), deterministic=True)[0].numpy()
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], native, atol=1e-6)


@pytest.mark.parametrize("case, fragment", [
    ("missing", "no Minari dataset 'nowhere/none-v0'"),
    ("other env", "was recorded on Pendulum-v1, not Hopper-v5"),
    ("spaces", "has observations of shape (3,), Hopper-v5 has (11,)"),
    ("nan", "rewards holds NaN or infinite values"),
    ("empty", "is empty"),
])  # fmt: skip
def test_every_bad_dataset_gets_its_error(case, fragment, pendulum, capsys):
    dataset = {"missing": "nowhere/none-v0", "other env": pendulum}.get(case, f"bad/{case.replace(' ', '')}-v0")
    env = "Hopper-v5"
    if case in ("spaces", "nan", "empty"):
        episodes = random_episodes("Pendulum-v1", 1)
        if case == "nan":
            episodes[0]["rewards"][3] = float("nan")
            env = "Pendulum-v1"
        if case == "empty":
            episodes, env = [], "Pendulum-v1"
        write_other_dataset(dataset, episodes)  # no env recorded: the spaces are checked against --env
    assert cli_main(train.main, ["--algo", "odice", "--dataset", dataset, "--env", env]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and len(err.strip().splitlines()) == 1


def test_odice_update_true_can_be_set_from_the_command_line():
    from pmoe_rl.config import set_value

    assert set_value(Config(), "odice.update=true").odice.update == "true"
    with pytest.raises(Exception, match="odice.update: should be 'orthogonal', 'true' or 'semi'"):
        set_value(Config(), "odice.update=false")


def test_a_normalised_score_needs_reference_scores(datasets):
    write_other_dataset("bad/noref-v0", random_episodes("Pendulum-v1", 1), "Pendulum-v1")
    data = load_transitions("bad/noref-v0")
    with pytest.raises(DatasetError, match="has no reference scores"):
        data.normalized_score(100.0)
    assert data.timeouts[-1] == 1.0 and data.terminated.sum() == 0  # Pendulum only times out


# --- agents on the run skeleton ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, sections", [
    (ODICE, {}), (ODICE, {"odice": {"update": "true"}}), (ODICE, {"odice": {"update": "semi", "f": "kl"}}),
    (IQL, {}), (OfflineAgent, {}),
])  # fmt: skip
def test_offline_updates_run_on_the_meta_device_without_host_reads(cls, sections, pendulum):
    from test_devices import count_host_reads

    meta = agent(cls, pendulum, device="meta", **sections)
    metrics = meta.update(meta.buffer.sample(8), with_metrics=True)
    assert metrics and all(v.device.type == "meta" for v in metrics.values())
    cpu = agent(cls, pendulum, **sections)
    with count_host_reads() as counts:
        cpu.update(cpu.buffer.sample(8))
    assert sum(counts.values()) == 0, counts


def test_offline_run_resumes_and_refuses_another_dataset(pendulum, datasets, tmp_path, capsys):
    run = tmp_path / "odice"
    args = ["--algo", "odice", "--dataset", pendulum, "--steps", "40", "--eval-every", "0", "--checkpoint-every",
            "20", "--run-dir", str(run), *SMALL_OFFLINE]  # fmt: skip
    assert cli_main(train.main, args) == 0
    assert cli_main(train.main, ["--resume", str(run), "--steps", "60", "--no-progress"]) == 0
    assert "resuming from step 40" in capsys.readouterr().out
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000000060"
    write_other_dataset("other/pendulum/random-v0".replace("random", "bigger"), random_episodes("Pendulum-v1", 4),
                        "Pendulum-v1")  # fmt: skip
    config = (run / "config.yaml").read_text().replace(pendulum, "other/pendulum/bigger-v0")
    (run / "config.yaml").write_text(config)
    assert cli_main(train.main, ["--resume", str(run), "--steps", "80", "--no-progress"]) == 2
    assert "was trained on dataset" in capsys.readouterr().err


def test_offline_weights_extract_trains_only_the_policy_at_a_constant_rate(pendulum, tmp_path, capsys):
    """scripts/offline_weights.py --extract: V and its target stay as the checkpoint holds them, the policy moves at
    the given learning rate (not the run's cosine schedule), and it is evaluated every --eval-every steps."""
    run = tmp_path / "odice"
    args = ["--algo", "odice", "--dataset", pendulum, "--steps", "20", "--eval-every", "0", "--checkpoint-every",
            "20", "--run-dir", str(run), "--set", "offline.actor_lr_schedule=cosine", *SMALL_OFFLINE]  # fmt: skip
    assert cli_main(train.main, args) == 0
    script = load_script("offline_weights")
    loaded = script.load(run)
    frozen = {k: v.clone() for k, v in loaded.v.state_dict().items()}
    frozen_target = {k: v.clone() for k, v in loaded.v_target.state_dict().items()}
    policy = [p.detach().clone() for p in loaded.policy.parameters()]
    capsys.readouterr()
    script.extract(loaded, 6, 1e-3, 3, 1)
    scores = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert [line.split(":")[0] for line in scores] == ["0", "3", "6"]
    for before, after in ((frozen, loaded.v.state_dict()), (frozen_target, loaded.v_target.state_dict())):
        assert all(torch.equal(before[k], after[k]) for k in before)
    assert not all(torch.equal(a, b) for a, b in zip(policy, loaded.policy.parameters()))
    assert [group["lr"] for group in loaded.actor_opt.param_groups] == [1e-3]
    # --set and --fresh-policy: the checkpoint's V and target, and a new policy of the changed size
    fresh = script.load(run, ("odice.policy_hidden=[24,16]", "offline.batch_size=7"), fresh_policy=True)
    for mine, saved in ((fresh.v, frozen), (fresh.v_target, frozen_target)):
        assert all(torch.equal(mine.state_dict()[k], saved[k]) for k in saved)
    assert [m.out_features for m in fresh.policy.modules() if isinstance(m, nn.Linear)][:2] == [24, 16]
    assert fresh.cfg.offline.batch_size == 7
    again = script.load(run, ("odice.policy_hidden=[24,16]",), fresh_policy=True)  # initialised from the run's seed
    assert all(torch.equal(a, b) for a, b in zip(fresh.policy.parameters(), again.policy.parameters()))
    with pytest.raises(ConfigError, match="--fresh-policy"):
        script.load(run, ("odice.policy_hidden=[24,16]",))
    # --ema: the moving average of the policy's weights is evaluated next to the policy
    capsys.readouterr()
    script.extract(fresh, 2, 1e-3, 2, 1, ema=0.5)
    scores = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit()]
    assert [line.split(":")[0] for line in scores] == ["0", "2"] and all("(average " in line for line in scores)


def test_offline_weights_reads_iql_runs_and_summarises_the_falls(pendulum, tmp_path, capsys):
    """scripts/offline_weights.py on an IQL run: --extract moves the policy only (V, Q and the target Q frozen);
    a BC run is refused; the per-half fall and start summaries against hand computations."""
    runs = {}
    for algo in ("iql", "bc"):
        runs[algo] = run = tmp_path / algo
        args = ["--algo", algo, "--dataset", pendulum, "--steps", "10", "--eval-every", "0", "--checkpoint-every",
                "10", "--run-dir", str(run), *SMALL_OFFLINE]  # fmt: skip
        assert cli_main(train.main, args) == 0
    script = load_script("offline_weights")
    loaded = script.load(runs["iql"], ("iql.tanh_mean=false",))
    assert not loaded.policy.tanh_mean
    values = {k: v.clone() for k, v in loaded.weights().items() if not k.startswith("policy.")}
    policy = [p.detach().clone() for p in loaded.policy.parameters()]
    script.extract(loaded, 4, 1e-3, 4, 1)
    assert all(torch.equal(v, loaded.weights()[k]) for k, v in values.items())
    assert not all(torch.equal(a, b) for a, b in zip(policy, loaded.policy.parameters()))
    with pytest.raises(ConfigError, match="O-DICE and IQL"):
        script.load(runs["bc"])
    # two episodes: one falls after 4 transitions (left 3..0), one does not (3 transitions)
    w = np.array([1.0, 2.0, 3.0, 2.0, 1.0, 1.0, 2.0])
    left, fell = script.steps_to_end(np.array([3, 6]), np.array([False, False, False, True, False, False, False]))
    assert left.tolist() == [3, 2, 1, 0, 2, 1, 0] and fell.tolist() == [True] * 4 + [False] * 3
    line = script.fall_summary(w, left, fell)
    mean = w.mean()  # 12 / 7; the falling episode's 4 transitions carry 8 of the 12
    assert "hold 0.57 of the transitions, 0.67 of the weight;" in line
    assert f"0-49 before a fall {2.0 / mean:.2f}x" in line and f"no fall {4 / 3 / mean:.2f}x" in line
    assert "50-199 before a fall -" in line
    since = script.steps_since_start(np.array([3, 6]))
    assert since.tolist() == [0, 1, 2, 3, 0, 1, 2]
    line = script.start_summary(w, since)  # every step is under 25: one bin holding everything
    assert line.endswith("0-24 1.00x, 25-49 -, 50-99 -, 100-199 -, 200+ -")
    w_long, since_long = np.r_[np.zeros(25), np.ones(25)], np.arange(50)  # weight only from step 25 on
    assert "0-24 0.00x, 25-49 2.00x, 50-99 -" in script.start_summary(w_long, since_long)


@pytest.mark.parametrize("cls, squashed", [(IQL, True), (ODICE, False), (OfflineAgent, False)])
def test_iql_squashes_its_policy_mean_and_the_others_do_not(cls, squashed, pendulum):
    """IQL's official policy (and CORL's) puts tanh on the mean, O-DICE's RL policy does not; log pi is a plain
    Gaussian around that mean, checked against torch.distributions, as is the deterministic action."""
    policy = agent(cls, pendulum).policy
    with torch.no_grad():
        policy.mean_net[-1].weight.mul_(500.0)  # raw means well outside [-1, 1]
    obs = torch.randn(64, 3) * 3
    raw = policy.mean_net(obs)
    assert raw.abs().max() > 2
    mean = torch.tanh(raw) if squashed else raw
    actions = torch.rand(64, 1) * 2 - 1
    reference = torch.distributions.Normal(mean, policy.clamped_log_std().exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(policy.distribution(obs).log_prob(actions), reference)
    torch.testing.assert_close(policy.act(obs, deterministic=True)[0], mean.clamp(-1, 1))


def test_iql_policy_in_stable_baselines3_acts_as_the_native_one(pendulum, tmp_path):
    from pmoe_rl import load_policy
    from pmoe_rl.sb3 import from_checkpoint

    run = tmp_path / "iql"
    args = ["--algo", "iql", "--dataset", pendulum, "--steps", "20", "--eval-every", "0", "--run-dir", str(run),
            *SMALL_OFFLINE]  # fmt: skip
    assert cli_main(train.main, args) == 0
    model, (policy, _) = from_checkpoint(run), load_policy(run)
    with torch.no_grad():  # the same large output layer in both: means far outside [-1, 1] before the tanh
        for layer in (policy.mean_net[-1], model.policy.action_net):
            layer.weight.mul_(20.0)
    obs = np.stack([model.observation_space.sample() for _ in range(32)])
    native = policy.act(torch.as_tensor(obs), deterministic=True)[0].numpy()
    assert 0.3 < np.abs(native).max() < 0.999  # squashed, not clipped
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], native, atol=1e-5)


def test_imitation_keeps_the_first_episodes_with_zero_rewards(pendulum):
    a = agent(OfflineAgent, pendulum, offline={"imitation": True, "imitation_episodes": 2})
    assert len(a.buffer) == 400 and a.buffer.transitions().rewards.abs().sum() == 0  # Pendulum: 200 steps each
    with pytest.raises(DatasetError, match="more than the 3 episodes"):
        agent(OfflineAgent, pendulum, offline={"imitation": True, "imitation_episodes": 4})


def test_normalize_obs_uses_the_dataset_statistics_in_the_buffer_and_the_policy(pendulum):
    a = agent(OfflineAgent, pendulum, offline={"normalize_obs": True})
    stored = a.buffer.transitions().obs
    torch.testing.assert_close(stored.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(stored.std(0), torch.ones(3), atol=1e-3, rtol=0)
    raw = torch.from_numpy(load_transitions(pendulum).obs)
    torch.testing.assert_close(a.policy.obs_norm(raw), stored)  # acting sees raw observations the same way


def test_record_transitions_match_the_sac_replay_buffer(tmp_path):
    from conftest import SMALL

    from pmoe_rl import checkpoint

    run = tmp_path / "sac"
    args = ["--env", "InvertedPendulum-v5", "--steps", "300", "--eval-every", "0", "--record-transitions",
            "--run-dir", str(run), *SMALL]  # fmt: skip
    assert cli_main(train.main, args) == 0
    rows = checkpoint.load(run, with_state=True).state["buffer"]["storage"].numpy()
    episodes = read_episodes(run, 300)
    obs = np.concatenate([ep["observations"][:-1] for ep in episodes])
    np.testing.assert_array_equal(rows[:, :4], obs)
    np.testing.assert_array_equal(rows[:, -5:-1], np.concatenate([ep["observations"][1:] for ep in episodes]))
    np.testing.assert_array_equal(rows[:, -1], np.concatenate([ep["terminations"] for ep in episodes]))


# --- learning --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_odice_learns_inverted_pendulum_from_a_mixed_dataset(datasets, tmp_path):
    """A stabilising linear controller with action noise (20 episodes) mixed with uniform random actions
    (200 episodes): O-DICE's policy balances the pole for the whole episode."""

    def controller(obs):
        return np.array([obs @ np.array([1.0, 10.0, 1.0, 1.0])])

    episodes = random_episodes("InvertedPendulum-v5", 20, controller=controller, noise=0.5)
    episodes += random_episodes("InvertedPendulum-v5", 200, seed=100)
    write_other_dataset("test/pendulum/mixed-v0", episodes, "InvertedPendulum-v5", eval_env="InvertedPendulum-v5",
                        ref_min_score=5.0, ref_max_score=1000.0)  # fmt: skip
    run = tmp_path / "odice"
    args = ["--algo", "odice", "--dataset", "test/pendulum/mixed-v0", "--steps", "3000", "--eval-every", "3000",
            "--eval-episodes", "5", "--run-dir", str(run), "--set", "odice.policy_hidden=[64,64]",
            "--set", "offline.value_hidden=[64,64]", "--set", "odice.lam=0.4", "--no-progress"]  # fmt: skip
    assert cli_main(train.main, args) == 0
    last = json.loads((run / "progress.json").read_text().splitlines()[-1])
    assert last["eval/mean_reward"] >= 900, last
