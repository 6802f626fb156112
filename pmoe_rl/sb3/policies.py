"""Mixture policies as stable-baselines3 policies (docs/algorithms.md, "In stable-baselines3").

- :class:`MixtureSACPolicy`: an SB3 ``SACPolicy`` whose actor is pmoe-rl's :class:`~pmoe_rl.policies.MixturePolicy`
  (tanh-squashed Gaussian mixture). With stock ``SAC`` the actor's ``action_log_prob`` samples the mixture
  exactly (k ~ Cat(w), reparameterised within expert k) and returns the **mixture** log-density, which is what
  ``SAC.train`` needs; :class:`~pmoe_rl.sb3.PMOESAC` trains it with the PMOE estimator instead.
- :class:`MixtureActorCriticPolicy`: an SB3 ``ActorCriticPolicy`` with a Gaussian-mixture action distribution
  (:class:`MixtureDistribution`: K experts' means from ``action_net``, K x A state-independent log-stds, a gate
  Linear(features -> K) + softmax), usable with stock ``PPO`` and ``A2C``. ``evaluate_actions`` returns
  entropy ``None``, so SB3 uses -mean(log pi) as the entropy estimate. An optional auxiliary Q head
  (``q_net_arch``) serves :class:`~pmoe_rl.sb3.PMOEPPO`.
- :class:`ObsNormalizerExtractor`: a features extractor applying frozen observation statistics, so that a
  native PPO checkpoint (whose policy normalises its inputs) predicts from raw observations inside SB3.

Every constructor argument is returned by ``_get_constructor_parameters``, so ``save``/``load`` rebuild the
policy (SB3 >= 2.8 loads the weights with ``weights_only=True``; only tensors are stored there).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from pmoe_rl import options
from pmoe_rl.mixture import GaussianMixture, SquashedMixture, gather_expert
from pmoe_rl.nets import mlp
from pmoe_rl.normalization import ObsNormalizer
from pmoe_rl.policies import MixturePolicy

# --- SAC ------------------------------------------------------------------------------------------------------


class MixtureActor(BasePolicy):
    """SAC actor: the features extractor, then :class:`~pmoe_rl.policies.MixturePolicy` (``self.mixture``)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        mixture_kwargs: dict | None = None,
        use_sde: bool = False,
        **_sde_kwargs,
    ):
        if use_sde:
            raise ValueError("mixture policies do not support gSDE (use_sde=True)")
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch, self.activation_fn, self.features_dim = net_arch, activation_fn, features_dim
        self.mixture_kwargs = mixture_kwargs or {}  # MixturePolicy's (n_experts, gate_input, ...)
        self.mixture = MixturePolicy(
            features_dim,
            int(np.prod(action_space.shape)),
            hidden=list(net_arch),
            activation=activation_fn,
            **self.mixture_kwargs,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            features_dim=self.features_dim,
            activation_fn=self.activation_fn,
            features_extractor=self.features_extractor,
            mixture_kwargs=self.mixture_kwargs,
        )
        return data

    def distribution(self, obs: torch.Tensor) -> SquashedMixture:
        return self.mixture(self.extract_features(obs, self.features_extractor))

    behavior_expert: options.BehaviorExpert = options.BEHAVIOR_EXPERT  # PMOESAC sets its own

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        features = self.extract_features(obs, self.features_extractor)
        return self.mixture.act(features, deterministic, expert=self.behavior_expert)[0]

    def action_log_prob(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An exact mixture sample (k ~ Cat(w), reparameterised within expert k) and its mixture log-density."""
        dist = self.distribution(obs)
        u, _ = dist.expert_sample(dist.sample_expert())
        return torch.tanh(u), dist.mixture_log_prob(u)

    def reset_noise(self, batch_size: int = 1) -> None:
        raise ValueError("mixture policies do not support gSDE")

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self(observation, deterministic)


class MixtureSACPolicy(SACPolicy):
    """SB3 ``SACPolicy`` with a Gaussian-mixture actor. Extra keyword arguments (``policy_kwargs``):
    ``n_experts`` (4), ``gate_input`` (``detached_latent`` | ``obs``), ``eval_expert`` (``argmax``: deterministic
    acting is the most probable expert's mean | ``sample``: of an expert drawn from the gate, the official
    evaluation), ``log_std_min`` / ``log_std_max`` (-20, 2), ``mean_init`` (``small`` | ``default``, the mean head's
    initialisation). The actor's hidden layers are ``net_arch`` (or its
    ``pi`` entry) with ``activation_fn`` (ReLU) and rlkit's initialisation (docs/algorithms.md)."""

    actor: MixtureActor

    def __init__(
        self,
        *args,
        n_experts: int = options.SAC_EXPERTS,
        gate_input: options.GateInput = options.GATE_INPUT,
        eval_expert: options.EvalExpert = options.EVAL_EXPERT,
        log_std_min: float = options.LOG_STD_MIN,
        log_std_max: float = options.LOG_STD_MAX,
        mean_init: options.MeanInit = options.MEAN_INIT,
        **kwargs,
    ):
        if kwargs.get("use_sde"):
            raise ValueError("mixture policies do not support gSDE (use_sde=True)")
        self.mixture_kwargs = dict(
            n_experts=n_experts,
            gate_input=gate_input,
            eval_expert=eval_expert,
            log_std_min=log_std_min,
            log_std_max=log_std_max,
            mean_init=mean_init,
        )
        super().__init__(*args, **kwargs)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> MixtureActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return MixtureActor(**actor_kwargs, mixture_kwargs=self.mixture_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.mixture_kwargs)
        return data


