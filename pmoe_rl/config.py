"""Run configuration: dataclasses, YAML loading, ``key=value`` overrides and validation.

Precedence, lowest first: the dataclass defaults (the official PMOE code, see reference/pmoe.md §6),
a YAML file (``--config``), the named CLI flags, then ``--set key=value`` overrides. Every value is
validated once, in :func:`validate`, before anything is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from pmoe_rl.errors import ConfigError

ALGOS = ("sac", "ppo")
POLICIES = ("pmoe", "gaussian", "moe", "mcp")
ESTIMATOR_NAMES = ("pmoe", "gumbel", "score", "mrp")


@dataclass
class NetConfig:
    """SAC's policy network (reference/pmoe.md §1); PPO's is under ``ppo.*``. ``eval_expert`` applies to both."""

    hidden: list[int] = field(default_factory=lambda: [256, 256])  # shared trunk, ReLU
    log_std_min: float = -20.0  # clamp of the state-dependent log-std
    log_std_max: float = 2.0
    # Gate input: the detached trunk features (official) or the raw observation (co-author script).
    gate_input: str = "detached_latent"  # detached_latent | obs
    # Deterministic acting: tanh(mean) of an expert drawn from Cat(w) (official `MakeDeterministic`) or
    # of the expert with the largest gate weight.
    eval_expert: str = "sample"  # sample | argmax


@dataclass
class SACConfig:
    """SAC with the PMOE estimator; defaults from the official code (reference/pmoe.md §2, §3, §6)."""

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256])
    batch_size: int = 256
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    tau: float = 0.005
    target_update_interval: int = 1
    reward_scale: float = 1.0
    learning_starts: int = 1000
    # Warm-up actions: the initial policy (official rlkit) or uniform random actions (SB3).
    warmup: str = "policy"  # policy | uniform
    train_freq: int = 1  # env steps between updates
    gradient_steps: int = 1  # updates each time
    ent_coef: Union[str, float] = "auto"  # "auto" (learned, log alpha init log(init_alpha)) or a fixed float
    init_alpha: float = 1.0
    target_entropy: Union[str, float] = "auto"  # "auto" = -action_dim
    # PMOE estimator options; the paper leaves these open, defaults are the official code's.
    expert_update: str = "best"  # best (argmax-Q expert only) | all (every expert's own loss)
    gate_loss: str = "mse"  # mse to one-hot(k*) | ce (cross-entropy to k*)
    gate_loss_weight: float = 1.0
    target_logp: str = "component"  # critic target log-prob: component (of k' ~ Cat(w)) | mixture
    alpha_logp: str = "best"  # temperature loss log-prob: best (expert k*) | mixture
    # baseline estimators (--estimator; reference §9, whose settings the paper does not give)
    gumbel_tau: float = 1.0  # Gumbel-Softmax temperature
    # straight-through one-hot in the forward pass (the action is one expert's sample). The soft relaxation
    # (false) mixes the experts' samples, and its SAC term rewards mixes that fall where the mixture density
    # is low: on MultiGoal-v0 it diverged (BENCHMARKS.md), so hard is the default.
    gumbel_hard: bool = True
    score_baseline: str = "experts"  # experts (sum_k w_k f(a_k)) | batch (batch mean) | none


@dataclass
class PPOConfig:
    """PPO with Gaussian or mixture policies. Rollout and optimisation defaults are the standard MuJoCo PPO
    settings (SB3's PPO defaults; CleanRL's ``ppo_continuous_action``); network, normalisation and the
    PMOE-PPO parts follow the co-author script (reference/pmoe.md §8), whose unknowns are options."""

    n_steps: int = 2048  # rollout length per environment
    n_epochs: int = 10
    batch_size: int = 64  # minibatch size
    learning_rate: float = 3e-4
    anneal_lr: bool = False  # linear decay to 0 over the run (CleanRL) instead of constant (SB3)
    adam_eps: float = 1e-5  # SB3 and CleanRL use 1e-5 for on-policy Adam
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_value: bool = True  # CleanRL-style clipped value loss, max of clipped and unclipped (co-author script)
    normalize_advantage: bool = True  # per minibatch
    ent_coef: float = 0.0  # entropy bonus, estimated as -log pi(a|s) (a mixture has no closed-form entropy)
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: Union[float, None] = None  # stop the epochs early when the approximate KL exceeds this
    # networks: separate actor and value MLPs, orthogonal init (sqrt 2; actor output 0.01, value output 1)
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    value_hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"  # tanh | relu
    log_std_init: float = 0.0  # state-independent log-std, one per expert and action dimension
    # the environment's action is clip(a, -1, 1); the stored log-prob is of the unclipped sample
    norm_obs: bool = True  # running observation normalisation; its statistics are saved with the policy
    norm_reward: bool = True  # divide rewards by the running std of the discounted return
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    # mixture policies (K > 1); the gate is Linear(obs -> K) + softmax on the normalised observation
    ratio: str = "mixture"  # PPO ratio density: mixture (co-author script) | component (of the expert that acted)
    # PMOE-PPO (--policy pmoe): auxiliary Q(s, a) trained on the GAE returns, gate regressed onto
    # one-hot(argmax_k Q(s, a_k)) with fresh a_k ~ N(mu_k, sigma_k); gate_loss_weight 0 = plain mixture PPO
    q_hidden: list[int] = field(default_factory=lambda: [64, 64, 64])
    q_coef: float = 1.0
    gate_loss: str = "mse"  # mse | ce
    gate_loss_weight: float = 1.0


@dataclass
class Config:
    env: str = ""
    algo: str = "sac"
    # pmoe: Gaussian mixture (its actor loss set by `estimator`); gaussian: one Gaussian; moe: gated
    # mixture-of-experts head (Jacobs et al. 1991); mcp: multiplicative compositional policy (Peng et al. 2019)
    policy: str = "pmoe"
    estimator: str = "pmoe"  # actor-loss estimator of a mixture policy with SAC: pmoe | gumbel | score | mrp
    experts: Union[int, None] = None  # None: 1 for gaussian; pmoe: 4 with SAC (official code), 5 with PPO (§8)
    seed: int = 0
    steps: int = 1_000_000
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = the measured default (see BENCHMARKS.md)
    eval_every: int = 10_000  # env steps between evaluations; 0 disables
    eval_episodes: int = 10
    checkpoint_every: int = 50_000  # env steps between checkpoints; 0 = only at the end
    log_every: int = 5_000  # env steps between log dumps (stdout table, CSV, TensorBoard, JSON)
    stop_at_reward: Union[float, None] = None  # stop once an evaluation's mean return reaches this
    num_envs: int = 1  # parallel environments (PPO)
    vec_env: str = "sync"  # sync (one process) | async (a subprocess per environment)
    net: NetConfig = field(default_factory=NetConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    @property
    def n_experts(self) -> int:
        if self.experts is not None:
            return self.experts
        if self.policy == "gaussian":
            return 1
        return 5 if self.algo == "ppo" else 4


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _field_map(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int/float/str/bool/list[int]/unions)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in typing.get_args(tp))
        raise ConfigError(f"{key} must be {names}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key} must be null, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp} for {key}")


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key '{key}'{hint}")


def apply_dict(cfg: Any, values: dict, prefix: str = "") -> None:
    """Set the fields of dataclass ``cfg`` from a (nested) dict, checking names and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    fields = _field_map(type(cfg))
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise _unknown_key(name, list(fields))
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            apply_dict(current, value, f"{name}.")
        else:
            setattr(cfg, key, _coerce(value, fields[key], name))


