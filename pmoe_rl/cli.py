"""Shared pieces of the command-line entry points."""

from __future__ import annotations

import argparse

import torch

from pmoe_rl.errors import ConfigError, DeviceError

# Measured on the 2-core CI machine (BENCHMARKS.md): the SAC update is fastest with this many threads.
DEFAULT_THREADS = 2


class Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one line ``error: ...``, exit code 2."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            self._print_message(message)
        raise SystemExit(status)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{name}' was requested but CUDA is not available on this machine "
                              "(use --device cpu or --device auto)")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads or min(DEFAULT_THREADS, torch.get_num_threads()))
