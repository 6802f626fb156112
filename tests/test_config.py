"""Config files, overrides and validation."""

from pathlib import Path

import pytest

from pmoe_rl.config import Config, apply_dict, from_dict, load_yaml, set_value, to_dict, validate
from pmoe_rl.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name, algo", [("pmoe_sac.yaml", "sac"), ("pmoe_ppo.yaml", "ppo")])
def test_reference_config_equals_the_built_in_defaults(name, algo):
    cfg = apply_dict(Config(env="Hopper-v5"), load_yaml(CONFIGS / name))
    assert validate(cfg) == validate(Config(env="Hopper-v5", algo=algo))


@pytest.mark.parametrize("name", ["gaussian_sac.yaml", "sb3_sac.yaml", "gaussian_ppo.yaml", "sb3_ppo.yaml"])
def test_shipped_configs_validate(name):
    validate(apply_dict(Config(env="Hopper-v5"), load_yaml(CONFIGS / name)))


def test_odice_imitation_config_is_the_papers_section_9_setting():
    cfg = validate(
        apply_dict(
            Config(env="Hopper-v5", dataset="pmoe_rl/Hopper-v5/expert-v0"), load_yaml(CONFIGS / "odice_imitation.yaml")
        )
    )
    o, off = cfg.odice, cfg.offline
    assert (cfg.algo, cfg.steps, o.lam, o.eta, o.value_lr, o.actor_lr) == ("odice", 500_000, 0.4, 1.0, 1e-4, 1e-4)
    assert (o.layer_norm, o.tanh_mean, o.twin_v, o.update) == (False, True, True, "orthogonal")
    assert (off.imitation, off.imitation_episodes, off.normalize_obs) == (True, 1, True)


def test_a_run_saved_before_an_option_existed_keeps_the_value_it_ran_with():
    """Runs saved before ``sac.update_sample`` / ``sac.select_by`` existed used the selected sample and the choice by
    samples; resuming or converting them must not switch to today's defaults (a new sample, the choice by means)."""
    for key, used, default in (("update_sample", "selected", "fresh"), ("select_by", "sample", "mean")):
        saved = to_dict(Config(env="Hopper-v5"))
        del saved["sac"][key]
        assert getattr(from_dict(saved).sac, key) == used
        assert getattr(from_dict(to_dict(Config(env="Hopper-v5"))).sac, key) == default


def test_a_run_saved_before_iql_squashed_its_mean_keeps_its_policy():
    saved = to_dict(Config(algo="iql"))
    del saved["iql"]["tanh_mean"]
    assert from_dict(saved).iql.tanh_mean is False and Config(algo="iql").iql.tanh_mean is True


def test_official_pmoe_sac_config_differs_from_the_defaults_only_in_the_actor_loss():
    official = validate(apply_dict(Config(env="Hopper-v5"), load_yaml(CONFIGS / "pmoe_sac_official.yaml")))
    default = validate(Config(env="Hopper-v5"))
    assert (official.sac.update_sample, official.sac.select_by) == ("selected", "sample")
    assert official.model_copy(update={"sac": default.sac}) == default
    assert official.sac.model_copy(update={"update_sample": "fresh", "select_by": "mean"}) == default.sac


def test_precedence_and_typed_overrides():
    cfg = apply_dict(Config(env="Hopper-v5"), {"sac": {"batch_size": 128}, "net": {"hidden": [64, 64]}})
    assert cfg.sac.batch_size == 128 and cfg.sac.gamma == 0.99  # the rest of the section keeps its defaults
    cfg = set_value(cfg, "sac.batch_size=512")
    cfg = set_value(cfg, "sac.ent_coef=0.1")
    cfg = set_value(cfg, "net.hidden=[8, 8, 8]")
    cfg = set_value(cfg, "stop_at_reward=null")
    cfg = set_value(cfg, "sac.actor_lr=1e-3")  # YAML reads 1e-3 as text; the float field converts it
    assert cfg.sac.batch_size == 512 and cfg.sac.ent_coef == 0.1 and cfg.net.hidden == [8, 8, 8]
    assert cfg.sac.actor_lr == 0.001 and cfg.net.hidden == [8, 8, 8]
    assert set_value(cfg, "sac.ent_coef=auto").sac.ent_coef == "auto"
    assert Config(env="x", policy="gaussian").n_experts == 1 and Config(env="x").n_experts == 4
    assert Config(env="x", algo="ppo").n_experts == 5 and Config(env="x", algo="ppo", policy="gaussian").n_experts == 1


def test_validate_stores_the_number_of_experts_used():
    assert Config(env="x").experts is None
    assert validate(Config(env="x", algo="ppo")).experts == 5
    assert validate(Config(env="x", policy="gaussian")).experts == 1
    with pytest.raises(ConfigError, match="batch_size: should be greater than 0"):
        Config().sac.batch_size = 0  # every assignment is validated


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("sac.tau=0", "sac.tau: should be greater than 0 (got 0)"),
        ("sac.gamma=1.5", "sac.gamma: should be less than or equal to 1"),
        ("sac.ent_coef=-1", "sac.ent_coef: should be 'auto' or should be greater than or equal to 0 (got -1)"),
        ("sac.ent_coef=sometimes", "sac.ent_coef: should be 'auto' or should be a valid number"),
        ("net.hidden=[]", "net.hidden: List should have at least 1 item"),
        ("net.hidden=[8, 0]", "net.hidden[1]: should be greater than 0"),
        ("net.log_std_min=5", "log_std_min must be smaller"),
        ("net.eval_expert=best", "net.eval_expert: should be 'argmax' or 'sample' (got 'best')"),
        ("eval_episodes=0", "eval_episodes: should be greater than 0"),
        ("num_envs=2", "SAC collects with one environment"),
        ("vec_env=threads", "vec_env: should be 'sync' or 'async' (got 'threads')"),
        ("ppo.gae_lambda=1.5", "ppo.gae_lambda: should be less than or equal to 1"),
        ("ppo.ratio=expert", "ppo.ratio: should be 'mixture' or 'component' (got 'expert')"),
        ("ppo.n_steps=0", "ppo.n_steps: should be greater than 0"),
        ("ppo.q_hidden=[]", "ppo.q_hidden: List should have at least 1 item"),
        ("steps=1.5", "steps: should be a valid integer, got a number with a fractional part"),
        ("sac.gumbel_hard=maybe", "sac.gumbel_hard: should be a valid boolean"),
        ("estimator=pmeo", "unknown estimator 'pmeo' (did you mean 'pmoe'?); choose from pmoe, gumbel, score, mrp"),
        ("sac.batchsize=3", "unknown config key 'sac.batchsize'; did you mean batch_size?"),
    ],
)
def test_invalid_values_name_the_key(assignment, message):
    with pytest.raises(ConfigError) as exc:
        validate(set_value(Config(env="Hopper-v5"), assignment))
    assert message in str(exc.value)


def test_ppo_minibatch_larger_than_the_rollout_is_refused():
    cfg = set_value(Config(env="Hopper-v5", algo="ppo", num_envs=2), "ppo.n_steps=64")
    cfg = set_value(cfg, "ppo.batch_size=256")
    with pytest.raises(ConfigError, match="larger than a rollout of ppo.n_steps x num_envs = 128"):
        validate(cfg)
