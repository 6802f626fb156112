"""PPO: GAE, the mixture ratio, normalisation against SB3's VecNormalize, truncation bootstrapping from the true
final observation, vectorised collection, and normalisation statistics through checkpoints, resume and evaluate."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import distributions as D

from pmoe_rl import checkpoint, train
from pmoe_rl.agents.ppo import PPO, Rollouts
from pmoe_rl.agents.runner import EpisodeStats
from pmoe_rl.buffers import compute_gae
from pmoe_rl.config import Config, validate
from pmoe_rl.envs import make_env, make_vec_env
from pmoe_rl.errors import cli_main
from pmoe_rl.normalization import RewardNormalizer
from pmoe_rl.policies import PPOPolicy


def test_gae_hand_computed():
    # gamma 0.9, lambda 0.8; the episode ends with step 1 (no bootstrap across it)
    rewards = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    values = np.array([[0.5], [1.0], [1.5]], dtype=np.float32)
    dones = np.array([[0.0], [1.0], [0.0]], dtype=np.float32)
    adv, ret = compute_gae(rewards, values, dones, np.array([2.0]), gamma=0.9, lam=0.8)
    # t=2: 3 + 0.9*2 - 1.5 = 3.3;  t=1: 2 - 1 = 1;  t=0: (1 + 0.9*1 - 0.5) + 0.9*0.8*1 = 2.12
    np.testing.assert_allclose(adv[:, 0], [2.12, 1.0, 3.3], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], [2.62, 2.0, 4.8], rtol=1e-6)


def test_gae_with_lambda_one_is_the_discounted_return():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(6, 2)).astype(np.float32), rng.normal(size=(6, 2)).astype(np.float32)
    last = rng.normal(size=2)
    _, ret = compute_gae(rewards, values, np.zeros((6, 2), np.float32), last, gamma=0.97, lam=1.0)
    expected = [sum(0.97**j * rewards[t + j] for j in range(6 - t)) + 0.97 ** (6 - t) * last for t in range(6)]
    np.testing.assert_allclose(ret, np.array(expected), rtol=1e-5)


def _random_policy(n_experts: int) -> PPOPolicy:
    policy = PPOPolicy(obs_dim=5, act_dim=3, n_experts=n_experts, norm_obs=False)
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0.0, 0.5)
    return policy


def _reference(policy: PPOPolicy, obs: torch.Tensor) -> D.MixtureSameFamily:
    mean = policy.mean_net(obs).view(-1, policy.n_experts, policy.act_dim)
    std = policy.log_std.exp().expand_as(mean)
    return D.MixtureSameFamily(D.Categorical(logits=policy.gate(obs)), D.Independent(D.Normal(mean, std), 1))


def test_mixture_ratio_is_exp_of_the_torch_distributions_log_density_difference():
    cfg = validate(Config(env="x", algo="ppo"))
    cfg.ppo.norm_obs = False
    agent = PPO(cfg, 5, 3, torch.device("cpu"))
    agent.policy.load_state_dict(_random_policy(5).state_dict())
    obs, actions = torch.randn(16, 5), torch.randn(16, 3)
    experts = torch.randint(0, 5, (16,))
    with torch.no_grad():
        old = agent.log_prob(agent.policy.distribution(obs), actions, experts)
        ref_old = _reference(agent.policy, obs)
        torch.testing.assert_close(old, ref_old.log_prob(actions))
        for p in agent.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
        ratio = (agent.log_prob(agent.policy.distribution(obs), actions, experts) - old).exp()
        ref_ratio = (_reference(agent.policy, obs).log_prob(actions) - ref_old.log_prob(actions)).exp()
    torch.testing.assert_close(ratio, ref_ratio)

    # ppo.ratio=component: the density of the expert that acted
    cfg.ppo.ratio = "component"
    with torch.no_grad():
        logp = agent.log_prob(agent.policy.distribution(obs), actions, experts)
        comp = _reference(agent.policy, obs).component_distribution
        mean, std = comp.base_dist.loc[torch.arange(16), experts], comp.base_dist.scale[torch.arange(16), experts]
    torch.testing.assert_close(logp, D.Independent(D.Normal(mean, std), 1).log_prob(actions))


def test_policy_samples_come_from_the_mixture():
    torch.manual_seed(0)
    policy = _random_policy(3)
    obs = torch.randn(1, 5).expand(40000, 5)
    with torch.no_grad():
        actions, k = policy.sample(obs)
        ref = _reference(policy, obs[:1])
    freq = torch.bincount(k, minlength=3).float() / len(k)
    torch.testing.assert_close(freq, ref.mixture_distribution.probs[0], atol=0.01, rtol=0)
    torch.testing.assert_close(actions.mean(0), ref.mean[0], atol=0.03, rtol=0)
    torch.testing.assert_close(actions.var(0), ref.variance[0], atol=0.05, rtol=0.03)


def test_running_normalisation_matches_sb3_vecnormalize_on_hopper():
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    sb3 = VecNormalize(DummyVecEnv([lambda: make_env("Hopper-v5")]), gamma=0.99)
    sb3.seed(0)
    sb3_obs = sb3.reset()
    envs = make_vec_env("Hopper-v5", 1)
    obs, _ = envs.reset(seed=0)
    rms, reward_norm = RunningMeanStd(shape=(11,)), RewardNormalizer(1, gamma=0.99)
    policy = PPOPolicy(11, 3, 1)
    rng = np.random.default_rng(0)
    dones = 0
    for _ in range(600):  # random actions: Hopper falls every few dozen steps, so resets are covered
        rms.update(obs)
        np.testing.assert_allclose(policy.obs_norm.numpy(obs, rms), sb3_obs, rtol=1e-5, atol=1e-5)
        action = rng.uniform(-1, 1, size=(1, 3)).astype(np.float32)
        sb3_obs, sb3_reward, sb3_done, _ = sb3.step(action)
        obs, reward, terminated, truncated, _ = envs.step(action)
        done = terminated | truncated
        np.testing.assert_array_equal(done, sb3_done)
        np.testing.assert_allclose(reward_norm(reward, done), sb3_reward, rtol=1e-5, atol=1e-6)
        dones += int(done[0])
    assert dones > 5
    envs.close()
    sb3.close()


def _agent(env_id="InvertedPendulum-v5", **ppo) -> PPO:
    cfg = Config(env=env_id, algo="ppo", policy="gaussian")
    for key, value in ppo.items():
        setattr(cfg.ppo, key, value)
    validate(cfg)
    env = make_env(env_id)
    agent = PPO(cfg, env.observation_space.shape[0], env.action_space.shape[0], torch.device("cpu"))
    env.close()
    return agent


def test_truncated_episodes_bootstrap_from_the_true_final_observation():
    """With lambda = 0 the advantage is the one-step TD error. Replaying the same seeds and actions in plain
    envs gives the true final observation of every time-limit cut, which the autoreset replaced."""
    gamma = 0.9
    agent = _agent(norm_obs=False, norm_reward=False, gae_lambda=0.0, gamma=gamma, n_steps=12, batch_size=4)
    envs = make_vec_env("InvertedPendulum-v5", 2, max_episode_steps=5)
    rollouts = Rollouts(envs, agent, 12, reward_norm=None)
    rollouts.obs, _ = envs.reset(seed=3)
    rollouts.collect(EpisodeStats(1))
    data = rollouts.batch()
    envs.close()
    assert rollouts.cuts, "no time-limit truncation happened"
    adv = data["advantages"].view(12, 2)

    def value(o):
        with torch.no_grad():
            return float(agent.values(torch.as_tensor(o, dtype=torch.float32)))

    for i in range(2):
        env = make_env("InvertedPendulum-v5", max_episode_steps=5)
        obs, _ = env.reset(seed=3 + i)
        for t in range(12):
            next_obs, reward, terminated, truncated, _ = env.step(np.clip(rollouts.act_buf[t, i], -1, 1))
            bootstrap = 0.0 if terminated else gamma * value(next_obs)  # truncated: the final obs, not the reset
            assert adv[t, i].item() == pytest.approx(reward + bootstrap - value(obs), abs=1e-5)
            obs = env.reset()[0] if terminated or truncated else next_obs
        env.close()


def test_async_collection_equals_sync_collection():
    out = {}
    for mode in ("sync", "async"):
        torch.manual_seed(1)
        agent = _agent(n_steps=64)
        envs = make_vec_env("InvertedPendulum-v5", 3, mode)
        rollouts = Rollouts(envs, agent, 64, RewardNormalizer(3, 0.99))
        rollouts.obs, _ = envs.reset(seed=5)
        stats = EpisodeStats(1)
        rollouts.collect(stats)
        envs.close()
        out[mode] = (rollouts.obs_buf.copy(), rollouts.rewards.copy(), list(stats.returns))
    for a, b in zip(out["sync"], out["async"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(out["sync"][2]) > 0  # episodes finished and were counted


PPO_SMALL = ["--algo", "ppo", "--set", "ppo.n_steps=256", "--set", "ppo.n_epochs=2", "--no-progress"]


@pytest.mark.parametrize("policy", ["gaussian", "pmoe"])
def test_normalisation_statistics_survive_checkpoint_resume_and_evaluate(policy, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "--env",
        "InvertedPendulum-v5",
        "--policy",
        policy,
        "--steps",
        "512",
        "--eval-every",
        "512",
        "--eval-episodes",
        "3",
        "--checkpoint-every",
        "256",
        "--run-dir",
        str(run_dir),
        *PPO_SMALL,
    ]
    assert cli_main(train.main, args) == 0
    ckpt = checkpoint.load(run_dir, with_state=True)
    # one statistics update per environment step (initial count 1e-4, as SB3)
    assert ckpt.weights["policy.obs_norm.count"].item() == pytest.approx(512 + 1e-4)
    assert ckpt.state["reward_norm"]["count"] == pytest.approx(512 + 1e-4)
    assert ckpt.weights["policy.obs_norm.var"].min() < 0.99  # real statistics, not the initial ones
    if policy == "pmoe":
        assert any(k.startswith("q.") for k in ckpt.weights)

    # a fresh process applies the saved (frozen) statistics: the training run's own last evaluation again
    out = tmp_path / "eval.json"
    subprocess.run(
        [sys.executable, "-m", "pmoe_rl.evaluate", str(run_dir), "--episodes", "3", "--json", str(out)],
        check=True,
        capture_output=True,
    )
    assert json.loads(out.read_text())["returns"] == ckpt.state["last_eval"]["returns"]

    # resume continues the statistics, the reward normaliser and the update counter
    assert cli_main(train.main, ["--resume", str(run_dir), "--steps", "1024", "--no-progress"]) == 0
    assert "resuming from step 512" in capsys.readouterr().out
    ckpt = checkpoint.load(run_dir, with_state=True)
    assert ckpt.weights["policy.obs_norm.count"].item() == pytest.approx(1024 + 1e-4)
    assert ckpt.state["reward_norm"]["count"] == pytest.approx(1024 + 1e-4)
    assert ckpt.state["optim"]["n_updates"] == 4 * 2 * (256 // 64)  # rollouts x epochs x minibatches