def set_value(cfg: Config, assignment: str) -> None:
    """Apply one ``--set key=value`` override; the value is parsed as YAML (``sac.batch_size=512``)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (for example sac.batch_size=512), got '{assignment}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    nested: Any = value
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    apply_dict(cfg, nested)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file; a missing, unreadable or malformed file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        close = difflib.get_close_matches(value, options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown {name} '{value}'{hint}; choose from {', '.join(options)}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {value}")


def validate(cfg: Config) -> Config:
    """Check every value; raise ConfigError naming the first bad one."""
    if not cfg.env:
        raise ConfigError("no environment given: pass --env ENV_ID (for example --env Hopper-v5)")
    _choice("algorithm", cfg.algo, ALGOS)
    _choice("policy", cfg.policy, POLICIES)
    _choice("estimator", cfg.estimator, ESTIMATOR_NAMES)
    if cfg.estimator != "pmoe" and (cfg.algo != "sac" or cfg.policy != "pmoe"):
        raise ConfigError(f"--estimator {cfg.estimator} trains a mixture policy with SAC (--algo sac --policy pmoe)")
    if cfg.policy in ("moe", "mcp") and cfg.algo != "sac":
        raise ConfigError(f"--policy {cfg.policy} is a SAC policy head; use --algo sac")
    if cfg.policy in ("moe", "mcp") and cfg.n_experts < 2:
        raise ConfigError(f"--policy {cfg.policy} composes at least 2 primitives; got --experts {cfg.n_experts}")
    if cfg.experts is not None and cfg.experts < 1:
        raise ConfigError(f"the number of experts must be >= 1, got {cfg.experts}")
    if cfg.policy == "gaussian" and cfg.n_experts != 1:
        raise ConfigError(f"--policy gaussian has one expert; got --experts {cfg.n_experts} (use --policy pmoe)")
    _positive("steps", cfg.steps)
    for name in ("eval_every", "checkpoint_every", "threads"):
        _positive(name, getattr(cfg, name), allow_zero=True)
    _positive("eval_episodes", cfg.eval_episodes)
    _positive("log_every", cfg.log_every)
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"unknown device '{cfg.device}'; use auto, cpu, cuda or cuda:N")

    net = cfg.net
    if not net.hidden or any(h < 1 for h in net.hidden):
        raise ConfigError(f"net.hidden must be a non-empty list of positive sizes, got {net.hidden}")
    if net.log_std_min >= net.log_std_max:
        raise ConfigError("net.log_std_min must be smaller than net.log_std_max")
    _choice("net.gate_input", net.gate_input, ("detached_latent", "obs"))
    _choice("net.eval_expert", net.eval_expert, ("sample", "argmax"))

    sac = cfg.sac
    for name in ("actor_lr", "critic_lr", "alpha_lr", "batch_size", "buffer_size", "train_freq",
                 "gradient_steps", "target_update_interval", "init_alpha"):
        _positive(f"sac.{name}", getattr(sac, name))
    for name in ("learning_starts", "gate_loss_weight", "reward_scale"):
        _positive(f"sac.{name}", getattr(sac, name), allow_zero=True)
    if not sac.critic_hidden or any(h < 1 for h in sac.critic_hidden):
        raise ConfigError(f"sac.critic_hidden must be a non-empty list of positive sizes, got {sac.critic_hidden}")
    if not 0.0 <= sac.gamma <= 1.0:
        raise ConfigError(f"sac.gamma must be in [0, 1], got {sac.gamma}")
    if not 0.0 < sac.tau <= 1.0:
        raise ConfigError(f"sac.tau must be in (0, 1], got {sac.tau}")
    if isinstance(sac.ent_coef, str) and sac.ent_coef != "auto":
        raise ConfigError(f"sac.ent_coef must be 'auto' or a number >= 0, got '{sac.ent_coef}'")
    if isinstance(sac.ent_coef, float):
        _positive("sac.ent_coef", sac.ent_coef, allow_zero=True)
    if isinstance(sac.target_entropy, str) and sac.target_entropy != "auto":
        raise ConfigError(f"sac.target_entropy must be 'auto' or a number, got '{sac.target_entropy}'")
    _choice("sac.warmup", sac.warmup, ("policy", "uniform"))
    _choice("sac.expert_update", sac.expert_update, ("best", "all"))
    _choice("sac.gate_loss", sac.gate_loss, ("mse", "ce"))
    _choice("sac.target_logp", sac.target_logp, ("component", "mixture"))
    _choice("sac.alpha_logp", sac.alpha_logp, ("best", "mixture"))
    _positive("sac.gumbel_tau", sac.gumbel_tau)
    _choice("sac.score_baseline", sac.score_baseline, ("experts", "batch", "none"))

    _positive("num_envs", cfg.num_envs)
    _choice("vec_env", cfg.vec_env, ("sync", "async"))
    if cfg.algo == "sac" and cfg.num_envs != 1:
        raise ConfigError(f"SAC collects with one environment; --num-envs {cfg.num_envs} is for --algo ppo")
    ppo = cfg.ppo
    for name in ("n_steps", "n_epochs", "batch_size", "learning_rate", "adam_eps", "clip_range", "clip_obs",
                 "clip_reward"):
        _positive(f"ppo.{name}", getattr(ppo, name))
    for name in ("ent_coef", "vf_coef", "max_grad_norm", "q_coef", "gate_loss_weight"):
        _positive(f"ppo.{name}", getattr(ppo, name), allow_zero=True)
    if ppo.target_kl is not None:
        _positive("ppo.target_kl", ppo.target_kl)
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(ppo, name) <= 1.0:
            raise ConfigError(f"ppo.{name} must be in [0, 1], got {getattr(ppo, name)}")
    for name in ("hidden", "value_hidden", "q_hidden"):
        sizes = getattr(ppo, name)
        if not sizes or any(h < 1 for h in sizes):
            raise ConfigError(f"ppo.{name} must be a non-empty list of positive sizes, got {sizes}")
    _choice("ppo.activation", ppo.activation, ("tanh", "relu"))
    _choice("ppo.ratio", ppo.ratio, ("mixture", "component"))
    _choice("ppo.gate_loss", ppo.gate_loss, ("mse", "ce"))
    if cfg.algo == "ppo" and ppo.batch_size > ppo.n_steps * cfg.num_envs:
        raise ConfigError(f"ppo.batch_size {ppo.batch_size} is larger than a rollout of ppo.n_steps x num_envs = "
                          f"{ppo.n_steps * cfg.num_envs} transitions")
    return cfg


def from_dict(values: dict) -> Config:
    cfg = Config()
    apply_dict(cfg, values)
    return cfg
