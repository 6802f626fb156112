"""Offline datasets in the Minari format (D4RL's successor): written by ``python -m pmoe_rl.collect``, read from
any local Minari dataset (ours or anyone's) by the offline agents.

A dataset is a list of episodes; an episode of T steps holds T + 1 observations, T actions and rewards, and T
termination and truncation flags, kept apart (a termination stops bootstrapping, a time-out does not). Loading
turns every step into a transition (s, a, r, s', terminated), each episode's last step included, so nothing is
lost (``d4rl.qlearning_dataset`` drops a timed-out episode's last step; Minari keeps it, as we do).

Actions are stored in the environment's own units (the Minari convention) and mapped to the [-1, 1] box the
policies act in (``envs.make_env`` rescales the same way).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pmoe_rl.errors import PmoeError


class DatasetError(PmoeError):
    """A missing, empty, malformed or mismatched offline dataset."""


@dataclass
class EpisodeArrays:
    """One episode: ``observations`` (T + 1, obs), ``actions`` (T, act) in the env's units, ``rewards``,
    ``terminations``, ``truncations`` (T,)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)


@dataclass
class Transitions:
    """Every step of a dataset as flat float32 arrays (actions in [-1, 1]), with what scoring needs."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray  # 1.0: the episode ended in a terminal state (no bootstrap)
    timeouts: np.ndarray  # 1.0: the episode was cut by a time limit (bootstrap from next_obs)
    episode_returns: np.ndarray  # one per episode, in the dataset's rewards
    episode_ends: np.ndarray  # index of each episode's last transition
    dataset_id: str
    env_id: str | None  # the dataset's evaluation environment (None: not recorded)
    ref_min_score: float | None
    ref_max_score: float | None

    def __len__(self) -> int:
        return len(self.rewards)

    def normalized_score(self, returns):
        """D4RL's normalised score of ``returns`` with this dataset's reference scores."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise DatasetError(
                f"dataset {self.dataset_id} has no reference scores (ref_min_score/ref_max_score in its metadata), "
                "so no normalised score can be computed; make it with python -m pmoe_rl.collect or add them"
            )
        return normalized_score(returns, self.ref_min_score, self.ref_max_score)


def normalized_score(returns, ref_min: float, ref_max: float):
    """100 (return - ref_min) / (ref_max - ref_min): 0 is the random reference, 100 the expert."""
    return 100.0 * (np.asarray(returns) - ref_min) / (ref_max - ref_min)


def to_native(actions: np.ndarray, space) -> np.ndarray:
    """Actions from the policies' [-1, 1] box to the Box ``space``'s bounds (what Minari datasets store)."""
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    return (low + (np.asarray(actions, np.float64) + 1.0) * (high - low) / 2.0).astype(space.dtype)


