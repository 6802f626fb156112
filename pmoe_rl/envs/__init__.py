"""Environment creation: gymnasium MuJoCo v5 tasks, the package's ``pmoe_rl/MultiGoal-v0`` and
``pmoe_rl/IdentityBox-v0``, and any continuous-action gymnasium id.

``make_env`` checks the id (suggesting close names), requires a Box action space, rescales actions to
[-1, 1] (the policy's tanh range, like rlkit's ``NormalizedBoxEnv``), records episode statistics
(``info["episode"] = {"r", "l", "t"}``) and seeds the action space. The first ``reset`` takes the seed.
"""

from __future__ import annotations

import difflib
import functools
import random

import gymnasium as gym
import numpy as np
import torch

from pmoe_rl.envs.multigoal import HORIZON as _MULTIGOAL_HORIZON
from pmoe_rl.errors import EnvError

# the package's own tasks
MULTIGOAL = "pmoe_rl/MultiGoal-v0"
if MULTIGOAL not in gym.registry:
    gym.register(id=MULTIGOAL, entry_point="pmoe_rl.envs.multigoal:MultiGoalEnv", max_episode_steps=_MULTIGOAL_HORIZON)
IDENTITY = "pmoe_rl/IdentityBox-v0"


class _SeededReset(gym.Wrapper):
    """``reset(seed=s)`` also seeds the observation space, which SB3's identity tasks draw their states from (their
    own reset does not seed it, so runs would differ from process to process)."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.env.observation_space.seed(seed)
        return self.env.reset(seed=seed, options=options)


def _identity_box(eps: float = 0.5, ep_length: int = 100, render_mode: str | None = None) -> gym.Env:
    """SB3's continuous identity task (``stable_baselines3.common.envs.IdentityEnvBox``: observation x ~ U[-1, 1],
    reward 1 when |a - x| < eps, 100 steps), the sanity test SB3 runs every continuous-action algorithm on."""
    from stable_baselines3.common.envs import IdentityEnvBox

    return _SeededReset(IdentityEnvBox(eps=eps, ep_length=ep_length))


if IDENTITY not in gym.registry:
    gym.register(id=IDENTITY, entry_point=_identity_box)


def check_env_id(env_id: str) -> None:
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else " (MuJoCo tasks: Hopper-v5, HalfCheetah-v5, ...)"
    raise EnvError(f"unknown environment '{env_id}'{hint}")


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None, **kwargs) -> gym.Env:
    check_env_id(env_id)
    try:
        env = gym.make(env_id, render_mode=render_mode, **kwargs)
    except (gym.error.Error, ImportError, ModuleNotFoundError) as exc:
        raise EnvError(f"cannot create environment '{env_id}': {exc}") from None
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise EnvError(
            f"'{env_id}' has a {type(env.action_space).__name__} action space; "
            "pmoe-rl's policies need continuous (Box) actions"
        )
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env.close()
        raise EnvError(f"'{env_id}' needs a flat Box observation space, got {env.observation_space}")
    if not (np.all(np.isfinite(env.action_space.low)) and np.all(np.isfinite(env.action_space.high))):
        env.close()
        raise EnvError(f"'{env_id}' has an unbounded action space; tanh-squashed policies need finite bounds")
    bound = np.ones(env.action_space.shape, dtype=np.float32)
    env = gym.wrappers.RescaleAction(env, -bound, bound)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def make_vec_env(env_id: str, n_envs: int, mode: str = "sync", **kwargs) -> gym.vector.VectorEnv:
    """``n_envs`` copies of :func:`make_env` in one process (``sync``) or one subprocess each (``async``).

    Autoreset is ``SAME_STEP`` (as SB3's VecEnvs): the step that ends an episode already returns the next
    episode's first observation, with the true final observation in ``info["final_obs"]`` and the episode
    statistics in ``info["final_info"]["episode"]``, so a truncated episode can bootstrap from it.
    Seed with ``reset(seed=s)`` (env i gets s + i). ``kwargs`` go to ``gym.make``.
    """
    make = [functools.partial(make_env, env_id, **kwargs) for _ in range(n_envs)]
    cls = gym.vector.AsyncVectorEnv if mode == "async" else gym.vector.SyncVectorEnv
    return cls(make, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
