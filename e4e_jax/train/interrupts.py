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

Commands whose unit of work is an image rather than a step (invert) stop at once instead:

    with AbortSignals() as signals:          # SIGTERM / SIGINT raise KeyboardInterrupt ...
        for image in ...:
            result = ...                     # ... here, as soon as Python runs again
            with signals.protect():          # ... but never while an image's files are written
                ...write the outputs of one image...
    signals.exit_code                        # 143 / 130 (130 for a KeyboardInterrupt of its own)
"""
from __future__ import annotations

import contextlib
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


class _SignalHandlers:
    """SIGTERM / SIGINT routed to `self._handle` inside the `with` block (from the main thread
    only: Python installs handlers there alone), the previous handlers restored after it."""

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in EXIT_CODES:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


class StopSignals(_SignalHandlers):
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


class AbortSignals(_SignalHandlers):
    """Context manager: SIGTERM / SIGINT raise KeyboardInterrupt in the main thread, except
    inside `protect()` blocks, where the signal is held and raised when the block ends (so the
    files of one finished unit of work are written whole). `signum` is the first signal
    received (0: none, e.g. a KeyboardInterrupt raised by the code itself).

    A signal only runs its handler when the interpreter regains control: one long compiled
    call (a whole projection) finishes first, then the interrupt is raised. It is raised once:
    later signals (a second Ctrl-C while the first unwinds) are only recorded, and after
    `hold()` (the final writes) every signal is."""

    def __init__(self):
        self.signum = 0
        self._depth = 0
        self._pending = False
        self._raised = False
        self._held = False
        self._previous: dict = {}

    def _raise(self):
        self._raised = True
        raise KeyboardInterrupt

    def _handle(self, signum, frame):
        if not self.signum:
            self.signum = int(signum)
        if self._raised or self._held:
            return
        if self._depth:
            self._pending = True
            return
        self._raise()

    @contextlib.contextmanager
    def protect(self):
        """A block that a signal does not cut short (it is raised when the block ends)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._pending and not self._depth and not self._held:
                self._pending = False
                self._raise()

    def redeliver(self) -> int:
        """The KeyboardInterrupt it raised went unseen (Python swallows one raised inside a gc
        callback or __del__, e.g. jax's _xla_gc_callback): the next signal raises again.
        Returns the signal to send again (0: none is due, e.g. after `hold()`)."""
        if not self._raised or self._held:
            return 0
        self._raised = False
        return self.signum or int(signal.SIGINT)

    def hold(self) -> None:
        """From now on signals are only recorded (`signum`), never raised: call it first
        thing once the work is over or interrupted, before the final files are written."""
        self._held = True

    @property
    def name(self) -> str:
        """'SIGTERM' / 'SIGINT' (a KeyboardInterrupt without a signal counts as SIGINT)."""
        return signal.Signals(self.signum or signal.SIGINT).name

    @property
    def exit_code(self) -> int:
        """143 after SIGTERM, 130 after SIGINT or a KeyboardInterrupt of the code itself."""
        return EXIT_CODES.get(signal.Signals(self.signum or signal.SIGINT), 128 + self.signum)
