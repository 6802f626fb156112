"""The exception types users see.

Library code raises these with a message that says what was wrong and how to fix it. The command-line
entry points turn them into one line ``error: <message>`` and exit code 2 (see :func:`cli_main`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class PmoeError(Exception):
    """Base class of every error that is the user's to fix (bad input, missing files, ...)."""


class ConfigError(PmoeError, ValueError):
    """An invalid option value, config file or combination of options."""


class EnvError(PmoeError):
    """An unknown or unsupported environment."""


class CheckpointError(PmoeError):
    """A missing, truncated, corrupted or incompatible checkpoint."""


class RunDirError(PmoeError):
    """A run directory that would be overwritten, or that cannot be resumed."""


class DeviceError(PmoeError):
    """A requested device that this machine does not have."""


def cli_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a CLI ``main`` and turn user errors into ``error: ...`` on stderr with exit code 2."""
    try:
        return main(argv) or 0
    except PmoeError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
