"""Progress lines for long work: iteration, loss, throughput and ETA, written to the log."""

from __future__ import annotations

import logging
import time
from pathlib import Path


class ProgressLogger:
    """Log ``it/total``, named scalar values, items per second and ETA every ``every`` steps.

    Args:
        total: total number of steps.
        every: log every this many steps (and always at the last step).
        unit: name of the counted item for the throughput (``img`` gives ``img/s``).
        logger: where lines go; defaults to the ``channel_ssl`` logger.
        start: first step (when resuming), so ETA counts only what remains.
    """

    def __init__(self, total: int, every: int = 10, unit: str = "it", logger=None, start: int = 0):
        self.total = int(total)
        self.every = max(1, int(every))
        self.unit = unit
        self.log = logger or logging.getLogger("channel_ssl")
        self.start_step = int(start)
        self.t0 = time.perf_counter()
        self.items = 0

    def due(self, step: int) -> bool:
        """Whether :meth:`step` writes a line for ``step`` (0-based)."""
        done = step + 1
        return not (done % self.every) or done == self.total

    def step(self, step: int, items: int = 1, **values: float) -> bool:
        """Record that ``step`` (0-based) is done, having processed ``items`` items.

        Returns True when this step wrote a line.
        """
        self.items += items
        done = step + 1
        if not self.due(step):
            return False
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        steps_done = max(done - self.start_step, 1)
        eta = elapsed / steps_done * (self.total - done)
        vals = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        self.log.info(
            "[%d/%d] %s %.1f %s/s elapsed=%s eta=%s",
            done,
            self.total,
            vals,
            self.items / elapsed,
            self.unit,
            _fmt(elapsed),
            _fmt(eta),
        )
        return True


class IntervalMeans:
    """Running means of named values over the steps since the last log line, so a logged loss
    is the mean of its interval rather than one noisy batch (DINOv2 logs smoothed values too).

    Values may be tensors: they are summed where they live and read (one device sync) only
    when :meth:`pop` is called, at a log line, not at every step.
    """

    def __init__(self) -> None:
        self.sums: dict = {}
        self.count = 0

    def add(self, values: dict) -> None:
        for key, value in values.items():
            value = value.detach() if hasattr(value, "detach") else float(value)
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    def pop(self) -> dict[str, float]:
        """The means since the last call, then start a new interval."""
        means = {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def setup_logging(log_file: str | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, if given, to ``log_file`` (Snakemake's ``log:``)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        # a log in a folder that does not exist yet (a fresh results tree): make the folder
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
