"""The stable-baselines3 bridge, used the way an SB3 user would: stock SB3 calls on pmoe_rl.sb3's classes."""

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecNormalize
from torch import distributions as D

from pmoe_rl import load_policy, train
from pmoe_rl.errors import CheckpointError, cli_main
from pmoe_rl.sb3 import PMOEPPO, PMOESAC, MixtureActorCriticPolicy, MixtureSACPolicy, from_checkpoint

SAC_SMALL = dict(learning_starts=64, batch_size=32, buffer_size=5000)
PPO_SMALL = dict(n_steps=128, batch_size=64, n_epochs=2)


def predict_deterministic(model, obs):
    """``predict(obs, deterministic=True)``, checked to be a function of the observation (SB3's contract): a second
    call, with the torch generator moved on, gives the same actions."""
    first = model.predict(obs, deterministic=True)[0]
    torch.rand(1)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], first)
    return first


def observations(model, n=32):
    return np.stack([model.observation_space.sample() for _ in range(n)]).astype(np.float32)


@pytest.mark.parametrize(
    "make",
    [
        lambda env: PMOESAC("MlpPolicy", env, policy_kwargs=dict(n_experts=3, net_arch=[32, 32]), seed=0, **SAC_SMALL),
        lambda env: PMOESAC(
            MixtureSACPolicy,
            env,
            policy_kwargs=dict(n_experts=2, gate_input="obs", net_arch=[32, 32]),
            gate_loss="ce",
            expert_update="all",
            select_by="mean",
            policy_logp="mixture",
            behavior_expert="argmax",
            warmup="policy",
            seed=0,
            **SAC_SMALL,
        ),
        lambda env: SAC(MixtureSACPolicy, env, policy_kwargs=dict(n_experts=3, net_arch=[32, 32]), seed=0, **SAC_SMALL),
        lambda env: PPO(MixtureActorCriticPolicy, env, policy_kwargs=dict(n_experts=4), seed=0, **PPO_SMALL),
        lambda env: A2C(MixtureActorCriticPolicy, env, policy_kwargs=dict(n_experts=2), seed=0),
        lambda env: PMOEPPO("MlpPolicy", env, seed=0, **PPO_SMALL),
    ],
    ids=[
        "PMOESAC",
        "PMOESAC-options",
        "SAC+MixtureSACPolicy",
        "PPO+MixtureActorCriticPolicy",
        "A2C+MixtureActorCriticPolicy",
        "PMOEPPO",
    ],
)
def test_train_save_load_predict_identically(make, tmp_path):
    model = make("Pendulum-v1")
    model.learn(300)
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = type(model).load(path)  # SB3 >= 2.8 loads the tensors with weights_only=True
    assert type(loaded.policy) is type(model.policy)
    saved, original = loaded.policy._get_constructor_parameters(), model.policy._get_constructor_parameters()
    for key in ("n_experts", "eval_expert", "q_net_arch", "gate_input"):
        assert saved.get(key) == original.get(key), key
    for key in ("expert_update", "gate_loss", "gate_loss_weight", "target_logp", "alpha_logp", "update_sample",
                "select_by", "policy_logp", "behavior_expert", "warmup", "q_coef"):  # fmt: skip
        assert getattr(loaded, key, None) == getattr(model, key, None), key
        if hasattr(loaded, "estimator") and hasattr(loaded.estimator, key):  # the loss uses the options it was given
            assert getattr(loaded.estimator, key) == getattr(model, key), key
    if isinstance(loaded, PMOESAC):  # the actor collects with the saved rule for the acting expert
        assert loaded.actor.behavior_expert == model.behavior_expert
    obs = observations(model)
    np.testing.assert_array_equal(predict_deterministic(loaded, obs), predict_deterministic(model, obs))
    for (name, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    actions, _ = loaded.predict(obs[0])  # stochastic, a single observation
    assert model.action_space.contains(actions.astype(np.float32))


def test_mixture_sac_actor_log_prob_is_the_mixture_density():
    model = SAC(MixtureSACPolicy, "Pendulum-v1", policy_kwargs=dict(n_experts=3, net_arch=[16]), seed=0)
    obs = torch.as_tensor(observations(model, 8))
    with torch.no_grad():
        actions, logp = model.actor.action_log_prob(obs)
        dist = model.actor.distribution(obs)
        base = D.Independent(
            D.TransformedDistribution(D.Normal(dist.mean, dist.log_std.exp()), [D.TanhTransform(cache_size=1)]), 1
        )
        ref = D.MixtureSameFamily(D.Categorical(logits=dist.log_w), base)
        clipped = actions.clamp(-1 + 1e-6, 1 - 1e-6)
    # rlkit's 1e-6 inside log(1 - tanh^2 + eps) makes a tiny difference to the exact density
    torch.testing.assert_close(logp, ref.log_prob(clipped), atol=2e-3, rtol=1e-4)


def test_mixture_distribution_log_prob_matches_torch_distributions():
    model = PPO(MixtureActorCriticPolicy, "Pendulum-v1", policy_kwargs=dict(n_experts=3), seed=0, **PPO_SMALL)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.normal_(0, 0.3)
        obs = torch.as_tensor(observations(model, 16))
        actions = torch.randn(16, 1)
        _, logp, entropy = model.policy.evaluate_actions(obs, actions)
        dist = model.policy.get_distribution(obs).distribution
        ref = D.MixtureSameFamily(
            D.Categorical(logits=dist.log_w), D.Independent(D.Normal(dist.mean, dist.log_std.exp()), 1)
        )
    assert entropy is None  # SB3 then uses -mean(log pi)
    torch.testing.assert_close(logp, ref.log_prob(actions))


@pytest.mark.slow
def test_ppo_with_the_mixture_policy_improves_on_pendulum():
    env = make_vec_env("Pendulum-v1", n_envs=4, seed=0)
    model = PPO(
        MixtureActorCriticPolicy,
        env,
        policy_kwargs=dict(n_experts=3),
        n_steps=1024,
        gae_lambda=0.95,
        gamma=0.9,
        n_epochs=10,
        learning_rate=1e-3,
        clip_range=0.2,
        seed=0,
        device="cpu",
    )
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=100)
    before, _ = evaluate_policy(model, eval_env, n_eval_episodes=10)
    model.learn(60_000)
    after, _ = evaluate_policy(model, eval_env, n_eval_episodes=10)
    print(f"Pendulum-v1 PPO + MixtureActorCriticPolicy: mean return {before:.0f} -> {after:.0f}")
    assert after > before + 300, (before, after)


