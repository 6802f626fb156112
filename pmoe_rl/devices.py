"""The device of a run: one check of a device name for every command (``train``, ``evaluate``, the config), and
the choice behind ``--device auto``."""

from __future__ import annotations

import torch

from pmoe_rl.errors import DeviceError

CHOICES = "auto, cpu, cuda or cuda:N"


def parse_device(name: str) -> str:
    """Check the spelling of a device name (no hardware is queried): ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    MPS is refused: PPO's normalisation statistics are float64, which MPS lacks, and no Apple GPU has run
    pmoe-rl's tests."""
    if name in ("auto", "cpu", "cuda"):
        return name
    if name.startswith("cuda:"):
        if name[5:].isdigit():
            return name
        raise DeviceError(f"invalid device '{name}': a GPU is named cuda:N with a number N (cuda:0, cuda:1, ...)")
    if name.split(":")[0] == "mps":
        raise DeviceError("--device mps is not supported (float64 normalisation statistics, untested on Apple GPUs); "
                          "use --device cpu")  # fmt: skip
    raise DeviceError(f"unknown device '{name}'; use {CHOICES}")


def resolve_device(name: str, algo: str | None = None) -> tuple[torch.device, str]:
    """The device meant by ``name`` on this machine and why it was chosen (for the start line). ``auto`` picks
    the CPU for PPO (its 64-unit MLPs run faster there, as SB3 advises for MLP policies) and CUDA, when there is
    one, for the other algorithms. A CUDA device this machine or this PyTorch build lacks is a DeviceError."""
    parse_device(name)
    if name == "auto":
        if algo == "ppo":
            return torch.device("cpu"), "auto: PPO's small MLPs are faster on the CPU"
        if torch.cuda.is_available():
            return torch.device("cuda"), "auto: CUDA is available"
        return torch.device("cpu"), "auto: no CUDA device"
    if name.startswith("cuda"):
        if not torch.backends.cuda.is_built():
            raise DeviceError(f"--device {name}: this PyTorch ({torch.__version__}) is a CPU-only build; install a "
                              "CUDA build of torch to train on a GPU, or use --device cpu")  # fmt: skip
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{name}' was requested but CUDA is not available on this machine "
                              "(use --device cpu or --device auto)")  # fmt: skip
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(name), "requested"
