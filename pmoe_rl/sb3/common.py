"""Helpers shared by the SB3 algorithms."""

from __future__ import annotations

import numpy as np


def record_means(logger, logs: dict[str, list]) -> None:
    """Record the mean of each list under ``train/KEY`` (vectors as ``train/KEY_k``), SB3's habit."""
    for key, values in logs.items():
        value = np.mean(values, axis=0)
        if np.ndim(value) == 0:
            logger.record(f"train/{key}", float(value))
        else:
            for k, v in enumerate(value):
                logger.record(f"train/{key}_{k}", float(v))
