"""Every transition a training run collects (``--record-transitions``), for ``collect``'s medium-replay datasets.

The run writes ``RUN_DIR/transitions/upto_<step>.npz`` at each checkpoint (atomically, before the checkpoint):
the steps collected since the previous file, as flat arrays — ``env`` (which copy of a vector env), ``obs``,
``actions`` (what the env acted on, in the policy's [-1, 1] units), ``rewards`` (raw), ``next_obs`` (the true
next observation, the final one at an episode's end), ``terminated``, ``truncated``. A resumed run first deletes
the files written after its checkpoint, so the record always matches the checkpoints.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

FIELDS = ("env", "obs", "actions", "rewards", "next_obs", "terminated", "truncated")
_NAME = re.compile(r"upto_(\d+)\.npz$")


def _chunks(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = ((_NAME.match(p.name), p) for p in directory.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


class TransitionLog:
    """Collects transitions in memory and writes them out at each checkpoint."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "transitions"
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        """One step of one env (1-D obs) or of every env of a vector env (a leading env axis)."""
        obs = np.asarray(obs, dtype=np.float32)
        n = obs.shape[0] if obs.ndim == 2 else 1
        self.parts.append(
            {
                "env": np.arange(n),
                "obs": obs.reshape(n, -1),
                "actions": np.asarray(actions, np.float32).reshape(n, -1),
                "rewards": np.asarray(rewards, np.float32).reshape(n),
                "next_obs": np.asarray(next_obs, np.float32).reshape(n, -1),
                "terminated": np.asarray(terminated, bool).reshape(n),
                "truncated": np.asarray(truncated, bool).reshape(n),
            }
        )

    def flush(self, step: int) -> None:
        """Write what was collected since the last flush as ``upto_<step>.npz``."""
        if not self.parts:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.concatenate([p[k] for p in self.parts]) for k in FIELDS}
        tmp = self.dir / f"upto_{step:012d}.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, self.dir / f"upto_{step:012d}.npz")
        self.parts = []

    def discard_after(self, step: int) -> None:
        """Delete what was written after ``step`` (a resumed run continues from its checkpoint at ``step``)."""
        self.parts = []
        for upto, path in _chunks(self.dir):
            if upto > step:
                path.unlink()


def recorded_steps(run_dir: Path) -> int:
    """The step up to which a run's transitions are recorded (0: none)."""
    chunks = _chunks(Path(run_dir) / "transitions")
    return chunks[-1][0] if chunks else 0


def read_episodes(run_dir: Path, upto_step: int) -> list[dict[str, np.ndarray]]:
    """The recorded episodes of the first ``upto_step`` steps, in the order they ended: dicts of observations
    (T + 1), actions, rewards, terminations, truncations (T). An episode cut by the end of the record or by a
    resume (its next step does not continue it) is kept and marked truncated."""
    chunks = [p for upto, p in _chunks(Path(run_dir) / "transitions") if upto <= upto_step]
    if not chunks:
        return []
    loaded = [np.load(p) for p in chunks]
    data = {k: np.concatenate([c[k] for c in loaded]) for k in FIELDS}
    episodes = []
    for env in np.unique(data["env"]):
        rows = np.flatnonzero(data["env"] == env)
        obs, nxt = data["obs"][rows], data["next_obs"][rows]
        ended = data["terminated"][rows] | data["truncated"][rows]
        # a step starts a new episode after an ended one, or when it does not continue the previous step
        breaks = np.flatnonzero(ended[:-1] | np.any(obs[1:] != nxt[:-1], axis=1)) + 1
        for seg in np.split(np.arange(len(rows)), breaks):
            idx = rows[seg]
            trunc = data["truncated"][idx].astype(bool)
            term = data["terminated"][idx].astype(bool)
            if not (trunc[-1] or term[-1]):
                trunc[-1] = True  # cut: a time-out as far as bootstrapping goes
            episodes.append(
                {
                    "observations": np.concatenate([data["obs"][idx], data["next_obs"][idx[-1:]]]),
                    "actions": data["actions"][idx],
                    "rewards": data["rewards"][idx],
                    "terminations": term,
                    "truncations": trunc,
                    "end": int(idx[-1]),
                }
            )
    episodes.sort(key=lambda ep: ep.pop("end"))
    return episodes
