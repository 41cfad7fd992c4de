"""Compilation counting and progress lines of the evaluation loops.

    with CompileCounter() as counter:
        marks = BatchMarks(counter)
        for batch in batches: marks.mark(); ...
    marks.after_second_batch()          # 0: every later batch reused the compiled programs
"""
from __future__ import annotations

import sys
import time


class CompileCounter:
    """Counts XLA compilations (jax.monitoring backend_compile events) while active."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        if event == self.EVENT:
            self.count += 1

    def __enter__(self) -> "CompileCounter":
        from jax import monitoring
        monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        from jax import monitoring
        monitoring.unregister_event_duration_listener(self._listener)


class BatchMarks:
    """Compilation count at the start of each batch of a loop: later batches must add none."""

    def __init__(self, counter: CompileCounter):
        self.counter = counter
        self.marks: list[int] = []

    def mark(self) -> None:
        """Records the compilation count at the start of a batch."""
        self.marks.append(self.counter.count)

    def after_second_batch(self) -> int | None:
        """Compilations from the start of the second batch to now (None: fewer batches)."""
        return None if len(self.marks) < 2 else self.counter.count - self.marks[1]


class ProgressPrinter:
    """'[name] stage: done/total (rate/s)' lines on stderr: in place on a terminal, otherwise
    every `every_s` seconds and at the end of each stage."""

    def __init__(self, stream=None, every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._open_line = False          # an in-place line waits for its newline
        self.every_s = every_s
        self._start: dict[tuple, float] = {}
        self._last = 0.0

    def __call__(self, name: str, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        t0 = self._start.setdefault((name, stage), now)
        if done == 0:                   # a stage starts: only its clock
            return
        rate = done / (now - t0) if now > t0 else 0.0
        line = f"[{name}] {stage}: {done}/{total} ({rate:.1f}/s)"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
            self._open_line = done < total
        elif done >= total or now - self._last >= self.every_s:
            self.stream.write(line + "\n")
            self._last = now
        self.stream.flush()


    def note(self, text: str) -> None:
        """Prints `text` on its own line, ending an in-place progress line first."""
        if self._open_line:
            self.stream.write("\n")
            self._open_line = False
        self.stream.write(text + "\n")
        self.stream.flush()