class MultiInputMixtureSACPolicy(MixtureSACPolicy):
    """:class:`MixtureSACPolicy` for Dict observations: SB3's ``CombinedExtractor`` by default (SB3's
    ``MultiInputPolicy``)."""

    def __init__(self, *args, features_extractor_class=CombinedExtractor, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


# --- PPO / A2C ------------------------------------------------------------------------------------------------


class MixtureDistribution(Distribution):
    """An SB3 ``Distribution`` over sum_k w_k N(mu_k, diag sigma_k^2) (not squashed: PPO clips actions).

    ``mode()`` is the mean of the most probable expert (``eval_expert="argmax"``, a function of the observation,
    as pmoe-rl's deterministic acting) or of an expert drawn from the gate (``sample``). There is no closed-form
    entropy:
    ``entropy()`` returns None and SB3's PPO/A2C fall back to -mean(log pi)."""

    def __init__(self, action_dim: int, n_experts: int, eval_expert: options.EvalExpert = options.EVAL_EXPERT):
        super().__init__()
        self.action_dim, self.n_experts, self.eval_expert = action_dim, n_experts, eval_expert
        self.distribution: GaussianMixture | None = None

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> tuple[nn.Module, nn.Parameter]:
        action_net = nn.Linear(latent_dim, self.n_experts * self.action_dim)
        return action_net, nn.Parameter(torch.full((self.n_experts, self.action_dim), float(log_std_init)))

    def proba_distribution(self, mean: torch.Tensor, log_std: torch.Tensor, log_w: torch.Tensor) -> MixtureDistribution:
        mean = mean.view(-1, self.n_experts, self.action_dim)
        self.distribution = GaussianMixture(mean, log_std.expand_as(mean), log_w)
        return self

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(actions)

    def entropy(self) -> None:
        return None

    def sample(self) -> torch.Tensor:
        return self.distribution.sample()[0]

    def mode(self) -> torch.Tensor:
        dist = self.distribution
        return gather_expert(dist.mean, dist.choose_expert(self.eval_expert))

    def actions_from_params(self, mean, log_std, log_w, deterministic: bool = False) -> torch.Tensor:
        self.proba_distribution(mean, log_std, log_w)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(self, mean, log_std, log_w) -> tuple[torch.Tensor, torch.Tensor]:
        actions = self.actions_from_params(mean, log_std, log_w)
        return actions, self.log_prob(actions)


class ObsNormalizerExtractor(BaseFeaturesExtractor):
    """Flatten, then clip((x - mean) / sqrt(var + 1e-8), -clip, clip) with statistics held as buffers (frozen;
    loaded from a pmoe-rl checkpoint by :func:`~pmoe_rl.sb3.from_checkpoint`)."""

    def __init__(self, observation_space: spaces.Box, clip: float = 10.0):
        dim = int(np.prod(observation_space.shape))
        super().__init__(observation_space, dim)
        self.flatten = nn.Flatten()
        self.norm = ObsNormalizer(dim, True, clip)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.norm(self.flatten(observations))


class MixtureActorCriticPolicy(ActorCriticPolicy):
    """SB3 ``ActorCriticPolicy`` with a Gaussian-mixture action distribution. Extra keyword arguments:
    ``n_experts`` (5), ``eval_expert`` (``argmax`` | ``sample``), ``q_net_arch`` (None; a list of sizes adds
    the auxiliary Q(s, a) head of PMOE-PPO, a ReLU MLP on the features and the clipped action) and ``tanh_mean``
    (False; True squashes the experts' means with tanh, as pmoe-rl's IQL policy).

    The gate is Linear(features -> K) + softmax on the (policy) features, as pmoe-rl's PPO policy gates on the
    normalised observation; it is initialised orthogonally with gain 0.01 (near-uniform weights)."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        *args,
        n_experts: int = options.PPO_EXPERTS,
        eval_expert: options.EvalExpert = options.EVAL_EXPERT,
        q_net_arch: list[int] | None = None,
        tanh_mean: bool = False,
        **kwargs,
    ):
        if kwargs.get("use_sde"):
            raise ValueError("mixture policies do not support gSDE (use_sde=True)")
        if not isinstance(action_space, spaces.Box):
            raise ValueError(
                f"a Gaussian-mixture policy needs continuous (Box) actions; the action space is {action_space} "
                f"(use SB3's own MlpPolicy for {type(action_space).__name__} actions)"
            )
        self.n_experts, self.eval_expert, self.q_net_arch = n_experts, eval_expert, q_net_arch
        self.tanh_mean = tanh_mean
        super().__init__(observation_space, action_space, *args, **kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(n_experts=self.n_experts, eval_expert=self.eval_expert, q_net_arch=self.q_net_arch,
                    tanh_mean=self.tanh_mean)  # fmt: skip
        return data

    def _build(self, lr_schedule) -> None:
        act_dim = int(np.prod(self.action_space.shape))
        self.action_dist = MixtureDistribution(act_dim, self.n_experts, self.eval_expert)
        self._build_mlp_extractor()
        self.action_net, self.log_std = self.action_dist.proba_distribution_net(
            self.mlp_extractor.latent_dim_pi, self.log_std_init
        )
        self.gate = nn.Linear(self.features_dim, self.n_experts) if self.n_experts > 1 else None
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        self.q_net = None
        if self.q_net_arch:
            self.q_net = mlp(self.features_dim + act_dim, list(self.q_net_arch), 1, nn.ReLU, orthogonal=True)
        if self.ortho_init:  # SB3's gains (features and MLP sqrt 2, action 0.01, value 1); the gate as the action
            gains = {self.mlp_extractor: np.sqrt(2), self.action_net: 0.01, self.value_net: 1.0}
            if self.share_features_extractor:
                gains[self.features_extractor] = np.sqrt(2)
            else:
                gains.update({self.pi_features_extractor: np.sqrt(2), self.vf_features_extractor: np.sqrt(2)})
            if self.gate is not None:
                gains[self.gate] = 0.01
            for module, gain in gains.items():
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _latents(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(policy features, latent_pi, latent_vf)."""
        features = self.extract_features(obs)
        if self.share_features_extractor:
            latent_pi, latent_vf = self.mlp_extractor(features)
            return features, latent_pi, latent_vf
        pi_features, vf_features = features
        latent_pi = self.mlp_extractor.forward_actor(pi_features)
        return pi_features, latent_pi, self.mlp_extractor.forward_critic(vf_features)

    def _mixture(self, features: torch.Tensor, latent_pi: torch.Tensor) -> MixtureDistribution:
        mean = self.action_net(latent_pi)
        if self.tanh_mean:
            mean = torch.tanh(mean)
        if self.gate is None:
            log_w = torch.zeros(mean.shape[0], 1, device=mean.device, dtype=mean.dtype)
        else:
            log_w = torch.log_softmax(self.gate(features), dim=-1)
        return self.action_dist.proba_distribution(mean, self.log_std, log_w)

    def forward(self, obs: torch.Tensor, deterministic: bool = False):
        features, latent_pi, latent_vf = self._latents(obs)
        dist = self._mixture(features, latent_pi)
        actions = dist.get_actions(deterministic=deterministic)
        return actions.reshape((-1, *self.action_space.shape)), self.value_net(latent_vf), dist.log_prob(actions)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor):
        features, latent_pi, latent_vf = self._latents(obs)
        return self.value_net(latent_vf), self._mixture(features, latent_pi).log_prob(actions), None

    def get_distribution(self, obs: torch.Tensor) -> MixtureDistribution:
        features = super().extract_features(obs, self.pi_features_extractor)
        return self._mixture(features, self.mlp_extractor.forward_actor(features))

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Auxiliary Q(s, clip(a)) of M actions per state: (B, M, A) -> (B, M). Actions are clipped to [-1, 1],
        the action space of pmoe-rl's environments."""
        features = super().extract_features(obs, self.pi_features_extractor)
        features = features.unsqueeze(1).expand(-1, actions.shape[1], -1)
        return self.q_net(torch.cat([features, actions.clamp(-1.0, 1.0)], -1)).squeeze(-1)


class MultiInputMixtureActorCriticPolicy(MixtureActorCriticPolicy):
    """:class:`MixtureActorCriticPolicy` for Dict observations: SB3's ``CombinedExtractor`` by default (SB3's
    ``MultiInputPolicy``)."""

    def __init__(self, *args, features_extractor_class=CombinedExtractor, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)
