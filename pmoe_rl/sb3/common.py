"""Helpers shared by the SB3 algorithms."""

from __future__ import annotations

import torch


def record_means(logger, logs: dict[str, list[torch.Tensor]]) -> None:
    """Record the mean of each list of tensors under ``train/KEY`` (vectors as ``train/KEY_k``), SB3's habit. The
    values stay on the device during the updates and are read here, in one copy."""
    means = {key: torch.stack([v.detach().double() for v in values]).mean(0) for key, values in logs.items()}
    if not means:
        return
    flat = torch.cat([m.reshape(-1) for m in means.values()]).cpu().tolist()
    start = 0
    for key, mean in means.items():
        values, start = flat[start : start + mean.numel()], start + mean.numel()
        if mean.dim() == 0:
            logger.record(f"train/{key}", values[0])
        else:
            for k, v in enumerate(values):
                logger.record(f"train/{key}_{k}", v)
