"""Interleaved, repeated timing of a measure against its reference, and the result table."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

COLUMNS = ["measure", "ours", "reference", "ratio", "target", "met", "notes"]


@dataclass
class Timing:
    """Medians (seconds) of ``repeats`` interleaved runs of ours and of the reference."""

    ours: float
    reference: float
    ours_runs: list[float]
    reference_runs: list[float]


def _timed(fn: Callable[[], object], collect: bool) -> tuple[float, object]:
    if collect:
        gc.collect()  # no collection of the other one's garbage inside a timed run
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved(
    ours: Callable[[], object],
    reference: Callable[[], object],
    repeats: int,
    warmup: bool = True,
    collect: bool = True,
) -> tuple[Timing, object, object]:
    """Run both ``repeats`` times, alternating which goes first; returns the timing and the last
    result of each. ``warmup``: one untimed run of each first (lazy initialisation, caches);
    ``collect``: a garbage collection before every timed run."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    if warmup:
        ours(), reference()
    ours_runs: list[float] = []
    reference_runs: list[float] = []
    ours_result = reference_result = None
    for index in range(repeats):
        order = [("ours", ours), ("reference", reference)]
        if index % 2:
            order.reverse()
        for name, fn in order:
            seconds, result = _timed(fn, collect)
            if name == "ours":
                ours_runs.append(seconds)
                ours_result = result
            else:
                reference_runs.append(seconds)
                reference_result = result
    timing = Timing(
        statistics.median(ours_runs),
        statistics.median(reference_runs),
        ours_runs,
        reference_runs,
    )
    return timing, ours_result, reference_result


def format_seconds(seconds: float) -> str:
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


@dataclass
class Row:
    """One line of the table. ``kind``: ``slowdown`` (ratio = ours / reference, target is a
    maximum) or ``speedup`` (ratio = reference / ours, target is a minimum)."""

    measure: str
    timing: Timing
    kind: str
    target: float
    extra_ok: bool = True  # a non-timing condition of the target (scores equal, F1 within ...)
    notes: str = ""

    @property
    def ratio(self) -> float:
        if self.kind == "slowdown":
            return self.timing.ours / self.timing.reference
        return self.timing.reference / self.timing.ours

    @property
    def met(self) -> bool:
        within = self.ratio <= self.target if self.kind == "slowdown" else self.ratio >= self.target
        return within and self.extra_ok

    def as_dict(self) -> dict:
        # three decimals where two would print the target itself for a ratio on either side
        digits = 3 if f"{self.ratio:.2f}" == f"{self.target:.2f}" else 2
        if self.kind == "slowdown":
            ratio, target = f"{self.ratio:.{digits}f}x", f"<= {self.target:.2f}x"
        else:
            ratio, target = f"{self.ratio:.{digits}f}x faster", f">= {self.target:.2f}x faster"
        return {
            "measure": self.measure,
            "ours": format_seconds(self.timing.ours),
            "reference": format_seconds(self.timing.reference),
            "ratio": ratio,
            "target": target,
            "met": "yes" if self.met else "NO",
            "notes": self.notes,
        }


def table(rows: list[Row]) -> pd.DataFrame:
    return pd.DataFrame([r.as_dict() for r in rows], columns=COLUMNS)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``df`` (all cells as text)."""
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for record in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in record) + " |")
    return "\n".join(lines) + "\n"
