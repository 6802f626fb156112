"""The stable-baselines3 bridge, laid out like sb3-contrib.

- :class:`MixtureSACPolicy` (SB3 ``SACPolicy`` with a Gaussian-mixture actor) and :class:`PMOESAC` (SB3 ``SAC``
  trained with the PMOE estimator);
- :class:`MixtureActorCriticPolicy` (SB3 ``ActorCriticPolicy`` with a Gaussian-mixture distribution, for stock
  ``PPO`` and ``A2C``) and :class:`PMOEPPO` (PPO with PMOE-PPO's auxiliary Q and gate loss);
- :func:`from_checkpoint`: a native pmoe-rl checkpoint as the corresponding SB3 model.

``pmoe_rl.sb3`` depends on the core; the core never imports it.
"""

from pmoe_rl.sb3.convert import from_checkpoint
from pmoe_rl.sb3.pmoe_ppo import PMOEPPO
from pmoe_rl.sb3.pmoe_sac import PMOESAC
from pmoe_rl.sb3.policies import (
    MixtureActor,
    MixtureActorCriticPolicy,
    MixtureDistribution,
    MixtureSACPolicy,
    MultiInputMixtureActorCriticPolicy,
    MultiInputMixtureSACPolicy,
    ObsNormalizerExtractor,
)

__all__ = [
    "MixtureSACPolicy",
    "PMOESAC",
    "MixtureActorCriticPolicy",
    "PMOEPPO",
    "from_checkpoint",
    "MixtureActor",
    "MixtureDistribution",
    "ObsNormalizerExtractor",
    "MultiInputMixtureSACPolicy",
    "MultiInputMixtureActorCriticPolicy",
]
