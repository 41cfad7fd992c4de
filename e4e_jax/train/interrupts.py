"""SIGTERM / SIGINT during training: finish the step, save it, say so, exit 143 / 130.

    with StopSignals() as stop:              # installs the handlers (main thread only)
        for step in ...:
            ...one step...
            if stop.agreed():                # every process calls it once per step
                ...save at this step, leave the loop...
        raise stop.interrupted(...)          # -> train.py prints it and exits stop.exit_code

One path for both signals: preemption on TPU pods / cloud GPUs sends SIGTERM, Ctrl-C sends
SIGINT. The first signal only sets a flag (the running step finishes, a checkpoint is written
at that step); a second SIGINT raises KeyboardInterrupt at once (train.py turns it into a
one-line "aborted" message, exit 130) and a second SIGTERM is handled the same way.

Multi-host: a signal reaches one process (or all at slightly different times); `agreed()`
takes the maximum of every process's signal number with a tiny all-gather after each step, so
all processes stop, and save, at the same step. Single-process runs need no distributed setup.
"""
from __future__ import annotations

import os
import signal
import threading

import numpy as np

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}   # 128 + the signal number (shell rule)


class Interrupted(Exception):
    """A training run stopped by a signal after saving; `exit_code` is 143 / 130."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """Context manager: SIGTERM / SIGINT set a stop flag instead of killing the process."""

    def __init__(self):
        self.signum = 0
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum:                  # the second signal: abort now
            raise KeyboardInterrupt
        self.signum = int(signum)
        name = signal.Signals(signum).name
        # os.write, not print: a handler that prints while the main thread is printing can
        # raise "reentrant call" inside the io buffer
        os.write(2, f"\n{name} received: finishing the current step and saving a checkpoint "
                    f"(Ctrl-C again aborts without saving)\n".encode())

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in EXIT_CODES:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def agreed(self) -> int:
        """The signal number every process agrees to stop on (0: go on). Collective when
        there are several processes: every process must call it at the same step."""
        import jax
        if jax.process_count() == 1:
            return self.signum
        from jax.experimental import multihost_utils
        got = multihost_utils.process_allgather(np.asarray(self.signum, np.int32))
        self.signum = int(np.max(got))
        return self.signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(signal.Signals(self.signum), 128 + self.signum)

    def interrupted(self, where: str) -> Interrupted:
        """The exception train.py reports: `where` says the step and the checkpoint."""
        name = signal.Signals(self.signum).name
        return Interrupted(f"{name}: {where}", self.exit_code)
