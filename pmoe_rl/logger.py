"""The run logger: SB3's output formats and metric names, plus a progress bar.

Writes, in the run directory, ``progress.csv``, ``progress.json`` (one JSON object per line) and
TensorBoard event files, and prints SB3's stdout table. Keys follow stable-baselines3
(``rollout/ep_rew_mean``, ``time/fps``, ``train/actor_loss``, ``eval/mean_reward``, ...), so plots and
habits carry over. On ``--resume`` the CSV and JSON logs are kept: rows past the checkpoint's step
(written after it by the interrupted process) are dropped and new rows are appended.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from stable_baselines3.common import logger as sb3_logger
from tqdm import tqdm

STEP_KEY = "time/total_timesteps"


def _trim_csv(path: Path, max_step: int) -> None:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, col = rows[0], rows[0].index(STEP_KEY) if STEP_KEY in rows[0] else None
    keep = [r for r in rows[1:] if col is None or (r[col] and float(r[col]) <= max_step)]
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *keep])


def _trim_json(path: Path, max_step: int) -> None:
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get(STEP_KEY, 0) <= max_step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by the interruption
    path.write_text("".join(f"{line}\n" for line in keep))


class _AppendCSV(sb3_logger.CSVOutputFormat):
    """SB3's CSV format, continuing an existing file (its header gives the known keys)."""

    def __init__(self, filename: str):
        self.file = open(filename, "r+")
        header = self.file.readline().strip()
        self.keys = header.split(",") if header else []
        self.file.seek(0, os.SEEK_END)
        self.separator, self.quotechar = ",", '"'


class _AppendJSON(sb3_logger.JSONOutputFormat):
    def __init__(self, filename: str):
        self.file = open(filename, "a")


class RunLogger:
    """Records scalars under SB3 names and writes them to every output at ``dump(step)``."""

    def __init__(
        self,
        folder: str | Path,
        formats: tuple[str, ...] = ("stdout", "csv", "tensorboard", "json"),
        resume_step: int | None = None,
        total_steps: int = 0,
        progress: bool | None = None,
    ):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        outputs = []
        for fmt in formats:
            path = folder / f"progress.{fmt}"
            if fmt in ("csv", "json") and resume_step is not None and path.exists():
                (_trim_csv if fmt == "csv" else _trim_json)(path, resume_step)
                outputs.append(_AppendCSV(str(path)) if fmt == "csv" else _AppendJSON(str(path)))
            else:
                outputs.append(sb3_logger.make_output_format(fmt, str(folder)))
        self.sb3 = sb3_logger.Logger(folder=str(folder), output_formats=outputs)
        # progress=None: show the bar only on an interactive terminal.
        disable = (not sys.stderr.isatty()) if progress is None else not progress
        self.bar = tqdm(
            total=total_steps,
            initial=resume_step or 0,
            unit="step",
            dynamic_ncols=True,
            disable=disable,
            smoothing=0.05,
        )

    def record(self, key: str, value, exclude: str | tuple[str, ...] | None = None) -> None:
        self.sb3.record(key, value, exclude)

    def dump(self, step: int) -> None:
        with tqdm.external_write_mode(file=sys.stdout):
            self.sb3.dump(step)

    def progress(self, steps: int, **postfix) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(steps)

    def message(self, text: str) -> None:
        """A line for the user (printed above the progress bar)."""
        tqdm.write(text, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()
        self.sb3.close()
