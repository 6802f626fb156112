"""Shared pieces of the command-line entry points."""

from __future__ import annotations

import argparse
import ctypes
import sys

import torch

from pmoe_rl.errors import ConfigError, cli_main

# Measured on the 2-core CI machine (BENCHMARKS.md): the SAC update is fastest with this many threads.
DEFAULT_THREADS = 2


class Parser(argparse.ArgumentParser):
    """argparse with the project's error style: one line ``error: ...``, exit code 2."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def entry_point(main):
    """The console-script entry of a CLI ``main``: exits with its code, user errors as one ``error: ...`` line."""
    return lambda: sys.exit(cli_main(main))


def configure_cpu(threads: int = 0) -> None:
    """Process settings for fast small-network training on CPU (measured, BENCHMARKS.md).

    Sets torch's thread count (0 = ``DEFAULT_THREADS``) and keeps freed memory in glibc's heap: by default
    glibc hands the multi-MB activations of each update back to the kernel and page-faults them in
    again on the next, which cost up to half of a PMOE update's time and made it erratic.
    """
    torch.set_num_threads(threads or min(DEFAULT_THREADS, torch.get_num_threads()))
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (musl, ...): keep the allocator's defaults
            return
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(M_TOP_PAD, 64 << 20)