def test_sb3_machinery_callbacks_vecnormalize_logger_seeding(tmp_path):
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False, norm_reward=False)
    model = PMOEPPO("MlpPolicy", venv, seed=0, **PPO_SMALL)
    model.set_logger(configure(str(tmp_path / "log"), ["csv", "json"]))
    callbacks = [
        EvalCallback(eval_env, eval_freq=128, n_eval_episodes=2, log_path=str(tmp_path / "eval")),
        CheckpointCallback(save_freq=128, save_path=str(tmp_path / "ckpt"), save_vecnormalize=True),
    ]
    model.learn(512, callback=callbacks)
    assert (tmp_path / "eval" / "evaluations.npz").exists()
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.zip"))
    assert list((tmp_path / "ckpt").glob("*vecnormalize*.pkl"))
    header = (tmp_path / "log" / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ("train/q_loss", "train/gate_loss", "train/best_expert_freq_0", "train/approx_kl", "eval/mean_reward"):
        assert key in header, key

    def trained(seed):
        m = PMOESAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(n_experts=2, net_arch=[16]), seed=seed, **SAC_SMALL)
        m.learn(150)
        return torch.cat([p.detach().flatten() for p in m.policy.parameters()])

    torch.testing.assert_close(trained(3), trained(3))  # seeding makes runs reproducible
    assert not torch.equal(trained(3), trained(4))


@pytest.mark.parametrize("algo", ["sac", "ppo-pmoe", "ppo-gaussian"])
def test_native_checkpoints_open_as_sb3_models_with_the_same_actions(algo, tmp_path):
    run = tmp_path / "run"
    if algo == "sac":
        args = [
            "--env",
            "Hopper-v5",
            "--steps",
            "300",
            "--set",
            "net.hidden=[32,32]",
            "--set",
            "sac.critic_hidden=[32,32]",
            "--set",
            "sac.learning_starts=100",
            "--set",
            "sac.batch_size=32",
        ]
        expected = PMOESAC
    else:
        args = [
            "--env",
            "Hopper-v5",
            "--algo",
            "ppo",
            "--policy",
            algo.split("-")[1],
            "--steps",
            "512",
            "--set",
            "ppo.n_steps=256",
            "--set",
            "ppo.n_epochs=2",
        ]
        expected = PMOEPPO if algo == "ppo-pmoe" else PPO
    assert cli_main(train.main, [*args, "--eval-every", "0", "--run-dir", str(run), "--no-progress"]) == 0
    policy, _ = load_policy(run)
    model = from_checkpoint(run)
    assert type(model) is expected
    obs = observations(model, 64)
    native = policy.act(torch.as_tensor(obs), deterministic=True)[0].numpy()
    np.testing.assert_allclose(predict_deterministic(model, obs), native, atol=1e-6)
    # ... and it is now an ordinary SB3 model: save, load, evaluate, keep training
    model.save(tmp_path / "sb3.zip")
    loaded = expected.load(tmp_path / "sb3.zip", env=model.get_env())
    np.testing.assert_allclose(predict_deterministic(loaded, obs), native, atol=1e-6)
    mean, _ = evaluate_policy(loaded, loaded.get_env(), n_eval_episodes=2)
    assert np.isfinite(mean)
    loaded.learn(300 if algo == "sac" else 256)


def test_from_checkpoint_refuses_an_env_with_other_action_bounds(tmp_path):
    import gymnasium as gym

    run = tmp_path / "run"
    assert (
        cli_main(
            train.main,
            [
                "--env",
                "Pendulum-v1",
                "--algo",
                "ppo",
                "--steps",
                "64",
                "--set",
                "ppo.n_steps=64",
                "--eval-every",
                "0",
                "--run-dir",
                str(run),
                "--no-progress",
            ],
        )
        == 0
    )
    with pytest.raises(CheckpointError, match=r"act in \[-1, 1\].*RescaleAction"):
        from_checkpoint(run, env=gym.make("Pendulum-v1"))
    assert isinstance(from_checkpoint(run), PPO)  # the default env is pmoe-rl's, rescaled


def test_the_sb3_user_example_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    assert (
        cli_main(
            train.main,
            [
                "--env",
                "Pendulum-v1",
                "--steps",
                "300",
                "--set",
                "net.hidden=[32,32]",
                "--set",
                "sac.learning_starts=100",
                "--eval-every",
                "0",
                "--run-dir",
                str(run),
                "--no-progress",
            ],
        )
        == 0
    )
    script = Path(__file__).resolve().parent.parent / "examples" / "sb3_user.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--steps", "600", "--out", str(tmp_path / "models"), "--checkpoint", str(run)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    for name in (
        "pmoe_sac",
        "sac_mixture_policy",
        "ppo_mixture_policy",
        "a2c_mixture_policy",
        "pmoe_ppo",
        "from_checkpoint",
    ):
        assert (tmp_path / "models" / f"{name}.zip").is_file(), name
    assert "as PMOESAC: return" in proc.stdout
