"""Checkpoints: safetensors weights + JSON metadata, written atomically, validated on load.

Layout of a run directory::

    RUN_DIR/checkpoints/step_000050000/model.safetensors   weights (policy, critics, temperature)
                                       state.safetensors   training state: optimisers, replay buffer, RNGs
                                       meta.json           config, env id, spaces, step, versions, sha256s
    RUN_DIR/checkpoints/latest                             name of the newest complete checkpoint

A checkpoint is written to ``step_N.tmp`` and renamed once complete, then ``latest`` is replaced
atomically, so a run killed at any moment leaves its previous checkpoint intact. Only the newest
checkpoint keeps ``state.safetensors`` (the replay buffer is large); older ones keep their weights.
Loading reads tensors and JSON only; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pmoe_rl.errors import CheckpointError

FORMAT = "pmoe-rl-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE, STATE_FILE, META_FILE, LATEST = "model.safetensors", "state.safetensors", "meta.json", "latest"


# --- nested state <-> (flat tensors, JSON skeleton) ------------------------------------------------------


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list structure into ``tensors``; return a JSON skeleton."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__items__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        return {k: unflatten(v, tensors) for k, v in skeleton["__items__"]}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def submodule(weights: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The entries of module ``name`` in a checkpoint's flat weights, without the ``name.`` prefix."""
    prefix = name + "."
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


# --- metadata helpers ----------------------------------------------------------------------------------------


def describe_box(space) -> dict:
    """A JSON description of a Box space (infinite bounds as the strings 'inf' / '-inf')."""
    enc = lambda xs: [float(x) if abs(float(x)) != float("inf") else str(float(x)) for x in xs]  # noqa: E731
    return {"shape": list(space.shape), "low": enc(space.low.ravel()), "high": enc(space.high.ravel())}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("pmoe-rl", "torch", "gymnasium", "mujoco", "numpy", "stable-baselines3", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def capture_rng(env=None, device: torch.device | str = "cpu") -> dict:
    """The global Python, NumPy and torch generators, the training device's CUDA generator (only that one: a run
    resumed with other GPUs visible must still load; a CPU run never touches CUDA) and, for a single env, the
    env's own generators, for an exact-as-possible resume."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"python": list(py[1]), "python_pos": py[2], "numpy": np_state[1].tolist(), "numpy_pos": int(np_state[2]),
             "torch": torch.get_rng_state()}  # fmt: skip
    if env is not None:
        state["env"] = env.unwrapped.np_random.bit_generator.state
        state["action_space"] = env.action_space.np_random.bit_generator.state
    device = torch.device(device)
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, env=None, device: torch.device | str = "cpu") -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if env is not None:
        env.unwrapped.np_random.bit_generator.state = state["env"]
        env.action_space.np_random.bit_generator.state = state["action_space"]
    device = torch.device(device)
    cuda = state.get("cuda")
    if device.type == "cuda" and cuda is not None:
        if isinstance(cuda, list):  # checkpoints before 2026-11-29 saved every visible GPU's state
            cuda = cuda[device.index or 0] if len(cuda) > (device.index or 0) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


# --- save / load ---------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    path: Path
    meta: dict
    weights: dict[str, torch.Tensor]
    state: Any = None  # the nested training state, when loaded with ``with_state=True``

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def save(run_dir: Path, step: int, weights: dict[str, torch.Tensor], meta: dict, state: Any = None) -> Path:
    """Write checkpoint ``step`` of a run atomically and point ``latest`` at it; returns its directory."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:09d}"
    tmp = root / f"{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {MODEL_FILE: weights}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step), **meta, "versions": versions()}
    if state is not None:
        tensors: dict[str, torch.Tensor] = {}
        meta["state"] = flatten(state, "state", tensors)
        files[STATE_FILE] = tensors
    meta["sha256"] = {}
    for name, tensors in files.items():
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / name))
        meta["sha256"][name] = _sha256(tmp / name)
    write_text_atomic(tmp / META_FILE, json.dumps(meta, indent=1))
    _fsync_dir(tmp)
    if final.exists():  # re-saving a step after a resume: replace the old copy
        old = root / f"{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    write_text_atomic(root / LATEST, final.name + "\n")
    if state is not None:  # only the newest checkpoint keeps the (large) training state
        for other in root.glob("step_*"):
            if other != final and other.is_dir() and (other / STATE_FILE).exists():
                (other / STATE_FILE).unlink()
    return final


def resolve(path: str | Path) -> Path:
    """The checkpoint directory meant by ``path``: a run directory (its latest checkpoint), a checkpoint
    directory, or a file inside one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} does not exist")
    if path.is_file():
        path = path.parent
    latest = path / "checkpoints" / LATEST
    if latest.is_file():
        path = path / "checkpoints" / latest.read_text().strip()
    elif (path / "checkpoints").is_dir() or (path / "config.yaml").is_file():
        raise CheckpointError(
            f"run directory {path} has no complete checkpoint yet (nothing to resume or evaluate; "
            f"start it again with --run-dir {path} --overwrite)"
        )
    if not (path / META_FILE).is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a run directory or a directory with {META_FILE}")
    return path


def load(path: str | Path, with_state: bool = False, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint (see :func:`resolve` for ``path``)."""
    ckpt = resolve(path)
    try:
        meta = json.loads((ckpt / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"checkpoint {ckpt} is corrupted: {META_FILE} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{ckpt / META_FILE} is not a pmoe-rl checkpoint")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {ckpt} was written by a newer pmoe-rl; upgrade to load it")

    def read(name: str) -> dict[str, torch.Tensor]:
        file = ckpt / name
        if not file.is_file():
            if name == STATE_FILE:
                raise CheckpointError(
                    f"checkpoint {ckpt} has no training state to resume from "
                    "(only the newest checkpoint of a run keeps it)"
                )
            raise CheckpointError(f"checkpoint {ckpt} is incomplete: {name} is missing")
        expected = meta.get("sha256", {}).get(name)
        if expected is not None and _sha256(file) != expected:
            raise CheckpointError(
                f"checkpoint {ckpt} is corrupted: {name} does not match its checksum (truncated or modified)"
            )
        try:
            return load_file(str(file), device=str(device))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {ckpt} is corrupted: cannot read {name} ({exc})") from None

    weights = read(MODEL_FILE)
    state = unflatten(meta["state"], read(STATE_FILE)) if with_state else None
    return Checkpoint(ckpt, meta, weights, state)


def check_spaces(meta: dict, observation_space, action_space) -> None:
    """Refuse a checkpoint whose observation or action space differs from the environment's."""
    for name, space in (("observation_space", observation_space), ("action_space", action_space)):
        saved, actual = meta.get(name), describe_box(space)
        if saved != actual:
            what = "shape" if saved and saved["shape"] != actual["shape"] else "bounds"
            got = f"{saved['shape']} vs {actual['shape']}" if what == "shape" else "differ"
            raise CheckpointError(
                f"the checkpoint's {name.replace('_', ' ')} does not match the environment "
                f"{meta.get('env_id', '?')!r} ({what} {got})"
            )
