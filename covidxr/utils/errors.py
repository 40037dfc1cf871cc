"""User errors: bad input a user can fix, reported as one line and exit code 2.

Everything else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the traceback of a
user error too, as Hydra does for its own errors.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

log = logging.getLogger(__name__)
USER_ERROR_EXIT = 2
F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """Bad input; the message names the option or file, what is wrong, and what to do."""


class ConfigError(UserError, ValueError):
    """An option has a value covidxr cannot use."""


class FolderTakenError(ConfigError):
    """A run folder belongs to another run: nothing is written into it, not even failed.json."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder named by an option does not exist."""


def find_user_error(exc: BaseException | None) -> UserError | None:
    """``exc`` or the user error that caused it (Hydra's instantiate wraps errors in its own)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def report_user_errors(function: F) -> F:
    """Turn a user error raised by ``function`` into one line on stderr and exit code 2.

    Inside a Hydra multirun the error is re-raised instead, so the sweep records the failed job
    and goes on with the others (its ``failed.json`` holds the message).
    """

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            error = find_user_error(exc)
            if error is None or os.environ.get("HYDRA_FULL_ERROR") == "1" or _in_multirun():
                raise
            exit_with_user_error(user_message(error))

    return wrapped


def user_message(error: UserError) -> str:
    """The one line of a user error; one re-raised from a DataLoader worker carries the worker's
    traceback, whose last line is the original message."""
    text = str(error)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def exit_with_user_error(message: str) -> NoReturn:
    """The one form of a user error: ``error: <message>`` on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(USER_ERROR_EXIT) from None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class DatasetError(UserError, ValueError):
    """Input data is missing or malformed; the message names the path and the fix."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file cannot be read safely; the message names the file."""


class DiskFullError(UserError, OSError):
    """A file could not be written for lack of space; the message names the folder and sizes."""
