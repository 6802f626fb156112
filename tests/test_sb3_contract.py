"""SB3's contract, in the spirit of SB3's own tests: Dict observations under "MultiInputPolicy", an empty
``net_arch``, refused action spaces, clear errors for a wrong policy class, and what ``from_checkpoint`` carries."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.policies import ActorCriticPolicy

from pmoe_rl import train
from pmoe_rl.errors import CheckpointError, cli_main
from pmoe_rl.sb3 import (
    PMOEPPO,
    PMOESAC,
    MixtureActorCriticPolicy,
    MixtureSACPolicy,
    MultiInputMixtureActorCriticPolicy,
    MultiInputMixtureSACPolicy,
    from_checkpoint,
)

SAC_SMALL = dict(learning_starts=64, batch_size=32, buffer_size=5000)
PPO_SMALL = dict(n_steps=128, batch_size=64, n_epochs=2)


class DictPendulum(gym.ObservationWrapper):
    """Pendulum-v1 with its observation split into a Dict (as goal-conditioned tasks have), Box actions."""

    def __init__(self):
        super().__init__(gym.make("Pendulum-v1"))
        self.observation_space = spaces.Dict(
            {"angle": spaces.Box(-1.0, 1.0, (2,), np.float32), "velocity": spaces.Box(-8.0, 8.0, (1,), np.float32)}
        )

    def observation(self, obs):
        return {"angle": obs[:2], "velocity": obs[2:]}


def dict_observations(n=16):
    space = DictPendulum().observation_space
    samples = [space.sample() for _ in range(n)]
    return {key: np.stack([s[key] for s in samples]) for key in space.spaces}


@pytest.mark.parametrize(
    "make, steps",
    [
        (lambda env: PMOESAC("MultiInputPolicy", env, seed=0, **SAC_SMALL), 200),
        (lambda env: PMOEPPO("MultiInputPolicy", env, seed=0, **PPO_SMALL), 256),
        (lambda env: SAC(MultiInputMixtureSACPolicy, env, seed=0, **SAC_SMALL), 200),
        (lambda env: PPO(MultiInputMixtureActorCriticPolicy, env, seed=0, **PPO_SMALL), 256),
    ],
    ids=["PMOESAC", "PMOEPPO", "SAC+MultiInputMixtureSACPolicy", "PPO+MultiInputMixtureActorCriticPolicy"],
)
def test_dict_observations_train_save_load_and_predict_identically(make, steps, tmp_path):
    model = make(DictPendulum())
    model.learn(steps)
    model.save(tmp_path / "model.zip")
    loaded = type(model).load(tmp_path / "model.zip")
    obs = dict_observations()
    actions = model.predict(obs, deterministic=True)[0]
    assert actions.shape == (16, 1)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], actions)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PMOESAC("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[]), seed=0, **SAC_SMALL),
        lambda: SAC(MixtureSACPolicy, "Pendulum-v1", policy_kwargs=dict(net_arch=[]), seed=0, **SAC_SMALL),
        lambda: PMOEPPO("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[]), seed=0, **PPO_SMALL),
    ],
    ids=["PMOESAC", "SAC+MixtureSACPolicy", "PMOEPPO"],
)
def test_empty_net_arch_is_a_linear_head_on_the_features(make):
    model = make()
    model.learn(200)
    obs = np.stack([model.observation_space.sample() for _ in range(8)])
    assert model.predict(obs, deterministic=True)[0].shape == (8, 1)
    if isinstance(model, SAC):  # the heads read the observation directly
        assert model.actor.mixture.mean_head.in_features == 3


@pytest.mark.parametrize(
    "env, name",
    [
        (IdentityEnv(4), "Discrete"),
        (IdentityEnvMultiDiscrete(3), "MultiDiscrete"),
        (IdentityEnvMultiBinary(3), "MultiBinary"),
    ],  # fmt: skip
)
@pytest.mark.parametrize("algo", [PPO, A2C])
def test_non_box_action_spaces_are_refused_naming_the_space(env, name, algo):
    with pytest.raises(ValueError, match=rf"needs continuous \(Box\) actions; the action space is {name}"):
        algo(MixtureActorCriticPolicy, env)


def test_pmoe_ppo_with_a_policy_without_a_mixture_is_a_clear_error():
    with pytest.raises(ValueError, match="PMOEPPO needs a MixtureActorCriticPolicy .* got ActorCriticPolicy"):
        PMOEPPO(ActorCriticPolicy, "Pendulum-v1")


def test_pmoe_sac_warmup_policy_acts_with_the_policy_from_the_first_step():
    model = PMOESAC("MlpPolicy", "Pendulum-v1", warmup="policy", seed=0, **SAC_SMALL)
    model.learn(1)  # sets up the env and logger
    torch.manual_seed(0)
    _, buffer_action = model._sample_action(learning_starts=1000)  # still in the warm-up
    torch.manual_seed(0)
    expected, _ = model.predict(model._last_obs, deterministic=False)
    np.testing.assert_allclose(buffer_action, model.policy.scale_action(expected))
    uniform = PMOESAC("MlpPolicy", "Pendulum-v1", seed=0, **SAC_SMALL)
    assert uniform.warmup == "uniform"  # SB3's behaviour by default


def _sac_run(tmp_path, *sets):
    run = tmp_path / "run"
    args = [
        "--env",
        "Pendulum-v1",
        "--steps",
        "200",
        "--set",
        "net.hidden=[16]",
        "--set",
        "sac.critic_hidden=[16]",
        "--set",
        "sac.learning_starts=100",
        "--eval-every",
        "0",
        "--run-dir",
        str(run),
        "--no-progress",
    ]
    for assignment in sets:
        args += ["--set", assignment]
    assert cli_main(train.main, args) == 0
    return run


def test_from_checkpoint_carries_the_warmup(tmp_path):
    assert from_checkpoint(_sac_run(tmp_path)).warmup == "policy"  # the native default (rlkit)


def test_from_checkpoint_refuses_separate_learning_rates_unless_one_is_given(tmp_path):
    run = _sac_run(tmp_path, "sac.critic_lr=0.001")
    with pytest.raises(CheckpointError, match=r"sac.critic_lr=0.001 .* SB3's SAC has one learning rate"):
        from_checkpoint(run)
    assert from_checkpoint(run, learning_rate=1e-3).learning_rate == 1e-3
