"""pmoe-rl: mixture-of-experts (PMOE) policies for deep reinforcement learning in PyTorch."""

from pmoe_rl.buffers import Batch, ReplayBuffer
from pmoe_rl.config import Config, NetConfig, SACConfig
from pmoe_rl.envs import make_env
from pmoe_rl.errors import (
    CheckpointError,
    ConfigError,
    DeviceError,
    EnvError,
    PmoeError,
    RunDirError,
)
from pmoe_rl.estimators import ESTIMATORS, best_expert, gate_loss, pmoe
from pmoe_rl.evaluation import EvalResult, evaluate_policy
from pmoe_rl.mixture import SquashedMixture
from pmoe_rl.nets import EnsembleMLP, TwinQ
from pmoe_rl.policies import MixturePolicy

__version__ = "0.1.0"

__all__ = [
    "Batch", "ReplayBuffer", "Config", "NetConfig", "SACConfig", "make_env", "CheckpointError", "ConfigError",
    "DeviceError", "EnvError", "PmoeError", "RunDirError", "ESTIMATORS", "best_expert", "gate_loss", "pmoe",
    "EvalResult", "evaluate_policy", "SquashedMixture", "EnsembleMLP", "TwinQ", "MixturePolicy",
]
