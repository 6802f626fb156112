"""Config files, overrides and validation."""

from pathlib import Path

import pytest

from pmoe_rl.config import Config, apply_dict, load_yaml, set_value, validate
from pmoe_rl.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name, algo", [("pmoe_sac.yaml", "sac"), ("pmoe_ppo.yaml", "ppo")])
def test_reference_config_equals_the_built_in_defaults(name, algo):
    cfg = Config(env="Hopper-v5")
    apply_dict(cfg, load_yaml(CONFIGS / name))
    assert validate(cfg) == validate(Config(env="Hopper-v5", algo=algo))


@pytest.mark.parametrize("name", ["gaussian_sac.yaml", "sb3_sac.yaml", "gaussian_ppo.yaml", "sb3_ppo.yaml"])
def test_shipped_configs_validate(name):
    cfg = Config(env="Hopper-v5")
    apply_dict(cfg, load_yaml(CONFIGS / name))
    validate(cfg)


def test_precedence_and_typed_overrides():
    cfg = Config(env="Hopper-v5")
    apply_dict(cfg, {"sac": {"batch_size": 128}, "net": {"hidden": [64, 64]}})
    set_value(cfg, "sac.batch_size=512")
    set_value(cfg, "sac.ent_coef=0.1")
    set_value(cfg, "net.hidden=[8, 8, 8]")
    set_value(cfg, "stop_at_reward=null")
    assert cfg.sac.batch_size == 512 and cfg.sac.ent_coef == 0.1 and cfg.net.hidden == [8, 8, 8]
    set_value(cfg, "sac.ent_coef=auto")
    assert cfg.sac.ent_coef == "auto"
    assert Config(env="x", policy="gaussian").n_experts == 1 and Config(env="x").n_experts == 4
    assert Config(env="x", algo="ppo").n_experts == 5 and Config(env="x", algo="ppo", policy="gaussian").n_experts == 1


@pytest.mark.parametrize("assignment, message", [
    ("sac.tau=0", "sac.tau must be in (0, 1]"),
    ("sac.gamma=1.5", "sac.gamma must be in [0, 1]"),
    ("sac.ent_coef=-1", "sac.ent_coef must be >= 0"),
    ("sac.ent_coef=sometimes", "sac.ent_coef must be 'auto'"),
    ("net.hidden=[]", "net.hidden must be a non-empty list"),
    ("net.log_std_min=5", "log_std_min must be smaller"),
    ("net.eval_expert=best", "unknown net.eval_expert 'best'"),
    ("eval_episodes=0", "eval_episodes must be > 0"),
    ("num_envs=2", "SAC collects with one environment"),
    ("vec_env=threads", "unknown vec_env 'threads'"),
    ("ppo.gae_lambda=1.5", "ppo.gae_lambda must be in [0, 1]"),
    ("ppo.ratio=expert", "unknown ppo.ratio 'expert'"),
    ("ppo.n_steps=0", "ppo.n_steps must be > 0"),
    ("ppo.q_hidden=[]", "ppo.q_hidden must be a non-empty list"),
])
def test_invalid_values_name_the_key(assignment, message):
    cfg = Config(env="Hopper-v5")
    with pytest.raises(ConfigError, match=None) as exc:
        set_value(cfg, assignment)
        validate(cfg)
    assert message in str(exc.value)


def test_ppo_minibatch_larger_than_the_rollout_is_refused():
    cfg = Config(env="Hopper-v5", algo="ppo", num_envs=2)
    set_value(cfg, "ppo.n_steps=64")
    set_value(cfg, "ppo.batch_size=256")
    with pytest.raises(ConfigError, match="larger than a rollout of ppo.n_steps x num_envs = 128"):
        validate(cfg)
