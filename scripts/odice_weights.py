"""Which transitions an O-DICE run's policy extraction learns from: the weights w(delta_f) of its checkpoint's V
over every transition of its dataset, summarised overall and for the dataset's first and second half in file
order (for a medium-expert dataset made by ``collect``: the medium and the expert transitions).

    MINARI_DATASETS_PATH=datasets python scripts/odice_weights.py runs/my_odice_run    # or .../checkpoints/step_N

Prints the share of the total weight and of non-zero weights in each half, the coefficient of variation of the
weights, and the effective sample size (sum w)^2 / sum w^2 as a share of the dataset (1: plain behaviour cloning).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pmoe_rl import checkpoint
from pmoe_rl.agents.odice import ODICE
from pmoe_rl.config import from_dict
from pmoe_rl.errors import ConfigError, cli_main

CHUNK = 65536  # transitions per forward pass


@torch.no_grad()
def weights(path: Path) -> torch.Tensor:
    ckpt = checkpoint.load(path)
    cfg = from_dict(ckpt.meta["config"])
    if cfg.algo != "odice":
        raise ConfigError(f"{path} holds a {cfg.algo} run; this script reads O-DICE runs")
    dims = (ckpt.meta[space]["shape"][0] for space in ("observation_space", "action_space"))
    agent = ODICE(cfg, *dims, torch.device("cpu"))
    agent.load_weights(ckpt.weights)
    batch = agent.buffer.transitions()
    out = []
    for start in range(0, len(agent.buffer), CHUNK):
        part = type(batch)(*(t[start : start + CHUNK] for t in batch))
        out.append(agent.extraction_weights(agent.residual(part, agent.v(part.obs))))
    print(f"{path} at step {ckpt.step}: {len(agent.buffer)} transitions of {cfg.dataset}")
    return torch.cat(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="an O-DICE run directory (its latest checkpoint) or a checkpoint")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    w = weights(args.path)
    n, half = len(w), len(w) // 2
    ess = w.sum() ** 2 / (w**2).sum() / n
    print(f"weights: mean {w.mean():.3f}, non-zero {(w > 0).float().mean():.3f}, coefficient of variation "
          f"{w.std() / w.mean():.2f}, max {w.max():.2f}, effective sample {ess:.3f} of n")  # fmt: skip
    for name, part in (("first half", w[:half]), ("second half", w[half:])):
        print(f"{name}: share of the total weight {part.sum() / w.sum():.3f}, non-zero {(part > 0).float().mean():.3f}")


if __name__ == "__main__":
    sys.exit(cli_main(main))