def to_policy(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_native`: actions in [``low``, ``high``] to [-1, 1], float32."""
    low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
    return (2.0 * (np.asarray(actions, np.float64) - low) / (high - low) - 1.0).astype(np.float32)


def datasets_root() -> Path:
    """Where Minari keeps local datasets: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``, made absolute."""
    return Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets").absolute()


def dataset_dir(dataset_id: str) -> Path:
    """The directory of a dataset id (``namespace/env/name-vN``) under :func:`datasets_root`."""
    return datasets_root() / dataset_id


def open_dataset(id_or_path: str):
    """A ``minari.MinariDataset`` from a local dataset id or a directory (the dataset's, or its ``data/``).
    Never downloads."""
    import minari

    path = Path(id_or_path).expanduser()
    candidates = [path / "data", path] if path.is_dir() else [dataset_dir(id_or_path) / "data"]
    for data in candidates:
        if (data / "metadata.json").is_file():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return minari.MinariDataset(data)
            except Exception as exc:  # noqa: BLE001 - any reader failure is a bad dataset to the user
                raise DatasetError(f"cannot read the Minari dataset at {data}: {exc}") from None
    raise DatasetError(
        f"no Minari dataset '{id_or_path}': not a directory holding data/metadata.json, and not an id under "
        f"{datasets_root()} (set MINARI_DATASETS_PATH, or make one with python -m pmoe_rl.collect)"
    )


def _env_id(metadata: dict) -> str | None:
    spec = metadata.get("eval_env_spec") or metadata.get("env_spec")
    if not spec:
        return None
    return json.loads(spec)["id"] if isinstance(spec, str) else spec.get("id")


def load_transitions(id_or_path: str, action_low=None, action_high=None) -> Transitions:
    """Every transition of a local Minari dataset; actions mapped from [``action_low``, ``action_high``] (the
    env's bounds; default: the dataset's action space) to [-1, 1]. Refuses empty datasets, non-Box spaces and
    non-finite values."""
    return _transitions(open_dataset(id_or_path), action_low, action_high)


def _transitions(ds, action_low, action_high) -> Transitions:
    from gymnasium import spaces

    name = ds.id
    if not isinstance(ds.action_space, spaces.Box) or not isinstance(ds.observation_space, spaces.Box):
        raise DatasetError(
            f"dataset {name} has {ds.observation_space} observations and {ds.action_space} actions; "
            "pmoe-rl's offline agents need flat Box observations and Box actions"
        )
    low = ds.action_space.low if action_low is None else action_low
    high = ds.action_space.high if action_high is None else action_high
    parts: dict[str, list] = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminated", "timeouts")}
    returns, ends, total = [], [], 0
    for ep in ds.iterate_episodes():
        obs = np.asarray(ep.observations, dtype=np.float32)
        n = len(ep.rewards)
        if n == 0:
            continue
        if obs.ndim != 2 or obs.shape[0] != n + 1:
            raise DatasetError(f"dataset {name}: episode {ep.id} has {obs.shape[0]} observations for {n} steps")
        parts["obs"].append(obs[:-1])
        parts["next_obs"].append(obs[1:])
        parts["actions"].append(to_policy(np.reshape(ep.actions, (n, -1)), low, high))
        parts["rewards"].append(np.asarray(ep.rewards, dtype=np.float32))
        parts["terminated"].append(np.asarray(ep.terminations, dtype=np.float32))
        parts["timeouts"].append(np.asarray(ep.truncations, dtype=np.float32))
        returns.append(float(np.sum(ep.rewards, dtype=np.float64)))
        total += n
        ends.append(total - 1)
    if not total:
        raise DatasetError(f"dataset {name} is empty: it holds no transitions")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    for key, array in arrays.items():
        if not np.all(np.isfinite(array)):
            raise DatasetError(f"dataset {name}: {key} holds NaN or infinite values ({(~np.isfinite(array)).sum()})")
    meta = ds.storage.metadata
    return Transitions(
        **arrays,
        episode_returns=np.asarray(returns),
        episode_ends=np.asarray(ends),
        dataset_id=name,
        env_id=_env_id(meta),
        ref_min_score=meta.get("ref_min_score"),
        ref_max_score=meta.get("ref_max_score"),
    )


_cache: dict = {}  # the last dataset loaded, so that checking it before a run and training on it read it once


def load_for_env(id_or_path: str, env_id: str) -> Transitions:
    """The transitions of a dataset for training on ``env_id``: its recorded environment (if any) must be
    ``env_id`` and its spaces must match the env's. Actions are mapped with the env's bounds. Cached: the same
    unchanged dataset is read once per process."""
    import gymnasium as gym

    ds = open_dataset(id_or_path)
    key = (str(ds.storage.data_path), (Path(ds.storage.data_path) / "metadata.json").stat().st_mtime_ns, env_id)
    if _cache.get("key") == key:
        return _cache["data"]
    name, recorded = ds.id, _env_id(ds.storage.metadata)
    if recorded is not None and recorded != env_id:
        raise DatasetError(
            f"dataset {name} was recorded on {recorded}, not {env_id}; pass --env {recorded} or omit --env"
        )
    env = gym.make(env_id)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    pairs = (("observation", obs_space, ds.observation_space), ("action", act_space, ds.action_space))
    for what, mine, theirs in pairs:
        if getattr(theirs, "shape", None) != mine.shape:
            raise DatasetError(
                f"dataset {name} has {what}s of shape {getattr(theirs, 'shape', theirs)}, {env_id} has {mine.shape}"
            )
    data = _transitions(ds, act_space.low, act_space.high)
    _cache.update(key=key, data=data)
    return data


def reference_scores(id_or_path: str) -> tuple[float, float] | None:
    """A dataset's (ref_min_score, ref_max_score), or None when it has none or is no longer there."""
    try:
        meta = open_dataset(id_or_path).storage.metadata
    except DatasetError:
        return None
    low, high = meta.get("ref_min_score"), meta.get("ref_max_score")
    return None if low is None or high is None else (float(low), float(high))


def dataset_env_id(id_or_path: str) -> str:
    """The environment a dataset was recorded on (for ``--env``'s default)."""
    ds = open_dataset(id_or_path)
    env_id = _env_id(ds.storage.metadata)
    if env_id is None:
        raise DatasetError(f"dataset {ds.id} does not record its environment; pass --env ENV_ID")
    return env_id


def write_dataset(
    dataset_id: str,
    episodes: list[EpisodeArrays],
    env_id: str,
    ref_min_score: float | None,
    ref_max_score: float | None,
    description: str,
    algorithm: str,
) -> Path:
    """Write ``episodes`` as the Minari dataset ``dataset_id`` (HDF5) under :func:`datasets_root`; refuses to
    replace an existing one. Returns its directory."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    target = dataset_dir(dataset_id)
    if target.exists():
        raise DatasetError(f"dataset {dataset_id} already exists at {target}; delete it or choose another id")
    if not episodes or not sum(len(ep) for ep in episodes):
        raise DatasetError(f"dataset {dataset_id} would be empty")
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=ep.observations,
            actions=ep.actions,
            rewards=list(map(float, ep.rewards)),
            terminations=list(map(bool, ep.terminations)),
            truncations=list(map(bool, ep.truncations)),
        )
        for i, ep in enumerate(episodes)
    ]
    # Minari 0.5.4 writes under $MINARI_DATASETS_PATH, then sizes its files by joining that path to itself,
    # which fails for a relative path: hand it the same directory as an absolute one
    os.environ["MINARI_DATASETS_PATH"] = str(datasets_root())
    env = gym.make(env_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # author e-mail and code permalink are optional
            minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env,
                eval_env=env_id,
                algorithm_name=algorithm,
                author="pmoe-rl",
                ref_min_score=ref_min_score,
                ref_max_score=ref_max_score,
                description=description,
                data_format="hdf5",
                requirements=["mujoco>=3"] if "mujoco" in str(env.spec.entry_point) else None,
            )
    finally:
        env.close()
    return target
