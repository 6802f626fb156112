"""Open a checkpoint written by ``python -m pmoe_rl.train`` as a stable-baselines3 model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

from pmoe_rl import checkpoint, options
from pmoe_rl.config import Config, from_dict
from pmoe_rl.envs import make_env
from pmoe_rl.errors import CheckpointError
from pmoe_rl.sb3.pmoe_ppo import PMOEPPO
from pmoe_rl.sb3.pmoe_sac import PMOESAC
from pmoe_rl.sb3.policies import MixtureActorCriticPolicy, ObsNormalizerExtractor


def from_checkpoint(path: str | Path, env=None, device: str | torch.device = "cpu", **kwargs) -> BaseAlgorithm:
    """The SB3 model equivalent to a native checkpoint: ``PMOESAC`` for SAC runs, ``PMOEPPO`` for PMOE-PPO
    runs, stock ``PPO`` with :class:`MixtureActorCriticPolicy` for Gaussian (or gate-loss-free) PPO runs and for
    the policy an offline run (O-DICE, IQL, BC) extracted, ``PMOESAC`` (one expert) for an imitation run's learner.

    The weights are copied exactly, so the model's ``predict(obs, deterministic=True)`` gives the native
    policy's actions (for runs with ``net.eval_expert=sample``, with the same torch seed). The hyperparameters
    are the run's, mapped onto SB3's arguments (the warm-up included); ``kwargs`` override them. SB3's SAC has
    one learning rate for the actor, critic and temperature: a SAC run whose ``sac.critic_lr`` or
    ``sac.alpha_lr`` differ from ``sac.actor_lr`` is refused unless ``learning_rate`` is given.

    ``env`` defaults to ``pmoe_rl.envs.make_env(run's env id)``: actions rescaled to [-1, 1], the space the
    policy was trained in. A PPO run's observation statistics are frozen inside the policy
    (:class:`ObsNormalizerExtractor`), so ``predict`` takes raw observations; its reward normalisation is
    training state and is not carried over (wrap the env in ``VecNormalize(norm_obs=False)`` to continue with
    one). Save the result with ``model.save(...)`` to get an ordinary SB3 zip.
    """
    ckpt = checkpoint.load(path, device="cpu")
    cfg = from_dict(ckpt.meta["config"])
    env = env if env is not None else make_env(cfg.env)
    obs_shape = tuple(ckpt.meta["observation_space"]["shape"])
    if env.observation_space.shape != obs_shape:
        raise CheckpointError(
            f"the env's observations have shape {env.observation_space.shape}, the checkpoint's {obs_shape}"
        )
    space = env.action_space
    if space.shape != tuple(ckpt.meta["action_space"]["shape"]) or not (
        np.all(space.low == -1) and np.all(space.high == 1)
    ):
        raise CheckpointError(
            f"pmoe-rl policies act in [-1, 1]^{ckpt.meta['action_space']['shape']}; the env's "
            f"action space is {space}: pass env=None or wrap the env in "
            "gymnasium.wrappers.RescaleAction(env, -1, 1)"
        )
    build = {"sac": _sac, "ppo": _ppo, "imitate": _imitation}.get(ckpt.meta["algo"], _offline)
    model = build(cfg, env, device, kwargs)
    try:
        _load(model, ckpt.weights, cfg)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {ckpt.path} does not match the SB3 model: {exc}") from None
    return model


def _sac(cfg: Config, env, device, overrides: dict) -> PMOESAC:
    sac, net = cfg.sac, cfg.net
    if sac.reward_scale != 1.0:
        raise CheckpointError(f"the run used sac.reward_scale={sac.reward_scale}; SB3's SAC has no reward scale")
    for name in ("critic_lr", "alpha_lr"):
        if getattr(sac, name) != sac.actor_lr and "learning_rate" not in overrides:
            raise CheckpointError(
                f"the run used sac.{name}={getattr(sac, name)} and sac.actor_lr={sac.actor_lr}; SB3's "
                f"SAC has one learning rate (pass learning_rate=... to choose it)"
            )
    ent_coef = f"auto_{sac.init_alpha}" if sac.ent_coef == "auto" else float(sac.ent_coef)
    target_entropy = "auto" if sac.target_entropy == "auto" else float(sac.target_entropy)
    # SB3's arguments named like pmoe-rl's options, then the others
    same = ("buffer_size", "learning_starts", "batch_size", "tau", "gamma", "train_freq", "gradient_steps",
            "target_update_interval", "warmup", "expert_update", "gate_loss", "gate_loss_weight", "target_logp",
            "alpha_logp", "update_sample", "select_by", "policy_logp", "behavior_expert")  # fmt: skip
    args = {name: getattr(sac, name) for name in same}
    args.update(learning_rate=sac.actor_lr, ent_coef=ent_coef, target_entropy=target_entropy, seed=cfg.seed,
                device=device)  # fmt: skip
    args["policy_kwargs"] = dict(net_arch=dict(pi=net.hidden, qf=sac.critic_hidden), n_experts=cfg.n_experts,
                                 **{name: getattr(net, name) for name in ("gate_input", "eval_expert", "log_std_min",
                                                                          "log_std_max", "mean_init")})  # fmt: skip
    args.update(overrides)
    return PMOESAC("MlpPolicy", env, **args)


def _imitation(cfg: Config, env, device, overrides: dict) -> PMOESAC:
    """An imitation run's learner (a tanh-Gaussian, like a SAC policy) as ``PMOESAC`` with one expert, for
    ``predict`` (its critics are SB3's initial ones: imitation trains none)."""
    im, net = cfg.imitation, cfg.net
    hidden = [] if im.learner == "linear" else im.hidden
    policy_kwargs = dict(net_arch=dict(pi=hidden, qf=[256, 256]), n_experts=1, eval_expert=net.eval_expert,
                         log_std_min=net.log_std_min, log_std_max=net.log_std_max)  # fmt: skip
    return PMOESAC("MlpPolicy", env, seed=cfg.seed, device=device, policy_kwargs=policy_kwargs, **overrides)


def _ppo(cfg: Config, env, device, overrides: dict) -> PPO:
    ppo = cfg.ppo
    pmoe = cfg.policy == "pmoe" and cfg.n_experts > 1
    policy_kwargs = dict(
        n_experts=cfg.n_experts,
        eval_expert=cfg.net.eval_expert,
        net_arch=dict(pi=ppo.hidden, vf=ppo.value_hidden),
        activation_fn=nn.Tanh if ppo.activation == "tanh" else nn.ReLU,
        log_std_init=ppo.log_std_init,
        optimizer_kwargs=dict(eps=ppo.adam_eps),
    )
    if ppo.norm_obs:
        policy_kwargs.update(
            features_extractor_class=ObsNormalizerExtractor, features_extractor_kwargs=dict(clip=ppo.clip_obs)
        )
    # SB3 clips the value prediction without taking the max with the unclipped loss; the closest is no clipping
    same = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "clip_range",
            "normalize_advantage", "ent_coef", "vf_coef", "max_grad_norm", "target_kl")  # fmt: skip
    args = {name: getattr(ppo, name) for name in same}
    args.update(seed=cfg.seed, device=device, policy_kwargs=policy_kwargs)
    if pmoe:
        policy_kwargs["q_net_arch"] = ppo.q_hidden
        args.update(q_coef=ppo.q_coef, gate_loss=ppo.gate_loss, gate_loss_weight=ppo.gate_loss_weight)
    args.update(overrides)
    return (PMOEPPO if pmoe else PPO)(MixtureActorCriticPolicy, env, **args)


def _offline(cfg: Config, env, device, overrides: dict) -> PPO:
    """An offline run's policy (a Gaussian or mixture with a state-independent log-std, like PPO's) as SB3's
    ``PPO`` with :class:`MixtureActorCriticPolicy`, for ``predict`` (its value head is SB3's initial one:
    offline runs train no PPO value function)."""
    off, section = cfg.offline, getattr(cfg, cfg.algo)
    policy_kwargs = dict(
        n_experts=cfg.n_experts,
        eval_expert=cfg.net.eval_expert,
        net_arch=dict(pi=section.policy_hidden, vf=off.value_hidden),
        activation_fn=nn.ReLU,
        tanh_mean=section.tanh_mean,
    )
    if off.normalize_obs:
        policy_kwargs.update(
            features_extractor_class=ObsNormalizerExtractor, features_extractor_kwargs=dict(clip=options.OBS_CLIP)
        )
    return PPO(MixtureActorCriticPolicy, env, seed=cfg.seed, device=device, policy_kwargs=policy_kwargs,
               **overrides)  # fmt: skip


@torch.no_grad()
def _load(model: BaseAlgorithm, weights: dict[str, torch.Tensor], cfg: Config) -> None:
    policy = model.policy
    if isinstance(model, PMOESAC):
        policy.actor.mixture.load_state_dict(checkpoint.submodule(weights, "policy"))
        if cfg.algo == "imitate":  # the learner only
            return
        for name, critic in (("critic", policy.critic), ("critic_target", policy.critic_target)):
            # pmoe_rl.nets.TwinQ: stacked (n, in, out) weights and (n, 1, out) biases
            w = checkpoint.submodule(weights, name)
            for i, q_net in enumerate(critic.q_networks):
                layers = [m for m in q_net if isinstance(m, nn.Linear)]
                for j, layer in enumerate(layers):
                    layer.weight.copy_(w[f"net.weights.{j}"][i].T)
                    layer.bias.copy_(w[f"net.biases.{j}"][i, 0])
        model.log_ent_coef.copy_(weights["log_alpha"].reshape(model.log_ent_coef.shape))
        return

    # native nn.Sequential MLPs (Linear at even indices) -> SB3's mlp_extractor layers + output layer
    def linears(*modules: nn.Module) -> list[nn.Linear]:
        return [m for module in modules for m in module.modules() if isinstance(m, nn.Linear)]

    native = checkpoint.submodule(weights, "policy")
    offline = cfg.algo in options.OFFLINE_ALGOS
    groups = [("policy.mean_net", linears(policy.mlp_extractor.policy_net, policy.action_net))]
    if not offline:
        groups.append(("value", linears(policy.mlp_extractor.value_net, policy.value_net)))
    if policy.q_net is not None:
        groups.append(("q", linears(policy.q_net)))
    for prefix, layers in groups:
        for i, layer in enumerate(layers):
            layer.weight.copy_(weights[f"{prefix}.{2 * i}.weight"])
            layer.bias.copy_(weights[f"{prefix}.{2 * i}.bias"])
    log_std = native["log_std"]
    if offline:  # the offline policies clamp their log-std; SB3's uses the parameter as it is
        log_std = log_std.clamp(cfg.offline.log_std_min, cfg.offline.log_std_max)
    policy.log_std.copy_(log_std)
    if policy.gate is not None:
        policy.gate.weight.copy_(native["gate.weight"])
        policy.gate.bias.copy_(native["gate.bias"])
    if cfg.offline.normalize_obs if offline else cfg.ppo.norm_obs:
        for extractor in {policy.pi_features_extractor, policy.vf_features_extractor}:
            extractor.norm.load_state_dict(checkpoint.submodule(native, "obs_norm"))
