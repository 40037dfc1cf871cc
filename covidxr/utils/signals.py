"""A job stopped by a signal (SIGTERM: preemption, a time limit, ``kill``) in any phase ends
with one exit code and one line, never with half a result nor with exit 0.

While a Lightning Trainer runs, its own SIGTERM handler stops the loop after the current batch
(``SIGTERMException``, which is a ``SystemExit`` whose code is 0: turned into ``Stopped`` here).
Between Trainer phases (indexing the data, writing the report) the handler here stops the job at
once; files are written atomically, so what was not finished is simply not there.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from lightning.pytorch.utilities.exceptions import SIGTERMException

#: 128 + SIGTERM: what schedulers report for a job they stopped.
STOPPED_EXIT = 143


class Stopped(SystemExit):
    """The job was stopped by a signal; its process exits ``STOPPED_EXIT``."""

    def __init__(self, message: str) -> None:
        super().__init__(STOPPED_EXIT)
        self.message = message


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """For the block: ``signals`` outside a Trainer phase raise ``Stopped`` at once, and a
    Trainer stopped by one raises ``Stopped`` instead of its ``SIGTERMException``."""
    main = threading.current_thread() is threading.main_thread()

    def handler(signum: int, frame: FrameType | None) -> None:
        if signal.getsignal(signum) is handler:  # no Trainer has composed it into its own
            raise Stopped(f"Stopped by signal {signum} between the phases of the job.")

    previous = {s: signal.signal(s, handler) for s in signals} if main else {}
    try:
        yield
    except SIGTERMException:
        raise Stopped("Stopped by a signal while a Trainer ran, after its batch.") from None
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
