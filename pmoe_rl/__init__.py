"""pmoe-rl: mixture-of-experts (PMOE) policies for deep reinforcement learning in PyTorch."""

from pmoe_rl.agents.build import build_policy, load_policy
from pmoe_rl.buffers import Batch, ReplayBuffer, compute_gae
from pmoe_rl.config import Config, NetConfig, PPOConfig, SACConfig
from pmoe_rl.envs import make_env, make_vec_env
from pmoe_rl.errors import (
    CheckpointError,
    ConfigError,
    DeviceError,
    EnvError,
    PmoeError,
    RunDirError,
)
from pmoe_rl.estimators import (
    ESTIMATORS,
    MRP,
    PMOE,
    ActorBatch,
    ActorLoss,
    Gumbel,
    Score,
    make_estimator,
    register_estimator,
)
from pmoe_rl.evaluation import EvalResult, evaluate_policy
from pmoe_rl.mixture import GaussianMixture, SquashedMixture, best_expert, expert_separation, gate_loss
from pmoe_rl.nets import EnsembleMLP, TwinQ
from pmoe_rl.normalization import ObsNormalizer, RewardNormalizer
from pmoe_rl.policies import CompositePolicy, MixturePolicy, PPOPolicy

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "ReplayBuffer",
    "compute_gae",
    "Config",
    "NetConfig",
    "SACConfig",
    "PPOConfig",
    "make_env",
    "make_vec_env",
    "CheckpointError",
    "ConfigError",
    "DeviceError",
    "EnvError",
    "PmoeError",
    "RunDirError",
    "ESTIMATORS",
    "ActorLoss",
    "ActorBatch",
    "register_estimator",
    "make_estimator",
    "PMOE",
    "Gumbel",
    "Score",
    "MRP",
    "EvalResult",
    "evaluate_policy",
    "GaussianMixture",
    "SquashedMixture",
    "best_expert",
    "gate_loss",
    "expert_separation",
    "EnsembleMLP",
    "TwinQ",
    "ObsNormalizer",
    "RewardNormalizer",
    "CompositePolicy",
    "MixturePolicy",
    "PPOPolicy",
    "build_policy",
    "load_policy",
]
