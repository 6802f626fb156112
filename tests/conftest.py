import os

import pytest
import torch

# Off-screen MuJoCo rendering on a CPU machine (video tests); set before mujoco is imported.
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

# Small networks for the CLI/integration tests, where behaviour does not depend on the width.
SMALL = [
    "--set",
    "net.hidden=[32,32]",
    "--set",
    "sac.critic_hidden=[32,32]",
    "--set",
    "sac.batch_size=32",
    "--set",
    "sac.learning_starts=100",
    "--no-progress",
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(1)
