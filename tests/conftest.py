import os

# Set before torch and mujoco are imported. One torch thread per process, subprocesses included (the train, sweep and
# example runs tests start): xdist runs two tests side by side on a 2-core CI machine, where two-thread processes run
# ~3x slower. Off-screen MuJoCo rendering on a CPU machine (video tests).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import pytest  # noqa: E402
import torch  # noqa: E402

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
