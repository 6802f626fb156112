"""pmoe-rl: mixture-of-experts (PMOE) policies for deep reinforcement learning in PyTorch."""

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
from pmoe_rl.estimators import ESTIMATORS, best_expert, gate_loss, gumbel, mrp, pmoe, score
from pmoe_rl.evaluation import EvalResult, evaluate_policy
from pmoe_rl.mixture import GaussianMixture, SquashedMixture, expert_separation
from pmoe_rl.nets import EnsembleMLP, TwinQ
from pmoe_rl.normalization import ObsNormalizer, RewardNormalizer, RunningMeanStd
from pmoe_rl.policies import CompositePolicy, MixturePolicy, PPOPolicy

__version__ = "0.1.0"

__all__ = [
    "Batch", "ReplayBuffer", "Config", "NetConfig", "SACConfig", "make_env", "CheckpointError", "ConfigError",
    "DeviceError", "EnvError", "PmoeError", "RunDirError", "ESTIMATORS", "best_expert", "gate_loss", "pmoe",
    "EvalResult", "evaluate_policy", "SquashedMixture", "EnsembleMLP", "TwinQ", "MixturePolicy", "compute_gae",
    "PPOConfig", "make_vec_env", "GaussianMixture", "ObsNormalizer", "RewardNormalizer", "RunningMeanStd", "PPOPolicy",
    "gumbel", "score", "mrp", "expert_separation", "CompositePolicy",
]
