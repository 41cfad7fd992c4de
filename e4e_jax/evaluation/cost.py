"""What an evaluation will cost, said before it starts, and its ETA once a batch after
compilation is timed.

    plan = cost_plan(n_images=4, options=EvalOptions(), n_edits=1, has_inception=False)
    print(describe(plan, n_checkpoints=1))       # counts of network passes per metric
    tracker = EtaTracker(plan, n_checkpoints=1, printer=ProgressPrinter())   # a progress callback

The unit is one network pass over one image: an encoder pass E(x), a generator pass G(w) (the
decode of an inversion or an edit) or an Inception pass. Encoder and generator passes of an e4e
model cost about the same, so the ETA assumes one price for both (Inception passes, cheaper,
are counted separately and priced alike: the ETA is an upper-side estimate). Per checkpoint:

    inversion metrics   n images: 1 E + 1 G each, + 1 G per --edits edit
    LEC                 n images (whole groups of 8): 3 E + 2 G each (eq. 8)
    W deviation         --deviation-samples sampled w: 1 mapping + 1 G + 1 E each
    FID                 Inception on n real + n inversions + n per edit
"""
from __future__ import annotations

import dataclasses
import time

from e4e_jax.evaluation.evaluators.base import LEC_GROUP_SIZE
from e4e_jax.outputs.progress import AfterCompileRate, duration


@dataclasses.dataclass
class Stage:
    name: str              # the progress stage name of evaluation.loop / the evaluators
    items: int             # images or sampled w
    passes_per_item: int   # encoder + generator passes per item
    what: str

    @property
    def passes(self) -> int:
        return self.items * self.passes_per_item


def cost_plan(n_images: int, options, n_edits: int, has_inception: bool) -> list[Stage]:
    """The stages one checkpoint's evaluation runs, with their network-pass counts."""
    stages = [Stage("inversion metrics", n_images, 2 + n_edits,
                    f"{n_images} images: encode + decode"
                    + (f" + {n_edits} edit decode(s)" if n_edits else ""))]
    if options.lec_edit and n_images >= LEC_GROUP_SIZE:
        lec_n = n_images // LEC_GROUP_SIZE * LEC_GROUP_SIZE
        stages.append(Stage("LEC", lec_n, 5, f"{lec_n} images: 3 encodes + 2 decodes each"))
    samples = int(options.deviation_samples)
    if samples > 0:
        stages.append(Stage("W deviation", samples, 2,
                            f"{samples} sampled w: generate + encode each"))
    if has_inception:
        stages.append(Stage("FID (Inception)", n_images, 2 + n_edits,
                            f"Inception on {n_images * (2 + n_edits)} images"))
    return stages


def total_passes(plan: list[Stage]) -> int:
    return sum(s.passes for s in plan)


def describe(plan: list[Stage], n_checkpoints: int = 1) -> str:
    """Multi-line text: one line per stage with its pass count, then the total."""
    lines = [f"cost per checkpoint ({n_checkpoints} checkpoint(s)), in network passes over one "
             f"image:"]
    for s in plan:
        lines.append(f"  {s.name:<18} {s.passes:>8}  ({s.what})")
    lines.append(f"  {'total':<18} {total_passes(plan) * n_checkpoints:>8}  for all "
                 f"checkpoints (an upper bound: a stage a model cannot run is skipped with a "
                 f"reason); an ETA follows once a batch after compilation is timed")
    return "\n".join(lines)


class EtaTracker:
    """A progress callback (name, stage, done, total) that forwards to `printer` and prints
    one ETA line per checkpoint, priced from the first stage (of the plan) that has a batch
    timed after its compilation: the first batch of every stage compiles and is left out
    (e4e_jax.outputs.progress.AfterCompileRate), so a stage of one or two batches gives no
    price and the ETA waits for the next stage (no ETA rather than one inflated by compile
    time).
    Later stages compile too: the ETA is the remaining work at the measured speed, plus those
    compilations."""

    def __init__(self, plan: list[Stage], n_checkpoints: int, printer, clock=time.perf_counter):
        self.plan, self.n_checkpoints = plan, n_checkpoints
        self.printer, self.clock = printer, clock
        self._rates: dict[tuple[str, str], AfterCompileRate] = {}
        self._names: list[str] = []
        self._done: set[str] = set()          # checkpoints whose ETA is printed
        self.eta_s: float | None = None

    def _remaining_passes(self, name: str, index: int, done: int, total: int) -> int:
        """Network passes left: this stage's rest, the later stages, the later checkpoints."""
        later_ckpts = self.n_checkpoints - (self._names.index(name) + 1)
        return ((total - done) * self.plan[index].passes_per_item
                + sum(s.passes for s in self.plan[index + 1:])
                + total_passes(self.plan) * later_ckpts)

    def __call__(self, name: str, stage: str, done: int, total: int) -> None:
        self.printer(name, stage, done, total)
        if name not in self._names:
            self._names.append(name)
        index = next((i for i, s in enumerate(self.plan) if s.name == stage), None)
        if name in self._done or index is None or done <= 0:
            return
        # skip=2: LEC and W deviation report a batch when it starts (inside their mapping
        # callback), the inversion pass when it ends; leaving out the first two marks' interval
        # leaves out the compiling batch in both cases
        rate = self._rates.setdefault((name, stage), AfterCompileRate(self.clock, skip=2))
        rate.mark(done)
        per_item = rate.seconds_per_unit()
        if per_item is None:
            return
        per_pass = per_item / self.plan[index].passes_per_item
        self.eta_s = max(self._remaining_passes(name, index, done, total), 0) * per_pass
        note = getattr(self.printer, "note", None)
        text = (f"[{name}] ETA ~{duration(self.eta_s)} for the remaining work "
                f"({per_pass * 1e3:.1f} ms per network pass in {stage}, after compile)")
        note(text) if note else print(text)
        self._done.add(name)                   # one ETA per checkpoint
