"""Rates and ETAs of loops whose first step compiles, shared by every command's progress line.

    rate = AfterCompileRate()
    for done, batch in enumerate(batches, 1):
        step(batch)
        rate.mark(done)
        print(f"{done}/{total}, {rate.eta_text(total)}")  # "ETA after compile", then "ETA 42s"

The first call of a jitted function includes its XLA compilation, which on a CPU can take longer
than the rest of the run (eval once printed an ETA of ~544 s for a run that ended in 9.8 s). So
the rate is measured from the end of the first step on: until a second step has finished there
is no measurement, and the ETA says so ("ETA after compile") instead of guessing. Used by
`e4e-jax encode`, `invert`, `eval` (evaluation.cost) and training's console line.
"""
from __future__ import annotations

import time

AFTER_COMPILE = "ETA after compile"


def duration(seconds: float) -> str:
    """Compact duration: '9s', '2m05s', '4h15m' (seconds rounded)."""
    seconds = round(max(0.0, float(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class AfterCompileRate:
    """Work units per second measured after the first (compiling) step.

    `mark(done)` after each step with the cumulative count of finished units (images, files,
    steps); the first `skip` marks only start the clock (1: the mark after the compiling step;
    2 where marks come at the START of each step, so that the interval between the first two
    marks is the compiling step). `clock`: seconds (time.perf_counter).
    """

    def __init__(self, clock=time.perf_counter, skip: int = 1):
        self.clock, self.skip = clock, max(1, int(skip))
        self._seen = 0
        self._first: tuple[float, float] | None = None   # (time, done) after the compile
        self._last: tuple[float, float] | None = None

    def mark(self, done: float) -> None:
        """Records that `done` units have finished now (a repeated count is ignored)."""
        previous = self._last or self._first
        if previous is not None and done <= previous[1]:
            return
        point = (self.clock(), float(done))
        self._seen += 1
        if self._seen <= self.skip:
            self._first = point
        else:
            self._last = point

    def rate(self) -> float | None:
        """Units per second since the end of the first step; None before a second mark."""
        if self._first is None or self._last is None:
            return None
        (t0, d0), (t1, d1) = self._first, self._last
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def seconds_per_unit(self) -> float | None:
        r = self.rate()
        return 1.0 / r if r else None

    def eta_s(self, total: float) -> float | None:
        """Seconds until `total` units are done at the measured rate (None: not measured)."""
        r = self.rate()
        if not r:
            return None
        return max(0.0, float(total) - self._last[1]) / r

    def eta_text(self, total: float) -> str:
        """'ETA 4h15m' / 'ETA 42s', or 'ETA after compile' before there is a measurement."""
        s = self.eta_s(total)
        return AFTER_COMPILE if s is None else f"ETA {duration(s)}"
