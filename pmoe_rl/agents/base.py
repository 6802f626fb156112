"""What every agent's training loop receives from the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pmoe_rl.checkpoint import Checkpoint


@dataclass
class RunContext:
    run_dir: Path
    device: torch.device
    resume: Checkpoint | None = None  # loaded with its training state
    progress: bool | None = None  # progress bar: None = only on a terminal
